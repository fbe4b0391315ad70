// MosaicKD (zju-vipa/MosaicKD kd_mosaic.py); see mosaic_kd.h for the
// reference choices taken.
#include "worker/methods/mosaic_kd.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <ATen/CPUGeneratorImpl.h>

#include "worker/methods/optimizer_state.h"
#include "worker/methods/losses.h"
#include "worker/methods/mode_guard.h"
#include "worker/methods/seeding.h"

namespace dfkd::worker {

namespace {

// A copy of a module's buffers (BN running statistics), to put back.
class BufferSnapshot {
 public:
  explicit BufferSnapshot(torch::nn::Module& module) : buffers_(module.buffers()) {
    torch::NoGradGuard no_grad;
    for (const torch::Tensor& b : buffers_) saved_.push_back(b.detach().clone());
  }
  void Restore() {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < buffers_.size(); ++i) buffers_[i].copy_(saved_[i]);
  }

 private:
  std::vector<torch::Tensor> buffers_;
  std::vector<torch::Tensor> saved_;
};

void SetLearningRate(torch::optim::Adam& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) {
    static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
  }
}

// One optimizer step on d loss / d params only (no other tensor accumulates a
// gradient), averaged over ranks; the gradients are cleared afterwards.
void StepOn(const torch::Tensor& loss, std::vector<torch::Tensor> params,
            torch::optim::Adam& optimizer, Communicator* comm) {
  std::vector<torch::Tensor> grads =
      torch::autograd::grad({loss}, params, /*grad_outputs=*/{}, /*retain_graph=*/false,
                            /*create_graph=*/false, /*allow_unused=*/true);
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].mutable_grad() = grads[i].defined() ? grads[i] : torch::zeros_like(params[i]);
  }
  if (comm != nullptr) AverageGradients(*comm, params);
  optimizer.step();
  for (torch::Tensor& p : params) p.mutable_grad() = torch::Tensor();
}

torch::Tensor BceSum(const torch::Tensor& logits, double target) {
  namespace F = torch::nn::functional;
  return F::binary_cross_entropy_with_logits(
      logits, torch::full_like(logits, target),
      F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kSum));
}

}  // namespace

torch::Tensor MosaicAdversarialLoss(const torch::Tensor& s, const torch::Tensor& t) {
  TORCH_CHECK(s.dim() == 2 && s.sizes() == t.sizes(), "MosaicAdversarialLoss: logits ",
              s.sizes(), " vs ", t.sizes());
  torch::Tensor log_p_t = torch::log_softmax(t, 1);
  torch::Tensor kl = (log_p_t.exp() * (log_p_t - torch::log_softmax(s, 1))).sum() /
                     static_cast<double>(s.size(0));
  return -kl;
}

torch::Tensor AlignLoss(const torch::Tensor& t) {
  TORCH_CHECK(t.dim() == 2, "AlignLoss: expects [B, C] logits");
  torch::Tensor log_p = torch::log_softmax(t, 1);
  return -(log_p.exp() * log_p).sum(1).mean();
}

torch::Tensor BalanceLoss(const torch::Tensor& t) {
  TORCH_CHECK(t.dim() == 2, "BalanceLoss: expects [B, C] logits");
  torch::Tensor pbar = torch::softmax(t, 1).mean(0);
  return (pbar * torch::log2(pbar)).sum();
}

torch::Tensor PatchGanLoss(const torch::Tensor& d, bool real) {
  TORCH_CHECK(d.dim() >= 1 && d.size(0) > 0, "PatchGanLoss: expects a batch of patch logits");
  return BceSum(d, real ? 1.0 : 0.0) / static_cast<double>(d.size(0));
}

torch::Tensor MosaicDiscriminatorLoss(const torch::Tensor& fake, const torch::Tensor& real,
                                      double local_weight) {
  TORCH_CHECK(fake.dim() >= 1 && fake.size(0) > 0,
              "MosaicDiscriminatorLoss: expects a batch of patch logits");
  return (BceSum(fake, 0.0) + BceSum(real, 1.0)) / (2.0 * static_cast<double>(fake.size(0))) *
         local_weight;
}

MosaicGeneratorLosses MosaicGeneratorLoss(const torch::Tensor& s, const torch::Tensor& t,
                                          const torch::Tensor& d_fake,
                                          const MosaicKdOptions& o) {
  MosaicGeneratorLosses l;
  l.adversarial = MosaicAdversarialLoss(s, t);
  l.align = AlignLoss(t);
  l.local = PatchGanLoss(d_fake, /*real=*/true);
  l.balance = BalanceLoss(t);
  l.total = o.adv_weight() * l.adversarial + o.align_weight() * l.align +
            o.local_weight() * l.local + o.balance_weight() * l.balance;
  return l;
}

namespace {

Generator MakeMosaicGenerator(const MosaicKdOptions& o, const MethodDeps& deps) {
  TORCH_CHECK(deps.image_shape.size() == 3, "mosaickd: image shape must be {C, H, W}");
  TORCH_CHECK(deps.image_shape[1] == deps.image_shape[2], "mosaickd: images must be square");
  TORCH_CHECK(o.nz() > 0 && o.ngf() > 0, "mosaickd: nz and ngf must be positive");
  return Generator(GeneratorOptions(o.nz())
                       .ngf(o.ngf())
                       .img_size(deps.image_shape[1])
                       .channels(deps.image_shape[0])
                       .large(true));  // G-C: the G-B layout
}

}  // namespace

MosaicKd::MosaicKd(MosaicKdOptions options, MethodDeps deps)
    : options_(std::move(options)), deps_(std::move(deps)), pool_(options_.pool()),
      generator_(MakeMosaicGenerator(options_, deps_)),
      discriminator_(PatchDiscriminatorOptions(deps_.image_shape[0]).ndf(options_.ndf())) {
  const MosaicKdOptions& o = options_;
  TORCH_CHECK(deps_.teacher && deps_.student, "mosaickd: teacher and student required");
  TORCH_CHECK(deps_.num_classes > 0, "mosaickd: num_classes must be positive");
  TORCH_CHECK(o.synthesis_batch_size() > 0, "mosaickd: synthesis_batch_size must be positive");
  TORCH_CHECK(o.lr_g() >= 0 && o.lr_d() >= 0, "mosaickd: learning rates must be >= 0");
  TORCH_CHECK(o.total_rounds() >= 0, "mosaickd: total_rounds must be >= 0");
  TORCH_CHECK(o.score_chunk() > 0, "mosaickd: score_chunk must be positive");
  TORCH_CHECK(o.crop_padding() >= 0, "mosaickd: crop_padding must be >= 0");
  const torch::Tensor& images = pool_.images();
  TORCH_CHECK(images.size(1) == deps_.image_shape[0] && images.size(2) == deps_.image_shape[1] &&
                  images.size(3) == deps_.image_shape[2],
              "mosaickd: pool images ", images.sizes().slice(1), " do not match the task's ",
              torch::IntArrayRef(deps_.image_shape));
  TORCH_CHECK(o.ood_subset() >= 0 && o.ood_subset() <= images.size(0), "mosaickd: ood_subset ",
              o.ood_subset(), " is outside [0, ", images.size(0), "] (the pool's size)");
  for (const Normalization* n : {&o.norm(), &pool_norm()}) {
    const size_t nm = n->mean.size();
    TORCH_CHECK(nm > 0 && nm == n->std.size(),
                "mosaickd: normalisation mean/std missing or of different lengths");
    TORCH_CHECK(nm == 1 || static_cast<int64_t>(nm) == deps_.image_shape[0],
                "mosaickd: normalisation has ", nm, " channels, images have ",
                deps_.image_shape[0]);
  }
  const torch::Device dev = device();
  generator_->to(dev);
  discriminator_->to(dev);
  generator_->train();
  discriminator_->train();
  optimizer_g_ = std::make_unique<torch::optim::Adam>(
      generator_->parameters(), torch::optim::AdamOptions(o.lr_g()).betas({0.5, 0.999}));
  optimizer_d_ = std::make_unique<torch::optim::Adam>(
      discriminator_->parameters(), torch::optim::AdamOptions(o.lr_d()).betas({0.5, 0.999}));
}

torch::Device MosaicKd::device() const {
  return DeviceOf(*deps_.teacher);
}

const Normalization& MosaicKd::pool_norm() const {
  return options_.pool_norm().mean.empty() ? options_.norm() : options_.pool_norm();
}

double MosaicKd::LrFactor(int64_t round) const {
  const int64_t total = options_.total_rounds();
  if (total <= 0) return 1.0;
  const double r = static_cast<double>(std::clamp<int64_t>(round, 0, total));
  constexpr double kPi = 3.14159265358979323846;
  return 0.5 * (1.0 + std::cos(kPi * r / static_cast<double>(total)));
}

void MosaicKd::EnsureSubset(Communicator* comm) {
  if (subset_ready_ || options_.ood_subset() == 0) return;
  // The reference scores with the in-domain test transform: no augmentation,
  // the task's normalisation.
  PoolScores scores = ScorePool(pool_.images(), options_.norm(), *deps_.teacher,
                                options_.score_chunk(), comm, &images_scored_);
  pool_.Select(SelectByScore(scores.entropy, options_.ood_subset(), /*highest=*/true));
  subset_ready_ = true;
}

void MosaicKd::Synthesize(const RoundContext& ctx) {
  EnsureSubset(ctx.comm);
  const MosaicKdOptions& o = options_;
  const int64_t b = o.synthesis_batch_size();
  const torch::Device dev = device();
  const uint64_t rank = RankOf(ctx);
  const uint64_t round = static_cast<uint64_t>(ctx.round);
  const double factor = LrFactor(ctx.round);
  SetLearningRate(*optimizer_g_, o.lr_g() * factor);
  SetLearningRate(*optimizer_d_, o.lr_d() * factor);

  ModeGuard teacher_mode(*deps_.teacher);
  ModeGuard student_mode(*deps_.student);
  deps_.teacher->eval();
  deps_.student->train();  // the reference's student is in train mode here
  generator_->train();
  discriminator_->train();

  at::Generator gen =
      at::detail::createCPUGenerator(StreamSeed(ctx.seed, 1 + (rank << 8), round));
  torch::Tensor z = torch::randn({b, o.nz()}, gen, torch::kFloat32).to(dev);
  torch::Tensor fake = NormalizeUnit(generator_->forward(z), o.norm());
  // D's real batch: no augmentation, the task's normalisation (§7.3).
  torch::Tensor real =
      Normalize(pool_.Sample(b, StreamSeed(ctx.seed, 5 + (rank << 8), round), 0, false).to(dev),
                o.norm());

  // 1. Patch discrimination, on detached fakes.
  torch::Tensor loss_d = MosaicDiscriminatorLoss(discriminator_->forward(fake.detach()),
                                                 discriminator_->forward(real), o.local_weight());
  last_losses_.discriminator = loss_d.item<double>();
  StepOn(loss_d, discriminator_->parameters(), *optimizer_d_, ctx.comm);

  // 2. Generation: gradients through teacher, student and the updated D into G only.
  BufferSnapshot student_buffers(*deps_.student);
  ClassifierOutput t = deps_.teacher->ForwardWithTaps(fake, TapRequest{});
  ClassifierOutput s = deps_.student->ForwardWithTaps(fake, TapRequest{});
  MosaicGeneratorLosses l =
      MosaicGeneratorLoss(s.logits, t.logits, discriminator_->forward(fake), o);
  last_losses_.adversarial = l.adversarial.item<double>();
  last_losses_.align = l.align.item<double>();
  last_losses_.local = l.local.item<double>();
  last_losses_.balance = l.balance.item<double>();
  last_losses_.generator = l.total.item<double>();
  StepOn(l.total, generator_->parameters(), *optimizer_g_, ctx.comm);
  student_buffers.Restore();
}

torch::Tensor MosaicKd::Sample(int64_t batch_size, const RoundContext& ctx) {
  TORCH_CHECK(batch_size >= 2, "mosaickd: batch_size must be >= 2 (half generator, half pool)");
  EnsureSubset(nullptr);  // a no-op once Synthesize ran or a checkpoint was loaded
  const MosaicKdOptions& o = options_;
  const int64_t n_fake = batch_size / 2, n_pool = batch_size - n_fake;
  const torch::Device dev = device();
  torch::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(
      StreamSeed(ctx.seed, 3 + (RankOf(ctx) << 8), static_cast<uint64_t>(ctx.global_step)));
  torch::Tensor z = torch::randn({n_fake, o.nz()}, gen, torch::kFloat32).to(dev);
  generator_->train();  // the reference samples with batch statistics
  torch::Tensor fake = NormalizeUnit(generator_->forward(z), o.norm());
  torch::Tensor ood = Normalize(
      pool_.Sample(n_pool, StudentBatchKey(ctx), o.crop_padding(), /*flip=*/true).to(dev),
      pool_norm());
  return torch::cat({fake, ood}, 0);
}

torch::Tensor MosaicKd::DistillLoss(const DistillBatch& batch, const RoundContext&) {
  return KdLoss(batch.KdStudentLogits(), batch.teacher.logits, options_.temperature());
}

void MosaicKd::ForEachPoolChunk(const std::function<void(const torch::Tensor&)>& fn) {
  EnsureSubset(nullptr);
  const torch::Device dev = device();
  torch::NoGradGuard no_grad;
  pool_.ForEachChunk(options_.score_chunk(), [&](const torch::Tensor& images) {
    fn(Normalize(images.to(dev), pool_norm()));
  });
}

nlohmann::json MosaicKd::Describe() const {
  const MosaicKdOptions& o = options_;
  return {{"method", "mosaickd"},
          {"temperature", o.temperature()},
          {"nz", o.nz()},
          {"ngf", o.ngf()},
          {"ndf", o.ndf()},
          {"synthesis_batch_size", o.synthesis_batch_size()},
          {"lr_g", o.lr_g()},
          {"lr_d", o.lr_d()},
          {"local_weight", o.local_weight()},
          {"align_weight", o.align_weight()},
          {"adv_weight", o.adv_weight()},
          {"balance_weight", o.balance_weight()},
          {"ood_subset", o.ood_subset()},
          {"total_rounds", o.total_rounds()},
          {"crop_padding", o.crop_padding()},
          {"norm_mean", o.norm().mean},
          {"norm_std", o.norm().std},
          {"pool_norm_mean", pool_norm().mean},
          {"pool_norm_std", pool_norm().std},
          {"pool_images", pool_.images().size(0)},
          {"pool_images_used", pool_.size()},
          {"images_scored", images_scored_},
          {"last_losses",
           {{"discriminator", last_losses_.discriminator},
            {"adversarial", last_losses_.adversarial},
            {"align", last_losses_.align},
            {"local", last_losses_.local},
            {"balance", last_losses_.balance},
            {"generator", last_losses_.generator}}}};
}

void MosaicKd::Save(torch::serialize::OutputArchive& archive) const {
  torch::serialize::OutputArchive g, d, opt_g, opt_d;
  generator_->save(g);
  discriminator_->save(d);
  optimizer_g_->save(opt_g);
  optimizer_d_->save(opt_d);
  archive.write("generator", g);
  archive.write("discriminator", d);
  archive.write("generator_optimizer", opt_g);
  archive.write("discriminator_optimizer", opt_d);
  if (subset_ready_ && pool_.selection().defined()) archive.write("ood_subset", pool_.selection());
}

void MosaicKd::Load(torch::serialize::InputArchive& archive) {
  torch::serialize::InputArchive g, d, opt_g, opt_d;
  archive.read("generator", g);
  generator_->load(g);
  archive.read("discriminator", d);
  discriminator_->load(d);
  // load() may have put CPU tensors in place; the same tensors, moved back.
  const torch::Device dev = device();
  generator_->to(dev);
  discriminator_->to(dev);
  archive.read("generator_optimizer", opt_g);
  optimizer_g_->load(opt_g);
  MoveOptimizerState(*optimizer_g_, dev);
  archive.read("discriminator_optimizer", opt_d);
  optimizer_d_->load(opt_d);
  MoveOptimizerState(*optimizer_d_, dev);
  torch::Tensor subset;
  if (archive.try_read("ood_subset", subset)) {
    pool_.Select(subset);
    subset_ready_ = true;
  } else {
    pool_.Select(torch::Tensor());
    subset_ready_ = false;
  }
}

}  // namespace dfkd::worker
