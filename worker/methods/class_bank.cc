// The class-sharded synthesis bank; see class_bank.h for the design and the
// choices taken.
#include "worker/methods/class_bank.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <tuple>
#include <utility>

#include <ATen/CPUGeneratorImpl.h>

#include "worker/methods/deep_inversion.h"
#include "worker/methods/fast_meta.h"
#include "worker/methods/mode_guard.h"
#include "worker/methods/seeding.h"

namespace dfkd::worker {

namespace {

// Streams of StreamSeed (Fast uses 1-4 with the rank above bit 8; the bank's
// keys hold no rank).
constexpr uint64_t kInitStream = 5;         // (base, class): a generator's initial weights
constexpr uint64_t kSynthesisStream = 6;    // (seed, round * num_classes + class)
constexpr uint64_t kExtraDrawStream = 7;    // (sample key, 0): which classes get one more
constexpr uint64_t kClassSampleStream = 8;  // (sample key, class): draws within a class

int64_t Bytes(const torch::Tensor& t) {
  return t.defined() ? static_cast<int64_t>(t.nbytes()) : 0;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// What ImagePool::Quantize::kTruncate stores: floor(255 clamp(x, 0, 1)).
torch::Tensor QuantizeTruncate(const torch::Tensor& images01) {
  torch::NoGradGuard no_grad;
  return (images01.detach().clamp(0, 1) * 255.0).floor().to(torch::kUInt8).cpu().contiguous();
}

Generator MakeWorkspace(const ClassBankOptions& o, const MethodDeps& deps) {
  TORCH_CHECK(o.nz() > 0 && o.ngf() > 0, "class_bank: nz and ngf must be positive");
  TORCH_CHECK(deps.image_shape[1] == deps.image_shape[2],
              "class_bank: generator units need square images");
  return Generator(GeneratorOptions(o.nz())
                       .ngf(o.ngf())
                       .img_size(deps.image_shape[1])
                       .channels(deps.image_shape[0]));
}

// LibTorch's default initialisation of G-A, drawn from `key`: weights of
// Linear/Conv layers and their biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))
// (kaiming_uniform with a = sqrt(5), and the bias rule), BN weight 1, bias 0.
torch::Tensor InitialParameters(const torch::OrderedDict<std::string, torch::Tensor>& named,
                                int64_t total, uint64_t key) {
  at::Generator gen = at::detail::createCPUGenerator(key);
  torch::Tensor flat = torch::empty({total}, torch::kFloat32);
  int64_t offset = 0;
  for (const auto& item : named) {
    const std::string& name = item.key();
    const torch::Tensor& p = item.value();
    const int64_t n = p.numel();
    torch::Tensor slice = flat.narrow(0, offset, n);
    offset += n;
    const bool is_bias = EndsWith(name, "bias");
    const torch::Tensor* fan = &p;
    if (p.dim() < 2 && is_bias) fan = named.find(name.substr(0, name.size() - 4) + "weight");
    if (fan != nullptr && fan->dim() >= 2) {
      const double fan_in = static_cast<double>(fan->numel() / fan->size(0));
      const double bound = 1.0 / std::sqrt(fan_in);
      slice.uniform_(-bound, bound, gen);
    } else if (is_bias) {
      slice.zero_();
    } else {
      slice.fill_(1.0);
    }
  }
  return flat;
}

std::unique_ptr<ClassUnits> MakeUnits(const ClassBankOptions& o, ClassRange range,
                                      const MethodDeps& deps) {
  if (o.unit() == ClassBankUnit::kGenerator) {
    return std::make_unique<GeneratorUnits>(o, range, deps);
  }
  return std::make_unique<InversionUnits>(o, range, deps);
}

}  // namespace

std::string ClassRange::ToString() const {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

ClassRange ShardOf(int64_t num_classes, int64_t rank, int64_t world) {
  TORCH_CHECK(num_classes >= 0, "ShardOf: num_classes must be >= 0, got ", num_classes);
  TORCH_CHECK(world >= 1 && rank >= 0 && rank < world, "ShardOf: rank ", rank,
              " is not in a world of ", world);
  const int64_t base = num_classes / world, extra = num_classes % world;
  const int64_t begin = rank * base + std::min(rank, extra);
  return ClassRange{begin, begin + base + (rank < extra ? 1 : 0)};
}

std::string ClassBankUnitName(ClassBankUnit unit) {
  return unit == ClassBankUnit::kGenerator ? "generator" : "inversion";
}

ClassBankUnit ParseClassBankUnit(const std::string& name) {
  if (name == "generator") return ClassBankUnit::kGenerator;
  if (name == "inversion") return ClassBankUnit::kInversion;
  throw std::invalid_argument("class_bank: unit '" + name +
                              "' is not one of generator, inversion");
}

int64_t BankGSteps(const ClassBankOptions& o) {
  TORCH_CHECK(o.g_steps() >= 0, "class_bank: g_steps must be >= 0 (0: the unit's default)");
  if (o.g_steps() > 0) return o.g_steps();
  return o.unit() == ClassBankUnit::kGenerator ? 10 : 50;
}

double BankLr(const ClassBankOptions& o) {
  TORCH_CHECK(o.lr() >= 0, "class_bank: lr must be >= 0 (0: the unit's default)");
  if (o.lr() > 0) return o.lr();
  return o.unit() == ClassBankUnit::kGenerator ? 1e-3 : 0.1;
}

std::pair<double, double> BankAdamBetas(ClassBankUnit unit) {
  return unit == ClassBankUnit::kGenerator ? std::make_pair(0.5, 0.999)
                                           : std::make_pair(0.5, 0.99);
}

ClassRange BankRange(const ClassBankOptions& o, int64_t num_classes) {
  TORCH_CHECK(num_classes > 0, "class_bank: num_classes must be positive");
  const ClassRange r{o.class_begin(), o.class_end() == 0 ? num_classes : o.class_end()};
  TORCH_CHECK(r.begin >= 0 && r.begin < r.end && r.end <= num_classes, "class_bank: classes ",
              r.ToString(), " are not a non-empty part of [0, ", num_classes, ")");
  return r;
}

std::string ClassArchiveKey(int64_t cls) {
  std::string digits = std::to_string(cls);
  if (digits.size() < 4) digits.insert(0, 4 - digits.size(), '0');
  return "class_" + digits;
}

// ---------------------------------------------------------------------------
// ClassUnits

ClassUnits::ClassUnits(const ClassBankOptions& options, ClassRange range,
                       const MethodDeps& deps)
    : options_(options), range_(range), deps_(deps) {
  TORCH_CHECK(deps_.teacher && deps_.student, "class_bank: teacher and student required");
  TORCH_CHECK(deps_.image_shape.size() == 3, "class_bank: image shape must be {C, H, W}");
  TORCH_CHECK(deps_.num_classes > 0, "class_bank: num_classes must be positive");
  TORCH_CHECK(range_.begin >= 0 && range_.begin < range_.end && range_.end <= deps_.num_classes,
              "class_bank: classes ", range_.ToString(), " are not a non-empty part of [0, ",
              deps_.num_classes, ")");
  TORCH_CHECK(options_.crop_padding() >= 0, "class_bank: crop_padding must be >= 0");
  const size_t nm = options_.norm().mean.size();
  TORCH_CHECK(nm > 0 && nm == options_.norm().std.size(),
              "class_bank: normalisation mean/std missing or of different lengths");
  TORCH_CHECK(nm == 1 || static_cast<int64_t>(nm) == deps_.image_shape[0],
              "class_bank: normalisation has ", nm, " channels, images have ",
              deps_.image_shape[0]);
  BankGSteps(options_);  // checks
  BankLr(options_);
}

int64_t ClassUnits::Index(int64_t cls) const {
  TORCH_CHECK(range_.contains(cls), "class_bank: class ", cls, " is outside this bank's classes ",
              range_.ToString());
  return cls - range_.begin;
}

torch::Device ClassUnits::device() const {
  return DeviceOf(*deps_.teacher);
}

torch::Tensor ClassUnits::Score(const torch::Tensor& x, int64_t cls) {
  const ClassBankOptions& o = options_;
  TapRequest taps;
  taps.bn_statistics = o.bn_weight() != 0;
  ClassifierOutput t = deps_.teacher->ForwardWithTaps(x, taps);
  torch::Tensor y =
      torch::full({x.size(0)}, cls, torch::TensorOptions().dtype(torch::kLong).device(x.device()));
  torch::Tensor oh = torch::nn::functional::cross_entropy(t.logits, y);
  torch::Tensor loss = o.oh_weight() * oh;
  UnitLosses l;
  l.one_hot = oh.item<double>();
  if (o.bn_weight() != 0) {
    torch::Tensor bn = BnStatisticsLoss(t.bn_taps);
    loss = loss + o.bn_weight() * bn;
    l.bn = bn.item<double>();
  }
  if (o.adv_weight() != 0) {
    ClassifierOutput s = deps_.student->ForwardWithTaps(x, TapRequest());
    torch::Tensor adv = DecisionAdversarialLoss(s.logits, t.logits);
    loss = loss + o.adv_weight() * adv;
    l.adversarial = adv.item<double>();
  }
  l.total = loss.item<double>();
  last_losses_ = l;
  return loss;
}

// ---------------------------------------------------------------------------
// GeneratorUnits

GeneratorUnits::GeneratorUnits(const ClassBankOptions& options, ClassRange range,
                               const MethodDeps& deps)
    : ClassUnits(options, range, deps), workspace_(MakeWorkspace(options_, deps_)) {
  const torch::Device dev = device();
  workspace_->to(dev);
  workspace_->train();
  const torch::OrderedDict<std::string, torch::Tensor> named = workspace_->named_parameters();
  for (const auto& item : named) {
    ws_params_.push_back(item.value());
    num_params_ += item.value().numel();
  }
  std::vector<torch::Tensor> initial_buffers;
  for (const torch::Tensor& b : workspace_->buffers()) {
    ws_buffers_.push_back(b);
    num_buffers_ += b.numel();
    initial_buffers.push_back(b.detach().to(torch::kFloat32).reshape(-1));
  }
  const torch::Tensor buffers0 = initial_buffers.empty()
                                     ? torch::zeros({0}, torch::kFloat32).to(dev)
                                     : torch::cat(initial_buffers);
  // One draw from the global generator; each class's weights are keyed by it.
  const uint64_t base = static_cast<uint64_t>(
      torch::randint(0, std::numeric_limits<int64_t>::max(), {1}, torch::kLong)
          .item<int64_t>());
  states_.resize(static_cast<size_t>(range_.size()));
  for (int64_t i = 0; i < range_.size(); ++i) {
    State& s = states_[static_cast<size_t>(i)];
    const uint64_t key = StreamSeed(base, kInitStream, static_cast<uint64_t>(range_.begin + i));
    s.params = InitialParameters(named, num_params_, key).to(dev);
    s.buffers = buffers0.clone();
  }
}

void GeneratorUnits::Install(const State& s, bool buffers) {
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (torch::Tensor& p : ws_params_) {
    const int64_t n = p.numel();
    p.copy_(s.params.narrow(0, offset, n).view_as(p));
    offset += n;
  }
  if (!buffers) return;
  offset = 0;
  for (torch::Tensor& b : ws_buffers_) {
    const int64_t n = b.numel();
    b.copy_(s.buffers.narrow(0, offset, n).view_as(b));
    offset += n;
  }
}

void GeneratorUnits::AdamStep(State& s, const torch::Tensor& grad) {
  // torch::optim::Adam's update (no weight decay, no amsgrad), on one class.
  torch::NoGradGuard no_grad;
  const std::pair<double, double> betas = BankAdamBetas(ClassBankUnit::kGenerator);
  const double b1 = betas.first, b2 = betas.second;
  if (!s.exp_avg.defined()) {  // the class's first update: allocate its moments now
    s.exp_avg = torch::zeros_like(s.params);
    s.exp_avg_sq = torch::zeros_like(s.params);
  }
  s.step += 1;
  s.exp_avg.mul_(b1).add_(grad, 1 - b1);
  s.exp_avg_sq.mul_(b2).addcmul_(grad, grad, 1 - b2);
  const double bias1 = 1 - std::pow(b1, static_cast<double>(s.step));
  const double bias2 = 1 - std::pow(b2, static_cast<double>(s.step));
  torch::Tensor denom = (s.exp_avg_sq.sqrt() / std::sqrt(bias2)).add_(1e-8);
  s.params.addcdiv_(s.exp_avg, denom, -BankLr(options_) / bias1);
}

torch::Tensor GeneratorUnits::Synthesize(int64_t cls, int64_t n, uint64_t key) {
  TORCH_CHECK(n > 0, "class_bank: images per class must be positive");
  const ClassBankOptions& o = options_;
  State& s = states_[static_cast<size_t>(Index(cls))];
  const torch::Device dev = device();
  at::Generator gen = at::detail::createCPUGenerator(key);
  std::mt19937_64 rng(key);
  const torch::Tensor z = torch::randn({n, o.nz()}, gen, torch::kFloat32).to(dev);

  Install(s, /*buffers=*/true);
  workspace_->train();
  const int64_t steps = BankGSteps(o);
  double best_cost = std::numeric_limits<double>::infinity();
  torch::Tensor best;
  for (int64_t it = 0; it < steps; ++it) {
    torch::Tensor x = workspace_->forward(z);
    torch::Tensor xa =
        NormalizeUnit(AugmentCropFlip(x, o.crop_padding(), /*flip=*/true, rng), o.norm());
    torch::Tensor loss = Score(xa, cls);
    const double cost = last_losses_.total;
    if (!best.defined() || cost < best_cost) {  // this iteration's x, pre-step
      best_cost = cost;
      best = x.detach();
    }
    // Gradients for the class's generator only: no model parameter gets any.
    std::vector<torch::Tensor> grads =
        torch::autograd::grad({loss}, ws_params_, /*grad_outputs=*/{}, /*retain_graph=*/false,
                              /*create_graph=*/false, /*allow_unused=*/true);
    std::vector<torch::Tensor> flat;
    flat.reserve(grads.size());
    for (size_t i = 0; i < grads.size(); ++i) {
      flat.push_back(grads[i].defined() ? grads[i].reshape(-1)
                                        : torch::zeros({ws_params_[i].numel()},
                                                       ws_params_[i].options()));
    }
    AdamStep(s, torch::cat(flat));
    Install(s, /*buffers=*/false);  // the workspace's BN statistics carry on
  }
  // Keep the BN running statistics the class's forward passes updated.
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const torch::Tensor& b : ws_buffers_) {
    const int64_t k = b.numel();
    s.buffers.narrow(0, offset, k).copy_(b.reshape(-1));
    offset += k;
  }
  return best;
}

torch::Tensor GeneratorUnits::Generate(int64_t cls, const torch::Tensor& z) {
  const State& s = states_[static_cast<size_t>(Index(cls))];
  torch::NoGradGuard no_grad;
  Install(s, /*buffers=*/true);
  workspace_->train();
  return workspace_->forward(z.to(device()));
}

const torch::Tensor& GeneratorUnits::parameters(int64_t cls) const {
  return states_[static_cast<size_t>(Index(cls))].params;
}

bool GeneratorUnits::has_optimizer_state(int64_t cls) const {
  return states_[static_cast<size_t>(Index(cls))].exp_avg.defined();
}

int64_t GeneratorUnits::adam_steps(int64_t cls) const {
  return states_[static_cast<size_t>(Index(cls))].step;
}

void GeneratorUnits::AddMemory(BankMemory& m) const {
  m.parameters_per_class = num_params_;
  m.parameter_bytes_per_class = num_params_ * 4;
  m.buffer_bytes_per_class = num_buffers_ * 4;
  m.optimizer_state_bytes_per_class = 2 * num_params_ * 4;
  for (const State& s : states_) {
    m.parameter_bytes += Bytes(s.params);
    m.buffer_bytes += Bytes(s.buffers);
    if (s.exp_avg.defined()) {
      m.optimizer_state_bytes += Bytes(s.exp_avg) + Bytes(s.exp_avg_sq);
      m.classes_with_optimizer_state += 1;
    }
  }
}

void GeneratorUnits::SaveClass(int64_t cls, torch::serialize::OutputArchive& archive) const {
  const State& s = states_[static_cast<size_t>(Index(cls))];
  archive.write("generator", s.params.cpu());
  archive.write("generator_buffers", s.buffers.cpu());
  archive.write("adam_step", torch::tensor(s.step, torch::kLong));
  if (s.exp_avg.defined()) {
    archive.write("adam_exp_avg", s.exp_avg.cpu());
    archive.write("adam_exp_avg_sq", s.exp_avg_sq.cpu());
  }
}

void GeneratorUnits::LoadClass(int64_t cls, torch::serialize::InputArchive& archive) {
  State& s = states_[static_cast<size_t>(Index(cls))];
  const torch::Device dev = device();
  torch::Tensor params, buffers, step;
  archive.read("generator", params);
  TORCH_CHECK(params.numel() == num_params_, "class_bank: class ", cls, "'s saved generator has ",
              params.numel(), " parameters, this bank's have ", num_params_,
              " (nz, ngf or the image shape differ)");
  archive.read("generator_buffers", buffers);
  TORCH_CHECK(buffers.numel() == num_buffers_, "class_bank: class ", cls, "'s saved generator has ",
              buffers.numel(), " buffer values, this bank's have ", num_buffers_);
  archive.read("adam_step", step);
  {
    torch::NoGradGuard no_grad;
    s.params.copy_(params.reshape(-1));
    s.buffers.copy_(buffers.reshape(-1));
  }
  s.step = step.item<int64_t>();
  torch::Tensor m, v;
  if (archive.try_read("adam_exp_avg", m) && archive.try_read("adam_exp_avg_sq", v)) {
    s.exp_avg = m.reshape(-1).to(dev).clone();
    s.exp_avg_sq = v.reshape(-1).to(dev).clone();
  } else {
    s.exp_avg = torch::Tensor();
    s.exp_avg_sq = torch::Tensor();
  }
}

// ---------------------------------------------------------------------------
// InversionUnits

InversionUnits::InversionUnits(const ClassBankOptions& options, ClassRange range,
                               const MethodDeps& deps)
    : ClassUnits(options, range, deps) {
  const int64_t c = deps_.image_shape[0];
  const torch::Device dev = device();
  lo_ = NormalizeUnit(torch::zeros({1, c, 1, 1}), options_.norm()).to(dev);
  hi_ = NormalizeUnit(torch::ones({1, c, 1, 1}), options_.norm()).to(dev);
}

torch::Tensor InversionUnits::Synthesize(int64_t cls, int64_t n, uint64_t key) {
  TORCH_CHECK(n > 0, "class_bank: images per class must be positive");
  Index(cls);  // checks ownership
  const ClassBankOptions& o = options_;
  at::Generator gen = at::detail::createCPUGenerator(key);
  std::mt19937_64 rng(key);
  std::vector<int64_t> shape = {n};
  shape.insert(shape.end(), deps_.image_shape.begin(), deps_.image_shape.end());
  torch::Tensor x = torch::randn(shape, gen, torch::kFloat32).to(device());
  x.requires_grad_(true);
  const std::pair<double, double> betas = BankAdamBetas(ClassBankUnit::kInversion);
  torch::optim::Adam adam(std::vector<torch::Tensor>{x},
                          torch::optim::AdamOptions(BankLr(o)).betas(
                              std::make_tuple(betas.first, betas.second)));
  const int64_t steps = BankGSteps(o);
  double best_cost = std::numeric_limits<double>::infinity();
  torch::Tensor best = x.detach().clone();
  for (int64_t it = 0; it < steps; ++it) {
    torch::Tensor xa = AugmentCropFlip(x, o.crop_padding(), /*flip=*/true, rng);
    torch::Tensor loss = Score(xa, cls);
    if (last_losses_.total < best_cost) {  // the iterate that produced this loss, pre-step
      best_cost = last_losses_.total;
      best = x.detach().clone();
    }
    // Gradients for the pixels only: no model parameter gets any.
    x.mutable_grad() = torch::autograd::grad({loss}, {x})[0];
    adam.step();
    torch::NoGradGuard no_grad;
    x.copy_(torch::maximum(torch::minimum(x, hi_), lo_));
  }
  torch::NoGradGuard no_grad;
  return Denormalize(torch::maximum(torch::minimum(best, hi_), lo_), o.norm()).clamp(0, 1);
}

void InversionUnits::AddMemory(BankMemory&) const {}

// ---------------------------------------------------------------------------
// ClassBank

ClassBank::ClassBank(ClassBankOptions options, ClassRange owned, MethodDeps deps)
    : options_(std::move(options)), range_(owned), deps_(std::move(deps)),
      units_(MakeUnits(options_, range_, deps_)),
      pool_per_class_(std::max<int64_t>(
          1, options_.pool_max_images() / std::max<int64_t>(1, range_.size()))) {
  TORCH_CHECK(options_.images_per_class() > 0, "class_bank: images_per_class must be positive");
  TORCH_CHECK(options_.pool_max_images() > 0, "class_bank: pool_max_images must be positive");
  pools_.reserve(static_cast<size_t>(range_.size()));
  for (int64_t i = 0; i < range_.size(); ++i) {
    pools_.emplace_back(pool_per_class_, ImagePool::Quantize::kTruncate);
  }
}

int64_t ClassBank::Index(int64_t cls) const {
  TORCH_CHECK(range_.contains(cls), "class_bank: class ", cls, " is outside this bank's classes ",
              range_.ToString());
  return cls - range_.begin;
}

std::vector<int64_t> ClassBank::owned() const {
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(range_.size()));
  for (int64_t c = range_.begin; c < range_.end; ++c) out.push_back(c);
  return out;
}

std::vector<int64_t> ClassBank::RoundClasses(int64_t round, int64_t classes_per_round) const {
  const int64_t n = range_.size();
  if (round <= 0 || classes_per_round <= 0 || classes_per_round >= n) return owned();
  const int64_t start = ((round - 1) % n) * classes_per_round % n;
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(classes_per_round));
  for (int64_t j = 0; j < classes_per_round; ++j) out.push_back(range_.begin + (start + j) % n);
  return out;
}

LabelledImages ClassBank::Synthesize(const std::vector<int64_t>& classes, int64_t round,
                                     uint64_t seed) {
  TORCH_CHECK(round >= 0, "class_bank: round must be >= 0");
  for (int64_t c : classes) Index(c);  // every class owned, before any work
  ModeGuard teacher_mode(*deps_.teacher);
  ModeGuard student_mode(*deps_.student);
  deps_.teacher->eval();
  deps_.student->eval();
  std::vector<torch::Tensor> images, labels;
  for (int64_t c : classes) {
    const uint64_t key =
        StreamSeed(seed, kSynthesisStream, static_cast<uint64_t>(round * deps_.num_classes + c));
    torch::Tensor x = units_->Synthesize(c, options_.images_per_class(), key);
    pools_[static_cast<size_t>(Index(c))].Add(x);
    images.push_back(QuantizeTruncate(x));
    labels.push_back(torch::full({x.size(0)}, c, torch::kLong));
  }
  if (images.empty()) return {};
  return {torch::cat(images), torch::cat(labels)};
}

LabelledImages ClassBank::Sample(int64_t n, uint64_t key) const {
  TORCH_CHECK(n > 0, "class_bank: batch size must be positive");
  std::vector<int64_t> with_images;  // owned indices
  for (size_t i = 0; i < pools_.size(); ++i) {
    if (pools_[i].size() > 0) with_images.push_back(static_cast<int64_t>(i));
  }
  TORCH_CHECK(!with_images.empty(), "class_bank: Sample() before any class was synthesized");
  const int64_t k = static_cast<int64_t>(with_images.size());
  std::vector<int64_t> counts(with_images.size(), n / k);
  if (n % k != 0) {
    at::Generator gen = at::detail::createCPUGenerator(StreamSeed(key, kExtraDrawStream, 0));
    torch::Tensor order = torch::randperm(k, gen, torch::kLong);
    auto a = order.accessor<int64_t, 1>();
    for (int64_t j = 0; j < n % k; ++j) counts[static_cast<size_t>(a[j])] += 1;
  }
  std::vector<torch::Tensor> images, labels;
  for (size_t j = 0; j < with_images.size(); ++j) {
    if (counts[j] == 0) continue;
    const int64_t cls = range_.begin + with_images[j];
    images.push_back(pools_[static_cast<size_t>(with_images[j])].Sample(
        counts[j], StreamSeed(key, kClassSampleStream, static_cast<uint64_t>(cls)),
        options_.crop_padding(), /*flip=*/true));
    labels.push_back(torch::full({counts[j]}, cls, torch::kLong));
  }
  return {torch::cat(images), torch::cat(labels)};
}

int64_t ClassBank::pool_size() const {
  int64_t n = 0;
  for (const ImagePool& p : pools_) n += p.size();
  return n;
}

const ImagePool& ClassBank::pool(int64_t cls) const {
  return pools_[static_cast<size_t>(Index(cls))];
}

BankMemory ClassBank::Memory() const {
  BankMemory m;
  m.classes = range_.size();
  units_->AddMemory(m);
  for (const ImagePool& p : pools_) m.pool_bytes += Bytes(p.images());
  return m;
}

GeneratorUnits* ClassBank::generator_units() {
  return dynamic_cast<GeneratorUnits*>(units_.get());
}

void ClassBank::Save(torch::serialize::OutputArchive& archive) const {
  archive.write("num_classes", torch::tensor(deps_.num_classes, torch::kLong));
  archive.write("class_range",
                torch::tensor(std::vector<int64_t>{range_.begin, range_.end}, torch::kLong));
  archive.write("unit", torch::tensor(static_cast<int64_t>(units_->kind()), torch::kLong));
  for (int64_t c = range_.begin; c < range_.end; ++c) {
    torch::serialize::OutputArchive class_archive(archive.compilation_unit());
    class_archive.write("class_id", torch::tensor(c, torch::kLong));
    units_->SaveClass(c, class_archive);
    pools_[static_cast<size_t>(Index(c))].Save(class_archive, "pool");
    archive.write(ClassArchiveKey(c), class_archive);
  }
}

void ClassBank::Load(torch::serialize::InputArchive& archive) {
  torch::Tensor num_classes, range, unit;
  archive.read("num_classes", num_classes);
  archive.read("class_range", range);
  TORCH_CHECK(range.numel() == 2, "class_bank: a checkpoint's range must be {begin, end}");
  const ClassRange saved{range[0].item<int64_t>(), range[1].item<int64_t>()};
  const int64_t saved_classes = num_classes.item<int64_t>();
  TORCH_CHECK(saved == range_ && saved_classes == deps_.num_classes,
              "class_bank: the checkpoint holds the shard of classes ", saved.ToString(), " of ",
              saved_classes, ", this bank owns classes ", range_.ToString(), " of ",
              deps_.num_classes, ": load the checkpoint written for this range");
  archive.read("unit", unit);
  const int64_t saved_unit = unit.item<int64_t>();
  TORCH_CHECK(saved_unit == static_cast<int64_t>(units_->kind()),
              "class_bank: the checkpoint holds ",
              saved_unit == static_cast<int64_t>(ClassBankUnit::kGenerator) ? "generator"
                                                                             : "inversion",
              " units, this bank's are ", ClassBankUnitName(units_->kind()));
  for (int64_t c = range_.begin; c < range_.end; ++c) {
    torch::serialize::InputArchive class_archive;
    archive.read(ClassArchiveKey(c), class_archive);
    torch::Tensor id;
    class_archive.read("class_id", id);
    TORCH_CHECK(id.item<int64_t>() == c, "class_bank: checkpoint entry ", ClassArchiveKey(c),
                " holds class ", id.item<int64_t>());
    units_->LoadClass(c, class_archive);
    pools_[static_cast<size_t>(Index(c))].Load(class_archive, "pool");
  }
}

}  // namespace dfkd::worker
