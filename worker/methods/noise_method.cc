#include "worker/methods/noise_method.h"

#include <ATen/CPUGeneratorImpl.h>

#include "worker/methods/losses.h"
#include "worker/methods/seeding.h"

namespace dfkd::worker {

NoiseMethod::NoiseMethod(NoiseOptions options, MethodDeps deps)
    : options_(options), deps_(std::move(deps)) {
  TORCH_CHECK(deps_.image_shape.size() == 3, "noise: image shape must be {C, H, W}");
}

torch::Tensor NoiseMethod::Noise(int64_t n, uint64_t seed, uint64_t stream,
                                 int64_t index) const {
  at::Generator gen =
      at::detail::createCPUGenerator(StreamSeed(seed, stream, static_cast<uint64_t>(index)));
  std::vector<int64_t> shape = {n};
  shape.insert(shape.end(), deps_.image_shape.begin(), deps_.image_shape.end());
  // Drawn on the CPU (the same numbers on any device), then moved.
  return (torch::randn(shape, gen, torch::kFloat32) * options_.stddev()).to(device());
}

torch::Device NoiseMethod::device() const {
  return deps_.teacher ? DeviceOf(*deps_.teacher) : torch::Device(torch::kCPU);
}

void NoiseMethod::Synthesize(const RoundContext& ctx) {
  last_ = Noise(options_.synthesis_batch_size(), ctx.seed, 1, ctx.round);
}

torch::Tensor NoiseMethod::Sample(int64_t batch_size, const RoundContext& ctx) {
  // Each rank draws its own share of the global batch.
  return Noise(batch_size, ctx.seed, 2 + (RankOf(ctx) << 8), ctx.global_step);
}

torch::Tensor NoiseMethod::DistillLoss(const DistillBatch& batch, const RoundContext&) {
  return KdLoss(batch.KdStudentLogits(), batch.teacher.logits, options_.temperature());
}

nlohmann::json NoiseMethod::Describe() const {
  return {{"method", "noise"},
          {"temperature", options_.temperature()},
          {"stddev", options_.stddev()},
          {"synthesis_batch_size", options_.synthesis_batch_size()}};
}

void NoiseMethod::Save(torch::serialize::OutputArchive& archive) const {
  if (last_.defined()) archive.write("last_synthesized", last_.cpu());
}

void NoiseMethod::Load(torch::serialize::InputArchive& archive) {
  torch::Tensor t;
  if (archive.try_read("last_synthesized", t)) last_ = t.to(device());
}

}  // namespace dfkd::worker
