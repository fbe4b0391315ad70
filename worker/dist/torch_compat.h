// The one place where the LibTorch versions dfkd builds against differ:
// Debian's 1.13 (CPU, what CI uses) and the 2.x of a current PyTorch install
// (CUDA, what tests/gpu/run.sh builds against). Code elsewhere uses these
// names and never tests TORCH_VERSION_* itself.
#ifndef DFKD_WORKER_DIST_TORCH_COMPAT_H_
#define DFKD_WORKER_DIST_TORCH_COMPAT_H_

#include <torch/version.h>

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

namespace dfkd::compat {

// What a process-group implementation (Gloo, NCCL) derives from: in 1.13
// ProcessGroupGloo is itself a ProcessGroup; from 2.0 on it is a Backend
// that a ProcessGroup wraps. Both offer allreduce/broadcast/barrier with
// default options, which is all dfkd calls.
#if TORCH_VERSION_MAJOR >= 2
using C10dBackend = ::c10d::Backend;
#else
using C10dBackend = ::c10d::ProcessGroup;
#endif

using C10dWork = ::c10d::Work;

}  // namespace dfkd::compat

#endif  // DFKD_WORKER_DIST_TORCH_COMPAT_H_
