// `noise`: the sanity baseline. Substitute inputs are Gaussian noise in the
// normalised input space, scored with plain KD (KL at temperature T). Any real
// method must beat it; KDCI's own tests use it as the inner method.
#ifndef DFKD_WORKER_METHODS_NOISE_METHOD_H_
#define DFKD_WORKER_METHODS_NOISE_METHOD_H_

#include <torch/arg.h>

#include "worker/methods/method.h"

namespace dfkd::worker {

struct NoiseOptions {
  TORCH_ARG(double, temperature) = 20.0;     // the DFKD references' CIFAR T
  TORCH_ARG(double, stddev) = 1.0;           // of the noise, in normalised units
  TORCH_ARG(int64_t, synthesis_batch_size) = 256;
};

class NoiseMethod final : public Method {
 public:
  NoiseMethod(NoiseOptions options, MethodDeps deps);
  std::string name() const override { return "noise"; }
  void Synthesize(const RoundContext& ctx) override;
  torch::Tensor Sample(int64_t batch_size, const RoundContext& ctx) override;
  torch::Tensor DistillLoss(const DistillBatch& batch, const RoundContext& ctx) override;
  double temperature() const override { return options_.temperature(); }
  torch::Tensor LastSynthesized() const override { return last_; }
  nlohmann::json Describe() const override;
  void Save(torch::serialize::OutputArchive& archive) const override;
  void Load(torch::serialize::InputArchive& archive) override;

 private:
  // Noise seeded by (job seed, stream, index): a pure function, so a resumed
  // run draws exactly what an uninterrupted one would.
  torch::Tensor Noise(int64_t n, uint64_t seed, uint64_t stream, int64_t index) const;
  torch::Device device() const;  // the teacher's (CPU without one)

  NoiseOptions options_;
  MethodDeps deps_;
  torch::Tensor last_;
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_METHODS_NOISE_METHOD_H_
