// A Communicator over a c10d process group, with rendezvous through a
// TCPStore that rank 0 hosts: ProcessGroupGloo (dist.backend "gloo", CPU or
// GPU tensors) or ProcessGroupNCCL ("nccl", only in a -DDFKD_ENABLE_CUDA
// build against a CUDA LibTorch). NCCL sums CUDA tensors only: tensors that
// live elsewhere (the trainer's stop flag, a CPU-side statistic) are staged
// through the rank's GPU and copied back.
//
// Failure: every Gloo collective waits at most `timeout`; a peer that died
// makes the survivors throw std::runtime_error naming this rank and the
// operation, never hang. NCCL's own watchdog enforces the same timeout
// (TORCH_NCCL_ASYNC_ERROR_HANDLING: the process aborts with NCCL's message).
#ifndef DFKD_WORKER_DIST_C10D_COMMUNICATOR_H_
#define DFKD_WORKER_DIST_C10D_COMMUNICATOR_H_

#include <chrono>
#include <memory>
#include <string>

#include "worker/dist/communicator.h"

namespace dfkd::worker {

struct RendezvousOptions {
  std::string master_addr = "127.0.0.1";
  int port = 29500;
  int64_t rank = 0;
  int64_t world_size = 1;
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  // This process's address for Gloo's connections; empty = 127.0.0.1 when
  // the master is on loopback, else the address the host name resolves to.
  std::string local_addr;
};

// The torchrun conventions: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
// (and DFKD_DIST_TIMEOUT_S, DFKD_GLOO_ADDR for this node's address). world_size 1 when WORLD_SIZE is unset. Throws
// std::invalid_argument naming the variable that is malformed.
RendezvousOptions RendezvousFromEnv();

// Joins the group; blocks until all ranks arrived or the timeout passed.
std::unique_ptr<Communicator> MakeGlooCommunicator(const RendezvousOptions& options);

// `backend` "gloo" or "nccl"; `device` is the rank's GPU for NCCL. Throws
// std::invalid_argument naming dist.backend when NCCL is not compiled in.
std::unique_ptr<Communicator> MakeCommunicator(const RendezvousOptions& options,
                                               const std::string& backend,
                                               const torch::Device& device);

// Whether this build has ProcessGroupNCCL (a -DDFKD_ENABLE_CUDA build).
bool NcclCompiledIn();

// A TCP port that was free a moment ago on 127.0.0.1 (for local launches).
int FindFreePort();

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_DIST_C10D_COMMUNICATOR_H_
