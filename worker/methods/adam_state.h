// MoveAdamState: puts a method-owned Adam's moments next to its parameters
// after Optimizer::load(). The engine reads checkpoints onto the CPU, and
// Adam::load keeps each state tensor where the archive put it, so on CUDA the
// moments would otherwise stay on the CPU. A no-op for CPU parameters.
#ifndef DFKD_WORKER_METHODS_ADAM_STATE_H_
#define DFKD_WORKER_METHODS_ADAM_STATE_H_

#include <torch/torch.h>

namespace dfkd::worker {

inline void MoveAdamState(torch::optim::Optimizer& optimizer, const torch::Device& device) {
  for (auto& entry : optimizer.state()) {
    auto* s = dynamic_cast<torch::optim::AdamParamState*>(entry.second.get());
    if (s == nullptr) continue;
    if (s->exp_avg().defined()) s->exp_avg(s->exp_avg().to(device));
    if (s->exp_avg_sq().defined()) s->exp_avg_sq(s->exp_avg_sq().to(device));
    if (s->max_exp_avg_sq().defined()) s->max_exp_avg_sq(s->max_exp_avg_sq().to(device));
  }
}

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_METHODS_ADAM_STATE_H_
