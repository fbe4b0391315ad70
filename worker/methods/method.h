// The plug-in interface every data-free KD method implements.
//
// A method decides how substitute data is made (synthesized by a generator or
// by inversion, or sampled from an unlabeled pool) and how the student is
// scored on it. The DistillTrainer owns everything else: the loop, the
// student optimizer, gradient sync, evaluation, checkpoints and metrics.
//
// Lifecycle, driven by the trainer from one thread:
//   for each round:   Synthesize(ctx) once (skipped when a run resumes
//                     mid-round), then kd_steps times:
//     inputs = Sample(batch_size, ctx)   trainer runs the teacher (no grad)
//                                        and the student on them
//     loss = DistillLoss(batch, ctx)     trainer: backward, sync, step
// Save()/Load() may run between any two steps; after Load() the method must
// continue exactly as if it had not been interrupted (tested per method).
//
// The contract that makes KDCI possible: DistillLoss() never runs the student
// or the teacher; it only reads `batch`. So a wrapper can replace
// batch.student.logits and the method scores the replacement. Synthesize()
// may run both models (adversarial generator updates) and owns any optimizer
// of its own. Not thread-safe.
#ifndef DFKD_WORKER_METHODS_METHOD_H_
#define DFKD_WORKER_METHODS_METHOD_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "worker/data/transforms.h"
#include "worker/dist/communicator.h"
#include "worker/models/classifier.h"

namespace dfkd::worker {

// One distillation step's tensors, computed by the trainer.
struct DistillBatch {
  torch::Tensor inputs;      // substitute samples (normalised, model-ready)
  ClassifierOutput teacher;  // computed under NoGradGuard
  ClassifierOutput student;  // requires grad
  // The student logits the KD (teacher-vs-student) term scores. Undefined
  // means student.logits; KDCI sets its compensated logits here, so every
  // other term of a method keeps reading the raw student.logits.
  torch::Tensor kd_logits;
  const torch::Tensor& KdStudentLogits() const {
    return kd_logits.defined() ? kd_logits : student.logits;
  }
};

// Where the run stands, plus the services a method may use.
struct RoundContext {
  int64_t round = 0;         // synthesis rounds started so far (0-based)
  int64_t global_step = 0;   // student steps completed before this call
  uint64_t seed = 0;         // the job's seed
  Communicator* comm = nullptr;  // never null; size() == 1 when alone
};

// What a method is built from. Models are shared, not owned.
struct MethodDeps {
  Classifier teacher;
  Classifier student;
  std::vector<int64_t> image_shape;  // {C, H, W} of the task
  int64_t num_classes = 0;
  Normalization norm;                // the task's input normalisation
  int64_t crop_padding = 4;          // the task's random-crop padding (pool methods)
};

class Method {
 public:
  virtual ~Method() = default;
  virtual std::string name() const = 0;

  // Makes this round's substitute data (may train a generator).
  virtual void Synthesize(const RoundContext& ctx) = 0;
  // A batch of substitute inputs for one student step.
  virtual torch::Tensor Sample(int64_t batch_size, const RoundContext& ctx) = 0;
  // The student's loss on a batch the trainer has run both models on.
  virtual torch::Tensor DistillLoss(const DistillBatch& batch,
                                    const RoundContext& ctx) = 0;
  // The KD temperature the method scores with (KDCI reuses it).
  virtual double temperature() const = 0;

  // The substitute batch the latest Synthesize() made: what a per-round
  // confounder dictionary is built from. Undefined for pool methods.
  virtual torch::Tensor LastSynthesized() const { return {}; }
  // Pool methods: feeds the whole unlabeled pool in chunks (memory bounded).
  virtual bool has_pool() const { return false; }
  virtual void ForEachPoolChunk(const std::function<void(const torch::Tensor&)>&) {}
  // The logits `model` gives for the images ForEachPoolChunk feeds, in that
  // order (float [N, C], CPU), when the method already has them (DFND's
  // selection ran the teacher over the pool); undefined otherwise. KDCI's
  // dictionary then skips a second pass of the same network over the pool.
  virtual torch::Tensor CachedPoolLogits(const torch::nn::Module& /*model*/) const { return {}; }

  // What the trainer must ask of the student for this method.
  virtual TapRequest StudentTaps() const { return {}; }
  // Parameters beyond the student's that the student optimizer also updates.
  virtual std::vector<torch::Tensor> ExtraStudentParameters() { return {}; }
  // Student logits as the method would use them at test time, when that
  // differs from the raw logits (KDCI's compensated prediction); undefined
  // otherwise.
  virtual torch::Tensor CompensatedLogits(const torch::Tensor& /*student_logits*/) {
    return {};
  }
  // Facts for result.json (options in effect, dictionary sizes, ...).
  virtual nlohmann::json Describe() const { return nlohmann::json::object(); }

  virtual void Save(torch::serialize::OutputArchive& archive) const = 0;
  virtual void Load(torch::serialize::InputArchive& archive) = 0;
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_METHODS_METHOD_H_
