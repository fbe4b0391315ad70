#include "worker/engine/lr_schedule.h"

#include <cmath>

namespace dfkd::worker {

double LearningRateAt(const common::OptimSpec& o, int64_t step,
                      int64_t total_steps) {
  double lr = o.lr;
  const double t = total_steps > 0 ? static_cast<double>(step) / total_steps : 0.0;
  if (o.schedule == "cosine") {
    lr = o.eta_min + (o.lr - o.eta_min) * 0.5 * (1.0 + std::cos(M_PI * t));
  } else if (o.schedule == "multistep") {
    for (double m : o.milestones) {
      if (t >= m) lr *= o.gamma;
    }
  }
  if (o.warmup_steps > 0 && step < o.warmup_steps) {
    lr *= static_cast<double>(step + 1) / o.warmup_steps;
  }
  return lr;
}

}  // namespace dfkd::worker
