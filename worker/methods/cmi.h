// `cmi`: Contrastive Model Inversion (Fang et al., IJCAI 2021) as
// zju-vipa/Fast-Datafree implements it (datafree/synthesis/contrastive.py
// CMISynthesizer, with the values of scripts/cmi_cifar.sh and of
// datafree_kd.py: bank 40960, n_neg 4096, head dim 256; dfkd-methods.md
// §2.3-§2.5, §5; KDCI's CMI row, N = 32, §13).
//
// Every synthesis call (one per round, number c = ctx.round):
//   1. the generator G (G-A, nz 256, ngf 64; §9.5) is re-initialised
//      (reset_model: Conv/Linear weight ~ N(0, 0.02), bias 0; BN weight ~
//      N(1, 0.02), bias 0), a fresh latent batch z ~ N(0, 1) [B, nz] and
//      uniform random labels y (sorted, as the reference does);
//   2. g_steps iterations of a fresh Adam over {G, z} (lr_g, betas
//      (0.5, 0.999)) and of the persistent Adam of the projection head (lr_g,
//      default betas; created once, as the reference's optimizer_head), on
//      x = G(z) in [0, 1] and two views of it:
//        global = normalise(RandomCrop(pad crop_padding) + flip(x)),
//        local  = normalise(RandomResizedCrop(scale [local_scale_min, 1],
//                 ratio [3/4, 4/3]) + flip(x)),
//      t = T(global) (eval mode), s = S(global) (eval mode):
//        L_inv = w_bn L_bn + w_oh CE(t, y) + w_adv L_adv(s, t)
//          L_bn: DeepInversion's plain BN loss over every teacher BN (§2.3);
//          L_adv: the decision-adversarial term (§2.5; no warm-up gating);
//        h_g = [per-sample spatial means of every teacher BN's input] from
//          the same global pass (InstanceMeanHook), h_l = the same from a
//          second teacher pass on the local view, [B, D];
//        (h_l', h_g') = min(n_neg, bank entries) rows drawn uniformly without
//          replacement from the memory bank; P = head([h_l; h_l'; h_g; h_g'])
//          split in halves (P_l, P_g); logits = P_l P_g.detach()^T / tau;
//          per-row CE against the diagonal; L_cr = mean over the B current
//          rows + mean over the cached rows (the plain mean while the bank is
//          empty) = ContrastiveLoss();
//        L = L_inv + w_cr L_cr;
//   3. the lowest-L iteration's x (pre-step) joins a bounded uint8 pool
//      (truncating quantisation, as the reference's PNG writer), and its
//      [h_l, h_g] (detached, CPU) joins the circular memory bank.
// The head (MlpHead: Linear(D, D) -> ReLU -> Linear(D, head_dim) ->
// L2-normalise) sees gradients through P_l only (P_g is detached), as in the
// reference. The student is distilled with plain KD (T = 20) on pool batches
// with the task's train transform (crop + flip), as FastMethod does.
//
// Reference values (scripts/cmi_cifar.sh, wrn40_2 -> wrn16_1): batch 256,
// g_steps 200, lr_g 1e-3, adv 0.5, bn 1, oh 1, cr 0.8, cr_T 0.2 (the CMI
// repo's scripts: 0.1, §14.12), T 20, kd_steps = ep_steps = 400; the pool
// ends at 200 x 256 = 51,200 images. The README's "CMI-500" label is not
// what any script runs (§14.12); g_steps 200 is.
//
// Where sources disagree, or the reference's structure does not map 1:1:
// - Feature layers: the reference hooks layer1..layer4 of a resnet34
//   teacher (the block inputs) and every BatchNorm2d otherwise. Here every
//   teacher gets the BN-input means; the resnet34 special case is not built.
//   The reference concatenates in module-registration order, here in forward
//   order: a fixed permutation of the D features, immaterial to the head.
// - Memory bank: the reference samples from the whole bank only once
//   n_updates > max_size (strictly); at exactly n_updates == max_size (call
//   161 with the CIFAR values) _ptr is 0, it draws no negatives and the
//   "cached rows" mean is the mean of nothing, NaN, which then poisons the
//   head for good. Here the bank samples from all its entries once full.
// - cr_weight 0 (the reference's "tuned fast" script): the reference would
//   raise (local_feature undefined when keeping the best batch); here the
//   local view, the second teacher pass, the head and the bank are skipped.
// - Augmentation: kornia's RandomResizedCrop is rebuilt with torchvision's
//   box draw (10 tries, then the centre crop) and a bilinear resize with
//   align_corners = true (kornia's default) via grid_sample. Draws per
//   iteration: the global view's (dy, dx, flip) for every sample, then the
//   local view's (box, flip) for every sample.
// - Our choices: only G, z and the head get gradients
//   (torch::autograd::grad): neither model accumulates parameter gradients.
//   The generator's BN running statistics are reset with it (it only runs in
//   train mode, so they never matter). Sample() draws with replacement keyed
//   by (seed, global step, rank), as FastMethod does.
// - Several ranks: z, y, the views and the bank draws are keyed by
//   (seed, call, rank); the generator's reset is keyed without the rank, and
//   the generator's and the head's gradients are averaged over ranks every
//   inner step (z's are not: each rank owns its latent batch), so G and the
//   head (initialised identically: every rank seeds torch alike before
//   building the method) stay identical on every rank, as the root's
//   checkpoint assumes. Each rank keeps its own pool and memory bank and
//   synthesizes synthesis_batch_size images per call. Cost: the head's
//   gradient (D^2 + D * head_dim floats; ~8M for wrn40_2) is all-reduced
//   every inner step.
// - Checkpoints hold the pool, the bank's written rows (up to bank_size x
//   2D floats: ~0.9 GB for wrn40_2 at 40960 entries), the head and its
//   optimizer, and the last kept batch. The generator is not saved: it is
//   re-initialised from a keyed seed at every call.
#ifndef DFKD_WORKER_METHODS_CMI_H_
#define DFKD_WORKER_METHODS_CMI_H_

#include <memory>
#include <random>
#include <string>
#include <vector>

#include <torch/arg.h>
#include <torch/torch.h>

#include "worker/data/transforms.h"
#include "worker/methods/image_pool.h"
#include "worker/methods/method.h"
#include "worker/models/generator.h"

namespace dfkd::worker {

struct CmiOptions {
  TORCH_ARG(double, temperature) = 20.0;     // of the student's KD loss
  TORCH_ARG(int64_t, nz) = 256;
  TORCH_ARG(int64_t, ngf) = 64;
  TORCH_ARG(int64_t, synthesis_batch_size) = 256;
  TORCH_ARG(int64_t, g_steps) = 200;         // iterations per call
  TORCH_ARG(double, lr_g) = 1e-3;            // Adam over {G, z}, and the head's Adam
  TORCH_ARG(double, bn_weight) = 1.0;
  TORCH_ARG(double, oh_weight) = 1.0;
  TORCH_ARG(double, adv_weight) = 0.5;
  TORCH_ARG(double, cr_weight) = 0.8;        // 0 = no contrastive term (no head, no bank)
  TORCH_ARG(double, cr_temperature) = 0.2;   // tau (cr_T); the CMI repo's scripts use 0.1
  TORCH_ARG(int64_t, head_dim) = 256;
  TORCH_ARG(int64_t, bank_size) = 40960;     // memory-bank entries
  TORCH_ARG(int64_t, n_neg) = 4096;          // cached entries drawn per iteration
  TORCH_ARG(double, local_scale_min) = 0.25;  // RandomResizedCrop scale lower bound
  TORCH_ARG(int64_t, pool_max_images) = 51200;  // 200 calls x 256: never binds at CIFAR scale
  TORCH_ARG(int64_t, crop_padding) = 4;      // of the global view and of Sample()
  TORCH_ARG(Normalization, norm);            // the task's; set by the caller
};

// The projection head (the reference's MLPHead): Linear(D, D) -> ReLU ->
// Linear(D, head_dim), rows L2-normalised.
class MlpHeadImpl : public torch::nn::Module {
 public:
  MlpHeadImpl(int64_t dim_in, int64_t dim_out);
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(MlpHead);

// The reference's "naive" contrastive loss. Rows 0..n_current-1 of
// `proj_local` / `proj_global` [N, d] are the current batch, the rest cached
// entries. logits = proj_local proj_global.detach()^T / tau (N x N); per-row
// CE with target i for row i; returns mean(rows < n_current) + mean(rows >=
// n_current), or the plain mean when N == n_current. Gradients reach
// proj_local only.
torch::Tensor ContrastiveLoss(const torch::Tensor& proj_local, const torch::Tensor& proj_global,
                              int64_t n_current, double tau);

// The reference's reset_model on G-A: every Conv2d/Linear weight ~ N(0, 0.02)
// and bias 0; every BatchNorm2d weight ~ N(1, 0.02), bias 0 (and its running
// statistics reset). Draws in module order from a CPU generator seeded `key`.
void ResetGenerator(Generator& generator, uint64_t key);

// A crop box in pixels: rows [top, top + height), columns [left, left + width).
struct CropBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

// torchvision's RandomResizedCrop.get_params for an h x w image, scale
// [scale_min, 1], ratio [3/4, 4/3]: up to 10 tries, then the centre crop.
CropBox DrawResizedCropBox(int64_t h, int64_t w, double scale_min, std::mt19937_64& rng);

// Crops boxes[i] of x[i] [B, C, H, W], resizes it to H x W (bilinear,
// align_corners = true) and mirrors it horizontally when flips[i];
// differentiable w.r.t. x.
torch::Tensor ResizedCropFlip(const torch::Tensor& x, const std::vector<CropBox>& boxes,
                              const std::vector<bool>& flips);

// CMI's local view before normalisation: per sample a DrawResizedCropBox box
// then a flip with p = 0.5 (in that order), then ResizedCropFlip.
torch::Tensor RandomResizedCropFlip(const torch::Tensor& x, double scale_min,
                                    std::mt19937_64& rng);

// The circular memory bank of [h_l, h_g] rows (the reference's MemoryBank,
// on the CPU). Storage is allocated at the first Add().
class MemoryBank {
 public:
  explicit MemoryBank(int64_t capacity);

  // Writes the rows [n, dim] (detached, as float on the CPU) at the write
  // position onwards, wrapping around; dim is fixed by the first call.
  void Add(const torch::Tensor& rows);
  // min(k, size()) distinct entries drawn uniformly among the written ones
  // (random.sample), from `gen`. Requires size() > 0 and k >= 1.
  torch::Tensor Sample(int64_t k, at::Generator& gen) const;

  int64_t capacity() const { return capacity_; }
  int64_t size() const { return updates_ < capacity_ ? updates_ : capacity_; }
  int64_t position() const { return position_; }  // the next row written
  int64_t updates() const { return updates_; }    // rows added so far
  // [capacity, dim] storage; undefined before the first Add().
  const torch::Tensor& data() const { return data_; }

  // Written under `key`_*; Load() restores an empty bank when absent.
  void Save(torch::serialize::OutputArchive& archive, const std::string& key) const;
  void Load(torch::serialize::InputArchive& archive, const std::string& key);

 private:
  int64_t capacity_;
  torch::Tensor data_;  // float CPU
  int64_t position_ = 0;
  int64_t updates_ = 0;
};

// The latest inner iteration's terms (for tests and logging).
struct CmiLosses {
  double bn = 0, one_hot = 0, adversarial = 0, contrastive = 0, total = 0;
};

class CmiMethod final : public Method {
 public:
  CmiMethod(CmiOptions options, MethodDeps deps);
  std::string name() const override { return "cmi"; }
  void Synthesize(const RoundContext& ctx) override;
  torch::Tensor Sample(int64_t batch_size, const RoundContext& ctx) override;
  torch::Tensor DistillLoss(const DistillBatch& batch, const RoundContext& ctx) override;
  double temperature() const override { return options_.temperature(); }
  // The kept batch of the latest call, normalised float [B, C, H, W].
  torch::Tensor LastSynthesized() const override { return last_; }
  nlohmann::json Describe() const override;
  void Save(torch::serialize::OutputArchive& archive) const override;
  void Load(torch::serialize::InputArchive& archive) override;

  Generator& generator() { return generator_; }
  MlpHead& head() { return head_; }
  const ImagePool& pool() const { return pool_; }
  const MemoryBank& bank() const { return bank_; }
  // D: the summed channels of the teacher's BN layers.
  int64_t feature_dim() const { return feature_dim_; }
  const CmiLosses& last_losses() const { return last_losses_; }
  const CmiOptions& options() const { return options_; }

 private:
  torch::Device device() const;

  CmiOptions options_;
  MethodDeps deps_;
  int64_t feature_dim_ = 0;
  Generator generator_;  // re-initialised at every call
  MlpHead head_{nullptr};
  std::unique_ptr<torch::optim::Adam> head_optimizer_;
  ImagePool pool_;
  MemoryBank bank_;
  torch::Tensor last_;  // normalised float
  CmiLosses last_losses_;
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_METHODS_CMI_H_
