// Contrastive Model Inversion (Fast-Datafree's CMISynthesizer); see cmi.h for
// the reference choices taken.
#include "worker/methods/cmi.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <utility>

#include <ATen/CPUGeneratorImpl.h>

#include "worker/methods/optimizer_state.h"
#include "worker/methods/deep_inversion.h"
#include "worker/methods/fast_meta.h"
#include "worker/methods/losses.h"
#include "worker/methods/mode_guard.h"
#include "worker/methods/seeding.h"

namespace dfkd::worker {

namespace F = torch::nn::functional;

namespace {

Generator MakeGenerator(const CmiOptions& o, const MethodDeps& deps) {
  TORCH_CHECK(deps.image_shape.size() == 3, "cmi: image shape must be {C, H, W}");
  TORCH_CHECK(deps.image_shape[1] == deps.image_shape[2], "cmi: images must be square");
  TORCH_CHECK(o.nz() > 0 && o.ngf() > 0, "cmi: nz and ngf must be positive");
  return Generator(GeneratorOptions(o.nz())
                       .ngf(o.ngf())
                       .img_size(deps.image_shape[1])
                       .channels(deps.image_shape[0]));
}

// D: the summed widths of the teacher's BN layers, from one eval-mode pass
// (the reference's dummy forward).
int64_t DiscoverFeatureDim(const MethodDeps& deps, torch::Device device) {
  ModeGuard mode(*deps.teacher);
  deps.teacher->eval();
  torch::NoGradGuard no_grad;
  TapRequest request;
  request.instance_means = true;
  torch::Tensor x = torch::zeros({1, deps.image_shape[0], deps.image_shape[1],
                                  deps.image_shape[2]},
                                 torch::TensorOptions().dtype(torch::kFloat32).device(device));
  const ClassifierOutput out = deps.teacher->ForwardWithTaps(x, request);
  int64_t d = 0;
  for (const torch::Tensor& m : out.bn_instance_means) d += m.size(1);
  return d;
}

}  // namespace

MlpHeadImpl::MlpHeadImpl(int64_t dim_in, int64_t dim_out) {
  TORCH_CHECK(dim_in > 0 && dim_out > 0, "MlpHead: dimensions must be positive");
  fc1 = register_module("fc1", torch::nn::Linear(dim_in, dim_in));
  fc2 = register_module("fc2", torch::nn::Linear(dim_in, dim_out));
}

torch::Tensor MlpHeadImpl::forward(const torch::Tensor& x) {
  return F::normalize(fc2(torch::relu(fc1(x))), F::NormalizeFuncOptions().p(2).dim(1));
}

torch::Tensor ContrastiveLoss(const torch::Tensor& proj_local, const torch::Tensor& proj_global,
                              int64_t n_current, double tau) {
  TORCH_CHECK(proj_local.dim() == 2 && proj_local.sizes() == proj_global.sizes(),
              "ContrastiveLoss: projections ", proj_local.sizes(), " vs ", proj_global.sizes());
  const int64_t n = proj_local.size(0);
  TORCH_CHECK(n_current >= 1 && n_current <= n, "ContrastiveLoss: n_current ", n_current,
              " outside [1, ", n, "]");
  TORCH_CHECK(tau > 0, "ContrastiveLoss: tau must be positive");
  torch::Tensor logits = proj_local.mm(proj_global.detach().t()) / tau;
  torch::Tensor labels =
      torch::arange(n, torch::TensorOptions().dtype(torch::kLong).device(proj_local.device()));
  torch::Tensor per_row =
      F::cross_entropy(logits, labels, F::CrossEntropyFuncOptions().reduction(torch::kNone));
  if (n_current == n) return per_row.mean();
  return per_row.narrow(0, 0, n_current).mean() +
         per_row.narrow(0, n_current, n - n_current).mean();
}

void ResetGenerator(Generator& generator, uint64_t key) {
  at::Generator gen = at::detail::createCPUGenerator(key);
  torch::NoGradGuard no_grad;
  auto normal = [&](torch::Tensor weight, double mean) {
    weight.copy_(torch::randn(weight.sizes(), gen, torch::kFloat32) * 0.02 + mean);
  };
  for (const auto& m : generator->modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2dImpl>()) {
      normal(conv->weight, 0.0);
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* linear = m->as<torch::nn::LinearImpl>()) {
      normal(linear->weight, 0.0);
      if (linear->bias.defined()) linear->bias.zero_();
    } else if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      normal(bn->weight, 1.0);
      bn->bias.zero_();
      bn->reset_running_stats();
    }
  }
}

CropBox DrawResizedCropBox(int64_t h, int64_t w, double scale_min, std::mt19937_64& rng) {
  TORCH_CHECK(h >= 1 && w >= 1, "DrawResizedCropBox: empty image");
  TORCH_CHECK(scale_min > 0 && scale_min <= 1, "DrawResizedCropBox: scale_min must be in (0, 1]");
  const double min_ratio = 3.0 / 4.0, max_ratio = 4.0 / 3.0;
  const double area = static_cast<double>(h) * static_cast<double>(w);
  std::uniform_real_distribution<double> scale(scale_min, 1.0);
  std::uniform_real_distribution<double> log_ratio(std::log(min_ratio), std::log(max_ratio));
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * scale(rng);
    const double aspect = std::exp(log_ratio(rng));
    // Python's round(): ties to even, as nearbyint in the default mode.
    const auto cw = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area * aspect)));
    const auto ch = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area / aspect)));
    if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
      std::uniform_int_distribution<int64_t> top(0, h - ch), left(0, w - cw);
      CropBox box;
      box.height = ch;
      box.width = cw;
      box.top = top(rng);
      box.left = left(rng);
      return box;
    }
  }
  // The centre crop, its aspect ratio clamped to [3/4, 4/3].
  const double in_ratio = static_cast<double>(w) / static_cast<double>(h);
  CropBox box;
  box.height = h;
  box.width = w;
  if (in_ratio < min_ratio) {
    box.height = static_cast<int64_t>(std::nearbyint(static_cast<double>(w) / min_ratio));
  } else if (in_ratio > max_ratio) {
    box.width = static_cast<int64_t>(std::nearbyint(static_cast<double>(h) * max_ratio));
  }
  box.top = (h - box.height) / 2;
  box.left = (w - box.width) / 2;
  return box;
}

torch::Tensor ResizedCropFlip(const torch::Tensor& x, const std::vector<CropBox>& boxes,
                              const std::vector<bool>& flips) {
  TORCH_CHECK(x.dim() == 4, "ResizedCropFlip expects [B, C, H, W]");
  const int64_t b = x.size(0), h = x.size(2), w = x.size(3);
  TORCH_CHECK(static_cast<int64_t>(boxes.size()) == b && static_cast<int64_t>(flips.size()) == b,
              "ResizedCropFlip: one box and one flip per sample");
  TORCH_CHECK(h >= 2 && w >= 2, "ResizedCropFlip: images must be at least 2x2");
  // Output pixel k (u = -1 + 2k / (W - 1)) samples input column
  // left + k (width - 1) / (W - 1): the align_corners = true resize of the
  // crop, as an affine map of normalised coordinates; a flip negates u.
  std::vector<float> theta;
  theta.reserve(static_cast<size_t>(b) * 6);
  const double wd = static_cast<double>(w - 1), hd = static_cast<double>(h - 1);
  for (int64_t i = 0; i < b; ++i) {
    const CropBox& box = boxes[static_cast<size_t>(i)];
    TORCH_CHECK(box.height >= 1 && box.width >= 1 && box.top >= 0 && box.left >= 0 &&
                    box.top + box.height <= h && box.left + box.width <= w,
                "ResizedCropFlip: box ", i, " outside the ", h, "x", w, " image");
    const double ax = static_cast<double>(box.width - 1) / wd;
    const double bx = static_cast<double>(2 * box.left + box.width - 1) / wd - 1.0;
    const double ay = static_cast<double>(box.height - 1) / hd;
    const double by = static_cast<double>(2 * box.top + box.height - 1) / hd - 1.0;
    const bool flip = flips[static_cast<size_t>(i)];
    theta.push_back(static_cast<float>(flip ? -ax : ax));
    theta.push_back(0.0f);
    theta.push_back(static_cast<float>(bx));
    theta.push_back(0.0f);
    theta.push_back(static_cast<float>(ay));
    theta.push_back(static_cast<float>(by));
  }
  torch::Tensor t = torch::tensor(theta, torch::kFloat32)
                        .view({b, 2, 3})
                        .to(x.device(), x.scalar_type());
  torch::Tensor grid = F::affine_grid(t, x.sizes(), /*align_corners=*/true);
  // Every sample point lies inside the image; border padding only absorbs
  // rounding at its edge.
  return F::grid_sample(x, grid,
                        F::GridSampleFuncOptions()
                            .mode(torch::kBilinear)
                            .padding_mode(torch::kBorder)
                            .align_corners(true));
}

torch::Tensor RandomResizedCropFlip(const torch::Tensor& x, double scale_min,
                                    std::mt19937_64& rng) {
  TORCH_CHECK(x.dim() == 4, "RandomResizedCropFlip expects [B, C, H, W]");
  const int64_t b = x.size(0), h = x.size(2), w = x.size(3);
  std::bernoulli_distribution coin(0.5);
  std::vector<CropBox> boxes;
  std::vector<bool> flips;
  boxes.reserve(static_cast<size_t>(b));
  flips.reserve(static_cast<size_t>(b));
  for (int64_t i = 0; i < b; ++i) {
    boxes.push_back(DrawResizedCropBox(h, w, scale_min, rng));
    flips.push_back(coin(rng));
  }
  return ResizedCropFlip(x, boxes, flips);
}

MemoryBank::MemoryBank(int64_t capacity) : capacity_(capacity) {
  TORCH_CHECK(capacity_ > 0, "memory bank: bank_size must be positive");
}

void MemoryBank::Add(const torch::Tensor& rows_in) {
  TORCH_CHECK(rows_in.dim() == 2 && rows_in.size(0) >= 1 && rows_in.size(1) >= 1,
              "memory bank: expects [n, dim] rows, got ", rows_in.sizes());
  torch::NoGradGuard no_grad;
  torch::Tensor rows = rows_in.detach().to(torch::kCPU, torch::kFloat32);
  if (!data_.defined()) data_ = torch::zeros({capacity_, rows.size(1)}, torch::kFloat32);
  TORCH_CHECK(rows.size(1) == data_.size(1), "memory bank: rows of width ", rows.size(1),
              " do not match the bank's ", data_.size(1));
  int64_t n = rows.size(0);
  updates_ += n;
  if (n > capacity_) {  // only the newest capacity_ rows would survive
    position_ = (position_ + n - capacity_) % capacity_;
    rows = rows.narrow(0, n - capacity_, capacity_);
    n = capacity_;
  }
  torch::Tensor index = (torch::arange(n, torch::kLong) + position_).remainder(capacity_);
  data_.index_copy_(0, index, rows);
  position_ = (position_ + n) % capacity_;
}

torch::Tensor MemoryBank::Sample(int64_t k, at::Generator& gen) const {
  TORCH_CHECK(size() > 0, "memory bank: Sample() from an empty bank");
  TORCH_CHECK(k >= 1, "memory bank: k must be >= 1");
  const int64_t m = std::min(k, size());
  torch::Tensor index = torch::randperm(size(), gen, torch::kLong).narrow(0, 0, m);
  return data_.index_select(0, index);
}

void MemoryBank::Save(torch::serialize::OutputArchive& archive, const std::string& key) const {
  archive.write(key + "_position", torch::tensor(position_, torch::kLong));
  archive.write(key + "_updates", torch::tensor(updates_, torch::kLong));
  if (data_.defined()) archive.write(key + "_rows", data_.narrow(0, 0, size()).clone());
}

void MemoryBank::Load(torch::serialize::InputArchive& archive, const std::string& key) {
  data_ = torch::Tensor();
  position_ = 0;
  updates_ = 0;
  torch::Tensor updates, position, rows;
  if (!archive.try_read(key + "_updates", updates)) return;
  archive.read(key + "_position", position);
  updates_ = updates.item<int64_t>();
  position_ = position.item<int64_t>();
  TORCH_CHECK(updates_ >= 0 && position_ >= 0 && position_ < capacity_,
              "memory bank: checkpoint position ", position_, " outside a bank of ", capacity_);
  if (archive.try_read(key + "_rows", rows)) {
    TORCH_CHECK(rows.dim() == 2 && rows.size(0) == size(), "memory bank: checkpoint holds ",
                rows.sizes(), ", expected ", size(), " rows (bank_size changed?)");
    data_ = torch::zeros({capacity_, rows.size(1)}, torch::kFloat32);
    data_.narrow(0, 0, rows.size(0)).copy_(rows);
  } else {
    TORCH_CHECK(updates_ == 0, "memory bank: checkpoint lacks its rows");
  }
}

CmiMethod::CmiMethod(CmiOptions options, MethodDeps deps)
    : options_(std::move(options)), deps_(std::move(deps)),
      generator_(MakeGenerator(options_, deps_)),
      pool_(options_.pool_max_images(), ImagePool::Quantize::kTruncate),
      bank_(options_.bank_size()) {
  const CmiOptions& o = options_;
  TORCH_CHECK(deps_.teacher && deps_.student, "cmi: teacher and student required");
  TORCH_CHECK(deps_.num_classes > 0, "cmi: num_classes must be positive");
  TORCH_CHECK(o.synthesis_batch_size() > 0, "cmi: synthesis_batch_size must be positive");
  TORCH_CHECK(o.g_steps() >= 1, "cmi: g_steps must be >= 1");
  TORCH_CHECK(o.lr_g() >= 0, "cmi: lr_g must be >= 0");
  TORCH_CHECK(o.cr_weight() >= 0, "cmi: cr_weight must be >= 0");
  TORCH_CHECK(o.cr_temperature() > 0, "cmi: cr_temperature must be positive");
  TORCH_CHECK(o.head_dim() >= 1, "cmi: head_dim must be >= 1");
  TORCH_CHECK(o.n_neg() >= 0, "cmi: n_neg must be >= 0");
  TORCH_CHECK(o.local_scale_min() > 0 && o.local_scale_min() <= 1,
              "cmi: local_scale_min must be in (0, 1]");
  TORCH_CHECK(o.crop_padding() >= 0, "cmi: crop_padding must be >= 0");
  const size_t nm = o.norm().mean.size();
  TORCH_CHECK(nm > 0 && nm == o.norm().std.size(),
              "cmi: normalisation mean/std missing or of different lengths");
  TORCH_CHECK(nm == 1 || static_cast<int64_t>(nm) == deps_.image_shape[0],
              "cmi: normalisation has ", nm, " channels, images have ", deps_.image_shape[0]);
  const torch::Device dev = device();
  feature_dim_ = DiscoverFeatureDim(deps_, dev);
  TORCH_CHECK(feature_dim_ > 0, "cmi: the teacher has no BatchNorm layer to take features from");
  generator_->to(dev);
  generator_->train();
  head_ = MlpHead(feature_dim_, o.head_dim());
  head_->to(dev);
  head_->train();
  head_optimizer_ = std::make_unique<torch::optim::Adam>(head_->parameters(),
                                                         torch::optim::AdamOptions(o.lr_g()));
}

torch::Device CmiMethod::device() const {
  return DeviceOf(*deps_.teacher);
}

void CmiMethod::Synthesize(const RoundContext& ctx) {
  const CmiOptions& o = options_;
  const int64_t b = o.synthesis_batch_size();
  const torch::Device dev = device();
  const auto call = static_cast<uint64_t>(ctx.round);
  const uint64_t rank = RankOf(ctx);
  ModeGuard teacher_mode(*deps_.teacher);
  ModeGuard student_mode(*deps_.student);
  deps_.teacher->eval();
  deps_.student->eval();

  // Keyed without the rank: every rank starts the call from the same G.
  ResetGenerator(generator_, StreamSeed(ctx.seed, 4, call));
  generator_->train();
  at::Generator gen =
      at::detail::createCPUGenerator(StreamSeed(ctx.seed, 1 + (rank << 8), call));
  torch::Tensor z = torch::randn({b, o.nz()}, gen, torch::kFloat32).to(dev);
  z.requires_grad_(true);
  torch::Tensor y =
      std::get<0>(torch::randint(0, deps_.num_classes, {b}, gen, torch::kLong).sort()).to(dev);
  std::mt19937_64 rng(StreamSeed(ctx.seed, 3 + (rank << 8), call));
  at::Generator bank_gen =
      at::detail::createCPUGenerator(StreamSeed(ctx.seed, 5 + (rank << 8), call));

  std::vector<torch::Tensor> generator_params = generator_->parameters();
  std::vector<torch::Tensor> inner_params = generator_params;
  inner_params.push_back(z);
  torch::optim::Adam inner(inner_params, torch::optim::AdamOptions(o.lr_g()).betas({0.5, 0.999}));
  const bool contrastive = o.cr_weight() > 0;
  std::vector<torch::Tensor> wrt = inner_params;
  std::vector<torch::Tensor> shared = generator_params;  // kept identical on every rank
  if (contrastive) {
    const std::vector<torch::Tensor> head_params = head_->parameters();
    wrt.insert(wrt.end(), head_params.begin(), head_params.end());
    shared.insert(shared.end(), head_params.begin(), head_params.end());
  }

  TapRequest global_taps;
  global_taps.bn_statistics = true;
  global_taps.instance_means = contrastive;
  TapRequest local_taps;
  local_taps.instance_means = true;
  double best_cost = std::numeric_limits<double>::infinity();
  torch::Tensor best, best_features;
  for (int64_t it = 0; it < o.g_steps(); ++it) {
    torch::Tensor x = generator_->forward(z);
    torch::Tensor global_view =
        NormalizeUnit(AugmentCropFlip(x, o.crop_padding(), /*flip=*/true, rng), o.norm());
    torch::Tensor local_view;
    if (contrastive) {
      local_view = NormalizeUnit(RandomResizedCropFlip(x, o.local_scale_min(), rng), o.norm());
    }
    ClassifierOutput t = deps_.teacher->ForwardWithTaps(global_view, global_taps);
    torch::Tensor bn = BnStatisticsLoss(t.bn_taps);
    torch::Tensor oh = F::cross_entropy(t.logits, y);
    torch::Tensor loss = o.bn_weight() * bn + o.oh_weight() * oh;
    CmiLosses terms;
    if (o.adv_weight() > 0) {
      ClassifierOutput s = deps_.student->ForwardWithTaps(global_view, TapRequest{});
      torch::Tensor adv = DecisionAdversarialLoss(s.logits, t.logits);
      loss = loss + o.adv_weight() * adv;
      terms.adversarial = adv.item<double>();
    }
    torch::Tensor features;
    if (contrastive) {
      torch::Tensor h_global = torch::cat(t.bn_instance_means, 1);
      torch::Tensor h_local =
          torch::cat(deps_.teacher->ForwardWithTaps(local_view, local_taps).bn_instance_means, 1);
      // [h_l; h_l'; h_g; h_g'] through the head, then split in halves.
      torch::Tensor all_rows;
      if (bank_.size() > 0 && o.n_neg() > 0) {
        std::vector<torch::Tensor> cached = bank_.Sample(o.n_neg(), bank_gen).to(dev).chunk(2, 1);
        all_rows = torch::cat({h_local, cached[0], h_global, cached[1]}, 0);
      } else {
        all_rows = torch::cat({h_local, h_global}, 0);
      }
      std::vector<torch::Tensor> proj = head_->forward(all_rows).chunk(2, 0);
      torch::Tensor cr = ContrastiveLoss(proj[0], proj[1], b, o.cr_temperature());
      loss = loss + o.cr_weight() * cr;
      terms.contrastive = cr.item<double>();
      features = torch::cat({h_local.detach(), h_global.detach()}, 1);
    }
    const double cost = loss.item<double>();
    terms.bn = bn.item<double>();
    terms.one_hot = oh.item<double>();
    terms.total = cost;
    last_losses_ = terms;
    if (!best.defined() || cost < best_cost) {  // this iteration's x, pre-step
      best_cost = cost;
      best = x.detach();
      best_features = features;
    }

    // Gradients for G, z and the head only: no model parameter accumulates any.
    std::vector<torch::Tensor> grads =
        torch::autograd::grad({loss}, wrt, /*grad_outputs=*/{}, /*retain_graph=*/false,
                              /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t i = 0; i < wrt.size(); ++i) {
      wrt[i].mutable_grad() = grads[i].defined() ? grads[i] : torch::zeros_like(wrt[i]);
    }
    // Ranks draw different z, y and views; averaging keeps G and the head identical.
    if (ctx.comm != nullptr) AverageGradients(*ctx.comm, shared);
    inner.step();
    if (contrastive) head_optimizer_->step();
  }
  for (torch::Tensor& p : wrt) p.mutable_grad() = torch::Tensor();

  pool_.Add(best);
  if (best_features.defined()) bank_.Add(best_features);
  last_ = NormalizeUnit(best, o.norm());
}

torch::Tensor CmiMethod::Sample(int64_t batch_size, const RoundContext& ctx) {
  return SampleStudentBatch(pool_, batch_size, StudentBatchKey(ctx), options_.crop_padding(),
                            options_.norm(), device(), "cmi");
}

torch::Tensor CmiMethod::DistillLoss(const DistillBatch& batch, const RoundContext&) {
  return KdLoss(batch.KdStudentLogits(), batch.teacher.logits, options_.temperature());
}

nlohmann::json CmiMethod::Describe() const {
  const CmiOptions& o = options_;
  return {{"method", "cmi"},
          {"temperature", o.temperature()},
          {"nz", o.nz()},
          {"ngf", o.ngf()},
          {"synthesis_batch_size", o.synthesis_batch_size()},
          {"g_steps", o.g_steps()},
          {"lr_g", o.lr_g()},
          {"bn_weight", o.bn_weight()},
          {"oh_weight", o.oh_weight()},
          {"adv_weight", o.adv_weight()},
          {"cr_weight", o.cr_weight()},
          {"cr_temperature", o.cr_temperature()},
          {"head_dim", o.head_dim()},
          {"bank_size", o.bank_size()},
          {"n_neg", o.n_neg()},
          {"local_scale_min", o.local_scale_min()},
          {"pool_max_images", o.pool_max_images()},
          {"crop_padding", o.crop_padding()},
          {"norm_mean", o.norm().mean},
          {"norm_std", o.norm().std},
          {"feature_dim", feature_dim_},
          {"bank_entries", bank_.size()},
          {"pool_size", pool_.size()}};
}

void CmiMethod::Save(torch::serialize::OutputArchive& archive) const {
  torch::serialize::OutputArchive head, opt;
  head_->save(head);
  head_optimizer_->save(opt);
  archive.write("head", head);
  archive.write("head_optimizer", opt);
  pool_.Save(archive, "pool");
  bank_.Save(archive, "bank");
  if (last_.defined()) archive.write("last_synthesized", last_.cpu());
}

void CmiMethod::Load(torch::serialize::InputArchive& archive) {
  torch::serialize::InputArchive head, opt;
  archive.read("head", head);
  head_->load(head);
  const torch::Device dev = device();
  head_->to(dev);  // load() may have put CPU tensors in place; same tensors, moved back
  archive.read("head_optimizer", opt);
  head_optimizer_->load(opt);
  MoveOptimizerState(*head_optimizer_, dev);
  pool_.Load(archive, "pool");
  bank_.Load(archive, "bank");
  torch::Tensor last;
  last_ = archive.try_read("last_synthesized", last) ? last.to(dev) : torch::Tensor();
}

}  // namespace dfkd::worker
