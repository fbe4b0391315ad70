#include "worker/engine/lr_schedule.h"

#include <algorithm>
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

int64_t PlannedSteps(const common::TrainSpec& train, int64_t steps_per_epoch) {
  const int64_t planned = train.epochs * steps_per_epoch;
  return train.max_steps > 0 ? std::min(planned, train.max_steps) : planned;
}

}  // namespace dfkd::worker
