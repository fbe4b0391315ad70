#include "worker/engine/runtime.h"

#include <dlfcn.h>
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
  // LibTorch parallelises with OpenMP; OpenBLAS (Debian's BLAS for matmul)
  // would start its own pthreads on the same cores, and waking them costs
  // milliseconds per small matmul: a 256 x 10 KDCI dictionary took 8.8 ms
  // with them and 0.87 ms without. Looked up at run time so the engine does
  // not link OpenBLAS (another BLAS simply lacks the symbol).
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set(1);
  }
  return at::get_num_threads();
}

}  // namespace dfkd::worker
