// DAFL: the generator networks, the three generator loss terms against hand
// computations, the synthesize/sample/loss contract, and resume equality.
#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/testing/method_fixtures.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_task.h"
#include "worker/engine/method_factory.h"
#include "worker/methods/dafl.h"
#include "worker/models/generator.h"
#include "worker/models/model_zoo.h"

namespace dfkd::worker {
namespace {

TEST(GeneratorTest, ParameterCountsMatchTheReference) {
  EXPECT_EQ(CountParameters(*Generator(GeneratorOptions(256))), 2328899);  // G-A, Fast/CMI
  EXPECT_EQ(CountParameters(*Generator(GeneratorOptions(512))), 4426051);  // G-A, DAFL
  EXPECT_EQ(CountParameters(*Generator(GeneratorOptions(512).large(true))), 8776259);  // G-B
  EXPECT_EQ(CountParameters(*Generator(GeneratorOptions(100).large(true))), 2026051);  // G-C
}

TEST(GeneratorTest, FashionMnistShapeInUnitRange) {
  Generator g(GeneratorOptions(16).img_size(28).channels(1).ngf(8));
  torch::Tensor x = g->forward(torch::randn({3, 16}));
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{3, 1, 28, 28}));
  EXPECT_GE(x.min().item<float>(), 0.0f);
  EXPECT_LE(x.max().item<float>(), 1.0f);
  EXPECT_THROW(Generator(GeneratorOptions(16).img_size(30)), c10::Error);
}

TEST(DaflLossTest, TermsMatchHandComputation) {
  torch::Tensor t = torch::tensor({{2.0, 0.0, 0.0}, {0.0, 1.0, 3.0}}, torch::kFloat64);
  torch::Tensor f = torch::tensor({{1.0, -3.0}, {0.5, 0.5}}, torch::kFloat64);
  DaflLosses l = DaflGeneratorLoss(t, f, DaflOptions());
  double oh = 0, pbar[3] = {0, 0, 0};
  for (int b = 0; b < 2; ++b) {
    double z = 0;
    for (int c = 0; c < 3; ++c) z += std::exp(t[b][c].item<double>());
    int arg = b == 0 ? 0 : 2;
    oh += -std::log(std::exp(t[b][arg].item<double>()) / z) / 2;
    for (int c = 0; c < 3; ++c) pbar[c] += std::exp(t[b][c].item<double>()) / z / 2;
  }
  double ie = 0;
  for (double p : pbar) ie += p * std::log(p);
  EXPECT_NEAR(l.one_hot.item<double>(), oh, 1e-12);
  EXPECT_NEAR(l.information_entropy.item<double>(), ie, 1e-12);
  EXPECT_NEAR(l.activation.item<double>(), -(1 + 3 + 0.5 + 0.5) / 4.0, 1e-12);
  EXPECT_NEAR(l.total.item<double>(), oh + 20 * ie + 0.001 * -1.25, 1e-12);
}

struct Fixture {
  Fixture() {
    teacher = testing::TinyTeacher(1, 0);
    // Drawn right after the teacher, without a seed of its own.
    student = MakeClassifier(testing::TinyWrnConfig());
  }
  MethodDeps Deps() { return {teacher, student, {1, 8, 8}, 4, {{0.5f}, {0.5f}}}; }
  DaflOptions Options() {
    return DaflOptions().nz(16).synthesis_batch_size(16).g_steps(3).norm({{0.5f}, {0.5f}});
  }
  Classifier teacher, student;
};

TEST(DaflTest, SynthesizeTrainsTheGeneratorAndNeverTheTeacher) {
  Fixture fx;
  Dafl dafl(fx.Options(), fx.Deps());
  const std::vector<torch::Tensor> teacher_before = testing::StateOf(*fx.teacher);
  const std::vector<torch::Tensor> gen_before = testing::ParamsOf(*dafl.generator());
  RoundContext ctx;
  dafl.Synthesize(ctx);
  EXPECT_TRUE(testing::SameTensors(teacher_before, testing::StateOf(*fx.teacher)));
  EXPECT_FALSE(testing::SameTensors(gen_before, testing::ParamsOf(*dafl.generator())));
  EXPECT_TRUE(std::isfinite(dafl.last_losses().total.item<double>()));
  // Substitute data: normalised G(z) in [(0-.5)/.5, (1-.5)/.5].
  torch::Tensor x = dafl.Sample(5, ctx);
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{5, 1, 8, 8}));
  EXPECT_GE(x.min().item<float>(), -1.0f);
  EXPECT_LE(x.max().item<float>(), 1.0f);
  EXPECT_FALSE(x.requires_grad());
  EXPECT_TRUE(torch::equal(x, dafl.Sample(5, ctx)));  // keyed by the step
  ctx.global_step = 1;
  EXPECT_FALSE(torch::equal(x, dafl.Sample(5, ctx)));
  EXPECT_EQ(dafl.LastSynthesized().size(0), 16);
}

TEST(DaflTest, DistillationLossReachesTheStudentOnly) {
  Fixture fx;
  Dafl dafl(fx.Options(), fx.Deps());
  RoundContext ctx;
  dafl.Synthesize(ctx);
  DistillBatch b = testing::TrainerBatch(fx.teacher, fx.student, dafl.Sample(8, ctx));
  dafl.generator()->zero_grad();
  dafl.DistillLoss(b, ctx).backward();
  EXPECT_GT(fx.student->parameters()[0].grad().abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(testing::NoGradientReached(*dafl.generator()));
}

TEST(DaflTest, ResumedDistillationEqualsUninterrupted) {
  testing::TempDir dir;
  Fixture fx;
  common::JobSpec spec = testing::TinyDistillJob("dafl");
  spec.distill.synthesis_batch_size = 8;
  spec.distill.dafl.nz = 16;
  spec.distill.dafl.g_steps = 2;
  JobData data = testing::TinyDistillTask(12);
  auto run = [&](const std::string& out, int64_t stop_at, uint64_t init_seed) {
    Classifier student = testing::TinyWrn(init_seed);
    torch::manual_seed(5);  // the generator's init, as the job runner seeds it
    MethodDeps deps{fx.teacher, student, data.image_shape, 4, data.norm};
    testing::TinyDistillation distillation(spec, fx.teacher, student, MakeMethod(spec, deps));
    const bool finished = distillation.Train(data, out, stop_at);
    auto& dafl = dynamic_cast<Dafl&>(distillation.method());
    return std::make_tuple(finished, student, dafl.generator()->parameters()[0].detach().clone());
  };
  auto [done_a, a, gen_a] = run(dir.File("a"), -1, 9);
  ASSERT_TRUE(done_a);
  auto [done_b1, b1, gen_b1] = run(dir.File("b"), 4, 9);  // mid-round (steps 3..5)
  ASSERT_FALSE(done_b1);
  auto [done_b, b, gen_b] = run(dir.File("b"), -1, 77);
  ASSERT_TRUE(done_b);
  EXPECT_TRUE(torch::equal(gen_a, gen_b));
  EXPECT_TRUE(testing::SameParameters(a, b));
}

}  // namespace
}  // namespace dfkd::worker
