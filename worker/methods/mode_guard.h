// ModeGuard: restores a module's train/eval mode on scope exit, so a method
// can run the teacher or student in the mode its reference uses during
// synthesis and leave them as the trainer set them.
#ifndef DFKD_WORKER_METHODS_MODE_GUARD_H_
#define DFKD_WORKER_METHODS_MODE_GUARD_H_

#include <torch/torch.h>

namespace dfkd::worker {

class ModeGuard {
 public:
  explicit ModeGuard(torch::nn::Module& module)
      : module_(module), was_training_(module.is_training()) {}
  ~ModeGuard() { module_.train(was_training_); }
  ModeGuard(const ModeGuard&) = delete;
  ModeGuard& operator=(const ModeGuard&) = delete;

 private:
  torch::nn::Module& module_;
  bool was_training_;
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_METHODS_MODE_GUARD_H_
