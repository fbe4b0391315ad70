// Where a job's networks live: the spec's runtime.device, resolved once.
//
//   "cpu"   the CPU (the default; every test runs here)
//   "cuda"  GPU LOCAL_RANK of this node (torchrun's convention: the local
//           ranks of `dfkd-train --nproc N` spread over the node's GPUs; a
//           worker daemon sets LOCAL_RANK 0 and is given its GPU with
//           CUDA_VISIBLE_DEVICES)
//
// The engine builds every network on the CPU, loads its weights there, then
// moves it (MoveModule). Data loaders, synthesized-image pools and
// checkpoints stay on the CPU; batches move to the device as they are fed.
#ifndef DFKD_WORKER_ENGINE_DEVICE_H_
#define DFKD_WORKER_ENGINE_DEVICE_H_

#include <cstdint>
#include <string>

#include <torch/torch.h>

namespace dfkd::worker {

// Throws std::invalid_argument naming runtime.device when the device does
// not exist here: a CPU LibTorch, no visible GPU, or fewer GPUs than
// LOCAL_RANK + 1.
torch::Device ResolveDevice(const std::string& device, int64_t local_rank);

// LOCAL_RANK from the environment (0 when unset).
int64_t LocalRankFromEnv();

// True when this binary was built against a CUDA LibTorch with
// -DDFKD_ENABLE_CUDA=ON (the NCCL backend is compiled in).
bool BuiltWithCuda();

// module->to(device); nothing to do for the CPU.
void MoveModule(torch::nn::Module& module, const torch::Device& device);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_ENGINE_DEVICE_H_
