// Collective operations between the ranks of one training run.
//
// The trainer talks to its peers only through this interface, so the same
// loop runs alone (LocalCommunicator, a world of one) or across processes and
// nodes (a c10d Gloo/NCCL implementation plugs in here). Every rank must call
// the same collectives in the same order with tensors of the same shapes.
// Errors (a peer that died, a timeout) are thrown as c10::Error naming the
// rank where known. Not thread-safe: one training thread per rank.
#ifndef DFKD_WORKER_DIST_COMMUNICATOR_H_
#define DFKD_WORKER_DIST_COMMUNICATOR_H_

#include <memory>
#include <vector>

#include <torch/torch.h>

namespace dfkd::worker {

// An asynchronous collective in flight.
class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  // Blocks until done; throws like the synchronous collective would.
  virtual void Wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t size() const = 0;
  // In place: every tensor becomes the sum over ranks.
  virtual void AllReduceSum(std::vector<torch::Tensor>& tensors) = 0;
  // Starts the same all-reduce (one collective over all `tensors`) and
  // returns at once; the tensors must stay alive and untouched until Wait().
  // The default runs it synchronously.
  virtual std::unique_ptr<PendingCollective> AllReduceSumAsync(
      std::vector<torch::Tensor>& tensors);
  // In place: every tensor becomes root's.
  virtual void Broadcast(std::vector<torch::Tensor>& tensors, int64_t root) = 0;
  virtual void Barrier() = 0;
  bool is_root() const { return rank() == 0; }
};

// A world of one: every collective is the identity.
class LocalCommunicator final : public Communicator {
 public:
  int64_t rank() const override { return 0; }
  int64_t size() const override { return 1; }
  void AllReduceSum(std::vector<torch::Tensor>&) override {}
  void Broadcast(std::vector<torch::Tensor>&, int64_t) override {}
  void Barrier() override {}
};

// DDP's two duties, on top of any Communicator:
// Makes every rank's parameters and buffers equal to rank 0's.
void BroadcastModule(Communicator& comm, torch::nn::Module& module);
// Averages the gradients of `params` over ranks, in flat buckets of at most
// `bucket_bytes` (one collective per bucket). A no-op in a world of one.
// Parameters without a gradient contribute zeros, so all ranks agree.
void AverageGradients(Communicator& comm, const std::vector<torch::Tensor>& params,
                      int64_t bucket_bytes = 25 << 20);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_DIST_COMMUNICATOR_H_
