// DDP's overlap of communication with backward: gradients are averaged in
// buckets that start their all-reduce as soon as every gradient of the
// bucket has been computed, while backward goes on with earlier layers.
//
// Parameters are assigned to buckets of at most `bucket_bytes` in reverse
// order (the order backward produces their gradients, as DDP assumes). A hook
// on each parameter copies its gradient into the bucket's flat buffer; the
// last one in launches the bucket's asynchronous all-reduce. Finish() (after
// backward) launches buckets whose parameters got no gradient this step
// (zeros, as AverageGradients does), waits for every bucket in order, and
// writes grad = sum / world into each parameter. The result equals
// AverageGradients' up to the order of floating-point additions inside the
// all-reduce (identical for 2 ranks). Hooks act only between Arm() and
// Finish(), so other backward passes (a generator's autograd::grad) pass
// through untouched. Not thread-safe; one instance per trainer.
#ifndef DFKD_WORKER_DIST_OVERLAPPED_SYNC_H_
#define DFKD_WORKER_DIST_OVERLAPPED_SYNC_H_

#include <memory>
#include <vector>

#include <torch/torch.h>

#include "worker/dist/communicator.h"

namespace dfkd::worker {

class OverlappedGradientSync {
 public:
  OverlappedGradientSync(Communicator& comm, const std::vector<torch::Tensor>& params,
                         int64_t bucket_bytes);
  ~OverlappedGradientSync();
  OverlappedGradientSync(const OverlappedGradientSync&) = delete;
  OverlappedGradientSync& operator=(const OverlappedGradientSync&) = delete;

  // Before backward: the next gradients go to the buckets.
  void Arm();
  // After backward: every parameter's grad is the average over ranks.
  void Finish();
  size_t num_buckets() const { return buckets_.size(); }
  // Buckets whose all-reduce started during the last backward (not in Finish).
  int64_t launched_during_backward() const { return launched_early_; }

 private:
  struct Bucket {
    std::vector<size_t> members;      // indices into params_
    std::vector<int64_t> offsets;     // element offset of each member in flat
    torch::Tensor flat;
    int64_t ready = 0;
    std::unique_ptr<PendingCollective> pending;
  };
  void OnGradient(size_t param, const torch::Tensor& grad);
  void Launch(Bucket& bucket);

  Communicator& comm_;
  std::vector<torch::Tensor> params_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_, slot_of_;
  std::vector<bool> seen_;
  std::vector<unsigned> hook_ids_;
  size_t next_launch_ = 0;  // buckets launch in index order
  bool armed_ = false;
  bool finishing_ = false;
  int64_t launched_early_ = 0;
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_DIST_OVERLAPPED_SYNC_H_
