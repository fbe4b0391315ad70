// `dfnd`: DFND (Chen et al., CVPR 2021, "Learning Student Networks in the
// Wild") as huawei-noah/Efficient-Computing
// Data-Efficient-Model-Compression/DFND/DFND-train.py (225ddd2) intends it
// (dfkd-methods.md §8, §13, §14.16; the released script does not run as-is).
//
// Substitute data: a subset of an unlabeled "wild" pool (KDCI: 600k ImageNet
// images at 32 px) chosen once by the teacher's confidence: every pool image,
// without augmentation and normalised with pool_norm (the code normalises with
// ImageNet's statistics even for a CIFAR teacher, §14.16: the factory's
// choice), is scored with CE(t, argmax t) = -ln max softmax(t), and the
// `num_select` lowest scores (most confident; ties to the lower index) are
// kept. No class balancing (Describe() reports the teacher's class histogram
// on the selection: KDCI Fig. 1b shows its imbalance). The selection runs in
// chunks the first time Synthesize() runs (round 0) and is checkpointed, so a
// resumed run does not score the pool again. Student batches: keyed draws
// from the selection with crop (zero padding) + flip, normalised with
// pool_norm. Later rounds synthesize nothing.
//
// Student loss (the noise-adaptation term keeps the raw logits, §13):
//   L = KL(t || s_kd; T) + NLL(ln(softmax(s) Q), argmax t)
// KL at T = 4, batchmean, x T^2 (the huawei kdloss sums the elementwise KL and
// divides by B: the same as KdLoss). Q (C x C) is the noise transition: row i
// is the distribution of the teacher's label given true class i, Q_ii = a_T
// (the teacher's test accuracy, a constant: 0.9523 for the reference's
// CIFAR-10 teacher, 0.7774 for CIFAR-100; configs set their teacher's) and
// Q_ij = (1 - a_T) softmax(theta_i)_j over the C - 1 off-diagonal slots (in
// column order, skipping i), so rows sum to 1. theta (C x (C-1)) starts at
// zeros and is trained by its own Adam (lr 1e-3, betas (0.9, 0.999)), not by
// the student's SGD.
//
// Our choice (the interface's, not the reference's): DistillLoss() cannot see
// the backward pass, so theta's gradient of step k is applied at the start of
// step k + 1's DistillLoss() (then cleared). The sequence of theta values the
// losses see is the reference's (its step k uses theta before step k's update,
// step k + 1 the value after it); only the last step's update is never made.
// A gradient pending at a checkpoint is saved with it. With several ranks
// theta's gradient is averaged over ctx.comm before the step; the selection
// is scored chunk by chunk across the ranks (ScorePool). The reference
// iterates a shuffled loader over the selection; here draws are with
// replacement, keyed by (seed, global step, rank).
#ifndef DFKD_WORKER_METHODS_DFND_H_
#define DFKD_WORKER_METHODS_DFND_H_

#include <memory>

#include <torch/arg.h>

#include "worker/data/transforms.h"
#include "worker/methods/method.h"
#include "worker/methods/unlabeled_sampler.h"

namespace dfkd::worker {

struct DfndOptions {
  TORCH_ARG(double, temperature) = 4.0;   // of the KD term (kdloss's T = 4)
  TORCH_ARG(int64_t, num_select) = 0;     // most confident pool images kept; 0 = all
  TORCH_ARG(double, teacher_accuracy) = 0.9523;  // a_T (the code's CIFAR-10 constant)
  TORCH_ARG(double, lr_theta) = 1e-3;     // Adam lr of the noise-adaptation logits
  TORCH_ARG(int64_t, select_chunk) = 1024;  // images per teacher pass (selection, chunks)
  TORCH_ARG(int64_t, crop_padding) = 4;   // of the student's random crop
  TORCH_ARG(Normalization, norm);         // the task's (the fallback of pool_norm)
  TORCH_ARG(torch::Tensor, pool);         // uint8 [N, C, H, W], CPU
  TORCH_ARG(Normalization, pool_norm);    // of every pool image; empty = norm
};

// The noise transition Q (C x C) from theta (C x (C-1)) and a_T: Q_ii = a_T,
// row i's off-diagonal entries (1 - a_T) softmax(theta_i) in column order.
// Differentiable in theta.
torch::Tensor NoiseTransition(const torch::Tensor& theta, double teacher_accuracy);
// NLL(ln(softmax(student_logits) Q), argmax teacher_logits), mean over the batch.
torch::Tensor NoiseAdaptationLoss(const torch::Tensor& student_logits,
                                  const torch::Tensor& teacher_logits,
                                  const torch::Tensor& transition);

class Dfnd final : public Method {
 public:
  Dfnd(DfndOptions options, MethodDeps deps);
  std::string name() const override { return "dfnd"; }
  // Round 0 (or the first call): scores the pool and keeps the selection.
  void Synthesize(const RoundContext& ctx) override;
  torch::Tensor Sample(int64_t batch_size, const RoundContext& ctx) override;
  // Applies the pending theta step (the previous step's gradient) first.
  torch::Tensor DistillLoss(const DistillBatch& batch, const RoundContext& ctx) override;
  double temperature() const override { return options_.temperature(); }
  bool has_pool() const override { return true; }
  // The selection, normalised with pool_norm, select_chunk images at a time.
  void ForEachPoolChunk(const std::function<void(const torch::Tensor&)>& fn) override;
  torch::Tensor CachedPoolLogits(const torch::nn::Module& model) const override;
  nlohmann::json Describe() const override;
  void Save(torch::serialize::OutputArchive& archive) const override;
  void Load(torch::serialize::InputArchive& archive) override;

  // The selected indices into the pool (ascending); undefined before selection.
  const torch::Tensor& selection() const { return pool_.selection(); }
  bool selected() const { return selected_; }
  // Pool images this process's teacher scored (0 in a run resumed after selection).
  int64_t images_scored() const { return images_scored_; }
  // The teacher's argmax counts over the selection (int64 [C]).
  const torch::Tensor& class_histogram() const { return histogram_; }
  const torch::Tensor& theta() const { return theta_; }
  torch::optim::Adam& theta_optimizer() { return *theta_optimizer_; }
  int64_t theta_steps() const { return theta_steps_; }
  torch::Tensor Transition() const;  // Q for the current theta
  const UnlabeledSampler& pool() const { return pool_; }
  const DfndOptions& options() const { return options_; }

 private:
  void Select(Communicator* comm);
  void ApplyPendingThetaStep(Communicator* comm);
  torch::Device device() const;
  const Normalization& pool_norm() const;

  DfndOptions options_;
  MethodDeps deps_;
  UnlabeledSampler pool_;
  torch::Tensor theta_;  // [C, C-1], requires grad
  std::unique_ptr<torch::optim::Adam> theta_optimizer_;
  int64_t theta_steps_ = 0;
  bool selected_ = false;
  int64_t images_scored_ = 0;
  double selection_seconds_ = 0;  // wall time of the selection pass
  torch::Tensor histogram_;       // int64 [C]
  // The teacher's logits of the selection (ForEachPoolChunk's order), from
  // the selection's own pass; not checkpointed (KDCI's dictionary is).
  torch::Tensor selected_logits_;
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_METHODS_DFND_H_
