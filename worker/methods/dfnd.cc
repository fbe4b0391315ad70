// DFND (huawei-noah DFND-train.py); see dfnd.h for the reference choices taken.
#include "worker/methods/dfnd.h"

#include <chrono>
#include <utility>
#include <vector>

#include "worker/methods/optimizer_state.h"
#include "worker/methods/losses.h"
#include "worker/methods/seeding.h"

namespace dfkd::worker {

torch::Tensor NoiseTransition(const torch::Tensor& theta, double a) {
  TORCH_CHECK(theta.dim() == 2 && theta.size(0) >= 2 && theta.size(1) == theta.size(0) - 1,
              "NoiseTransition: theta must be [C, C - 1] with C >= 2, got ", theta.sizes());
  TORCH_CHECK(a >= 0 && a <= 1, "NoiseTransition: teacher accuracy must be in [0, 1]");
  const int64_t c = theta.size(0);
  torch::Tensor off = torch::softmax(theta, 1) * (1.0 - a);  // [C, C - 1]
  // Row i, column j reads off[i][j] left of the diagonal, off[i][j - 1] right
  // of it, and a zero pad (column C - 1 of `padded`) on it.
  torch::Tensor padded = torch::cat({off, torch::zeros({c, 1}, off.options())}, 1);
  const auto index_options = torch::TensorOptions(torch::kLong).device(theta.device());
  torch::Tensor col = torch::arange(c, index_options).view({1, c}).expand({c, c});
  torch::Tensor row = torch::arange(c, index_options).view({c, 1}).expand({c, c});
  torch::Tensor index =
      torch::where(col < row, col, torch::where(col > row, col - 1, torch::full_like(col, c - 1)));
  return padded.gather(1, index.contiguous()) + torch::eye(c, off.options()) * a;
}

torch::Tensor NoiseAdaptationLoss(const torch::Tensor& s, const torch::Tensor& t,
                                  const torch::Tensor& q) {
  TORCH_CHECK(s.dim() == 2 && s.sizes() == t.sizes(), "NoiseAdaptationLoss: logits ", s.sizes(),
              " vs ", t.sizes());
  TORCH_CHECK(q.dim() == 2 && q.size(0) == s.size(1) && q.size(1) == s.size(1),
              "NoiseAdaptationLoss: transition ", q.sizes(), " for ", s.size(1), " classes");
  torch::Tensor adapted = torch::matmul(torch::softmax(s, 1), q);
  return torch::nll_loss(torch::log(adapted), t.detach().argmax(1));
}

Dfnd::Dfnd(DfndOptions options, MethodDeps deps)
    : options_(std::move(options)), deps_(std::move(deps)), pool_(options_.pool()) {
  const DfndOptions& o = options_;
  TORCH_CHECK(deps_.teacher && deps_.student, "dfnd: teacher and student required");
  TORCH_CHECK(deps_.num_classes >= 2, "dfnd: needs at least 2 classes");
  TORCH_CHECK(deps_.image_shape.size() == 3, "dfnd: image shape must be {C, H, W}");
  TORCH_CHECK(o.temperature() > 0, "dfnd: temperature must be positive");
  TORCH_CHECK(o.teacher_accuracy() >= 0 && o.teacher_accuracy() <= 1,
              "dfnd: teacher_accuracy must be in [0, 1]");
  TORCH_CHECK(o.lr_theta() >= 0, "dfnd: lr_theta must be >= 0");
  TORCH_CHECK(o.select_chunk() > 0, "dfnd: select_chunk must be positive");
  TORCH_CHECK(o.crop_padding() >= 0, "dfnd: crop_padding must be >= 0");
  const torch::Tensor& images = pool_.images();
  TORCH_CHECK(images.size(1) == deps_.image_shape[0] && images.size(2) == deps_.image_shape[1] &&
                  images.size(3) == deps_.image_shape[2],
              "dfnd: pool images ", images.sizes().slice(1), " do not match the task's ",
              torch::IntArrayRef(deps_.image_shape));
  TORCH_CHECK(o.num_select() >= 0 && o.num_select() <= images.size(0), "dfnd: num_select ",
              o.num_select(), " is outside [0, ", images.size(0), "] (the pool's size)");
  const Normalization& n = pool_norm();
  TORCH_CHECK(!n.mean.empty() && n.mean.size() == n.std.size(),
              "dfnd: normalisation mean/std missing or of different lengths");
  TORCH_CHECK(n.mean.size() == 1 || static_cast<int64_t>(n.mean.size()) == deps_.image_shape[0],
              "dfnd: normalisation has ", n.mean.size(), " channels, images have ",
              deps_.image_shape[0]);
  const int64_t c = deps_.num_classes;
  theta_ = torch::zeros({c, c - 1}, torch::TensorOptions(torch::kFloat32).device(device()))
               .requires_grad_(true);
  theta_optimizer_ = std::make_unique<torch::optim::Adam>(
      std::vector<torch::Tensor>{theta_}, torch::optim::AdamOptions(o.lr_theta()));
}

torch::Device Dfnd::device() const {
  return DeviceOf(*deps_.teacher);
}

const Normalization& Dfnd::pool_norm() const {
  return options_.pool_norm().mean.empty() ? options_.norm() : options_.pool_norm();
}

torch::Tensor Dfnd::Transition() const {
  return NoiseTransition(theta_, options_.teacher_accuracy());
}

void Dfnd::Select(Communicator* comm) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  PoolScores scores = ScorePool(pool_.images(), pool_norm(), *deps_.teacher,
                                options_.select_chunk(), comm, &images_scored_,
                                /*keep_logits=*/true);
  const int64_t n = pool_.images().size(0);
  const int64_t keep = options_.num_select() > 0 ? options_.num_select() : n;
  torch::Tensor selection = SelectByScore(scores.neg_log_max, keep, /*highest=*/false);
  pool_.Select(selection);
  histogram_ = torch::bincount(scores.argmax.index_select(0, selection), c10::nullopt,
                               deps_.num_classes);
  selected_logits_ =
      scores.logits.defined() ? scores.logits.index_select(0, selection) : torch::Tensor();
  selection_seconds_ = std::chrono::duration<double>(Clock::now() - start).count();
  selected_ = true;
}

void Dfnd::Synthesize(const RoundContext& ctx) {
  if (!selected_) Select(ctx.comm);
}

torch::Tensor Dfnd::Sample(int64_t batch_size, const RoundContext& ctx) {
  TORCH_CHECK(batch_size > 0, "dfnd: batch_size must be positive");
  if (!selected_) Select(nullptr);
  torch::Tensor images =
      pool_.Sample(batch_size, StudentBatchKey(ctx), options_.crop_padding(), /*flip=*/true);
  return Normalize(images.to(device()), pool_norm());
}

void Dfnd::ApplyPendingThetaStep(Communicator* comm) {
  if (!theta_.grad().defined()) return;
  if (comm != nullptr) AverageGradients(*comm, {theta_});
  theta_optimizer_->step();
  theta_.mutable_grad() = torch::Tensor();
  ++theta_steps_;
}

torch::Tensor Dfnd::DistillLoss(const DistillBatch& batch, const RoundContext& ctx) {
  ApplyPendingThetaStep(ctx.comm);
  torch::Tensor kd = KdLoss(batch.KdStudentLogits(), batch.teacher.logits, options_.temperature());
  return kd + NoiseAdaptationLoss(batch.student.logits, batch.teacher.logits, Transition());
}

void Dfnd::ForEachPoolChunk(const std::function<void(const torch::Tensor&)>& fn) {
  if (!selected_) Select(nullptr);
  const torch::Device dev = device();
  torch::NoGradGuard no_grad;
  pool_.ForEachChunk(options_.select_chunk(), [&](const torch::Tensor& images) {
    fn(Normalize(images.to(dev), pool_norm()));
  });
}

torch::Tensor Dfnd::CachedPoolLogits(const torch::nn::Module& model) const {
  return &model == deps_.teacher.get() ? selected_logits_ : torch::Tensor();
}

nlohmann::json Dfnd::Describe() const {
  const DfndOptions& o = options_;
  nlohmann::json j = {{"method", "dfnd"},
                      {"temperature", o.temperature()},
                      {"num_select", o.num_select()},
                      {"teacher_accuracy", o.teacher_accuracy()},
                      {"lr_theta", o.lr_theta()},
                      {"select_chunk", o.select_chunk()},
                      {"crop_padding", o.crop_padding()},
                      {"pool_norm_mean", pool_norm().mean},
                      {"pool_norm_std", pool_norm().std},
                      {"pool_images", pool_.images().size(0)},
                      {"selected_images", selected_ ? pool_.size() : 0},
                      {"images_scored", images_scored_},
                      {"theta_steps", theta_steps_}};
  if (selected_) {
    j["selection_seconds"] = selection_seconds_;
    if (selection_seconds_ > 0) {
      j["selection_images_per_second"] =
          static_cast<double>(pool_.images().size(0)) / selection_seconds_;
    }
    torch::Tensor h = histogram_.to(torch::kCPU, torch::kLong).contiguous();
    const int64_t* counts = h.data_ptr<int64_t>();
    j["class_histogram"] = std::vector<int64_t>(counts, counts + h.numel());
  }
  return j;
}

void Dfnd::Save(torch::serialize::OutputArchive& archive) const {
  torch::serialize::OutputArchive opt;
  theta_optimizer_->save(opt);
  archive.write("theta", theta_.detach().cpu());
  archive.write("theta_optimizer", opt);
  archive.write("theta_steps", torch::tensor(theta_steps_, torch::kLong));
  // The previous step's gradient, not yet applied (see dfnd.h).
  if (theta_.grad().defined()) archive.write("theta_pending_grad", theta_.grad().cpu());
  if (selected_) {
    archive.write("selection", pool_.selection());
    archive.write("class_histogram", histogram_);
    archive.write("selection_seconds", torch::tensor(selection_seconds_, torch::kFloat64));
  }
}

void Dfnd::Load(torch::serialize::InputArchive& archive) {
  torch::Tensor theta, steps, grad, selection, histogram, seconds;
  archive.read("theta", theta);
  {
    torch::NoGradGuard no_grad;
    theta_.copy_(theta);
  }
  torch::serialize::InputArchive opt;
  archive.read("theta_optimizer", opt);
  theta_optimizer_->load(opt);
  MoveOptimizerState(*theta_optimizer_, theta_.device());
  archive.read("theta_steps", steps);
  theta_steps_ = steps.item<int64_t>();
  theta_.mutable_grad() =
      archive.try_read("theta_pending_grad", grad) ? grad.to(theta_.device()) : torch::Tensor();
  if (archive.try_read("selection", selection)) {
    archive.read("class_histogram", histogram);
    archive.read("selection_seconds", seconds);
    pool_.Select(selection);
    histogram_ = histogram.cpu();
    selection_seconds_ = seconds.item<double>();
    selected_ = true;
  } else {
    pool_.Select(torch::Tensor());
    histogram_ = torch::Tensor();
    selection_seconds_ = 0;
    selected_ = false;
  }
}

}  // namespace dfkd::worker
