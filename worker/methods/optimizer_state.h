// MoveOptimizerState: puts an optimizer's state (SGD momentum, Adam moments)
// next to its parameters after Optimizer::load(). Checkpoints are read onto
// the CPU and load() keeps each state tensor where the archive put it, so on
// CUDA the state would otherwise stay on the CPU. A no-op for the CPU. Used
// by the trainer's optimizer and by every method-owned one.
#ifndef DFKD_WORKER_METHODS_OPTIMIZER_STATE_H_
#define DFKD_WORKER_METHODS_OPTIMIZER_STATE_H_

#include <torch/torch.h>

namespace dfkd::worker {

inline void MoveOptimizerState(torch::optim::Optimizer& optimizer, const torch::Device& device) {
  if (device.is_cpu()) return;
  auto move = [&](const torch::Tensor& t) { return t.defined() ? t.to(device) : t; };
  for (auto& entry : optimizer.state()) {
    if (auto* s = dynamic_cast<torch::optim::SGDParamState*>(entry.second.get())) {
      s->momentum_buffer(move(s->momentum_buffer()));
    } else if (auto* a = dynamic_cast<torch::optim::AdamParamState*>(entry.second.get())) {
      a->exp_avg(move(a->exp_avg()));
      a->exp_avg_sq(move(a->exp_avg_sq()));
      a->max_exp_avg_sq(move(a->max_exp_avg_sq()));
    }
  }
}

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_METHODS_OPTIMIZER_STATE_H_
