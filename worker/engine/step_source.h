// What one optimisation step trains on: the part that differs between
// supervised training (a labelled batch, cross-entropy) and distillation (a
// method's substitute batch, its KD loss). The Trainer owns the rest.
#ifndef DFKD_WORKER_ENGINE_STEP_SOURCE_H_
#define DFKD_WORKER_ENGINE_STEP_SOURCE_H_

#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace dfkd::worker {

struct StepResult {
  torch::Tensor loss;    // scalar with a graph to the trained parameters
  int64_t images = 0;    // images this rank trained on
  int64_t correct = 0;   // against labels (supervised) or the teacher (distill)
};

class StepSource {
 public:
  virtual ~StepSource() = default;
  virtual int64_t steps_per_epoch() const = 0;
  // Called once per process before the first Step(), with the step a resumed
  // run continues from (0 for a fresh run).
  virtual void Start(int64_t step) = 0;
  // Builds the loss of step `step` (0-based). Steps arrive in order.
  virtual StepResult Step(int64_t step) = 0;
  // Trained with the model's optimizer, after the model's own parameters.
  virtual std::vector<torch::Tensor> ExtraParameters() { return {}; }
  // The model's test-time logits when they differ from the raw ones.
  virtual torch::Tensor CompensatedLogits(const torch::Tensor&) { return {}; }
  virtual nlohmann::json Describe() const { return nlohmann::json::object(); }
  virtual void Save(torch::serialize::OutputArchive&) const {}
  virtual void Load(torch::serialize::InputArchive&) {}
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_ENGINE_STEP_SOURCE_H_
