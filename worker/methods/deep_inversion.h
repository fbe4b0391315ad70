// `deepinv`: DeepInversion (Yin et al., CVPR 2020) as zju-vipa/Fast-Datafree
// implements it (datafree/synthesis/deepinversion.py), the code KDCI's
// DeepInv numbers come from (dfkd-methods.md §2.2-§2.5, §6).
//
// Each round optimises one batch of pixels, from N(0, 1) noise in the
// normalised input space, with Adam (lr 0.1, betas (0.5, 0.99), g_steps 1000)
// on a jittered (torch.roll by up to `jitter` pixels in H and W) and flipped
// (p = 0.5, whole batch) view of the batch:
//   L = w_bn * (sum_teacherBN r - student_bn_weight * sum_studentBN r)
//     + w_oh * CE(t, y) - w_adv * JS(s, t; T = 3)
//     + w_tv * TV_l1(x) + w_l2 * ||x||_2
// with r = ||running_var - var||_2 + ||running_mean - mean||_2 per BN layer,
// y uniform random labels, both models in eval mode. Reference choices taken:
// Fast-Datafree's weights (bn 10, oh 1, adv 1, tv 0, l2 0), its fixed -0.001
// student-BN term, jitter + flip, x clipped per channel to the image range
// after every step, kept batch = the lowest-loss iterate (the reference's
// intent; its `best_inputs = inputs.data` aliases the live pixels, which Adam
// and clip_images update in place, so its code in effect keeps the final
// iterate: keep_lowest_loss(false)), kept batch quantised to uint8 into a
// bounded pool (the reference's PNG pool; rounded to the nearest level, where
// the reference's PNG writer truncates), plain KD (T = 20) on pool batches
// augmented with the data set's train transform (crop pad 4 + flip).
//
// Our choice, not the reference's: the reference iterates a shuffled loader
// over the pool; Sample() instead draws with replacement from a generator
// keyed by (seed, global step, rank), so a resumed run draws exactly the
// batches an uninterrupted one would. Synthesis is keyed by (seed, round,
// rank) likewise. Only the pixels get gradients (torch::autograd::grad), so
// neither model accumulates parameter gradients during Synthesize().
#ifndef DFKD_WORKER_METHODS_DEEP_INVERSION_H_
#define DFKD_WORKER_METHODS_DEEP_INVERSION_H_

#include <vector>

#include <torch/arg.h>

#include "worker/data/transforms.h"
#include "worker/methods/image_pool.h"
#include "worker/methods/method.h"

namespace dfkd::worker {

struct DeepInversionOptions {
  TORCH_ARG(double, temperature) = 20.0;  // of the student's KD loss
  TORCH_ARG(int64_t, synthesis_batch_size) = 256;
  TORCH_ARG(int64_t, g_steps) = 1000;  // Adam iterations per round
  TORCH_ARG(double, lr) = 0.1;
  TORCH_ARG(double, adam_beta1) = 0.5;
  TORCH_ARG(double, adam_beta2) = 0.99;
  TORCH_ARG(double, bn_weight) = 10.0;
  TORCH_ARG(double, oh_weight) = 1.0;
  TORCH_ARG(double, adv_weight) = 1.0;
  TORCH_ARG(double, tv_weight) = 0.0;
  TORCH_ARG(double, l2_weight) = 0.0;
  // Factor of the student's BN term inside the bn term (Fast-Datafree's 0.001).
  TORCH_ARG(double, student_bn_weight) = 0.001;
  TORCH_ARG(int64_t, jitter) = 4;  // max roll in pixels (also for 28x28)
  TORCH_ARG(bool, flip) = true;
  TORCH_ARG(double, js_temperature) = 3.0;
  TORCH_ARG(int64_t, pool_max_images) = 51200;  // oldest dropped beyond this
  TORCH_ARG(int64_t, crop_padding) = 4;         // of Sample()'s random crop
  TORCH_ARG(bool, keep_lowest_loss) = true;     // false: keep the final iterate
  TORCH_ARG(Normalization, norm);               // the task's; set by the caller
};

class DeepInversion final : public Method {
 public:
  DeepInversion(DeepInversionOptions options, MethodDeps deps);
  std::string name() const override { return "deepinv"; }
  void Synthesize(const RoundContext& ctx) override;
  torch::Tensor Sample(int64_t batch_size, const RoundContext& ctx) override;
  torch::Tensor DistillLoss(const DistillBatch& batch, const RoundContext& ctx) override;
  double temperature() const override { return options_.temperature(); }
  // The kept batch of the latest round, normalised float [B, C, H, W].
  torch::Tensor LastSynthesized() const override { return last_; }
  nlohmann::json Describe() const override;
  void Save(torch::serialize::OutputArchive& archive) const override;
  void Load(torch::serialize::InputArchive& archive) override;

  // uint8 [N, C, H, W], oldest first; undefined before the first round.
  const torch::Tensor& pool() const { return pool_.images(); }
  int64_t pool_size() const { return pool_.size(); }
  const DeepInversionOptions& options() const { return options_; }

 private:
  torch::Device device() const;
  // x clamped per channel to [(0 - mean) / std, (1 - mean) / std].
  torch::Tensor ClampToImageRange(const torch::Tensor& x) const;

  DeepInversionOptions options_;
  MethodDeps deps_;
  ImagePool pool_;       // rounded to the nearest uint8 level
  torch::Tensor last_;   // normalised float
};

// sum over taps of ||running_var - variance||_2 + ||running_mean - mean||_2
// (plain L2 norms, not squared); a zero scalar for no taps.
torch::Tensor BnStatisticsLoss(const std::vector<BatchNormTap>& taps);

// Fast-Datafree's criterions.jsdiv: P = softmax(s / T), Q = softmax(t / T),
// M = (P + Q) / 2, all three clamped to [0.01, 0.99],
// 0.5 * KL(M || P) + 0.5 * KL(M || Q), each "batchmean" (sum / B).
torch::Tensor JsDivergence(const torch::Tensor& s, const torch::Tensor& t,
                           double temperature);

// TV-L1 of [B, C, H, W]: the sum over the horizontal, vertical and two
// diagonal neighbour differences of mean |difference|.
torch::Tensor TotalVariationL1(const torch::Tensor& x);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_METHODS_DEEP_INVERSION_H_
