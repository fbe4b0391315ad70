// Learning-rate schedules, evaluated per optimisation step so a run of any
// length (and a resumed run) follows the same curve.
#ifndef DFKD_WORKER_ENGINE_LR_SCHEDULE_H_
#define DFKD_WORKER_ENGINE_LR_SCHEDULE_H_

#include <cstdint>

#include "common/spec/job_spec.h"

namespace dfkd::worker {

// Learning rate for `step` (0-based) of a run of `total_steps`:
//  cosine:    eta_min + (lr - eta_min) * (1 + cos(pi * step / total)) / 2
//  multistep: lr * gamma^k, k = milestones (fractions of total) passed
//  constant:  lr
// then a linear warm-up over the first warmup_steps.
double LearningRateAt(const common::OptimSpec& optim, int64_t step,
                      int64_t total_steps);

// The steps of a whole run: epochs x steps_per_epoch, capped by max_steps.
int64_t PlannedSteps(const common::TrainSpec& train, int64_t steps_per_epoch);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_ENGINE_LR_SCHEDULE_H_
