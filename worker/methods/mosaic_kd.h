// `mosaickd`: MosaicKD (Fang et al., NeurIPS 2021, "Mosaicking to Distill:
// Knowledge Distillation from Out-of-Domain Data") as zju-vipa/MosaicKD
// kd_mosaic.py (a8d8e2c) implements it (dfkd-methods.md §7, §13, §14.9,
// §14.17).
//
// Substitute data: an unlabeled out-of-domain (OOD) pool (KDCI: 600k
// ImageNet images) plus "mosaicked" images from a generator G (G-C: G-B
// layout, nz 100, ngf 64) trained in a four-player game with a patch
// discriminator D (PatchDiscriminator, ndf 128), the frozen teacher and the
// student. One Synthesize() is one iteration of the reference's train loop:
//   1. D step (Adam lr_d, betas (0.5, 0.999)) on fake = normalise(G(z))
//      (detached; B = synthesis_batch_size) and real = B OOD images drawn
//      without augmentation and normalised with the task's statistics (the
//      reference swaps the in-domain test transform into the loader D reads):
//        L_D = w_local [sum BCE(D(fake), 0) + sum BCE(D(real), 1)] / (2B)
//      (sums over every patch logit);
//   2. G step (Adam lr_g, betas (0.5, 0.999)) on the same fake batch, D
//      already updated, t = T(fake) (eval), s = S(fake):
//        L_G = w_adv L_adv + w_align L_align + w_local L_local + w_balance L_balance
//      L_adv = -KL(p(t) || p(s)) at T = 1, batchmean (gradients through both
//        models into G); L_align = mean_b H(softmax(t_b)) (natural log);
//      L_local = sum BCE(D(fake), 1) / B; L_balance = sum_c pbar_c log2 pbar_c,
//        pbar = mean_b softmax(t_b);
// then the trainer's kd_steps student steps (5 in the reference:
// DefaultKdSteps("mosaickd")), each on Sample(batch) =
//   cat[normalise(G(z')) fresh, no grad, G in train mode: batch/2 ;
//       batch - batch/2 OOD images with crop + flip, normalised with pool_norm]
// scored with L_S = KL(t || s) at T = 1 (the code's default; README commands
// do not set it). The reference's batch is 256 + 256 = 512: a config batch of
// 512 matches it. The pool's OOD subset (`ood_subset`, §7.1): the teacher
// scores every pool image once (in chunks, normalised with the task's
// statistics, no augmentation, as the reference's prepare_ood_data reads its
// loader) and the `ood_subset` highest-entropy images are kept for both D and
// the student; the indices are checkpointed (the reference caches them in a
// file).
//
// Reference values: README commands' weights local 1, align 1, adv 1,
// balance 10 (the defaults here); kd_mosaic.py's own defaults if omitted are
// align 0.1, local 0.1, adv 1, balance 0. lr_g = lr_d = 1e-3 (the reference
// uses lr_g for both). G, D and the student follow CosineAnnealingLR stepped
// per iteration with T_max = the number of iterations; here G's and D's lr at
// round r is lr * (1 + cos(pi * min(r, R) / R)) / 2 with R = total_rounds
// (the factory passes ceil(total steps / kd_steps)); total_rounds 0 keeps the
// lr constant. The student's schedule is the trainer's.
//
// Where we chose:
// - Draws: the reference iterates shuffled loaders; here every draw is keyed,
//   so a resumed run draws what an uninterrupted one would: z and D's real
//   batch by (seed, round, rank), the student's z' and OOD half by (seed,
//   global step, rank); pool draws are with replacement.
// - The student in the G step runs in train mode, as the reference's (batch
//   statistics, so G sees the gradient the reference's does), but its BN
//   running statistics are restored afterwards, and only G gets gradients
//   (torch::autograd::grad): Synthesize() leaves teacher and student exactly
//   as it found them (the reference lets the G step update the student's BN
//   running statistics and leaves gradients on it until its next zero_grad).
// - Entropies use log_softmax (no NaN where a probability underflows to 0).
// - Several ranks: G's and D's gradients are averaged over ranks (the
//   reference's DDP), D's BatchNorm uses each rank's own batch (the reference
//   converts it to SyncBatchNorm); each rank draws its own z and OOD batches
//   of synthesis_batch_size images. The OOD-subset scoring is split over the
//   ranks chunk by chunk (ScorePool).
// - LastSynthesized() is undefined (a pool method): KDCI builds its
//   dictionary once from ForEachPoolChunk(), the selected pool normalised
//   with pool_norm (the generator's half is not in it, §14.9).
#ifndef DFKD_WORKER_METHODS_MOSAIC_KD_H_
#define DFKD_WORKER_METHODS_MOSAIC_KD_H_

#include <memory>
#include <vector>

#include <torch/arg.h>

#include "worker/data/transforms.h"
#include "worker/methods/method.h"
#include "worker/methods/unlabeled_sampler.h"
#include "worker/models/generator.h"
#include "worker/models/patch_discriminator.h"

namespace dfkd::worker {

struct MosaicKdOptions {
  TORCH_ARG(double, temperature) = 1.0;   // of the student's KD loss (the code's default)
  TORCH_ARG(int64_t, nz) = 100;           // z_dim
  TORCH_ARG(int64_t, ngf) = 64;
  TORCH_ARG(int64_t, ndf) = 128;
  TORCH_ARG(int64_t, synthesis_batch_size) = 256;  // fake and real batch of the G/D steps
  TORCH_ARG(double, lr_g) = 1e-3;
  TORCH_ARG(double, lr_d) = 1e-3;
  TORCH_ARG(double, local_weight) = 1.0;  // README commands (code default 0.1)
  TORCH_ARG(double, align_weight) = 1.0;  // README commands (code default 0.1)
  TORCH_ARG(double, adv_weight) = 1.0;
  TORCH_ARG(double, balance_weight) = 10.0;  // README commands (code default 0)
  TORCH_ARG(int64_t, ood_subset) = 0;     // > 0: keep this many highest-entropy pool images
  TORCH_ARG(int64_t, total_rounds) = 0;   // cosine T_max of G's and D's lr; 0 = constant
  TORCH_ARG(int64_t, score_chunk) = 1024; // images per teacher pass when scoring / chunking
  TORCH_ARG(int64_t, crop_padding) = 4;   // of the student's OOD half
  TORCH_ARG(Normalization, norm);         // the task's: generator images, D's real batch
  TORCH_ARG(torch::Tensor, pool);         // uint8 [N, C, H, W], CPU
  TORCH_ARG(Normalization, pool_norm);    // of the student's OOD half; empty = norm
};

// The generator's four terms (free functions for tests and logging).
// -KL(p(t) || p(s)) at T = 1, summed over classes, averaged over the batch;
// gradients flow into both logits (engine/criterions.py kldiv, negated).
torch::Tensor MosaicAdversarialLoss(const torch::Tensor& student_logits,
                                    const torch::Tensor& teacher_logits);
// Mean over the batch of the entropy (natural log) of softmax(t).
torch::Tensor AlignLoss(const torch::Tensor& teacher_logits);
// sum_c pbar_c log2 pbar_c, pbar = mean over the batch of softmax(t).
torch::Tensor BalanceLoss(const torch::Tensor& teacher_logits);
// sum over every element of BCE-with-logits(d, real ? 1 : 0), divided by the
// batch size d.size(0).
torch::Tensor PatchGanLoss(const torch::Tensor& patch_logits, bool real);
// w_local * [sum BCE(fake, 0) + sum BCE(real, 1)] / (2 * fake.size(0)).
torch::Tensor MosaicDiscriminatorLoss(const torch::Tensor& fake_logits,
                                      const torch::Tensor& real_logits, double local_weight);

struct MosaicGeneratorLosses {
  torch::Tensor adversarial, align, local, balance, total;
};
MosaicGeneratorLosses MosaicGeneratorLoss(const torch::Tensor& student_logits,
                                          const torch::Tensor& teacher_logits,
                                          const torch::Tensor& fake_patch_logits,
                                          const MosaicKdOptions& options);

// The latest iteration's losses, as numbers.
struct MosaicLossValues {
  double discriminator = 0, adversarial = 0, align = 0, local = 0, balance = 0, generator = 0;
};

class MosaicKd final : public Method {
 public:
  MosaicKd(MosaicKdOptions options, MethodDeps deps);
  std::string name() const override { return "mosaickd"; }
  void Synthesize(const RoundContext& ctx) override;
  torch::Tensor Sample(int64_t batch_size, const RoundContext& ctx) override;
  torch::Tensor DistillLoss(const DistillBatch& batch, const RoundContext& ctx) override;
  double temperature() const override { return options_.temperature(); }
  bool has_pool() const override { return true; }
  // The selected pool, normalised with pool_norm, score_chunk images at a time.
  void ForEachPoolChunk(const std::function<void(const torch::Tensor&)>& fn) override;
  nlohmann::json Describe() const override;
  void Save(torch::serialize::OutputArchive& archive) const override;
  void Load(torch::serialize::InputArchive& archive) override;

  Generator& generator() { return generator_; }
  PatchDiscriminator& discriminator() { return discriminator_; }
  torch::optim::Adam& generator_optimizer() { return *optimizer_g_; }
  torch::optim::Adam& discriminator_optimizer() { return *optimizer_d_; }
  const UnlabeledSampler& pool() const { return pool_; }
  // The OOD subset's indices into the pool (ascending); undefined while the
  // whole pool is used.
  const torch::Tensor& subset() const { return pool_.selection(); }
  // Pool images this process's teacher scored for the OOD subset.
  int64_t images_scored() const { return images_scored_; }
  const MosaicLossValues& last_losses() const { return last_losses_; }
  const MosaicKdOptions& options() const { return options_; }
  // G's and D's learning-rate factor at `round` (the cosine schedule).
  double LrFactor(int64_t round) const;

 private:
  // Scores the pool and keeps the OOD subset, once (ood_subset > 0).
  void EnsureSubset(Communicator* comm);
  torch::Device device() const;
  const Normalization& pool_norm() const;

  MosaicKdOptions options_;
  MethodDeps deps_;
  UnlabeledSampler pool_;
  Generator generator_;
  PatchDiscriminator discriminator_;
  std::unique_ptr<torch::optim::Adam> optimizer_g_, optimizer_d_;
  bool subset_ready_ = false;
  int64_t images_scored_ = 0;
  MosaicLossValues last_losses_;
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_METHODS_MOSAIC_KD_H_
