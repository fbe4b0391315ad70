// DeepInversion (worker/methods/deep_inversion.h): its three loss pieces by
// hand (BN statistics, Fast-Datafree's clamped JS, TV-L1), that synthesis
// leaves both models untouched (parameters, buffers, gradients, modes), the
// uint8 pool and its bound, keyed sampling, that the inversion actually lowers
// the teacher's BN-statistics loss, and Save/Load.
#include <algorithm>
#include <cmath>
#include <sstream>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/testing/method_fixtures.h"
#include "worker/data/transforms.h"
#include "worker/dist/communicator.h"
#include "worker/methods/deep_inversion.h"
#include "worker/methods/losses.h"
#include "worker/models/model_zoo.h"

namespace dfkd::worker {
namespace {

using testing::StateOf;

torch::Tensor Vec(std::vector<float> v) { return torch::tensor(v, torch::kFloat32); }

TEST(BnStatisticsLossTest, MatchesHandComputation) {
  torch::Tensor mean1 = Vec({1, 2}).requires_grad_(true);
  std::vector<BatchNormTap> taps = {
      BatchNormTap{mean1, Vec({1, 1}), Vec({0, 0}), Vec({1, 4})},
      BatchNormTap{Vec({0, 0, 0}), Vec({2, 2, 2}), Vec({3, 4, 0}), Vec({1, 1, 1})}};
  // ||(0, 3)|| + ||(-1, -2)|| + ||(-1, -1, -1)|| + ||(3, 4, 0)||
  const double expected = 3 + std::sqrt(5.0) + std::sqrt(3.0) + 5;
  torch::Tensor loss = BnStatisticsLoss(taps);
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_NEAR(loss.item<double>(), expected, 1e-5);
  // The gradient reaches the batch statistics: d||rm - m|| / dm = (m - rm) / ||.||.
  loss.backward();
  EXPECT_TRUE(torch::allclose(mean1.grad(), Vec({1, 2}) / std::sqrt(5.0f), 1e-5, 1e-6));
  EXPECT_EQ(BnStatisticsLoss({}).item<float>(), 0.0f);
}

// JS exactly as Fast-Datafree's jsdiv, in doubles.
double HandJs(const std::vector<std::vector<double>>& s,
              const std::vector<std::vector<double>>& t, double temperature) {
  auto softmax = [&](const std::vector<double>& v) {
    std::vector<double> e(v.size());
    double z = 0;
    for (size_t i = 0; i < v.size(); ++i) z += (e[i] = std::exp(v[i] / temperature));
    for (double& x : e) x /= z;
    return e;
  };
  auto clamp = [](double v) { return std::min(0.99, std::max(0.01, v)); };
  double total = 0;
  for (size_t r = 0; r < s.size(); ++r) {
    std::vector<double> p = softmax(s[r]), q = softmax(t[r]);
    for (size_t c = 0; c < p.size(); ++c) {
      const double m = clamp(0.5 * (p[c] + q[c]));
      total += 0.5 * m * (std::log(m) - std::log(clamp(p[c]))) +
               0.5 * m * (std::log(m) - std::log(clamp(q[c])));
    }
  }
  return total / static_cast<double>(s.size());
}

TEST(JsDivergenceTest, MatchesHandComputationWithClamping) {
  // Row 0 at T = 3 is softmax(5, 0, -5) = (0.993, 0.0067, 0.00005): clamped.
  std::vector<std::vector<double>> s = {{15, 0, -15}, {1, 2, 3}};
  std::vector<std::vector<double>> t = {{0, 0, 0}, {3, 1, -2}};
  torch::Tensor ts = torch::tensor({{15.f, 0.f, -15.f}, {1.f, 2.f, 3.f}});
  torch::Tensor tt = torch::tensor({{0.f, 0.f, 0.f}, {3.f, 1.f, -2.f}});
  const double expected = HandJs(s, t, 3.0);
  EXPECT_GT(expected, 0.01);
  EXPECT_NEAR(JsDivergence(ts, tt, 3.0).item<double>(), expected, 1e-5);
  EXPECT_NEAR(JsDivergence(tt, ts, 3.0).item<double>(), expected, 1e-5);  // symmetric
}

TEST(JsDivergenceTest, IdenticalInputsGiveExactlyZero) {
  torch::manual_seed(3);
  torch::Tensor s = torch::randn({5, 10}) * 4;
  // M = (P + P) / 2 = P bit for bit, so every log difference is 0.
  EXPECT_EQ(JsDivergence(s, s, 3.0).item<float>(), 0.0f);
  EXPECT_EQ(JsDivergence(s, s.clone(), 1.0).item<float>(), 0.0f);
}

TEST(TotalVariationL1Test, ConstantIsZeroAndSmallImageMatchesHand) {
  EXPECT_EQ(TotalVariationL1(torch::full({2, 3, 5, 4}, 0.7f)).item<float>(), 0.0f);
  // [[0, 1], [2, 4]]: horizontal (1 + 2) / 2, vertical (2 + 3) / 2,
  // diagonals |2 - 1| and |0 - 4|: 1.5 + 2.5 + 1 + 4 = 9.
  torch::Tensor x = torch::tensor({0.f, 1.f, 2.f, 4.f}).view({1, 1, 2, 2});
  EXPECT_NEAR(TotalVariationL1(x).item<double>(), 9.0, 1e-6);
  // A second channel at twice the values: every mean is over both channels.
  EXPECT_NEAR(TotalVariationL1(torch::cat({x, 2 * x}, 1)).item<double>(), 13.5, 1e-5);
}

double TeacherBnLoss(Classifier& teacher, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  return BnStatisticsLoss(teacher->ForwardWithTaps(x, TapRequest{true}).bn_taps).item<double>();
}

class DeepInversionTest : public testing::TinyMethodTest {
 protected:
  // The task's normalisation and crop padding stay MethodDeps' defaults.
  MethodDeps Deps() const {
    MethodDeps d;
    d.teacher = teacher_;
    d.student = student_;
    d.image_shape = {1, 8, 8};
    d.num_classes = 4;
    return d;
  }
  static DeepInversionOptions Small(Normalization norm = {{0.5f}, {0.5f}}) {
    DeepInversionOptions o;
    o.g_steps(5).synthesis_batch_size(8).norm(norm);
    return o;
  }
};

TEST_F(DeepInversionTest, SynthesizeLeavesModelsUntouchedAndFillsThePool) {
  student_->train();  // its mode must come back
  const std::vector<torch::Tensor> teacher_before = StateOf(*teacher_);
  const std::vector<torch::Tensor> student_before = StateOf(*student_);
  DeepInversion di(Small(), Deps());
  EXPECT_EQ(di.name(), "deepinv");
  EXPECT_THROW(di.Sample(4, Ctx(0, 0)), c10::Error);
  di.Synthesize(Ctx(0, 0));

  EXPECT_TRUE(testing::Untouched(teacher_before, teacher_, /*training=*/false));
  // Eval mode inside (running stats unchanged) and no gradient left behind.
  EXPECT_TRUE(testing::Untouched(student_before, student_, /*training=*/true));

  ASSERT_EQ(di.pool_size(), 8);
  EXPECT_EQ(di.pool().scalar_type(), torch::kUInt8);
  EXPECT_EQ(di.pool().sizes(), torch::IntArrayRef({8, 1, 8, 8}));
  torch::Tensor last = di.LastSynthesized();
  ASSERT_EQ(last.sizes(), torch::IntArrayRef({8, 1, 8, 8}));
  EXPECT_EQ(last.scalar_type(), torch::kFloat32);
  EXPECT_GE(last.min().item<float>(), -1.0f);
  EXPECT_LE(last.max().item<float>(), 1.0f);
  EXPECT_GT(last.std().item<float>(), 0.0f);
  // The pool holds the kept batch quantised: half a level / std = 1/255.
  torch::Tensor decoded = Normalize(di.pool(), {{0.5f}, {0.5f}});
  EXPECT_LE((decoded - last).abs().max().item<float>(), 1.0f / 255 + 1e-5f);

  torch::Tensor a = di.Sample(4, Ctx(0, 3));
  EXPECT_EQ(a.sizes(), torch::IntArrayRef({4, 1, 8, 8}));
  EXPECT_EQ(a.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::isfinite(a).all().item<bool>());
  EXPECT_TRUE(torch::equal(a, di.Sample(4, Ctx(0, 3))));
  EXPECT_FALSE(torch::equal(a, di.Sample(4, Ctx(0, 4))));

  nlohmann::json d = di.Describe();
  EXPECT_EQ(d["method"], "deepinv");
  EXPECT_EQ(d["pool_size"], 8);
  EXPECT_EQ(d["g_steps"], 5);
  EXPECT_EQ(d["student_bn_weight"], 0.001);
}

TEST_F(DeepInversionTest, PoolGrowsPerRoundAndDropsTheOldest) {
  DeepInversion unbounded(Small(), Deps());
  DeepInversion bounded(Small().pool_max_images(12), Deps());
  for (int64_t r = 0; r < 2; ++r) {
    unbounded.Synthesize(Ctx(r, r * 10));
    bounded.Synthesize(Ctx(r, r * 10));
  }
  ASSERT_EQ(unbounded.pool_size(), 16);
  ASSERT_EQ(bounded.pool_size(), 12);
  EXPECT_FALSE(torch::equal(unbounded.pool().narrow(0, 0, 8), unbounded.pool().narrow(0, 8, 8)));
  EXPECT_TRUE(torch::equal(bounded.pool(), unbounded.pool().narrow(0, 4, 12)));
  EXPECT_TRUE(torch::equal(bounded.LastSynthesized(), unbounded.LastSynthesized()));
}

TEST_F(DeepInversionTest, InversionLowersTheTeacherBnLoss) {
  // BN term alone, no augmentation, and an image range (std 0.05: [-10, 10])
  // wide enough that clipping never touches N(0, 1) noise: the kept batch is
  // the argmin over iterates of exactly what TeacherBnLoss measures.
  DeepInversionOptions o = Small({{0.5f}, {0.05f}});
  o.bn_weight(1).oh_weight(0).adv_weight(0).student_bn_weight(0).jitter(0).flip(false);
  DeepInversion initial(DeepInversionOptions(o).g_steps(0), Deps());
  DeepInversion optimised(DeepInversionOptions(o).g_steps(30), Deps());
  initial.Synthesize(Ctx(0, 0));    // keeps x0, the shared starting noise
  optimised.Synthesize(Ctx(0, 0));
  const double before = TeacherBnLoss(teacher_, initial.LastSynthesized());
  const double after = TeacherBnLoss(teacher_, optimised.LastSynthesized());
  EXPECT_GT(before, 0.0);
  EXPECT_LT(after, before);
}

TEST_F(DeepInversionTest, DistillLossIsKdOnTheKdLogits) {
  DeepInversion di(Small(), Deps());
  torch::manual_seed(4);
  DistillBatch batch;
  batch.teacher.logits = torch::randn({3, 4});
  batch.student.logits = torch::randn({3, 4});
  batch.kd_logits = torch::randn({3, 4});
  EXPECT_TRUE(torch::allclose(di.DistillLoss(batch, Ctx(0, 0)),
                              KdLoss(batch.kd_logits, batch.teacher.logits, 20.0)));
}

TEST_F(DeepInversionTest, RejectsNormalisationOfTheWrongChannelCount) {
  EXPECT_THROW(DeepInversion(Small({{0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}}), Deps()),
               c10::Error);
  EXPECT_THROW(DeepInversion(Small({{}, {}}), Deps()), c10::Error);
}

TEST_F(DeepInversionTest, SaveLoadRoundTripContinuesIdentically) {
  DeepInversion original(Small(), Deps());
  original.Synthesize(Ctx(0, 0));
  original.Synthesize(Ctx(1, 10));
  torch::serialize::OutputArchive out;
  original.Save(out);
  std::stringstream buffer;
  out.save_to(buffer);

  torch::serialize::InputArchive in;
  in.load_from(buffer);
  DeepInversion restored(Small(), Deps());
  restored.Load(in);
  EXPECT_EQ(restored.pool_size(), 16);
  EXPECT_TRUE(torch::equal(restored.pool(), original.pool()));
  EXPECT_TRUE(torch::equal(restored.LastSynthesized(), original.LastSynthesized()));
  EXPECT_TRUE(torch::equal(restored.Sample(4, Ctx(1, 17)), original.Sample(4, Ctx(1, 17))));
  original.Synthesize(Ctx(2, 20));
  restored.Synthesize(Ctx(2, 20));
  EXPECT_TRUE(torch::equal(restored.pool(), original.pool()));
}

}  // namespace
}  // namespace dfkd::worker
