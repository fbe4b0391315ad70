#include "worker/engine/device.h"

#include <cstdlib>
#include <stdexcept>

namespace dfkd::worker {

bool BuiltWithCuda() {
#ifdef DFKD_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int64_t LocalRankFromEnv() {
  const char* v = std::getenv("LOCAL_RANK");
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  if (*end != '\0' || x < 0) {
    throw std::invalid_argument(std::string("LOCAL_RANK='") + v +
                                "' is not a non-negative integer");
  }
  return x;
}

torch::Device ResolveDevice(const std::string& device, int64_t local_rank) {
  if (device == "cpu") return torch::Device(torch::kCPU);
  if (device != "cuda") {
    throw std::invalid_argument("runtime.device: '" + device + "' is not one of cpu, cuda");
  }
  if (!torch::cuda::is_available()) {
    throw std::invalid_argument(
        BuiltWithCuda()
            ? "runtime.device: cuda, but no GPU is visible to this process "
              "(check nvidia-smi and CUDA_VISIBLE_DEVICES)"
            : "runtime.device: cuda, but this engine was built against a CPU LibTorch "
              "(configure with -DDFKD_ENABLE_CUDA=ON and CMAKE_PREFIX_PATH of a CUDA "
              "LibTorch; tests/gpu/run.sh does both)");
  }
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (local_rank >= count) {
    throw std::invalid_argument("runtime.device: cuda for LOCAL_RANK " +
                                std::to_string(local_rank) + ", but only " +
                                std::to_string(count) +
                                " GPU(s) are visible: start at most that many ranks per node");
  }
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
}

void MoveModule(torch::nn::Module& module, const torch::Device& device) {
  if (device.is_cpu()) return;  // networks are built on the CPU
  module.to(device);
}

}  // namespace dfkd::worker
