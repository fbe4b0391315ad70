// FastDFKD (Fast-Datafree's FastMetaSynthesizer); see fast_meta.h for the
// reference choices taken.
#include "worker/methods/fast_meta.h"

#include <limits>
#include <string>
#include <utility>

#include <ATen/CPUGeneratorImpl.h>

#include "worker/methods/optimizer_state.h"
#include "worker/methods/deep_inversion.h"
#include "worker/methods/losses.h"
#include "worker/methods/mode_guard.h"
#include "worker/methods/seeding.h"

namespace dfkd::worker {

namespace {

Generator MakeGenerator(const FastOptions& o, const MethodDeps& deps) {
  TORCH_CHECK(deps.image_shape.size() == 3, "fast: image shape must be {C, H, W}");
  TORCH_CHECK(deps.image_shape[1] == deps.image_shape[2], "fast: images must be square");
  TORCH_CHECK(o.nz() > 0 && o.ngf() > 0, "fast: nz and ngf must be positive");
  return Generator(GeneratorOptions(o.nz())
                       .ngf(o.ngf())
                       .img_size(deps.image_shape[1])
                       .channels(deps.image_shape[0]));
}

}  // namespace

torch::Tensor MomentumBnLoss(const std::vector<BatchNormTap>& taps,
                             const std::vector<BnMoments>& ema, double momentum) {
  if (ema.empty()) return BnStatisticsLoss(taps);
  TORCH_CHECK(ema.size() == taps.size(), "MomentumBnLoss: ", ema.size(),
              " moving averages for ", taps.size(), " BN layers");
  torch::Tensor loss;
  for (size_t i = 0; i < taps.size(); ++i) {
    const BatchNormTap& tap = taps[i];
    torch::Tensor r =
        (tap.running_var - (1 - momentum) * tap.variance - momentum * ema[i].variance).norm() +
        (tap.running_mean - (1 - momentum) * tap.mean - momentum * ema[i].mean).norm();
    loss = loss.defined() ? loss + r : r;
  }
  return loss.defined() ? loss : torch::tensor(0.0f);
}

std::vector<BnMoments> UpdateBnMoments(const std::vector<BnMoments>& ema,
                                       const std::vector<BnMoments>& current, double momentum) {
  torch::NoGradGuard no_grad;
  std::vector<BnMoments> out;
  out.reserve(current.size());
  if (ema.empty()) {
    for (const BnMoments& c : current) {
      out.push_back({c.mean.detach().clone(), c.variance.detach().clone()});
    }
    return out;
  }
  TORCH_CHECK(ema.size() == current.size(), "UpdateBnMoments: ", ema.size(),
              " moving averages for ", current.size(), " BN layers");
  for (size_t i = 0; i < current.size(); ++i) {
    out.push_back({momentum * ema[i].mean + (1 - momentum) * current[i].mean.detach(),
                   momentum * ema[i].variance + (1 - momentum) * current[i].variance.detach()});
  }
  return out;
}

torch::Tensor DecisionAdversarialLoss(const torch::Tensor& s, const torch::Tensor& t) {
  TORCH_CHECK(s.dim() == 2 && s.sizes() == t.sizes(), "DecisionAdversarialLoss: logits ",
              s.sizes(), " vs ", t.sizes());
  torch::Tensor mask;
  {
    torch::NoGradGuard no_grad;
    mask = s.argmax(1).eq(t.argmax(1)).to(s.scalar_type());
  }
  torch::Tensor log_p_t = torch::log_softmax(t, 1);
  // F.kl_div(log_softmax(s), softmax(t), reduction='none').sum(1): p_t = 0
  // entries contribute 0, as exp(log_p_t) * finite does.
  torch::Tensor kl = (log_p_t.exp() * (log_p_t - torch::log_softmax(s, 1))).sum(1);
  return -(kl * mask).mean();
}

torch::Tensor AugmentCropFlip(const torch::Tensor& x, int64_t padding, bool flip,
                              std::mt19937_64& rng) {
  TORCH_CHECK(x.dim() == 4, "AugmentCropFlip expects [B, C, H, W]");
  TORCH_CHECK(padding >= 0, "AugmentCropFlip: padding must be >= 0");
  if (padding == 0 && !flip) return x;
  const int64_t b = x.size(0), h = x.size(2), w = x.size(3);
  torch::Tensor src =
      padding > 0 ? torch::constant_pad_nd(x, {padding, padding, padding, padding}, 0) : x;
  std::uniform_int_distribution<int64_t> offset(0, 2 * padding);
  std::bernoulli_distribution coin(0.5);
  std::vector<torch::Tensor> out;
  out.reserve(static_cast<size_t>(b));
  for (int64_t i = 0; i < b; ++i) {
    const int64_t dy = offset(rng), dx = offset(rng);
    const bool do_flip = flip && coin(rng);
    torch::Tensor crop = src[i].narrow(1, dy, h).narrow(2, dx, w);
    out.push_back(do_flip ? crop.flip({2}) : crop);
  }
  return torch::stack(out);
}

FastMethod::FastMethod(FastOptions options, MethodDeps deps)
    : options_(std::move(options)), deps_(std::move(deps)),
      generator_(MakeGenerator(options_, deps_)), fast_(MakeGenerator(options_, deps_)),
      pool_(options_.pool_max_images(), ImagePool::Quantize::kTruncate) {
  const FastOptions& o = options_;
  TORCH_CHECK(deps_.teacher && deps_.student, "fast: teacher and student required");
  TORCH_CHECK(deps_.num_classes > 0, "fast: num_classes must be positive");
  TORCH_CHECK(o.synthesis_batch_size() > 0, "fast: synthesis_batch_size must be positive");
  TORCH_CHECK(o.g_steps() >= 1, "fast: g_steps must be >= 1");
  TORCH_CHECK(o.lr_g() >= 0 && o.lr_z() >= 0, "fast: learning rates must be >= 0");
  TORCH_CHECK(o.bn_momentum() >= 0 && o.bn_momentum() < 1, "fast: bn_momentum must be in [0, 1)");
  TORCH_CHECK(o.warmup() >= 0, "fast: warmup must be >= 0");
  TORCH_CHECK(o.reset_l0_after() >= 0, "fast: reset_l0_after must be >= 0");
  TORCH_CHECK(o.crop_padding() >= 0, "fast: crop_padding must be >= 0");
  const size_t nm = o.norm().mean.size();
  TORCH_CHECK(nm > 0 && nm == o.norm().std.size(),
              "fast: normalisation mean/std missing or of different lengths");
  TORCH_CHECK(nm == 1 || static_cast<int64_t>(nm) == deps_.image_shape[0],
              "fast: normalisation has ", nm, " channels, images have ", deps_.image_shape[0]);
  const torch::Device dev = device();
  generator_->to(dev);
  fast_->to(dev);
  generator_->train();
  fast_->train();
  meta_optimizer_ = std::make_unique<torch::optim::Adam>(
      generator_->parameters(),
      torch::optim::AdamOptions(o.lr_g() * static_cast<double>(o.g_steps())).betas({0.5, 0.999}));
}

torch::Device FastMethod::device() const {
  return DeviceOf(*deps_.teacher);
}

void FastMethod::ResetL0(int64_t call, uint64_t seed) {
  // Keyed without the rank: every rank must reset G identically.
  at::Generator gen = at::detail::createCPUGenerator(
      StreamSeed(seed, 4, static_cast<uint64_t>(call)));
  torch::NoGradGuard no_grad;
  auto reset = [&](torch::Tensor weight, torch::Tensor bias) {
    weight.copy_(torch::randn(weight.sizes(), gen, torch::kFloat32) * 0.02);  // N(0, 0.02)
    bias.zero_();
  };
  reset(generator_->l1->weight, generator_->l1->bias);    // the reference's l1.0
  reset(generator_->bn0->weight, generator_->bn0->bias);  // the reference's conv_blocks.0
}

void FastMethod::Synthesize(const RoundContext& ctx) {
  // Round 0 also makes the warm-up calls; round r > 0 makes call r + warmup + 1.
  const int64_t last = ctx.round + options_.warmup() + 1;
  const int64_t first = ctx.round == 0 ? 1 : last;
  ModeGuard teacher_mode(*deps_.teacher);
  ModeGuard student_mode(*deps_.student);
  deps_.teacher->eval();
  deps_.student->eval();
  for (int64_t call = first; call <= last; ++call) Call(call, ctx);
}

void FastMethod::Call(int64_t call, const RoundContext& ctx) {
  const FastOptions& o = options_;
  const int64_t b = o.synthesis_batch_size();
  const torch::Device dev = device();
  if (o.reset_l0() && call == o.warmup() + o.reset_l0_after()) ResetL0(call, ctx.seed);

  const uint64_t rank = RankOf(ctx);
  const uint64_t key = StreamSeed(ctx.seed, 1 + (rank << 8), static_cast<uint64_t>(call));
  at::Generator gen = at::detail::createCPUGenerator(key);
  std::mt19937_64 rng(StreamSeed(ctx.seed, 3 + (rank << 8), static_cast<uint64_t>(call)));
  torch::Tensor z = torch::randn({b, o.nz()}, gen, torch::kFloat32).to(dev);
  z.requires_grad_(true);
  torch::Tensor y = torch::randint(0, deps_.num_classes, {b}, gen, torch::kLong).to(dev);

  // G' = G: parameters and buffers (the reference's clone via load_state_dict).
  std::vector<torch::Tensor> meta_params = generator_->parameters();
  std::vector<torch::Tensor> fast_params = fast_->parameters();
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < fast_params.size(); ++i) fast_params[i].copy_(meta_params[i]);
    std::vector<torch::Tensor> src = generator_->buffers(), dst = fast_->buffers();
    for (size_t i = 0; i < dst.size(); ++i) dst[i].copy_(src[i]);
  }
  fast_->train();

  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(fast_params, std::make_unique<torch::optim::AdamOptions>(
                                       torch::optim::AdamOptions(o.lr_g()).betas({0.5, 0.999})));
  groups.emplace_back(std::vector<torch::Tensor>{z},
                      std::make_unique<torch::optim::AdamOptions>(
                          torch::optim::AdamOptions(o.lr_z()).betas({0.5, 0.999})));
  torch::optim::Adam inner(std::move(groups),
                           torch::optim::AdamOptions(o.lr_g()).betas({0.5, 0.999}));

  std::vector<torch::Tensor> wrt = fast_params;
  wrt.push_back(z);
  const bool fomaml = o.meta() == FastMetaUpdate::kFomaml;
  const bool adversarial = o.adv_weight() > 0 && call >= o.warmup();
  double best_cost = std::numeric_limits<double>::infinity();
  torch::Tensor best;
  std::vector<BnMoments> last_stats;
  for (int64_t it = 0; it < o.g_steps(); ++it) {
    torch::Tensor x = fast_->forward(z);
    torch::Tensor xa = o.augment() ? AugmentCropFlip(x, o.crop_padding(), /*flip=*/true, rng) : x;
    xa = NormalizeUnit(xa, o.norm());
    ClassifierOutput t = deps_.teacher->ForwardWithTaps(xa, TapRequest{true});
    torch::Tensor bn = MomentumBnLoss(t.bn_taps, bn_moments_, o.bn_momentum());
    torch::Tensor oh = torch::nn::functional::cross_entropy(t.logits, y);
    torch::Tensor loss = o.bn_weight() * bn + o.oh_weight() * oh;
    double adv_value = 0;
    if (adversarial) {
      ClassifierOutput s = deps_.student->ForwardWithTaps(xa, TapRequest{});
      torch::Tensor adv = DecisionAdversarialLoss(s.logits, t.logits);
      loss = loss + o.adv_weight() * adv;
      adv_value = adv.item<double>();
    }
    const double cost = loss.item<double>();
    last_losses_ = {bn.item<double>(), oh.item<double>(), adv_value, cost};
    if (!best.defined() || cost < best_cost) {  // this iteration's x, pre-step
      best_cost = cost;
      best = x.detach();
    }
    last_stats.clear();
    for (const BatchNormTap& tap : t.bn_taps) {
      last_stats.push_back({tap.mean.detach(), tap.variance.detach()});
    }

    // Gradients for G' and z only: no model parameter accumulates any.
    std::vector<torch::Tensor> grads =
        torch::autograd::grad({loss}, wrt, /*grad_outputs=*/{}, /*retain_graph=*/false,
                              /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t i = 0; i < wrt.size(); ++i) {
      wrt[i].mutable_grad() = grads[i].defined() ? grads[i] : torch::zeros_like(wrt[i]);
    }
    // Ranks draw different z and y; averaging keeps their copies (and so G) identical.
    if (ctx.comm != nullptr) AverageGradients(*ctx.comm, fast_params);
    if (fomaml) {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < meta_params.size(); ++i) {
        if (it == 0) meta_params[i].mutable_grad() = torch::zeros_like(meta_params[i]);
        meta_params[i].mutable_grad().add_(fast_params[i].grad());
      }
    }
    inner.step();
  }
  if (o.bn_momentum() != 0) bn_moments_ = UpdateBnMoments(bn_moments_, last_stats, o.bn_momentum());

  if (!fomaml) {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < meta_params.size(); ++i) {
      meta_params[i].mutable_grad() = (meta_params[i] - fast_params[i]) * o.reptile_scale();
    }
  }
  meta_optimizer_->step();
  for (torch::Tensor& p : meta_params) p.mutable_grad() = torch::Tensor();
  for (torch::Tensor& p : wrt) p.mutable_grad() = torch::Tensor();

  last_ = NormalizeUnit(best, o.norm());
  pool_.Add(best);
}

torch::Tensor FastMethod::Sample(int64_t batch_size, const RoundContext& ctx) {
  return SampleStudentBatch(pool_, batch_size, StudentBatchKey(ctx), options_.crop_padding(),
                            options_.norm(), device(), "fast");
}

torch::Tensor FastMethod::DistillLoss(const DistillBatch& batch, const RoundContext&) {
  return KdLoss(batch.KdStudentLogits(), batch.teacher.logits, options_.temperature());
}

nlohmann::json FastMethod::Describe() const {
  const FastOptions& o = options_;
  return {{"method", "fast"},
          {"temperature", o.temperature()},
          {"nz", o.nz()},
          {"ngf", o.ngf()},
          {"synthesis_batch_size", o.synthesis_batch_size()},
          {"g_steps", o.g_steps()},
          {"lr_g", o.lr_g()},
          {"lr_z", o.lr_z()},
          {"meta_lr", o.lr_g() * static_cast<double>(o.g_steps())},
          {"bn_weight", o.bn_weight()},
          {"oh_weight", o.oh_weight()},
          {"adv_weight", o.adv_weight()},
          {"bn_momentum", o.bn_momentum()},
          {"warmup", o.warmup()},
          {"meta", o.meta() == FastMetaUpdate::kFomaml ? "fomaml" : "reptile"},
          {"reptile_scale", o.reptile_scale()},
          {"reset_l0", o.reset_l0()},
          {"reset_l0_after", o.reset_l0_after()},
          {"pool_max_images", o.pool_max_images()},
          {"crop_padding", o.crop_padding()},
          {"augment", o.augment()},
          {"norm_mean", o.norm().mean},
          {"norm_std", o.norm().std},
          {"pool_size", pool_.size()}};
}

void FastMethod::Save(torch::serialize::OutputArchive& archive) const {
  torch::serialize::OutputArchive g, opt;
  generator_->save(g);
  meta_optimizer_->save(opt);
  archive.write("generator", g);
  archive.write("meta_optimizer", opt);
  pool_.Save(archive, "pool");
  if (last_.defined()) archive.write("last_synthesized", last_.cpu());
  archive.write("bn_moment_layers",
                torch::tensor(static_cast<int64_t>(bn_moments_.size()), torch::kLong));
  for (size_t i = 0; i < bn_moments_.size(); ++i) {
    archive.write("bn_moment_mean_" + std::to_string(i), bn_moments_[i].mean.cpu());
    archive.write("bn_moment_variance_" + std::to_string(i), bn_moments_[i].variance.cpu());
  }
}

void FastMethod::Load(torch::serialize::InputArchive& archive) {
  torch::serialize::InputArchive g, opt;
  archive.read("generator", g);
  generator_->load(g);
  const torch::Device dev = device();
  generator_->to(dev);  // load() may have put CPU tensors in place; same tensors, moved back
  archive.read("meta_optimizer", opt);
  meta_optimizer_->load(opt);
  MoveOptimizerState(*meta_optimizer_, dev);
  pool_.Load(archive, "pool");
  torch::Tensor last;
  last_ = archive.try_read("last_synthesized", last) ? last.to(dev) : torch::Tensor();
  bn_moments_.clear();
  torch::Tensor layers;
  if (archive.try_read("bn_moment_layers", layers)) {
    const int64_t n = layers.item<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      BnMoments m;
      archive.read("bn_moment_mean_" + std::to_string(i), m.mean);
      archive.read("bn_moment_variance_" + std::to_string(i), m.variance);
      m.mean = m.mean.to(dev);
      m.variance = m.variance.to(dev);
      bn_moments_.push_back(std::move(m));
    }
  }
}

}  // namespace dfkd::worker
