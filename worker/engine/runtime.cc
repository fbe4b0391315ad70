#include "worker/engine/runtime.h"

#include <malloc.h>

#include <thread>

#include <torch/torch.h>

namespace dfkd::worker {

int64_t ConfigureRuntime(int64_t threads) {
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);
  if (threads <= 0) {
    threads = std::max<int64_t>(1, std::thread::hardware_concurrency());
  }
  at::set_num_threads(static_cast<int>(threads));
  return at::get_num_threads();
}

}  // namespace dfkd::worker
