#include "worker/methods/dafl.h"

#include <ATen/CPUGeneratorImpl.h>

#include "worker/methods/optimizer_state.h"
#include "worker/methods/losses.h"
#include "worker/methods/seeding.h"

namespace dfkd::worker {

DaflLosses DaflGeneratorLoss(const torch::Tensor& t, const torch::Tensor& f,
                             const DaflOptions& o) {
  DaflLosses l;
  l.one_hot = torch::cross_entropy_loss(t, t.argmax(1));
  torch::Tensor pbar = torch::softmax(t, 1).mean(0);
  l.information_entropy = (pbar * torch::log(pbar)).sum();  // natural log (§3.3)
  l.activation = -f.abs().mean();
  l.total = o.oh_weight() * l.one_hot + o.ie_weight() * l.information_entropy +
            o.act_weight() * l.activation;
  return l;
}

Dafl::Dafl(DaflOptions options, MethodDeps deps)
    : options_(std::move(options)), deps_(std::move(deps)),
      generator_(GeneratorOptions(options_.nz())
                     .img_size(deps_.image_shape.at(1))
                     .channels(deps_.image_shape.at(0))) {
  TORCH_CHECK(!options_.norm().mean.empty(), "dafl: normalisation constants required");
  generator_->to(device());  // before the optimizer takes its parameters
  optimizer_ = std::make_unique<torch::optim::Adam>(
      generator_->parameters(),
      torch::optim::AdamOptions(options_.lr_g()).betas({0.5, 0.999}));
}

torch::Tensor Dafl::Z(int64_t n, uint64_t stream, int64_t index, const RoundContext& ctx) const {
  at::Generator gen = at::detail::createCPUGenerator(
      StreamSeed(ctx.seed, stream, static_cast<uint64_t>(index) ^ (RankOf(ctx) << 40)));
  // Drawn on the CPU (the same numbers on any device), then moved.
  return torch::randn({n, options_.nz()}, gen, torch::kFloat32).to(device());
}

torch::Device Dafl::device() const {
  return DeviceOf(*deps_.teacher);
}

torch::Tensor Dafl::Images(const torch::Tensor& z) {
  return NormalizeUnit(generator_->forward(z), options_.norm());
}

void Dafl::Synthesize(const RoundContext& ctx) {
  const bool teacher_training = deps_.teacher->is_training();
  deps_.teacher->eval();
  generator_->train();
  for (int64_t i = 0; i < options_.g_steps(); ++i) {
    torch::Tensor x = Images(Z(options_.synthesis_batch_size(), 1,
                               ctx.round * options_.g_steps() + i, ctx));
    ClassifierOutput t = deps_.teacher->ForwardWithTaps(x, {});
    last_losses_ = DaflGeneratorLoss(t.logits, t.features, options_);
    optimizer_->zero_grad();
    last_losses_.total.backward();
    // Ranks draw different z; averaging keeps their generators identical.
    if (ctx.comm != nullptr) AverageGradients(*ctx.comm, generator_->parameters());
    optimizer_->step();
    last_ = x.detach();
  }
  // The teacher is frozen; drop any gradient the generator loss left on it.
  deps_.teacher->zero_grad();
  deps_.teacher->train(teacher_training);
}

torch::Tensor Dafl::Sample(int64_t batch_size, const RoundContext& ctx) {
  torch::NoGradGuard no_grad;
  generator_->train();  // Fast-Datafree samples with batch statistics
  return Images(Z(batch_size, 2, ctx.global_step, ctx));
}

torch::Tensor Dafl::DistillLoss(const DistillBatch& batch, const RoundContext&) {
  return KdLoss(batch.KdStudentLogits(), batch.teacher.logits, options_.temperature());
}

nlohmann::json Dafl::Describe() const {
  return {{"method", "dafl"},
          {"temperature", options_.temperature()},
          {"nz", options_.nz()},
          {"synthesis_batch_size", options_.synthesis_batch_size()},
          {"g_steps", options_.g_steps()},
          {"lr_g", options_.lr_g()},
          {"oh_weight", options_.oh_weight()},
          {"ie_weight", options_.ie_weight()},
          {"act_weight", options_.act_weight()}};
}

void Dafl::Save(torch::serialize::OutputArchive& archive) const {
  torch::serialize::OutputArchive g, o;
  generator_->save(g);
  optimizer_->save(o);
  archive.write("generator", g);
  archive.write("generator_optimizer", o);
  if (last_.defined()) archive.write("last_synthesized", last_.cpu());
}

void Dafl::Load(torch::serialize::InputArchive& archive) {
  torch::serialize::InputArchive g, o;
  archive.read("generator", g);
  generator_->load(g);
  const torch::Device dev = device();
  generator_->to(dev);  // load() may have put CPU tensors in place; same tensors, moved back
  archive.read("generator_optimizer", o);
  optimizer_->load(o);
  MoveOptimizerState(*optimizer_, dev);
  torch::Tensor t;
  if (archive.try_read("last_synthesized", t)) last_ = t.to(dev);
}

}  // namespace dfkd::worker
