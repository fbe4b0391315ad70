// DAFL (Chen et al., ICCV 2019) as Fast-Datafree re-implemented it, which is
// what produced KDCI's DAFL numbers (dfkd-methods.md §3; §14.13 lists how the
// original differs).
//
// Substitute data: a generator G (G-A, nz 512, Adam lr 1e-3, betas 0.5/0.999)
// trained so the frozen teacher gives confident, class-balanced, strongly
// activated outputs:
//   L_G = w_oh CE(t, argmax t) + w_ie sum_c pbar_c ln pbar_c - w_a mean|f|
// (t teacher logits, f teacher penultimate features, pbar = mean_b softmax(t)),
// w_oh 1, w_ie 20, w_a 0.001 (Fast-Datafree scripts). A round is g_steps
// generator steps; the student then takes kd_steps steps (5 in the scripts)
// on fresh G(z) samples (no pool), with G in train mode as in Fast-Datafree.
// Student loss: KL at T = 20.
//
// Noise z is drawn from generators seeded by (job seed, round or step, rank),
// so a resumed run draws what an uninterrupted one would.
#ifndef DFKD_WORKER_METHODS_DAFL_H_
#define DFKD_WORKER_METHODS_DAFL_H_

#include <memory>

#include <torch/arg.h>

#include "worker/data/transforms.h"
#include "worker/methods/method.h"
#include "worker/models/generator.h"

namespace dfkd::worker {

struct DaflOptions {
  TORCH_ARG(double, temperature) = 20.0;
  TORCH_ARG(int64_t, nz) = 512;
  TORCH_ARG(int64_t, synthesis_batch_size) = 256;
  TORCH_ARG(int64_t, g_steps) = 1;
  TORCH_ARG(double, lr_g) = 1e-3;
  TORCH_ARG(double, oh_weight) = 1.0;
  TORCH_ARG(double, ie_weight) = 20.0;
  TORCH_ARG(double, act_weight) = 0.001;
  TORCH_ARG(Normalization, norm);
};

// The three generator terms, separately (for tests and logging).
struct DaflLosses {
  torch::Tensor one_hot, information_entropy, activation, total;
};
DaflLosses DaflGeneratorLoss(const torch::Tensor& teacher_logits,
                             const torch::Tensor& teacher_features, const DaflOptions& o);

class Dafl final : public Method {
 public:
  Dafl(DaflOptions options, MethodDeps deps);
  std::string name() const override { return "dafl"; }
  void Synthesize(const RoundContext& ctx) override;
  torch::Tensor Sample(int64_t batch_size, const RoundContext& ctx) override;
  torch::Tensor DistillLoss(const DistillBatch& batch, const RoundContext& ctx) override;
  double temperature() const override { return options_.temperature(); }
  torch::Tensor LastSynthesized() const override { return last_; }
  nlohmann::json Describe() const override;
  void Save(torch::serialize::OutputArchive& archive) const override;
  void Load(torch::serialize::InputArchive& archive) override;
  Generator& generator() { return generator_; }
  const DaflLosses& last_losses() const { return last_losses_; }

 private:
  torch::Tensor Z(int64_t n, uint64_t stream, int64_t index, const RoundContext& ctx) const;
  torch::Tensor Images(const torch::Tensor& z);  // normalised, model-ready
  torch::Device device() const;  // the teacher's: where G, z and the images live

  DaflOptions options_;
  MethodDeps deps_;
  Generator generator_;
  std::unique_ptr<torch::optim::Adam> optimizer_;
  torch::Tensor last_;
  DaflLosses last_losses_;
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_METHODS_DAFL_H_
