// The KDCI confounder dictionary (worker/kdci/confounder_dictionary.h): planted
// clusters recovered by K-Means++, priors, PCA against an SVD and a planted
// spectrum, seeding determinism, degenerate inputs (M < N, identical points),
// empty-cluster reseeding, the streaming builder and the random dictionary.
#include <algorithm>
#include <cstdint>
#include <map>
#include <tuple>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "worker/kdci/confounder_dictionary.h"

namespace dfkd::worker {
namespace {

const torch::TensorOptions kF64 = torch::TensorOptions().dtype(torch::kDouble);

torch::Tensor Randn(std::vector<int64_t> shape, uint64_t seed) {
  return torch::randn(shape, at::detail::createCPUGenerator(seed), kF64);
}

struct Planted {
  torch::Tensor x;       // [M, dims] float64, shuffled
  torch::Tensor labels;  // [M] int64, the planted cluster of each row
};

// sizes[i] rows around centers[i] with Gaussian noise, in random order.
Planted MakePlanted(const torch::Tensor& centers, const std::vector<int64_t>& sizes,
                    double noise, uint64_t seed) {
  std::vector<torch::Tensor> parts;
  for (size_t i = 0; i < sizes.size(); ++i) {
    parts.push_back(torch::full({sizes[i]}, static_cast<int64_t>(i), torch::kLong));
  }
  const torch::Tensor labels = torch::cat(parts);
  const int64_t m = labels.size(0);
  const torch::Tensor x =
      centers.index_select(0, labels) + noise * Randn({m, centers.size(1)}, seed);
  const torch::Tensor perm = torch::randperm(m, at::detail::createCPUGenerator(seed + 1));
  return {x.index_select(0, perm), labels.index_select(0, perm)};
}

// Asserts that `found` and `planted` are the same partition and returns the
// bijection found cluster -> planted cluster.
std::map<int64_t, int64_t> MatchPartitions(const torch::Tensor& found,
                                           const torch::Tensor& planted) {
  std::map<int64_t, int64_t> f2p;
  std::map<int64_t, int64_t> p2f;
  const auto f = found.accessor<int64_t, 1>();
  const auto p = planted.accessor<int64_t, 1>();
  for (int64_t i = 0; i < found.size(0); ++i) {
    const auto a = f2p.emplace(f[i], p[i]);
    const auto b = p2f.emplace(p[i], f[i]);
    EXPECT_EQ(a.first->second, p[i]) << "found cluster " << f[i] << " mixes planted clusters";
    EXPECT_EQ(b.first->second, f[i]) << "planted cluster " << p[i] << " is split";
  }
  return f2p;
}

// Checks dictionary rows against the planted clusters they map to.
void ExpectMatchesPlanted(const ConfounderDictionary& dict, const Planted& data,
                          const std::map<int64_t, int64_t>& f2p, double atol) {
  const int64_t m = data.x.size(0);
  ASSERT_EQ(dict.size(), static_cast<int64_t>(f2p.size()));
  for (const auto& [f, p] : f2p) {
    const torch::Tensor members = data.labels.eq(p);
    const torch::Tensor rows = members.nonzero().flatten();
    const torch::Tensor mean = data.x.index_select(0, rows).mean(0).to(torch::kFloat);
    EXPECT_TRUE(torch::allclose(dict.prototypes[f], mean, 0.0, atol)) << "cluster " << f;
    const double expected = members.sum().item<double>() / static_cast<double>(m);
    EXPECT_NEAR(dict.prior[f].item<double>(), expected, 1e-6) << "cluster " << f;
  }
  EXPECT_NEAR(dict.prior.sum().item<double>(), 1.0, 1e-6);
  EXPECT_EQ(dict.num_samples, m);
}

torch::Tensor FoundLabels(const torch::Tensor& x, const DictionaryOptions& options) {
  const DictionaryFit fit = FitDictionary(x, options, nullptr);
  return AssignToFit(fit, x);
}

TEST(KdciDictionaryTest, RecoversPlantedClusters) {
  const Planted data = MakePlanted(50.0 * torch::eye(10, kF64).slice(0, 0, 5),
                                   {40, 40, 40, 40, 40}, 0.1, 1);
  const DictionaryOptions options = DictionaryOptions().num_prototypes(5).seed(3);
  const ConfounderDictionary dict = BuildDictionary(data.x.to(torch::kFloat), options);
  EXPECT_EQ(dict.prototypes.scalar_type(), torch::kFloat);
  EXPECT_EQ(dict.pca_dim_used, 4);  // 5 centres span 4 dimensions
  const auto f2p = MatchPartitions(FoundLabels(data.x.to(torch::kFloat), options), data.labels);
  ASSERT_EQ(f2p.size(), 5u);
  ExpectMatchesPlanted(dict, data, f2p, 1e-4);
  EXPECT_TRUE(torch::allclose(dict.prior, torch::full({5}, 0.2, torch::kFloat)));
}

// Rows x centres x dims above 2^20: the tensor (blocked distance) path, not
// the plain-loop path that mini-batch dictionaries take.
TEST(KdciDictionaryTest, RecoversPlantedClustersOnTheLargeInputPath) {
  const Planted data = MakePlanted(50.0 * torch::eye(12, kF64).slice(0, 0, 8),
                                   std::vector<int64_t>(8, 2000), 0.1, 4);
  const DictionaryOptions options =
      DictionaryOptions().num_prototypes(8).pca_mode(PcaMode::kOff).seed(2);
  const ConfounderDictionary dict = BuildDictionary(data.x.to(torch::kFloat), options);
  const auto f2p = MatchPartitions(FoundLabels(data.x.to(torch::kFloat), options), data.labels);
  ASSERT_EQ(f2p.size(), 8u);
  ExpectMatchesPlanted(dict, data, f2p, 1e-3);
}

TEST(KdciDictionaryTest, PriorsFollowUnequalClusterSizes) {
  const Planted data =
      MakePlanted(30.0 * torch::eye(4, kF64).slice(0, 0, 3), {10, 30, 60}, 0.2, 5);
  const DictionaryOptions options = DictionaryOptions().num_prototypes(3).seed(11);
  const ConfounderDictionary dict = BuildDictionary(data.x, options);
  const auto f2p = MatchPartitions(FoundLabels(data.x, options), data.labels);
  ASSERT_EQ(f2p.size(), 3u);
  ExpectMatchesPlanted(dict, data, f2p, 1e-4);
  const std::vector<double> expected = {0.1, 0.3, 0.6};
  for (const auto& [f, p] : f2p) EXPECT_NEAR(dict.prior[f].item<double>(), expected[p], 1e-6);
}

// Same sign convention as PcaProject: largest-magnitude entry positive.
torch::Tensor FixSigns(const torch::Tensor& v) {
  return v * v.gather(0, v.abs().argmax(0).unsqueeze(0)).sign();
}

TEST(KdciDictionaryTest, PcaMatchesSvdProjection) {
  const torch::Tensor x = Randn({300, 6}, 21).matmul(Randn({6, 6}, 22)) + 3.0;
  const torch::Tensor xc = x - x.mean(0);
  const torch::Tensor vh = std::get<2>(torch::linalg_svd(xc, /*full_matrices=*/false));
  const torch::Tensor expected = xc.matmul(FixSigns(vh.t().slice(1, 0, 3)));
  int64_t k = 0;
  const torch::Tensor got = PcaProject(x, PcaMode::kFixedDim, 0.95, 3, &k);
  EXPECT_EQ(k, 3);
  ASSERT_EQ(got.sizes(), expected.sizes());
  EXPECT_TRUE(torch::allclose(got, expected, 0.0, 1e-4));
  EXPECT_EQ(PcaProject(x, PcaMode::kFixedDim, 0.95, 50, &k).size(1), 6);  // capped at d
  EXPECT_TRUE(torch::equal(PcaProject(x, PcaMode::kOff, 0.95, 0, &k), x));
  EXPECT_EQ(k, 6);
}

TEST(KdciDictionaryTest, PcaVariancePicksSmallestSufficientK) {
  // Rows whose sample covariance is exactly R diag(lambda) R^T.
  const std::vector<double> lambda = {50.0, 30.0, 12.0, 6.0, 2.0};
  const int64_t m = 400;
  torch::Tensor z = Randn({m, 5}, 31);
  const torch::Tensor q = std::get<0>(torch::linalg_qr(z - z.mean(0)));
  const torch::Tensor r = std::get<0>(torch::linalg_qr(Randn({5, 5}, 32)));
  const torch::Tensor scale = torch::sqrt(torch::tensor(lambda, kF64) * (m - 1));
  const torch::Tensor x = (q * scale).matmul(r.t()) + torch::arange(5, kF64);
  for (double fraction : {0.3, 0.75, 0.9, 0.95, 0.99, 1.0}) {
    int64_t expected = 0;
    double cum = 0.0;
    while (cum < fraction * 100.0 - 1e-9) cum += lambda[expected++];
    int64_t k = 0;
    const torch::Tensor y = PcaProject(x, PcaMode::kVariance, fraction, 0, &k);
    EXPECT_EQ(k, expected) << "fraction " << fraction;
    ASSERT_EQ(y.size(1), k);
    const torch::Tensor var = (y - y.mean(0)).pow(2).sum(0) / static_cast<double>(m - 1);
    for (int64_t i = 0; i < k; ++i) EXPECT_NEAR(var[i].item<double>(), lambda[i], 1e-6);
  }
}

TEST(KdciDictionaryTest, SeedDeterminesDictionary) {
  const torch::Tensor x = torch::rand({500, 2}, at::detail::createCPUGenerator(41), kF64);
  const auto build = [&](uint64_t seed) {
    return BuildDictionary(x, DictionaryOptions().num_prototypes(8).seed(seed));
  };
  const ConfounderDictionary a = build(0);
  const ConfounderDictionary b = build(0);
  EXPECT_TRUE(torch::equal(a.prototypes, b.prototypes));
  EXPECT_TRUE(torch::equal(a.prior, b.prior));
  EXPECT_EQ(a.iterations, b.iterations);
  bool any_different = false;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    const ConfounderDictionary c = build(seed);
    any_different = any_different || c.size() != a.size() ||
                    !torch::equal(c.prototypes, a.prototypes);
  }
  EXPECT_TRUE(any_different);
}

TEST(KdciDictionaryTest, MaxItersHitStillUsesNearestCentreAssignment) {
  const torch::Tensor x = torch::rand({400, 3}, at::detail::createCPUGenerator(43), kF64);
  const DictionaryOptions options = DictionaryOptions().num_prototypes(6).max_iters(1);
  const ConfounderDictionary dict = BuildDictionary(x, options);
  EXPECT_EQ(dict.iterations, 1);
  const torch::Tensor counts = torch::bincount(FoundLabels(x, options), {}, 6);
  ASSERT_EQ(dict.size(), 6);
  EXPECT_TRUE(torch::allclose(dict.prior, (counts.to(torch::kDouble) / 400.0).to(torch::kFloat)));
}

TEST(KdciDictionaryTest, FewerSamplesThanPrototypes) {
  const torch::Tensor x = Randn({5, 6}, 51);
  const ConfounderDictionary dict = BuildDictionary(x, DictionaryOptions().num_prototypes(8));
  ASSERT_EQ(dict.size(), 5);
  EXPECT_TRUE(torch::allclose(dict.prior, torch::full({5}, 0.2, torch::kFloat)));
  std::vector<int> used(5, 0);
  for (int64_t i = 0; i < 5; ++i) {
    for (int64_t j = 0; j < 5; ++j) {
      if (torch::allclose(dict.prototypes[i], x[j].to(torch::kFloat), 0.0, 1e-6)) ++used[j];
    }
  }
  EXPECT_EQ(used, std::vector<int>(5, 1));
}

TEST(KdciDictionaryTest, IdenticalAndDuplicatePointsDropEmptyClusters) {
  const ConfounderDictionary same =
      BuildDictionary(torch::full({20, 6}, 3.0), DictionaryOptions().num_prototypes(4));
  ASSERT_EQ(same.size(), 1);
  EXPECT_FLOAT_EQ(same.prior[0].item<float>(), 1.0f);
  EXPECT_TRUE(torch::allclose(same.prototypes, torch::full({1, 6}, 3.0)));
  EXPECT_FALSE(same.prototypes.isnan().any().item<bool>());
  // Two distinct locations, 10 and 7 copies: two clusters.
  const torch::Tensor x = torch::cat({torch::zeros({10, 3}), torch::ones({7, 3})});
  const ConfounderDictionary two = BuildDictionary(x, DictionaryOptions().num_prototypes(4));
  ASSERT_EQ(two.size(), 2);
  EXPECT_NEAR(two.prior.sum().item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(two.prior.max().item<double>(), 10.0 / 17.0, 1e-6);
  EXPECT_FALSE(two.prototypes.isnan().any().item<bool>());
}

TEST(KdciDictionaryTest, EmptyClusterIsReseededToFarthestPoint) {
  // 10 points near 0, 10 near 10, one outlier at 100. Centres 0 and 1 start at
  // the same place, so centre 1 gets no point (ties go to centre 0) and must
  // be reseeded to the outlier, the point farthest from its own centre.
  const torch::Tensor pts = torch::cat({0.1 * Randn({10, 1}, 61), 10.0 + 0.1 * Randn({10, 1}, 62),
                                        torch::full({1, 1}, 100.0, kF64)});
  const torch::Tensor init = torch::tensor({0.0, 0.0, 10.0}, kF64).unsqueeze(1);
  const KMeansResult r = LloydKMeans(pts, init, 300, 1e-4);
  const torch::Tensor counts = torch::bincount(r.assignments, {}, 3);
  EXPECT_TRUE(torch::equal(counts, torch::tensor({10, 1, 10}, torch::kLong)));
  EXPECT_DOUBLE_EQ(r.centers[1][0].item<double>(), 100.0);
  EXPECT_EQ(r.assignments[20].item<int64_t>(), 1);
  // Through the dictionary: N non-empty clusters despite the outlier.
  const ConfounderDictionary dict = BuildDictionary(pts, DictionaryOptions().num_prototypes(3));
  ASSERT_EQ(dict.size(), 3);
  EXPECT_TRUE(dict.prior.gt(0).all().item<bool>());
}

void FeedChunks(const torch::Tensor& pool, int64_t chunk,
                const StreamingDictionaryBuilder::Consumer& consume) {
  for (int64_t s = 0; s < pool.size(0); s += chunk) {
    consume(pool.slice(0, s, std::min(pool.size(0), s + chunk)));
  }
}

TEST(KdciDictionaryTest, StreamingEqualsBuildWhenPoolFits) {
  const torch::Tensor pool = Randn({3000, 10}, 71).to(torch::kFloat);
  const DictionaryOptions options = DictionaryOptions().num_prototypes(8).seed(5);
  StreamingDictionaryBuilder builder(options, /*max_points=*/5000);
  FeedChunks(pool, 700, [&](const torch::Tensor& c) { builder.Add(c); });
  const ConfounderDictionary s = builder.Finish(
      [&](const StreamingDictionaryBuilder::Consumer& c) { FeedChunks(pool, 700, c); });
  const ConfounderDictionary b = BuildDictionary(pool, options);
  ASSERT_EQ(s.size(), b.size());
  EXPECT_TRUE(torch::allclose(s.prototypes, b.prototypes, 0.0, 1e-6));
  EXPECT_TRUE(torch::allclose(s.prior, b.prior, 0.0, 1e-6));
  EXPECT_EQ(s.num_samples, 3000);
  EXPECT_EQ(s.pca_dim_used, b.pca_dim_used);
  EXPECT_EQ(s.iterations, b.iterations);
}

TEST(KdciDictionaryTest, StreamingWithSmallReservoirCountsWholePool) {
  const Planted data = MakePlanted(40.0 * torch::eye(10, kF64).slice(0, 0, 4),
                                   {2000, 4000, 6000, 8000}, 0.05, 81);
  const torch::Tensor pool = data.x.to(torch::kFloat);
  StreamingDictionaryBuilder builder(DictionaryOptions().num_prototypes(4).seed(9),
                                     /*max_points=*/1000);
  FeedChunks(pool, 1500, [&](const torch::Tensor& c) { builder.Add(c); });
  EXPECT_EQ(builder.num_seen(), 20000);
  const ConfounderDictionary dict = builder.Finish(
      [&](const StreamingDictionaryBuilder::Consumer& c) { FeedChunks(pool, 1500, c); });
  EXPECT_EQ(dict.num_samples, 20000);
  ASSERT_EQ(dict.size(), 4);
  // Match each prototype to the planted cluster whose centre is nearest.
  std::map<int64_t, int64_t> f2p;
  for (int64_t f = 0; f < 4; ++f) {
    f2p[f] = dict.prototypes[f].argmax().item<int64_t>();
  }
  std::map<int64_t, int64_t> inverse;
  for (const auto& [f, p] : f2p) inverse[p] = f;
  ASSERT_EQ(inverse.size(), 4u);
  ExpectMatchesPlanted(dict, data, f2p, 1e-3);
  for (const auto& [f, p] : f2p) {
    EXPECT_NEAR(dict.prior[f].item<double>(), 0.1 * static_cast<double>(p + 1), 1e-3);
  }
  EXPECT_NEAR((dict.prior.to(torch::kDouble) * 20000.0).sum().item<double>(), 20000.0, 1e-2);
}

TEST(KdciDictionaryTest, RandomDictionary) {
  const ConfounderDictionary a = RandomDictionary(16, 100, 2.0, 7);
  ASSERT_EQ(a.prototypes.sizes(), (std::vector<int64_t>{16, 100}));
  EXPECT_EQ(a.prototypes.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::allclose(a.prior, torch::full({16}, 1.0 / 16.0, torch::kFloat)));
  EXPECT_NEAR(a.prior.sum().item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(a.prototypes.std().item<double>(), 2.0, 0.2);
  EXPECT_TRUE(torch::equal(a.prototypes, RandomDictionary(16, 100, 2.0, 7).prototypes));
  EXPECT_FALSE(torch::equal(a.prototypes, RandomDictionary(16, 100, 2.0, 8).prototypes));
}

TEST(KdciDictionaryTest, RejectsBadOptions) {
  const torch::Tensor x = Randn({10, 3}, 91);
  EXPECT_THROW(BuildDictionary(x, DictionaryOptions().num_prototypes(0)), c10::Error);
  EXPECT_THROW(BuildDictionary(x, DictionaryOptions().pca_variance(1.5)), c10::Error);
  EXPECT_THROW(BuildDictionary(x, DictionaryOptions().pca_mode(PcaMode::kFixedDim)), c10::Error);
  EXPECT_THROW(BuildDictionary(torch::zeros({4}), DictionaryOptions()), c10::Error);
}

}  // namespace
}  // namespace dfkd::worker
