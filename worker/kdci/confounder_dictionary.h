// KDCI stage (a): the confounder dictionary (dfkd-methods.md §1.2, defaults of
// §1.7). Teacher logits of the substitute data are centred and PCA-projected,
// clustered with K-Means++ seeding + Lloyd (sklearn-like, one init), and each
// cluster i gives a prototype z_i = mean of the RAW d-dim logits of its
// members and a prior P(z_i) = N_i / N_m. StreamingDictionaryBuilder does the
// same for a pool too large to hold (fit on a reservoir sample, count over all).
#ifndef DFKD_WORKER_KDCI_CONFOUNDER_DICTIONARY_H_
#define DFKD_WORKER_KDCI_CONFOUNDER_DICTIONARY_H_

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include <torch/arg.h>
#include <torch/torch.h>

namespace dfkd::worker {

enum class PcaMode {
  kVariance,  // smallest k whose components explain >= pca_variance
  kFixedDim,  // k = min(pca_dim, d)
  kOff,       // cluster the raw logits
};

struct DictionaryOptions {
  TORCH_ARG(int64_t, num_prototypes) = 8;  // N; N_m < N uses N = N_m
  TORCH_ARG(PcaMode, pca_mode) = PcaMode::kVariance;
  TORCH_ARG(double, pca_variance) = 0.95;  // kVariance only, in (0, 1]
  TORCH_ARG(int64_t, pca_dim) = 0;         // kFixedDim only (0 = unused)
  TORCH_ARG(int64_t, max_iters) = 300;     // Lloyd iterations
  TORCH_ARG(double, tol) = 1e-4;           // scaled by the mean variance
  TORCH_ARG(uint64_t, seed) = 0;           // K-Means++ seeding, reservoir
};

struct ConfounderDictionary {
  torch::Tensor prototypes;  // [N, d] float32
  torch::Tensor prior;       // [N] float32, all > 0, sums to 1
  int64_t pca_dim_used = 0;  // k (d when PCA is off)
  int64_t iterations = 0;    // Lloyd iterations run
  int64_t num_samples = 0;   // N_m: rows counted into the priors
  int64_t size() const { return prototypes.defined() ? prototypes.size(0) : 0; }
};

// Centres x [M, d] (float32/float64), eigen-decomposes the d x d covariance in
// float64 and returns x_centered @ V_k [M, k] in x's dtype, eigenvalues sorted
// descending. Each eigenvector is flipped so that its entry of largest absolute
// value is positive (first such entry on ties), so the result matches an SVD
// projection up to that convention. kVariance: smallest k whose cumulative
// explained variance is >= `variance` (k = 1 when all rows are equal); kFixedDim:
// k = min(dim, d). k is capped at d. kOff returns x as is (k = d). `dim_used`
// (optional) receives k.
torch::Tensor PcaProject(const torch::Tensor& x, PcaMode mode, double variance,
                         int64_t dim, int64_t* dim_used);

struct KMeansResult {
  torch::Tensor assignments;  // int64 [M]: index of the nearest final centre
  torch::Tensor centers;      // float64 [n', k], n' <= n
  int64_t iterations = 0;     // Lloyd iterations run
};

// K-Means++ seeding: the first centre is a uniformly random row, each next one
// a row drawn with probability proportional to its squared distance to the
// nearest chosen centre (std::mt19937_64(seed) + uniform_real_distribution on
// the cumulative distances). Uses n = M when M < n. Chosen rows are always
// distinct points; if fewer than n distinct points exist, seeding stops when
// every row coincides with a centre, so fewer than n centres come back.
// Returns float64 [n', k].
torch::Tensor KMeansPlusPlusInit(const torch::Tensor& points, int64_t n,
                                 uint64_t seed);

// Lloyd iterations from `initial_centers` [n, k] (n <= M) with batched squared
// distances ||x||^2 - 2 x c^T + ||c||^2 (clamped at 0, first centre on ties).
// Stops after max_iters or once the total squared centre shift is <=
// tol * (mean per-dimension variance of points), as sklearn does. Empty-cluster
// rule (sklearn's): each cluster left empty by an assignment step is reseeded
// to one of the points farthest from their own assigned centre (largest first,
// distinct points), which is moved out of its old cluster's mean. Always ends
// with a final assignment step against the returned centres, so `assignments`
// equals the nearest-centre assignment whether or not it converged.
KMeansResult LloydKMeans(const torch::Tensor& points,
                         const torch::Tensor& initial_centers, int64_t max_iters,
                         double tol);

// KMeansPlusPlusInit followed by LloydKMeans.
KMeansResult KMeansPlusPlus(const torch::Tensor& points, int64_t n,
                            int64_t max_iters, double tol, uint64_t seed);

// The fitted part of a dictionary: PCA (mean + basis) and K-Means centres in
// the projected space, all float64 on the logits' device.
struct DictionaryFit {
  torch::Tensor mean;     // [d]; undefined for kOff
  torch::Tensor basis;    // [d, k]; undefined for kOff
  torch::Tensor centers;  // [n', k]
  int64_t pca_dim_used = 0;
};

// PCA + K-Means++ on logits [M, d]; `iterations` (optional) receives the number
// of Lloyd iterations.
DictionaryFit FitDictionary(const torch::Tensor& logits,
                            const DictionaryOptions& options,
                            int64_t* iterations);

// Index (int64 [m], on the fit's device) of the nearest centre of every row of
// logits [m, d] after projection with the fit's PCA.
torch::Tensor AssignToFit(const DictionaryFit& fit, const torch::Tensor& logits);

// logits [M, d] -> FitDictionary -> final Lloyd assignment (== AssignToFit) ->
// prototypes = mean raw logits per cluster, prior = counts / M. Clusters left
// with no member (fewer distinct rows than N, or a final assignment step that
// empties a cluster) are dropped, so size() can be < N; the prior still sums
// to 1. Float32 outputs on the logits' device. On CUDA, index_add_ makes the
// prototypes reproducible only up to floating-point summation order.
ConfounderDictionary BuildDictionary(const torch::Tensor& logits,
                                     const DictionaryOptions& options);

// The paper's "random z" ablation: prototypes ~ N(0, scale^2) drawn from a CPU
// generator seeded with `seed`, uniform prior 1/n. Float32 on the CPU.
ConfounderDictionary RandomDictionary(int64_t n, int64_t d, double scale,
                                      uint64_t seed);

// BuildDictionary for a pool fed in chunks (e.g. 600k images): Add() keeps a
// uniform reservoir sample (Algorithm R, RNG seeded from options.seed) of at
// most max_points rows, stored in the first chunk's dtype and device; Finish()
// fits PCA + K-Means on it, then calls replay(consumer), which must feed every
// chunk of the pool again to consumer, and assigns every row to its nearest
// centre, so prototypes and priors cover the whole pool with memory bounded by
// one chunk (num_samples = pool size; replay must feed as many rows as Add saw).
// If the pool has <= max_points rows the reservoir is the concatenation of the
// chunks in order and the result equals BuildDictionary on that concatenation
// (up to the summation order of the prototypes).
class StreamingDictionaryBuilder {
 public:
  using Consumer = std::function<void(const torch::Tensor&)>;
  using Replay = std::function<void(const Consumer&)>;

  explicit StreamingDictionaryBuilder(DictionaryOptions options,
                                      int64_t max_points = 200000);

  void Add(const torch::Tensor& logits_chunk);  // [m, d]
  ConfounderDictionary Finish(const Replay& replay);

  int64_t num_seen() const { return seen_; }

 private:
  DictionaryOptions options_;
  int64_t max_points_;
  int64_t seen_ = 0;
  int64_t dim_ = -1;
  torch::TensorOptions store_options_;
  std::mt19937_64 rng_;
  std::vector<torch::Tensor> filling_;  // chunks until the reservoir is full
  torch::Tensor reservoir_;             // [max_points, d] once full
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_KDCI_CONFOUNDER_DICTIONARY_H_
