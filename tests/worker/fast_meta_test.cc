// Fast (worker/methods/fast_meta.h): what Fast adds, against hand
// computations (the momentum BN loss and its moving average, the
// decision-adversarial term, the differentiable crop + flip, the FOMAML and
// REPTILE meta steps); that synthesis trains the generator and leaves both
// models untouched; warm-up calls and the adversarial term's start; the
// l0 reset; the pool and keyed sampling; that the KD loss reaches the student
// only; save/load and a resumed distillation; KDCI around Fast.
#include <cmath>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/testing/method_fixtures.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_task.h"
#include "worker/data/transforms.h"
#include "worker/dist/communicator.h"
#include "worker/engine/distill_source.h"
#include "worker/engine/method_factory.h"
#include "worker/methods/deep_inversion.h"
#include "worker/methods/fast_meta.h"
#include "worker/methods/losses.h"
#include "worker/models/model_zoo.h"

namespace dfkd::worker {
namespace {

using testing::CloseStudent;
using testing::ParamsOf;
using testing::SameTensors;
using testing::Softmax;
using testing::StateOf;

torch::Tensor Vec(std::vector<float> v) { return torch::tensor(v, torch::kFloat32); }

TEST(MomentumBnLossTest, PlainUntilAnAverageExistsThenMatchesHand) {
  torch::Tensor mean0 = Vec({1, 2}).requires_grad_(true);
  std::vector<BatchNormTap> taps = {
      BatchNormTap{mean0, Vec({1, 1}), Vec({0, 0}), Vec({1, 4})},
      BatchNormTap{Vec({0, 0, 0}), Vec({2, 2, 2}), Vec({3, 4, 0}), Vec({1, 1, 1})}};
  // No moving average yet: DeepInversion's plain loss.
  EXPECT_NEAR(MomentumBnLoss(taps, {}, 0.5).item<double>(),
              BnStatisticsLoss(taps).item<double>(), 1e-6);

  std::vector<BnMoments> ema = {{Vec({3, 0}), Vec({2, 0})}, {Vec({1, 1, 1}), Vec({0, 0, 0})}};
  // m = 0.5, r = ||rv - .5 var - .5 ema_var|| + ||rm - .5 mean - .5 ema_mean||:
  // layer 0: ||(1, 4) - (.5, .5) - (1, 0)|| = ||(-.5, 3.5)|| and
  //          ||(0, 0) - (.5, 1) - (1.5, 0)|| = ||(-2, -1)||;
  // layer 1: ||(1, 1, 1) - (1, 1, 1) - 0|| = 0 and
  //          ||(3, 4, 0) - 0 - (.5, .5, .5)|| = ||(2.5, 3.5, -.5)||.
  const double expected = std::sqrt(12.5) + std::sqrt(5.0) + 0.0 + std::sqrt(18.75);
  torch::Tensor loss = MomentumBnLoss(taps, ema, 0.5);
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_NEAR(loss.item<double>(), expected, 1e-5);
  // d/dmean of ||rm - (1-m) mean - m ema|| = -(1-m) v / ||v||, v = (-2, -1).
  loss.backward();
  EXPECT_TRUE(torch::allclose(mean0.grad(), Vec({1.0f, 0.5f}) / std::sqrt(5.0f), 1e-5, 1e-6));
  // One average per layer, or it is an error.
  EXPECT_THROW(MomentumBnLoss(taps, {ema[0]}, 0.5), c10::Error);
}

TEST(MomentumBnLossTest, MovingAverageStartsAtTheFirstStatisticsThenDecays) {
  std::vector<BnMoments> first = {{Vec({1, 2}), Vec({4, 4})}};
  std::vector<BnMoments> ema = UpdateBnMoments({}, first, 0.9);
  ASSERT_EQ(ema.size(), 1u);
  EXPECT_TRUE(torch::equal(ema[0].mean, Vec({1, 2})));
  EXPECT_TRUE(torch::equal(ema[0].variance, Vec({4, 4})));
  std::vector<BnMoments> second = {{Vec({11, 12}), Vec({14, 4})}};
  ema = UpdateBnMoments(ema, second, 0.9);
  // 0.9 * old + 0.1 * new.
  EXPECT_TRUE(torch::allclose(ema[0].mean, Vec({2, 3})));
  EXPECT_TRUE(torch::allclose(ema[0].variance, Vec({5, 4})));
}

TEST(DecisionAdversarialLossTest, MaskedKlAtTemperatureOneByHand) {
  // Row 0: both argmax 0 (kept); row 1: student 1, teacher 0 (masked out).
  const std::vector<std::vector<double>> s = {{2, 0, 0}, {0, 1, 0}};
  const std::vector<std::vector<double>> t = {{1, 0, -1}, {3, 0, 0}};
  std::vector<double> ps = Softmax(s[0]), pt = Softmax(t[0]);
  double kl0 = 0;
  for (size_t c = 0; c < 3; ++c) kl0 += pt[c] * (std::log(pt[c]) - std::log(ps[c]));
  const double expected = -(kl0 * 1 + 0) / 2;  // mean over the batch of 2

  torch::Tensor ts = torch::tensor({{2.f, 0.f, 0.f}, {0.f, 1.f, 0.f}}).requires_grad_(true);
  torch::Tensor tt = torch::tensor({{1.f, 0.f, -1.f}, {3.f, 0.f, 0.f}}).requires_grad_(true);
  torch::Tensor loss = DecisionAdversarialLoss(ts, tt);
  EXPECT_LT(expected, 0.0);
  EXPECT_NEAR(loss.item<double>(), expected, 1e-6);
  // Both logits get gradients (the teacher's are not detached), the masked
  // row none.
  loss.backward();
  EXPECT_GT(ts.grad()[0].abs().sum().item<double>(), 0.0);
  EXPECT_GT(tt.grad()[0].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(ts.grad()[1].abs().sum().item<double>(), 0.0);
  EXPECT_EQ(tt.grad()[1].abs().sum().item<double>(), 0.0);
  // Nobody agrees: zero.
  EXPECT_EQ(DecisionAdversarialLoss(torch::tensor({{1.f, 0.f}}), torch::tensor({{0.f, 1.f}}))
                .item<float>(),
            0.0f);
}

TEST(AugmentCropFlipTest, MatchesTheUint8TransformDrawForDrawAndIsDifferentiable) {
  torch::manual_seed(0);
  torch::Tensor u8 = torch::randint(256, {6, 2, 5, 5}, torch::kUInt8);
  torch::Tensor x = u8.to(torch::kFloat32).requires_grad_(true);
  std::mt19937_64 a(11), b(11);
  torch::Tensor out = AugmentCropFlip(x, 2, /*flip=*/true, a);
  EXPECT_TRUE(torch::equal(out.detach(), RandomCropFlip(u8, 2, true, b).to(torch::kFloat32)));
  out.sum().backward();
  ASSERT_TRUE(x.grad().defined());
  // Each input pixel is kept at most once per sample.
  EXPECT_GE(x.grad().min().item<float>(), 0.0f);
  EXPECT_LE(x.grad().max().item<float>(), 1.0f);
  EXPECT_GT(x.grad().sum().item<float>(), 0.0f);
  std::mt19937_64 c(1);
  EXPECT_TRUE(torch::equal(AugmentCropFlip(x, 0, false, c), x));
}

class FastTest : public testing::TinyMethodTest {
 protected:
  // A tiny G-A (nz 8, ngf 4), no warm-up.
  static FastOptions Small() {
    FastOptions o;
    o.nz(8).ngf(4).synthesis_batch_size(8).g_steps(3).warmup(0).crop_padding(1).norm(
        {{0.5f}, {0.5f}});
    return o;
  }
};

// One inner step from fresh Adam states: G' moves by lr_g * g / (|g| + eps),
// and FOMAML's meta step (lr_g * g_steps = lr_g, gradient = the sum of the one
// inner gradient) moves G by exactly the same amount.
TEST_F(FastTest, FomamlWithOneInnerStepMovesTheMetaGeneratorOntoTheAdaptedCopy) {
  FastMethod fast(Small().g_steps(1), Deps());
  const std::vector<torch::Tensor> before = ParamsOf(*fast.generator());
  fast.Synthesize(Ctx(0, 0));
  const std::vector<torch::Tensor> meta = ParamsOf(*fast.generator());
  const std::vector<torch::Tensor> adapted = ParamsOf(*fast.fast_generator());
  ASSERT_EQ(meta.size(), adapted.size());
  int moved = 0;
  for (size_t i = 0; i < meta.size(); ++i) {
    EXPECT_TRUE(torch::allclose(meta[i], adapted[i], 1e-5, 1e-7)) << "parameter " << i;
    moved += !torch::equal(meta[i], before[i]);
  }
  EXPECT_GT(moved, 0);
}

// REPTILE: G.grad = 67 (G - G'), one step of a fresh Adam with lr lr_g *
// g_steps: G_new = G - lr * d / (|d| + eps), d = 67 (G - G').
TEST_F(FastTest, ReptileStepIsAdamOnSixtySevenTimesTheDistanceToTheCopy) {
  FastOptions o = Small().g_steps(2).meta(FastMetaUpdate::kReptile);
  FastMethod fast(o, Deps());
  const std::vector<torch::Tensor> before = ParamsOf(*fast.generator());
  fast.Synthesize(Ctx(0, 0));
  const std::vector<torch::Tensor> meta = ParamsOf(*fast.generator());
  const std::vector<torch::Tensor> adapted = ParamsOf(*fast.fast_generator());
  const double lr = o.lr_g() * 2;
  int adapted_moved = 0;
  for (size_t i = 0; i < meta.size(); ++i) {
    torch::Tensor d = (before[i] - adapted[i]) * 67.0;
    torch::Tensor expected = before[i] - lr * d / (d.abs() + 1e-8);
    EXPECT_TRUE(torch::allclose(meta[i], expected, 1e-4, 1e-6)) << "parameter " << i;
    adapted_moved += !torch::equal(adapted[i], before[i]);
  }
  EXPECT_GT(adapted_moved, 0);
}

TEST_F(FastTest, SynthesizeTrainsTheGeneratorAndLeavesBothModelsUntouched) {
  student_->train();  // its mode must come back
  const std::vector<torch::Tensor> teacher_before = StateOf(*teacher_);
  const std::vector<torch::Tensor> student_before = StateOf(*student_);
  FastMethod fast(Small(), Deps());
  EXPECT_EQ(fast.name(), "fast");
  const std::vector<torch::Tensor> gen_before = ParamsOf(*fast.generator());
  EXPECT_THROW(fast.Sample(4, Ctx(0, 0)), c10::Error);
  fast.Synthesize(Ctx(0, 0));

  EXPECT_TRUE(testing::Untouched(teacher_before, teacher_, /*training=*/false));
  EXPECT_TRUE(testing::Untouched(student_before, student_, /*training=*/true));
  EXPECT_FALSE(SameTensors(gen_before, ParamsOf(*fast.generator())));
  for (const auto& p : fast.generator()->parameters()) EXPECT_FALSE(p.grad().defined());

  const FastLosses& l = fast.last_losses();
  EXPECT_TRUE(std::isfinite(l.total));
  EXPECT_GT(l.bn, 0.0);
  EXPECT_GT(l.one_hot, 0.0);
  EXPECT_EQ(fast.bn_moments().size(),
            teacher_->ForwardWithTaps(torch::zeros({2, 1, 8, 8}), TapRequest{true}).bn_taps.size());

  // The kept batch: G'(z) in [0, 1], normalised; the pool truncates it to uint8.
  ASSERT_EQ(fast.pool().size(), 8);
  EXPECT_EQ(fast.pool().images().scalar_type(), torch::kUInt8);
  torch::Tensor last = fast.LastSynthesized();
  ASSERT_EQ(last.sizes(), torch::IntArrayRef({8, 1, 8, 8}));
  EXPECT_FALSE(last.requires_grad());
  EXPECT_GE(last.min().item<float>(), -1.0f);
  EXPECT_LE(last.max().item<float>(), 1.0f);
  torch::Tensor gap = last - Normalize(fast.pool().images(), {{0.5f}, {0.5f}});
  EXPECT_GE(gap.min().item<float>(), -1e-5f);                 // truncation: never above
  EXPECT_LE(gap.max().item<float>(), 2.0f / 255 + 1e-5f);     // less than a level / std

  torch::Tensor x = fast.Sample(5, Ctx(0, 3));
  EXPECT_EQ(x.sizes(), torch::IntArrayRef({5, 1, 8, 8}));
  EXPECT_EQ(x.scalar_type(), torch::kFloat32);
  EXPECT_FALSE(x.requires_grad());
  EXPECT_TRUE(torch::isfinite(x).all().item<bool>());
  EXPECT_GE(x.min().item<float>(), -1.0f - 1e-5f);  // [(0 - .5) / .5, (1 - .5) / .5]
  EXPECT_LE(x.max().item<float>(), 1.0f + 1e-5f);
  EXPECT_TRUE(torch::equal(x, fast.Sample(5, Ctx(0, 3))));  // keyed by the step
  EXPECT_FALSE(torch::equal(x, fast.Sample(5, Ctx(0, 4))));

  nlohmann::json d = fast.Describe();
  EXPECT_EQ(d["method"], "fast");
  EXPECT_EQ(d["meta"], "fomaml");
  EXPECT_EQ(d["g_steps"], 3);
  EXPECT_EQ(d["pool_size"], 8);
}

TEST_F(FastTest, DefaultsAreTheFast10ReferenceValues) {
  FastOptions o;
  EXPECT_EQ(o.nz(), 256);
  EXPECT_EQ(o.g_steps(), 10);
  EXPECT_DOUBLE_EQ(o.lr_g(), 2e-3);
  EXPECT_DOUBLE_EQ(o.lr_z(), 0.01);
  EXPECT_DOUBLE_EQ(o.bn_weight(), 10.0);
  EXPECT_DOUBLE_EQ(o.oh_weight(), 0.4);
  EXPECT_DOUBLE_EQ(o.adv_weight(), 1.1);
  EXPECT_DOUBLE_EQ(o.bn_momentum(), 0.9);
  EXPECT_EQ(o.warmup(), 20);
  EXPECT_TRUE(o.meta() == FastMetaUpdate::kFomaml);
  EXPECT_TRUE(o.reset_l0());
  EXPECT_DOUBLE_EQ(o.temperature(), 20.0);
}

TEST_F(FastTest, WarmUpCallsRunInRoundZeroAndTheAdversarialTermStartsAtCallWarmup) {
  // warmup 2: round 0 makes calls 1, 2, 3; the adversarial term is on from
  // call 2. Call 1 cannot depend on the student; later calls do.
  const Classifier close = CloseStudent(teacher_);
  const FastOptions o = Small().warmup(2).adv_weight(10.0);
  torch::manual_seed(5);  // the same initial generator for all three
  FastMethod with_close(o, DepsWith(close));
  torch::manual_seed(5);
  FastMethod with_random(o, DepsWith(student_));
  torch::manual_seed(5);
  FastMethod bounded(FastOptions(o).pool_max_images(20), DepsWith(close));
  with_close.Synthesize(Ctx(0, 0));
  with_random.Synthesize(Ctx(0, 0));
  ASSERT_EQ(with_close.pool().size(), 3 * 8);
  EXPECT_TRUE(torch::equal(with_close.pool().images().narrow(0, 0, 8),
                           with_random.pool().images().narrow(0, 0, 8)));
  EXPECT_NE(with_close.last_losses().adversarial, 0.0);
  EXPECT_FALSE(SameTensors(ParamsOf(*with_close.generator()),
                           ParamsOf(*with_random.generator())));
  // The pool keeps only the newest when bounded.
  bounded.Synthesize(Ctx(0, 0));
  ASSERT_EQ(bounded.pool().size(), 20);
  EXPECT_TRUE(torch::equal(bounded.pool().images(), with_close.pool().images().narrow(0, 4, 20)));
  // Round r > 0 is one call.
  with_close.Synthesize(Ctx(1, 10));
  EXPECT_EQ(with_close.pool().size(), 4 * 8);
}

TEST_F(FastTest, ResetL0ReinitialisesTheInputLayerAtItsCall) {
  // warmup 0, reset_l0_after 2: the reset happens at call 2 = round 1.
  torch::manual_seed(5);
  FastMethod plain(Small().reset_l0(false), Deps());
  torch::manual_seed(5);
  FastMethod reset(Small().reset_l0(true).reset_l0_after(2), Deps());
  plain.Synthesize(Ctx(0, 0));
  reset.Synthesize(Ctx(0, 0));
  EXPECT_TRUE(SameTensors(ParamsOf(*plain.generator()), ParamsOf(*reset.generator())));
  plain.Synthesize(Ctx(1, 10));
  reset.Synthesize(Ctx(1, 10));
  // BN weight ~ N(0, 0.02) plus one meta step instead of ~1; the Linear's
  // bias restarts from 0 and takes one Adam step (second step of the meta
  // Adam, betas (0.5, 0.999): at most ~1.054 lr, lr = lr_g * g_steps).
  const double step = Small().lr_g() * 3 * 1.1;
  EXPECT_GT(plain.generator()->bn0->weight.abs().mean().item<double>(), 0.5);
  EXPECT_LT(reset.generator()->bn0->weight.abs().mean().item<double>(), 0.1);
  EXPECT_LE(reset.generator()->l1->bias.abs().max().item<double>(), step);
  EXPECT_GT(plain.generator()->l1->bias.abs().max().item<double>(), step);
}

TEST_F(FastTest, DistillLossIsKdAndReachesTheStudentOnly) {
  FastMethod fast(Small(), Deps());
  fast.Synthesize(Ctx(0, 0));
  student_->train();
  DistillBatch b = testing::TrainerBatch(teacher_, student_, fast.Sample(8, Ctx(0, 1)));
  torch::Tensor loss = fast.DistillLoss(b, Ctx(0, 1));
  EXPECT_TRUE(torch::allclose(loss, KdLoss(b.student.logits, b.teacher.logits, 20.0)));
  loss.backward();
  EXPECT_GT(student_->parameters()[0].grad().abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(testing::NoGradientReached(*fast.generator()));
  EXPECT_TRUE(testing::NoGradientReached(*fast.fast_generator()));
  // KDCI's compensated logits are what the KD term scores.
  b.kd_logits = torch::randn({8, 4});
  EXPECT_TRUE(torch::allclose(fast.DistillLoss(b, Ctx(0, 1)),
                              KdLoss(b.kd_logits, b.teacher.logits, 20.0)));
}

TEST_F(FastTest, SaveLoadContinuesIdentically) {
  FastOptions o = Small().warmup(1);
  FastMethod original(o, Deps());
  original.Synthesize(Ctx(0, 0));
  original.Synthesize(Ctx(1, 10));
  torch::serialize::OutputArchive out;
  original.Save(out);
  std::stringstream buffer;
  out.save_to(buffer);

  torch::manual_seed(99);  // a different initial generator, overwritten by Load
  FastMethod restored(o, Deps());
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  restored.Load(in);
  EXPECT_TRUE(SameTensors(StateOf(*restored.generator()), StateOf(*original.generator())));
  EXPECT_TRUE(torch::equal(restored.pool().images(), original.pool().images()));
  EXPECT_TRUE(torch::equal(restored.LastSynthesized(), original.LastSynthesized()));
  ASSERT_EQ(restored.bn_moments().size(), original.bn_moments().size());
  ASSERT_FALSE(original.bn_moments().empty());
  for (size_t i = 0; i < original.bn_moments().size(); ++i) {
    EXPECT_TRUE(torch::equal(restored.bn_moments()[i].mean, original.bn_moments()[i].mean));
    EXPECT_TRUE(
        torch::equal(restored.bn_moments()[i].variance, original.bn_moments()[i].variance));
  }
  EXPECT_TRUE(torch::equal(restored.Sample(4, Ctx(1, 17)), original.Sample(4, Ctx(1, 17))));
  // The meta optimizer's moments came back too: the next call is bit-identical.
  original.Synthesize(Ctx(2, 20));
  restored.Synthesize(Ctx(2, 20));
  EXPECT_TRUE(SameTensors(ParamsOf(*restored.generator()), ParamsOf(*original.generator())));
  EXPECT_TRUE(torch::equal(restored.pool().images(), original.pool().images()));
}

common::JobSpec TinyFastJob() {
  common::JobSpec spec = testing::TinyDistillJob("fast");
  spec.distill.synthesis_batch_size = 8;
  spec.distill.fast.nz = 8;
  spec.distill.fast.g_steps = 2;
  spec.distill.fast.warmup = 1;
  return spec;
}

TEST_F(FastTest, ResumedDistillationEqualsUninterrupted) {
  testing::TempDir dir;
  const common::JobSpec spec = TinyFastJob();
  JobData data = testing::TinyDistillTask(12);
  auto run = [&](const std::string& out, int64_t stop_at, uint64_t init_seed) {
    Classifier student = testing::TinyWrn(init_seed);
    torch::manual_seed(5);  // the generator's init, as the job runner seeds it
    MethodDeps deps = DepsWith(student);
    deps.image_shape = data.image_shape;
    deps.norm = data.norm;
    testing::TinyDistillation distillation(spec, teacher_, student, MakeMethod(spec, deps));
    const bool finished = distillation.Train(data, out, stop_at);
    auto& fast = dynamic_cast<FastMethod&>(distillation.method());
    return std::make_tuple(finished, student, ParamsOf(*fast.generator()),
                           fast.pool().images().clone());
  };
  auto [done_a, a, gen_a, pool_a] = run(dir.File("a"), -1, 9);
  ASSERT_TRUE(done_a);
  auto [done_b1, b1, gen_b1, pool_b1] = run(dir.File("b"), 4, 9);  // mid-round 1 (steps 3..5)
  ASSERT_FALSE(done_b1);
  auto [done_b, b, gen_b, pool_b] = run(dir.File("b"), -1, 77);
  ASSERT_TRUE(done_b);
  // Rounds 0..3: calls 1-2, 3, 4, 5 of 8 images each.
  EXPECT_EQ(pool_a.size(0), 5 * 8);
  EXPECT_TRUE(torch::equal(pool_a, pool_b));
  EXPECT_TRUE(SameTensors(gen_a, gen_b));
  EXPECT_TRUE(testing::SameParameters(a, b));
}

TEST_F(FastTest, KdciWrapsFastAndTakesAStep) {
  common::JobSpec spec = TinyFastJob();
  spec.distill.synthesis_batch_size = 16;
  spec.kdci.enabled = true;
  student_->train();
  MethodDeps deps = Deps();
  std::unique_ptr<Method> method = MakeMethod(spec, deps);
  EXPECT_EQ(method->name(), "fast+kdci");
  LocalCommunicator comm;
  DistillSource source(spec, teacher_, student_, std::move(method), comm);
  StepResult r = source.Step(0);
  EXPECT_EQ(r.images, 8);
  ASSERT_TRUE(r.loss.defined());
  EXPECT_TRUE(std::isfinite(r.loss.item<double>()));
  r.loss.backward();
  EXPECT_GT(student_->parameters()[0].grad().abs().sum().item<double>(), 0.0);
  nlohmann::json d = source.Describe();
  EXPECT_EQ(d["kdci"]["num_prototypes"], 8);  // the paper's N for generator methods
  EXPECT_EQ(source.method().LastSynthesized().size(0), 16);
}

}  // namespace
}  // namespace dfkd::worker
