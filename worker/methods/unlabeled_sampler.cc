#include "worker/methods/unlabeled_sampler.h"

#include <algorithm>
#include <random>
#include <utility>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>

#include "worker/methods/mode_guard.h"

namespace dfkd::worker {

UnlabeledSampler::UnlabeledSampler(torch::Tensor images) : images_(std::move(images)) {
  TORCH_CHECK(images_.defined() && images_.dim() == 4 && images_.scalar_type() == torch::kUInt8,
              "unlabeled pool: expects uint8 [N, C, H, W] images");
  TORCH_CHECK(images_.device().is_cpu(), "unlabeled pool: images must be on the CPU");
  TORCH_CHECK(images_.size(0) > 0, "unlabeled pool: the pool is empty");
  images_ = images_.contiguous();
}

void UnlabeledSampler::Select(torch::Tensor indices) {
  if (!indices.defined()) {
    selection_ = torch::Tensor();
    return;
  }
  TORCH_CHECK(indices.dim() == 1 && indices.numel() > 0,
              "unlabeled pool: a selection must be a non-empty list of indices");
  indices = indices.to(torch::kCPU, torch::kLong).contiguous();
  TORCH_CHECK(indices.min().item<int64_t>() >= 0 &&
                  indices.max().item<int64_t>() < images_.size(0),
              "unlabeled pool: selected index outside [0, ", images_.size(0), ")");
  selection_ = indices;
}

int64_t UnlabeledSampler::size() const {
  return selection_.defined() ? selection_.size(0) : images_.size(0);
}

torch::Tensor UnlabeledSampler::Sample(int64_t n, uint64_t key, int64_t crop_padding,
                                       bool flip) const {
  TORCH_CHECK(n > 0, "unlabeled pool: batch size must be positive");
  at::Generator gen = at::detail::createCPUGenerator(key);
  std::mt19937_64 rng(key);
  torch::Tensor idx = torch::randint(0, size(), {n}, gen, torch::kLong);
  if (selection_.defined()) idx = selection_.index_select(0, idx);
  return RandomCropFlip(images_.index_select(0, idx), crop_padding, flip, rng);
}

void UnlabeledSampler::ForEachChunk(
    int64_t chunk, const std::function<void(const torch::Tensor&)>& fn) const {
  TORCH_CHECK(chunk > 0, "unlabeled pool: chunk size must be positive");
  const int64_t n = size();
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t len = std::min(chunk, n - begin);
    fn(selection_.defined() ? images_.index_select(0, selection_.narrow(0, begin, len))
                            : images_.narrow(0, begin, len));
  }
}

PoolScores ScorePool(const torch::Tensor& pool, const Normalization& norm,
                     ClassifierImpl& teacher, int64_t chunk, Communicator* comm,
                     int64_t* scored, bool keep_logits) {
  TORCH_CHECK(pool.dim() == 4 && pool.scalar_type() == torch::kUInt8,
              "ScorePool: expects uint8 [N, C, H, W] images");
  TORCH_CHECK(chunk > 0, "ScorePool: chunk size must be positive");
  const int64_t n = pool.size(0);
  const int64_t world = comm != nullptr ? comm->size() : 1;
  const int64_t rank = comm != nullptr ? comm->rank() : 0;
  const torch::Device dev = DeviceOf(teacher);
  torch::NoGradGuard no_grad;
  ModeGuard mode(teacher);
  teacher.eval();
  // Columns: entropy, -ln max p, argmax (exact in float for any class count
  // a classifier has); rows no rank scored stay 0 for the sum over ranks.
  torch::Tensor out = torch::zeros({n, 3}, torch::TensorOptions(torch::kFloat32).device(dev));
  keep_logits = keep_logits && world == 1;
  std::vector<torch::Tensor> kept;  // per chunk, CPU
  int64_t kept_floats = 0;
  int64_t k = 0;
  for (int64_t begin = 0; begin < n; begin += chunk, ++k) {
    if (k % world != rank) continue;
    const int64_t len = std::min(chunk, n - begin);
    torch::Tensor x = Normalize(pool.narrow(0, begin, len).to(dev), norm);
    torch::Tensor logits = teacher.forward(x).to(torch::kFloat32);
    if (keep_logits) {
      kept_floats += logits.numel();
      keep_logits = kept_floats <= kMaxKeptLogits;
      if (keep_logits) kept.push_back(logits.cpu()); else kept.clear();
    }
    torch::Tensor log_p = torch::log_softmax(logits, 1);
    torch::Tensor entropy = -(log_p.exp() * log_p).sum(1);
    auto [max_log_p, cls] = log_p.max(1);
    out.narrow(0, begin, len)
        .copy_(torch::stack({entropy, -max_log_p, cls.to(torch::kFloat32)}, 1));
    if (scored != nullptr) *scored += len;
  }
  if (world > 1) {
    std::vector<torch::Tensor> all = {out};
    comm->AllReduceSum(all);
    out = all[0];
  }
  out = out.cpu();
  PoolScores s;
  s.entropy = out.select(1, 0).contiguous();
  s.neg_log_max = out.select(1, 1).contiguous();
  s.argmax = out.select(1, 2).round().to(torch::kLong);
  if (keep_logits && !kept.empty()) s.logits = torch::cat(kept, 0);
  return s;
}

torch::Tensor SelectByScore(const torch::Tensor& score, int64_t k, bool highest) {
  TORCH_CHECK(score.dim() == 1, "SelectByScore: expects a 1-D score");
  TORCH_CHECK(k >= 0 && k <= score.size(0), "SelectByScore: cannot keep ", k, " of ",
              score.size(0), " images");
  torch::Tensor s = score.detach().to(torch::kCPU, torch::kFloat64);
  // A stable ascending sort keeps equal scores in index order; the highest
  // first is the ascending order of the negated scores.
  torch::Tensor order =
      std::get<1>(torch::sort(highest ? -s : s, c10::optional<bool>(true), 0, false));
  return std::get<0>(torch::sort(order.narrow(0, 0, k))).contiguous();
}

}  // namespace dfkd::worker
