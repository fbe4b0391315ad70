// DAFL: the generator networks, the three generator loss terms against hand
// computations, the synthesize/sample/loss contract, and resume equality.
#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_task.h"
#include "worker/engine/distill_source.h"
#include "worker/engine/method_factory.h"
#include "worker/engine/trainer.h"
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
    torch::manual_seed(1);
    teacher = MakeClassifier({"wrn", 16, 1, 1.0, 0.0, 4, 1, 8});
    teacher->eval();
    for (auto& p : teacher->parameters()) p.set_requires_grad(false);
    student = MakeClassifier({"wrn", 16, 1, 1.0, 0.0, 4, 1, 8});
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
  std::vector<torch::Tensor> teacher_before, gen_before;
  for (auto& p : fx.teacher->parameters()) teacher_before.push_back(p.clone());
  for (auto& b : fx.teacher->buffers()) teacher_before.push_back(b.clone());
  for (auto& p : dafl.generator()->parameters()) gen_before.push_back(p.clone());
  RoundContext ctx;
  dafl.Synthesize(ctx);
  size_t i = 0;
  for (auto& p : fx.teacher->parameters()) EXPECT_TRUE(torch::equal(p, teacher_before[i++]));
  for (auto& b : fx.teacher->buffers()) EXPECT_TRUE(torch::equal(b, teacher_before[i++]));
  i = 0;
  int changed = 0;
  for (auto& p : dafl.generator()->parameters()) changed += !torch::equal(p, gen_before[i++]);
  EXPECT_GT(changed, 0);
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
  DistillBatch b;
  b.inputs = dafl.Sample(8, ctx);
  {
    torch::NoGradGuard g;
    b.teacher = fx.teacher->ForwardWithTaps(b.inputs, {});
  }
  b.student = fx.student->ForwardWithTaps(b.inputs, {});
  dafl.generator()->zero_grad();
  dafl.DistillLoss(b, ctx).backward();
  EXPECT_GT(fx.student->parameters()[0].grad().abs().sum().item<double>(), 0.0);
  for (auto& p : dafl.generator()->parameters()) {
    EXPECT_TRUE(!p.grad().defined() || p.grad().abs().sum().item<double>() == 0.0);
  }
}

TEST(DaflTest, ResumedDistillationEqualsUninterrupted) {
  testing::TempDir dir;
  Fixture fx;
  common::JobSpec spec;
  spec.kind = common::JobKind::kDistill;
  spec.seed = 2;
  spec.train.epochs = 2;
  spec.train.batch_size = 8;
  spec.train.checkpoint_every_steps = 1000;
  spec.distill.method = "dafl";
  spec.distill.steps_per_epoch = 5;
  spec.distill.kd_steps = 3;
  spec.distill.synthesis_batch_size = 8;
  spec.distill.dafl.nz = 16;
  spec.distill.dafl.g_steps = 2;
  JobData data = testing::TinyDistillTask(12);
  auto run = [&](const std::string& out, int64_t stop_at, uint64_t init_seed) {
    torch::manual_seed(init_seed);
    Classifier student = MakeClassifier({"wrn", 16, 1, 1.0, 0.0, 4, 1, 8});
    torch::manual_seed(5);  // the generator's init, as the job runner seeds it
    LocalCommunicator comm;
    MethodDeps deps{fx.teacher, student, data.image_shape, 4, data.norm};
    DistillSource source(spec, fx.teacher, student, MakeMethod(spec, deps), comm);
    RunControl c;
    c.quiet = true;
    c.stop_at_step = stop_at;
    RunOutcome o = Trainer(spec, student, data, comm, source, out).Run(c);
    auto& dafl = dynamic_cast<Dafl&>(source.method());
    return std::make_tuple(o.finished, student, dafl.generator()->parameters()[0].detach().clone());
  };
  auto [done_a, a, gen_a] = run(dir.File("a"), -1, 9);
  ASSERT_TRUE(done_a);
  auto [done_b1, b1, gen_b1] = run(dir.File("b"), 4, 9);  // mid-round (steps 3..5)
  ASSERT_FALSE(done_b1);
  auto [done_b, b, gen_b] = run(dir.File("b"), -1, 77);
  ASSERT_TRUE(done_b);
  EXPECT_TRUE(torch::equal(gen_a, gen_b));
  auto pb = b->named_parameters();
  for (auto& kv : a->named_parameters()) {
    EXPECT_TRUE(torch::equal(kv.value(), pb[kv.key()])) << kv.key();
  }
}

}  // namespace
}  // namespace dfkd::worker
