// StepSource for train_teacher and train_student_scratch: labelled batches of
// the real training split (seeded order, crop/flip, normalised) and
// cross-entropy.
#ifndef DFKD_WORKER_ENGINE_SUPERVISED_SOURCE_H_
#define DFKD_WORKER_ENGINE_SUPERVISED_SOURCE_H_

#include "common/spec/job_spec.h"
#include "worker/data/loader.h"
#include "worker/dist/communicator.h"
#include "worker/engine/job_data.h"
#include "worker/engine/step_source.h"
#include "worker/models/classifier.h"

namespace dfkd::worker {

class SupervisedSource final : public StepSource {
 public:
  SupervisedSource(const common::JobSpec& spec, Classifier model, const JobData& data,
                   const Communicator& comm);
  int64_t steps_per_epoch() const override { return loader_.batches_per_epoch(); }
  void Start(int64_t step) override;
  StepResult Step(int64_t step) override;

 private:
  Classifier model_;
  torch::Device device_;  // the model's; batches move there
  bool channels_last_;
  Loader loader_;
  int64_t epoch_ = 0;
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_ENGINE_SUPERVISED_SOURCE_H_
