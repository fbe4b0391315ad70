// DeepInversion (Fast-Datafree's DeepInvSyntheiszer); see deep_inversion.h for
// the reference choices taken.
#include "worker/methods/deep_inversion.h"

#include <limits>
#include <random>
#include <tuple>
#include <utility>

#include <ATen/CPUGeneratorImpl.h>

#include "worker/methods/losses.h"
#include "worker/methods/mode_guard.h"
#include "worker/methods/seeding.h"

namespace dfkd::worker {

namespace {


// [1, C, 1, 1] from a per-channel (or single) value list.
torch::Tensor ChannelVector(const std::vector<float>& v, int64_t channels) {
  const int64_t n = static_cast<int64_t>(v.size());
  TORCH_CHECK(n == channels || n == 1, "deepinv: normalisation has ", n,
              " channels, images have ", channels);
  torch::Tensor t = torch::tensor(v, torch::kFloat32).view({1, -1, 1, 1});
  return n == 1 ? t.expand({1, channels, 1, 1}).contiguous() : t;
}

}  // namespace

torch::Tensor BnStatisticsLoss(const std::vector<BatchNormTap>& taps) {
  torch::Tensor loss;
  for (const BatchNormTap& tap : taps) {
    torch::Tensor r = (tap.running_var - tap.variance).norm() +
                      (tap.running_mean - tap.mean).norm();
    loss = loss.defined() ? loss + r : r;
  }
  return loss.defined() ? loss : torch::tensor(0.0f);
}

torch::Tensor JsDivergence(const torch::Tensor& s, const torch::Tensor& t,
                           double temperature) {
  TORCH_CHECK(s.dim() == 2 && s.sizes() == t.sizes(), "JsDivergence: logits ",
              s.sizes(), " vs ", t.sizes());
  TORCH_CHECK(temperature > 0, "JsDivergence: temperature must be positive");
  torch::Tensor p = torch::softmax(s / temperature, 1);
  torch::Tensor q = torch::softmax(t / temperature, 1);
  torch::Tensor m = (p + q) * 0.5;
  p = p.clamp(0.01, 0.99);
  q = q.clamp(0.01, 0.99);
  m = m.clamp(0.01, 0.99);
  const double b = static_cast<double>(s.size(0));
  torch::Tensor log_m = m.log();
  torch::Tensor kl_mp = (m * (log_m - p.log())).sum() / b;
  torch::Tensor kl_mq = (m * (log_m - q.log())).sum() / b;
  return 0.5 * kl_mp + 0.5 * kl_mq;
}

torch::Tensor TotalVariationL1(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 4, "TotalVariationL1 expects [B, C, H, W]");
  const int64_t h = x.size(2), w = x.size(3);
  TORCH_CHECK(h >= 2 && w >= 2, "TotalVariationL1: image smaller than 2x2");
  torch::Tensor d1 = x.slice(3, 0, w - 1) - x.slice(3, 1, w);
  torch::Tensor d2 = x.slice(2, 0, h - 1) - x.slice(2, 1, h);
  torch::Tensor d3 = x.slice(2, 1, h).slice(3, 0, w - 1) - x.slice(2, 0, h - 1).slice(3, 1, w);
  torch::Tensor d4 = x.slice(2, 0, h - 1).slice(3, 0, w - 1) - x.slice(2, 1, h).slice(3, 1, w);
  return d1.abs().mean() + d2.abs().mean() + d3.abs().mean() + d4.abs().mean();
}

DeepInversion::DeepInversion(DeepInversionOptions options, MethodDeps deps)
    : options_(std::move(options)), deps_(std::move(deps)),
      pool_(options_.pool_max_images(), ImagePool::Quantize::kRound) {
  TORCH_CHECK(deps_.teacher && deps_.student, "deepinv: teacher and student required");
  TORCH_CHECK(deps_.image_shape.size() == 3, "deepinv: image shape must be {C, H, W}");
  TORCH_CHECK(deps_.num_classes > 0, "deepinv: num_classes must be positive");
  TORCH_CHECK(options_.synthesis_batch_size() > 0,
              "deepinv: synthesis_batch_size must be positive");
  TORCH_CHECK(options_.g_steps() >= 0, "deepinv: g_steps must be >= 0");
  TORCH_CHECK(options_.jitter() >= 0, "deepinv: jitter must be >= 0");
  TORCH_CHECK(options_.crop_padding() >= 0, "deepinv: crop_padding must be >= 0");
  TORCH_CHECK(options_.norm().mean.size() == options_.norm().std.size() &&
                  !options_.norm().mean.empty(),
              "deepinv: normalisation mean/std missing or of different lengths");
  ChannelVector(options_.norm().mean, deps_.image_shape[0]);  // checks the channel count
}

torch::Device DeepInversion::device() const {
  return DeviceOf(*deps_.teacher);
}

torch::Tensor DeepInversion::ClampToImageRange(const torch::Tensor& x) const {
  const int64_t c = x.size(1);
  torch::Tensor mean = ChannelVector(options_.norm().mean, c).to(x.device());
  torch::Tensor stdv = ChannelVector(options_.norm().std, c).to(x.device());
  torch::Tensor lo = -mean / stdv;
  torch::Tensor hi = (1.0 - mean) / stdv;
  return torch::maximum(torch::minimum(x, hi), lo);
}

void DeepInversion::Synthesize(const RoundContext& ctx) {
  const DeepInversionOptions& o = options_;
  const int64_t b = o.synthesis_batch_size();
  const uint64_t key = StreamSeed(ctx.seed, 1 + (RankOf(ctx) << 8), ctx.round);
  at::Generator gen = at::detail::createCPUGenerator(key);
  std::mt19937_64 rng(key);
  std::vector<int64_t> shape = {b};
  shape.insert(shape.end(), deps_.image_shape.begin(), deps_.image_shape.end());
  const torch::Device dev = device();
  torch::Tensor x = torch::randn(shape, gen, torch::kFloat32).to(dev);
  torch::Tensor y = torch::randint(0, deps_.num_classes, {b}, gen, torch::kLong).to(dev);
  x.requires_grad_(true);

  ModeGuard teacher_mode(*deps_.teacher);
  ModeGuard student_mode(*deps_.student);
  deps_.teacher->eval();
  deps_.student->eval();

  torch::optim::Adam adam(std::vector<torch::Tensor>{x},
                          torch::optim::AdamOptions(o.lr()).betas(
                              std::make_tuple(o.adam_beta1(), o.adam_beta2())));
  const bool run_student = o.adv_weight() != 0 || o.student_bn_weight() != 0;
  std::uniform_int_distribution<int64_t> offset(-o.jitter(), o.jitter());
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  double best_cost = std::numeric_limits<double>::infinity();
  torch::Tensor best = x.detach().clone();
  for (int64_t it = 0; it < o.g_steps(); ++it) {
    // jitter_and_flip: draws in the reference's order, the coin every time.
    const int64_t dy = offset(rng), dx = offset(rng);
    const bool flip = coin(rng) > 0.5;
    torch::Tensor xa = torch::roll(x, {dy, dx}, {2, 3});
    if (o.flip() && flip) xa = xa.flip({3});

    ClassifierOutput t = deps_.teacher->ForwardWithTaps(xa, TapRequest{true});
    torch::Tensor bn = BnStatisticsLoss(t.bn_taps);
    torch::Tensor loss = o.oh_weight() * torch::nn::functional::cross_entropy(t.logits, y);
    if (run_student) {
      ClassifierOutput s =
          deps_.student->ForwardWithTaps(xa, TapRequest{o.student_bn_weight() != 0});
      if (o.student_bn_weight() != 0) {
        bn = bn - o.student_bn_weight() * BnStatisticsLoss(s.bn_taps);
      }
      if (o.adv_weight() != 0) {
        loss = loss - o.adv_weight() * JsDivergence(s.logits, t.logits, o.js_temperature());
      }
    }
    loss = loss + o.bn_weight() * bn;
    if (o.tv_weight() != 0) loss = loss + o.tv_weight() * TotalVariationL1(x);
    if (o.l2_weight() != 0) loss = loss + o.l2_weight() * x.norm();

    const double cost = loss.item<double>();
    if (cost < best_cost) {  // the iterate that produced this loss, pre-step
      best_cost = cost;
      best = x.detach().clone();
    }
    // Gradients for the pixels only: no model parameter accumulates any.
    x.mutable_grad() = torch::autograd::grad({loss}, {x})[0];
    adam.step();
    torch::NoGradGuard no_grad;
    x.copy_(ClampToImageRange(x));
  }
  if (!o.keep_lowest_loss()) best = x.detach().clone();
  // x0 is never clipped (nor in the reference); clipping the kept batch makes
  // it exactly what the pool's uint8 images encode.
  last_ = ClampToImageRange(best).detach();

  pool_.Add(Denormalize(last_, o.norm()));
}

torch::Tensor DeepInversion::Sample(int64_t batch_size, const RoundContext& ctx) {
  return SampleStudentBatch(pool_, batch_size, StudentBatchKey(ctx), options_.crop_padding(),
                            options_.norm(), device(), "deepinv");
}

torch::Tensor DeepInversion::DistillLoss(const DistillBatch& batch, const RoundContext&) {
  return KdLoss(batch.KdStudentLogits(), batch.teacher.logits, options_.temperature());
}

nlohmann::json DeepInversion::Describe() const {
  const DeepInversionOptions& o = options_;
  return {{"method", "deepinv"},
          {"temperature", o.temperature()},
          {"synthesis_batch_size", o.synthesis_batch_size()},
          {"g_steps", o.g_steps()},
          {"lr", o.lr()},
          {"adam_betas", {o.adam_beta1(), o.adam_beta2()}},
          {"bn_weight", o.bn_weight()},
          {"oh_weight", o.oh_weight()},
          {"adv_weight", o.adv_weight()},
          {"tv_weight", o.tv_weight()},
          {"l2_weight", o.l2_weight()},
          {"student_bn_weight", o.student_bn_weight()},
          {"jitter", o.jitter()},
          {"flip", o.flip()},
          {"js_temperature", o.js_temperature()},
          {"pool_max_images", o.pool_max_images()},
          {"crop_padding", o.crop_padding()},
          {"keep_lowest_loss", o.keep_lowest_loss()},
          {"norm_mean", o.norm().mean},
          {"norm_std", o.norm().std},
          {"pool_size", pool_size()}};
}

void DeepInversion::Save(torch::serialize::OutputArchive& archive) const {
  pool_.Save(archive, "pool");
  if (last_.defined()) archive.write("last_synthesized", last_.cpu());
}

void DeepInversion::Load(torch::serialize::InputArchive& archive) {
  pool_.Load(archive, "pool");
  torch::Tensor last;
  last_ = archive.try_read("last_synthesized", last) ? last.to(device()) : torch::Tensor();
}

}  // namespace dfkd::worker
