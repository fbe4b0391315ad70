// KDCI confounder dictionary: PCA, K-Means++ / Lloyd, prototypes and priors,
// the streaming (reservoir) builder and the random-dictionary ablation.
#include "worker/kdci/confounder_dictionary.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <tuple>
#include <utility>

#include <ATen/CPUGeneratorImpl.h>

namespace dfkd::worker {
namespace {

// Rows per block of the distance matrix: bounds it to ~8M entries.
int64_t BlockRows(int64_t num_centers) {
  return std::max<int64_t>(1, (int64_t{1} << 23) / std::max<int64_t>(1, num_centers));
}

void CheckMatrix(const torch::Tensor& x, const char* name) {
  TORCH_CHECK(x.defined() && x.dim() == 2, name, " must be a 2-D [rows, dims] tensor");
  TORCH_CHECK(x.is_floating_point(), name, " must be floating point");
  TORCH_CHECK(x.size(1) >= 1, name, " must have at least one column");
}

// Nearest centre (first on ties) of every row; `min_d2` gets the squared
// distance to it when given.
torch::Tensor Nearest(const torch::Tensor& x, const torch::Tensor& centers,
                      torch::Tensor* min_d2) {
  const int64_t m = x.size(0);
  const int64_t block = BlockRows(centers.size(0));
  const torch::Tensor c_t = centers.t();
  const torch::Tensor c_sq = centers.pow(2).sum(1).unsqueeze(0);
  std::vector<torch::Tensor> labels;
  std::vector<torch::Tensor> dists;
  for (int64_t s = 0; s == 0 || s < m; s += block) {  // one block if m == 0
    const torch::Tensor xb = x.slice(0, s, std::min(m, s + block));
    const torch::Tensor d2 =
        (xb.pow(2).sum(1, /*keepdim=*/true) - 2.0 * xb.matmul(c_t) + c_sq).clamp_min(0.0);
    auto best = d2.min(1);
    labels.push_back(std::get<1>(best));
    dists.push_back(std::get<0>(best));
  }
  if (min_d2 != nullptr) *min_d2 = torch::cat(dists);
  return torch::cat(labels);
}

torch::Tensor Project(const DictionaryFit& fit, const torch::Tensor& xd) {
  return fit.basis.defined() ? (xd - fit.mean).matmul(fit.basis) : xd;
}

// Mean and eigenvector basis [d, k] of the (centred) float64 rows xd.
std::pair<torch::Tensor, torch::Tensor> FitPca(const torch::Tensor& xd, PcaMode mode,
                                               double variance, int64_t dim) {
  const int64_t m = xd.size(0);
  const int64_t d = xd.size(1);
  const torch::Tensor mean = xd.mean(0);
  const torch::Tensor xc = xd - mean;
  const torch::Tensor cov = xc.t().matmul(xc) / static_cast<double>(std::max<int64_t>(m - 1, 1));
  auto eig = torch::linalg_eigh(cov);
  const torch::Tensor evals = std::get<0>(eig).flip({0}).clamp_min(0.0);
  const torch::Tensor evecs = std::get<1>(eig).flip({1});
  int64_t k = 1;
  if (mode == PcaMode::kFixedDim) {
    k = std::min(dim, d);
  } else {
    const double total = evals.sum().item<double>();
    if (total > 0.0) {
      const torch::Tensor ratio = evals.cumsum(0) / total;
      k = std::min(d, ratio.lt(variance).sum().item<int64_t>() + 1);
    }
  }
  torch::Tensor basis = evecs.slice(1, 0, k);
  const torch::Tensor peak = basis.abs().argmax(0).unsqueeze(0);
  basis = basis * basis.gather(0, peak).sign();
  return {mean, basis};
}

void CheckOptions(const DictionaryOptions& o) {
  TORCH_CHECK(o.num_prototypes() >= 1, "num_prototypes must be >= 1");
  if (o.pca_mode() == PcaMode::kVariance) {
    TORCH_CHECK(o.pca_variance() > 0.0 && o.pca_variance() <= 1.0,
                "pca_variance must be in (0, 1]");
  }
  if (o.pca_mode() == PcaMode::kFixedDim) {
    TORCH_CHECK(o.pca_dim() >= 1, "pca_dim must be >= 1 when pca_mode is kFixedDim");
  }
  TORCH_CHECK(o.max_iters() >= 1, "max_iters must be >= 1");
  TORCH_CHECK(o.tol() >= 0.0, "tol must be >= 0");
}

// Small inputs (a mini-batch dictionary: 256 logits, N = 8..32) are
// clustered with plain loops over a float64 buffer: the same algorithm as the
// tensor path below, without ~10 tensor-op dispatches per Lloyd iteration and
// per seed, which dominated KDCI's per-step cost (about 10x faster here).
constexpr int64_t kSmallWork = int64_t{1} << 20;  // rows x centres x dims

bool UseSmallPath(const torch::Tensor& x, int64_t n) {
  return x.device().is_cpu() && x.size(0) * n * x.size(1) <= kSmallWork;
}

double RowDist2(const double* a, const double* b, int64_t d) {
  double s = 0.0;
  for (int64_t j = 0; j < d; ++j) {
    const double t = a[j] - b[j];
    s += t * t;
  }
  return s;
}

std::vector<int64_t> SmallSeeds(const double* x, int64_t m, int64_t d, int64_t n,
                                uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  std::vector<int64_t> chosen{
      std::min<int64_t>(m - 1, static_cast<int64_t>(unif(rng) * static_cast<double>(m)))};
  std::vector<double> closest(m), cum(m);
  for (int64_t i = 0; i < m; ++i) closest[i] = RowDist2(x + i * d, x + chosen[0] * d, d);
  while (static_cast<int64_t>(chosen.size()) < n) {
    double total = 0.0;
    for (int64_t i = 0; i < m; ++i) cum[i] = total += closest[i];
    if (!(total > 0.0)) break;  // every row coincides with a chosen centre
    const double r = unif(rng) * total;
    int64_t idx = std::min<int64_t>(m - 1, std::upper_bound(cum.begin(), cum.end(), r) -
                                               cum.begin());
    if (!(closest[idx] > 0.0)) {
      idx = std::max_element(closest.begin(), closest.end()) - closest.begin();
    }
    chosen.push_back(idx);
    for (int64_t i = 0; i < m; ++i) {
      closest[i] = std::min(closest[i], RowDist2(x + i * d, x + idx * d, d));
    }
  }
  return chosen;
}

// Lloyd on raw buffers; same empty-cluster rule and stopping test as the
// tensor path. Returns the number of iterations run.
int64_t SmallLloyd(const double* x, int64_t m, int64_t d, std::vector<double>& centers,
                   int64_t max_iters, double tol) {
  const int64_t n = static_cast<int64_t>(centers.size()) / d;
  std::vector<double> mean(d, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < d; ++j) mean[j] += x[i * d + j];
  for (double& v : mean) v /= static_cast<double>(m);
  double var = 0.0;
  for (int64_t i = 0; i < m; ++i) var += RowDist2(x + i * d, mean.data(), d);
  const double tol_scaled = tol * var / static_cast<double>(m * d);
  std::vector<int64_t> labels(m);
  std::vector<double> d2(m), sums(n * d), counts(n), updated(n * d);
  int64_t it = 0;
  while (it < max_iters) {
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), 0.0);
    for (int64_t i = 0; i < m; ++i) {
      int64_t best = 0;
      double best_d = RowDist2(x + i * d, centers.data(), d);
      for (int64_t c = 1; c < n; ++c) {
        const double dc = RowDist2(x + i * d, centers.data() + c * d, d);
        if (dc < best_d) best_d = dc, best = c;
      }
      labels[i] = best;
      d2[i] = best_d;
      counts[best] += 1.0;
      for (int64_t j = 0; j < d; ++j) sums[best * d + j] += x[i * d + j];
    }
    std::vector<int64_t> empty;
    for (int64_t c = 0; c < n; ++c)
      if (counts[c] == 0.0) empty.push_back(c);
    if (!empty.empty()) {  // reseed to the worst-fitted points
      std::vector<int64_t> order(m);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t b) { return d2[a] > d2[b]; });
      for (size_t k = 0; k < empty.size() && k < order.size(); ++k) {
        const int64_t p = order[k], c = empty[k], old = labels[p];
        for (int64_t j = 0; j < d; ++j) {
          sums[old * d + j] -= x[p * d + j];
          sums[c * d + j] = x[p * d + j];
        }
        counts[old] -= 1.0;
        counts[c] = 1.0;
      }
    }
    double shift = 0.0;
    for (int64_t c = 0; c < n; ++c) {
      for (int64_t j = 0; j < d; ++j) {
        const double v = counts[c] > 0 ? sums[c * d + j] / counts[c] : centers[c * d + j];
        const double t = v - centers[c * d + j];
        shift += t * t;
        updated[c * d + j] = v;
      }
    }
    centers.swap(updated);
    ++it;
    if (shift <= tol_scaled) break;
  }
  return it;
}

// Fit on float64 rows xd; `assignments` gets the final Lloyd assignment.
DictionaryFit FitImpl(const torch::Tensor& xd, const DictionaryOptions& o,
                      int64_t* iterations, torch::Tensor* assignments) {
  CheckOptions(o);
  TORCH_CHECK(xd.size(0) >= 1, "logits must have at least one row");
  TORCH_CHECK(xd.isfinite().all().item<bool>(), "logits must be finite");
  DictionaryFit fit;
  fit.pca_dim_used = xd.size(1);
  if (o.pca_mode() != PcaMode::kOff) {
    std::tie(fit.mean, fit.basis) = FitPca(xd, o.pca_mode(), o.pca_variance(), o.pca_dim());
    fit.pca_dim_used = fit.basis.size(1);
  }
  KMeansResult km = KMeansPlusPlus(Project(fit, xd), o.num_prototypes(), o.max_iters(),
                                   o.tol(), o.seed());
  fit.centers = km.centers;
  if (iterations != nullptr) *iterations = km.iterations;
  if (assignments != nullptr) *assignments = km.assignments;
  return fit;
}

// Drops member-less clusters; prior = counts / total.
ConfounderDictionary MakeDictionary(const torch::Tensor& sums, const torch::Tensor& counts,
                                    int64_t total) {
  const torch::Tensor keep = counts.gt(0).nonzero().flatten();
  const torch::Tensor c = counts.index_select(0, keep).to(torch::kDouble);
  ConfounderDictionary dict;
  dict.prototypes = (sums.index_select(0, keep) / c.unsqueeze(1)).to(torch::kFloat);
  dict.prior = (c / static_cast<double>(total)).to(torch::kFloat);
  dict.num_samples = total;
  return dict;
}

}  // namespace

torch::Tensor PcaProject(const torch::Tensor& x, PcaMode mode, double variance, int64_t dim,
                         int64_t* dim_used) {
  CheckMatrix(x, "x");
  TORCH_CHECK(x.size(0) >= 1, "x must have at least one row");
  if (mode == PcaMode::kOff) {
    if (dim_used != nullptr) *dim_used = x.size(1);
    return x;
  }
  TORCH_CHECK(mode != PcaMode::kVariance || (variance > 0.0 && variance <= 1.0),
              "variance must be in (0, 1]");
  TORCH_CHECK(mode != PcaMode::kFixedDim || dim >= 1, "dim must be >= 1 for kFixedDim");
  torch::NoGradGuard no_grad;
  DictionaryFit fit;
  std::tie(fit.mean, fit.basis) = FitPca(x.detach().to(torch::kDouble), mode, variance, dim);
  if (dim_used != nullptr) *dim_used = fit.basis.size(1);
  return Project(fit, x.detach().to(torch::kDouble)).to(x.scalar_type());
}

torch::Tensor KMeansPlusPlusInit(const torch::Tensor& points, int64_t n, uint64_t seed) {
  CheckMatrix(points, "points");
  TORCH_CHECK(points.size(0) >= 1, "points must have at least one row");
  TORCH_CHECK(n >= 1, "n must be >= 1");
  torch::NoGradGuard no_grad;
  const torch::Tensor x = points.detach().to(torch::kDouble).contiguous();
  const int64_t m = x.size(0);
  n = std::min(n, m);
  if (UseSmallPath(x, n)) {
    std::vector<int64_t> chosen = SmallSeeds(x.data_ptr<double>(), m, x.size(1), n, seed);
    return x.index_select(0, torch::tensor(chosen, torch::kLong));
  }
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  auto draw = [&](double scale) { return unif(rng) * scale; };
  std::vector<int64_t> chosen{
      std::min<int64_t>(m - 1, static_cast<int64_t>(draw(static_cast<double>(m))))};
  torch::Tensor closest = (x - x[chosen[0]]).pow(2).sum(1);
  while (static_cast<int64_t>(chosen.size()) < n) {
    const torch::Tensor cum = closest.cumsum(0);
    const double total = cum[m - 1].item<double>();
    if (!(total > 0.0)) break;  // every row coincides with a chosen centre
    const double r = draw(total);
    int64_t idx = std::min(m - 1, cum.le(r).sum().item<int64_t>());
    if (!(closest[idx].item<double>() > 0.0)) idx = closest.argmax().item<int64_t>();
    chosen.push_back(idx);
    closest = torch::minimum(closest, (x - x[idx]).pow(2).sum(1));
  }
  const torch::Tensor index =
      torch::tensor(chosen, torch::TensorOptions().dtype(torch::kLong)).to(x.device());
  return x.index_select(0, index);
}

KMeansResult LloydKMeans(const torch::Tensor& points, const torch::Tensor& initial_centers,
                         int64_t max_iters, double tol) {
  CheckMatrix(points, "points");
  CheckMatrix(initial_centers, "initial_centers");
  TORCH_CHECK(initial_centers.size(1) == points.size(1),
              "initial_centers must have as many columns as points");
  TORCH_CHECK(initial_centers.size(0) >= 1 && initial_centers.size(0) <= points.size(0),
              "initial_centers must have between 1 and M rows");
  TORCH_CHECK(max_iters >= 0, "max_iters must be >= 0");
  TORCH_CHECK(tol >= 0.0, "tol must be >= 0");
  torch::NoGradGuard no_grad;
  const torch::Tensor x = points.detach().to(torch::kDouble);
  torch::Tensor centers = initial_centers.detach().to(x.device(), torch::kDouble).clone();
  const int64_t n = centers.size(0);
  KMeansResult result;
  if (UseSmallPath(x, n)) {
    const torch::Tensor xc = x.contiguous();
    torch::Tensor c = centers.contiguous();
    std::vector<double> buf(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
    result.iterations = SmallLloyd(xc.data_ptr<double>(), xc.size(0), xc.size(1), buf,
                                   max_iters, tol);
    result.centers = torch::tensor(buf, torch::kDouble).view({n, x.size(1)});
    // The final assignment uses the same Nearest() as AssignToFit, so a
    // dictionary and a later assignment to its fit agree exactly.
    result.assignments = Nearest(xc, result.centers, nullptr);
    return result;
  }
  const double tol_scaled = tol * (x - x.mean(0)).pow(2).mean().item<double>();
  while (result.iterations < max_iters) {
    torch::Tensor d2;
    const torch::Tensor labels = Nearest(x, centers, &d2);
    torch::Tensor sums = torch::zeros_like(centers).index_add_(0, labels, x);
    torch::Tensor counts = torch::bincount(labels, {}, n).to(torch::kDouble);
    const torch::Tensor empty = counts.eq(0).nonzero().flatten().cpu();
    if (empty.numel() > 0) {  // reseed to the worst-fitted points
      const torch::Tensor order = std::get<1>(d2.sort(/*stable=*/true, 0, /*descending=*/true));
      const torch::Tensor far = order.slice(0, 0, empty.numel()).cpu();
      for (int64_t j = 0; j < empty.numel(); ++j) {
        const int64_t p = far[j].item<int64_t>();
        const int64_t c = empty[j].item<int64_t>();
        const int64_t old = labels[p].item<int64_t>();
        sums[old].sub_(x[p]);
        counts[old].sub_(1.0);
        sums[c].copy_(x[p]);
        counts[c].fill_(1.0);
      }
    }
    const torch::Tensor updated = torch::where(
        counts.gt(0).unsqueeze(1), sums / counts.clamp_min(1.0).unsqueeze(1), centers);
    const double shift = (updated - centers).pow(2).sum().item<double>();
    centers = updated;
    ++result.iterations;
    if (shift <= tol_scaled) break;
  }
  result.assignments = Nearest(x, centers, nullptr);
  result.centers = centers;
  return result;
}

KMeansResult KMeansPlusPlus(const torch::Tensor& points, int64_t n, int64_t max_iters,
                            double tol, uint64_t seed) {
  return LloydKMeans(points, KMeansPlusPlusInit(points, n, seed), max_iters, tol);
}

DictionaryFit FitDictionary(const torch::Tensor& logits, const DictionaryOptions& options,
                            int64_t* iterations) {
  CheckMatrix(logits, "logits");
  torch::NoGradGuard no_grad;
  return FitImpl(logits.detach().to(torch::kDouble), options, iterations, nullptr);
}

torch::Tensor AssignToFit(const DictionaryFit& fit, const torch::Tensor& logits) {
  TORCH_CHECK(fit.centers.defined(), "fit.centers must be defined");
  CheckMatrix(logits, "logits");
  const int64_t d = fit.mean.defined() ? fit.mean.size(0) : fit.centers.size(1);
  TORCH_CHECK(logits.size(1) == d, "logits must have ", d, " columns, got ", logits.size(1));
  torch::NoGradGuard no_grad;
  const torch::Tensor xd = logits.detach().to(fit.centers.device(), torch::kDouble);
  return Nearest(Project(fit, xd), fit.centers, nullptr);
}

ConfounderDictionary BuildDictionary(const torch::Tensor& logits,
                                     const DictionaryOptions& options) {
  CheckMatrix(logits, "logits");
  torch::NoGradGuard no_grad;
  const torch::Tensor xd = logits.detach().to(torch::kDouble);
  int64_t iterations = 0;
  torch::Tensor labels;
  const DictionaryFit fit = FitImpl(xd, options, &iterations, &labels);
  const int64_t n = fit.centers.size(0);
  const torch::Tensor sums = torch::zeros({n, xd.size(1)}, xd.options()).index_add_(0, labels, xd);
  ConfounderDictionary dict =
      MakeDictionary(sums, torch::bincount(labels, {}, n), xd.size(0));
  dict.pca_dim_used = fit.pca_dim_used;
  dict.iterations = iterations;
  return dict;
}

ConfounderDictionary RandomDictionary(int64_t n, int64_t d, double scale, uint64_t seed) {
  TORCH_CHECK(n >= 1, "n must be >= 1");
  TORCH_CHECK(d >= 1, "d must be >= 1");
  TORCH_CHECK(std::isfinite(scale) && scale >= 0.0, "scale must be finite and >= 0");
  torch::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  ConfounderDictionary dict;
  dict.prototypes =
      torch::randn({n, d}, gen, torch::TensorOptions().dtype(torch::kFloat)) * scale;
  dict.prior = torch::full({n}, 1.0 / static_cast<double>(n),
                           torch::TensorOptions().dtype(torch::kFloat));
  return dict;
}

StreamingDictionaryBuilder::StreamingDictionaryBuilder(DictionaryOptions options,
                                                       int64_t max_points)
    : options_(std::move(options)),
      max_points_(max_points),
      rng_(options_.seed() ^ 0x9E3779B97F4A7C15ULL) {
  CheckOptions(options_);
  TORCH_CHECK(max_points_ >= 1, "max_points must be >= 1");
}

void StreamingDictionaryBuilder::Add(const torch::Tensor& logits_chunk) {
  CheckMatrix(logits_chunk, "logits_chunk");
  if (dim_ < 0) {
    dim_ = logits_chunk.size(1);
    store_options_ = logits_chunk.options();
  }
  TORCH_CHECK(logits_chunk.size(1) == dim_, "logits_chunk must have ", dim_,
              " columns, got ", logits_chunk.size(1));
  torch::NoGradGuard no_grad;
  const int64_t m = logits_chunk.size(0);
  const torch::Tensor x = logits_chunk.detach().to(store_options_);
  int64_t r = 0;
  if (seen_ < max_points_) {
    r = std::min(m, max_points_ - seen_);
    filling_.push_back(x.slice(0, 0, r).clone());
    if (seen_ + r == max_points_) {
      reservoir_ = torch::cat(filling_);
      filling_.clear();
    }
  }
  // Algorithm R: global row t >= max_points replaces slot j ~ U{0..t} if j is
  // a slot; a later row wins a slot drawn twice in the chunk.
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  std::map<int64_t, int64_t> slot_to_row;
  for (; r < m; ++r) {
    const int64_t t = seen_ + r;
    const int64_t j =
        std::min(t, static_cast<int64_t>(unif(rng_) * static_cast<double>(t + 1)));
    if (j < max_points_) slot_to_row[j] = r;
  }
  if (!slot_to_row.empty()) {
    std::vector<int64_t> slots;
    std::vector<int64_t> rows;
    for (const auto& [slot, row] : slot_to_row) {
      slots.push_back(slot);
      rows.push_back(row);
    }
    const auto index = torch::TensorOptions().dtype(torch::kLong);
    reservoir_.index_copy_(0, torch::tensor(slots, index).to(x.device()),
                           x.index_select(0, torch::tensor(rows, index).to(x.device())));
  }
  seen_ += m;
}

ConfounderDictionary StreamingDictionaryBuilder::Finish(const Replay& replay) {
  TORCH_CHECK(seen_ > 0, "Add() must feed at least one row before Finish()");
  torch::NoGradGuard no_grad;
  if (!filling_.empty()) {
    reservoir_ = torch::cat(filling_);
    filling_.clear();
  }
  int64_t iterations = 0;
  const DictionaryFit fit = FitDictionary(reservoir_, options_, &iterations);
  const int64_t n = fit.centers.size(0);
  const auto opts = fit.centers.options();
  torch::Tensor sums = torch::zeros({n, dim_}, opts);
  torch::Tensor counts = torch::zeros({n}, opts.dtype(torch::kLong));
  int64_t total = 0;
  replay([&](const torch::Tensor& chunk) {
    CheckMatrix(chunk, "replayed chunk");
    TORCH_CHECK(chunk.size(1) == dim_, "replayed chunk must have ", dim_, " columns");
    if (chunk.size(0) == 0) return;
    torch::NoGradGuard guard;
    const torch::Tensor xd = chunk.detach().to(opts.device(), torch::kDouble);
    const torch::Tensor labels = AssignToFit(fit, xd);
    sums.index_add_(0, labels, xd);
    counts += torch::bincount(labels, {}, n);
    total += chunk.size(0);
  });
  TORCH_CHECK(total == seen_, "replay fed ", total, " rows but Add() saw ", seen_);
  ConfounderDictionary dict = MakeDictionary(sums, counts, total);
  dict.pca_dim_used = fit.pca_dim_used;
  dict.iterations = iterations;
  return dict;
}

}  // namespace dfkd::worker
