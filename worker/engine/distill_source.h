// StepSource for kind distill: a DFKD method (optionally wrapped by KDCI)
// makes substitute data every distill.kd_steps steps (one synthesis round),
// the frozen teacher and the student run on each sampled batch, and the
// method scores the student. The training split of the data set is never read.
#ifndef DFKD_WORKER_ENGINE_DISTILL_SOURCE_H_
#define DFKD_WORKER_ENGINE_DISTILL_SOURCE_H_

#include <memory>

#include "common/spec/job_spec.h"
#include "worker/engine/step_source.h"
#include "worker/methods/method.h"

namespace dfkd::worker {

class DistillSource final : public StepSource {
 public:
  DistillSource(const common::JobSpec& spec, Classifier teacher, Classifier student,
                std::unique_ptr<Method> method, Communicator& comm);
  int64_t steps_per_epoch() const override { return steps_per_epoch_; }
  void Start(int64_t) override {}
  StepResult Step(int64_t step) override;
  std::vector<torch::Tensor> ExtraParameters() override {
    return method_->ExtraStudentParameters();
  }
  torch::Tensor CompensatedLogits(const torch::Tensor& logits) override {
    return method_->CompensatedLogits(logits);
  }
  nlohmann::json Describe() const override { return method_->Describe(); }
  void Save(torch::serialize::OutputArchive& a) const override { method_->Save(a); }
  void Load(torch::serialize::InputArchive& a) override { method_->Load(a); }
  Method& method() { return *method_; }

 private:
  Classifier teacher_, student_;
  std::unique_ptr<Method> method_;
  Communicator& comm_;
  torch::Device device_;  // the student's; substitute batches move there
  uint64_t seed_;
  int64_t steps_per_epoch_, kd_steps_, batch_size_;
  bool channels_last_;
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_ENGINE_DISTILL_SOURCE_H_
