// KdciMethod: de-confounds any DFKD method (KDCI, CVPR 2024).
//
// A decorator over an inner Method. Synthesis and sampling stay the inner
// method's; KDCI only
//  1. builds a confounder dictionary (prototypes z_i and priors P(z_i)) from
//     the feature source's logits on substitute data: after every
//     Synthesize() from the batch just synthesized (generation methods), or
//     once from the whole unlabeled pool, streamed in chunks (pool methods);
//  2. sets DistillBatch::kd_logits = s + F(z), so the inner method's KD term
//     scores the compensated logits while its other terms keep the raw ones.
// The attention parameters (and the other-Z mapping) are extra student
// parameters, trained by the student's optimizer.
//
// With kdci.enabled=false the factory does not build this wrapper at all, so
// the baseline is the inner method bit for bit.
#ifndef DFKD_WORKER_KDCI_KDCI_METHOD_H_
#define DFKD_WORKER_KDCI_KDCI_METHOD_H_

#include <memory>

#include "worker/kdci/confounder_dictionary.h"
#include "worker/kdci/intervention.h"
#include "worker/methods/method.h"

namespace dfkd::worker {

struct KdciOptions {
  KdciOptions(DictionaryOptions d, InterventionOptions i)
      : dictionary(d), intervention(i) {}
  DictionaryOptions dictionary;
  InterventionOptions intervention;
  // When the dictionary is rebuilt: every synthesis round (from the batch
  // just synthesized), every student step (from the KD batch, reusing the
  // teacher logits the step computed anyway: no extra forward pass), or once.
  // Pool methods always build once, from the whole pool.
  enum class Rebuild { kEveryRound, kEveryStep, kOnce };
  Rebuild rebuild = Rebuild::kEveryRound;
  std::string feature_source = "teacher";  // for Describe(); "teacher" | "other"
  int64_t pool_max_points = 200000;  // reservoir size of the streamed pool fit
};

class KdciMethod final : public Method {
 public:
  // `feature_source` embeds substitute data (the teacher, or another teacher
  // for the other-Z ablation); it is used in eval mode without gradients.
  KdciMethod(std::unique_ptr<Method> inner, KdciOptions options, Classifier feature_source);

  std::string name() const override { return inner_->name() + "+kdci"; }
  void Synthesize(const RoundContext& ctx) override;
  torch::Tensor Sample(int64_t batch_size, const RoundContext& ctx) override {
    return inner_->Sample(batch_size, ctx);
  }
  torch::Tensor DistillLoss(const DistillBatch& batch, const RoundContext& ctx) override;
  double temperature() const override { return inner_->temperature(); }
  torch::Tensor LastSynthesized() const override { return inner_->LastSynthesized(); }
  bool has_pool() const override { return inner_->has_pool(); }
  void ForEachPoolChunk(const std::function<void(const torch::Tensor&)>& fn) override {
    inner_->ForEachPoolChunk(fn);
  }
  TapRequest StudentTaps() const override { return inner_->StudentTaps(); }
  std::vector<torch::Tensor> ExtraStudentParameters() override;
  torch::Tensor CompensatedLogits(const torch::Tensor& student_logits) override;
  nlohmann::json Describe() const override;
  void Save(torch::serialize::OutputArchive& archive) const override;
  void Load(torch::serialize::InputArchive& archive) override;

  // Rebuilds the dictionary now (called by Synthesize; public for tests).
  void RefreshDictionary(const RoundContext& ctx);
  // Builds from logits already computed (the KD batch's teacher logits).
  void RefreshDictionaryFrom(const torch::Tensor& logits, const RoundContext& ctx);
  const torch::Tensor& prototypes() const { return prototypes_; }
  const torch::Tensor& prior() const { return prior_; }
  KdciIntervention& intervention() { return intervention_; }

 private:
  torch::Tensor FeatureLogits(const torch::Tensor& x);
  DictionaryOptions SeededOptions(const RoundContext& ctx) const;
  void Adopt(const ConfounderDictionary& dict, Communicator* comm);
  torch::Tensor RandomLambda(int64_t batch, uint64_t seed, int64_t step) const;
  void ShareFromRoot(Communicator* comm);

  std::unique_ptr<Method> inner_;
  KdciOptions options_;
  Classifier feature_source_;
  KdciIntervention intervention_;
  torch::Tensor prototypes_;  // [N, d'] on the CPU (undefined until the first build)
  torch::Tensor prior_;       // [N] on the CPU
  int64_t builds_ = 0;
  int64_t last_pca_dim_ = 0;
  bool pool_logits_cached_ = false;  // the last pool build reused the inner method's logits
};

KdciAblation ParseKdciAblation(const std::string& name);  // throws invalid_argument
const char* KdciAblationName(KdciAblation ablation);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_KDCI_KDCI_METHOD_H_
