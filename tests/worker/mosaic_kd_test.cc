// MosaicKD (worker/methods/mosaic_kd.h): the generator's four terms and the
// discriminator's loss against hand computations; the patch discriminator's
// shapes; that one Synthesize() trains G and D and leaves both models
// untouched; the half-generator / half-pool student batch; the OOD subset on a
// planted pool; the cosine schedule; save/load and a resumed distillation.
#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
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
#include "worker/methods/losses.h"
#include "worker/methods/mosaic_kd.h"
#include "worker/methods/seeding.h"
#include "worker/methods/unlabeled_sampler.h"
#include "worker/models/model_zoo.h"
#include "worker/models/patch_discriminator.h"

namespace dfkd::worker {
namespace {

using testing::MeanTeacherImpl;
using testing::ParamsOf;
using testing::PlantedPool;
using testing::PlantedValue;
using testing::SameTensors;
using testing::Softmax;
using testing::StateOf;

double Softplus(double x) { return std::log1p(std::exp(x)); }

TEST(MosaicLossesTest, AdversarialIsMinusBatchmeanKlAndReachesBothModels) {
  const std::vector<std::vector<double>> s = {{2, 0, 0}, {0, 1, 0}};
  const std::vector<std::vector<double>> t = {{1, 0, -1}, {3, 0, 0}};
  double kl = 0;
  for (size_t b = 0; b < 2; ++b) {
    std::vector<double> ps = Softmax(s[b]), pt = Softmax(t[b]);
    for (size_t c = 0; c < 3; ++c) kl += pt[c] * (std::log(pt[c]) - std::log(ps[c]));
  }
  torch::Tensor ts = torch::tensor({{2.f, 0.f, 0.f}, {0.f, 1.f, 0.f}}).requires_grad_(true);
  torch::Tensor tt = torch::tensor({{1.f, 0.f, -1.f}, {3.f, 0.f, 0.f}}).requires_grad_(true);
  torch::Tensor loss = MosaicAdversarialLoss(ts, tt);
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_NEAR(loss.item<double>(), -kl / 2, 1e-6);  // no mask: both rows count
  loss.backward();
  for (int64_t b = 0; b < 2; ++b) {
    EXPECT_GT(ts.grad()[b].abs().sum().item<double>(), 0.0);
    EXPECT_GT(tt.grad()[b].abs().sum().item<double>(), 0.0);  // the teacher is not detached
  }
}

TEST(MosaicLossesTest, AlignIsTheMeanEntropyInNats) {
  std::vector<double> p = Softmax({1, 0, -1});
  double h0 = 0;
  for (double x : p) h0 -= x * std::log(x);
  const double expected = (h0 + std::log(3.0)) / 2;  // row 1 is uniform
  torch::Tensor t = torch::tensor({{1.f, 0.f, -1.f}, {0.f, 0.f, 0.f}});
  EXPECT_NEAR(AlignLoss(t).item<double>(), expected, 1e-6);
}

TEST(MosaicLossesTest, BalanceIsSumOfMeanProbabilityTimesLog2) {
  std::vector<double> p = Softmax({1, 0, -1});
  double expected = 0;
  for (size_t c = 0; c < 3; ++c) {
    const double pbar = (p[c] + 1.0 / 3) / 2;
    expected += pbar * std::log2(pbar);
  }
  torch::Tensor t = torch::tensor({{1.f, 0.f, -1.f}, {0.f, 0.f, 0.f}});
  EXPECT_NEAR(BalanceLoss(t).item<double>(), expected, 1e-6);
  // A balanced batch over 4 classes: -log2(4) = -2, the minimum.
  EXPECT_NEAR(BalanceLoss(torch::zeros({3, 4})).item<double>(), -2.0, 1e-6);
}

TEST(MosaicLossesTest, PatchLossesSumEveryPatchAndDivideByTheBatch) {
  // Two samples of 1 x 1 x 2 patch logits.
  torch::Tensor d = torch::tensor({0.f, 1.f, -2.f, 3.f}).view({2, 1, 1, 2});
  torch::Tensor r = torch::tensor({0.5f, -1.f, 2.f, 0.f}).view({2, 1, 1, 2});
  // BCE(x, 1) = softplus(-x), BCE(x, 0) = softplus(x).
  const double d_as_real = (Softplus(0) + Softplus(-1) + Softplus(2) + Softplus(-3)) / 2;
  const double d_as_fake = (Softplus(0) + Softplus(1) + Softplus(-2) + Softplus(3)) / 2;
  const double r_as_real = Softplus(-0.5) + Softplus(1) + Softplus(-2) + Softplus(0);
  EXPECT_NEAR(PatchGanLoss(d, true).item<double>(), d_as_real, 1e-6);
  EXPECT_NEAR(PatchGanLoss(d, false).item<double>(), d_as_fake, 1e-6);
  // w * [sum BCE(fake, 0) + sum BCE(real, 1)] / (2B).
  EXPECT_NEAR(MosaicDiscriminatorLoss(d, r, 0.5).item<double>(),
              0.5 * (2 * d_as_fake + r_as_real) / 4, 1e-6);
}

TEST(MosaicLossesTest, GeneratorLossIsTheWeightedSum) {
  torch::manual_seed(0);
  torch::Tensor s = torch::randn({3, 4}), t = torch::randn({3, 4});
  torch::Tensor d = torch::randn({3, 1, 2, 2});
  MosaicKdOptions o;
  o.adv_weight(2).align_weight(3).local_weight(5).balance_weight(7);
  MosaicGeneratorLosses l = MosaicGeneratorLoss(s, t, d, o);
  EXPECT_TRUE(torch::allclose(l.adversarial, MosaicAdversarialLoss(s, t)));
  EXPECT_TRUE(torch::allclose(l.align, AlignLoss(t)));
  EXPECT_TRUE(torch::allclose(l.local, PatchGanLoss(d, true)));
  EXPECT_TRUE(torch::allclose(l.balance, BalanceLoss(t)));
  EXPECT_NEAR(l.total.item<double>(),
              (2 * l.adversarial + 3 * l.align + 5 * l.local + 7 * l.balance).item<double>(),
              1e-5);
}

TEST(PatchDiscriminatorTest, OneLogitPerPatchForEachInputSize) {
  PatchDiscriminator cifar(PatchDiscriminatorOptions(3));
  EXPECT_EQ(cifar->forward(torch::randn({2, 3, 32, 32})).sizes(),
            torch::IntArrayRef({2, 1, 8, 8}));
  // conv1 3*128*16 + 128, conv2 128*256*16, BN 2*256, conv3 256.
  EXPECT_EQ(CountParameters(*cifar), 6272 + 524288 + 512 + 256);
  PatchDiscriminator mnist(PatchDiscriminatorOptions(1).ndf(16));
  EXPECT_EQ(mnist->forward(torch::randn({2, 1, 28, 28})).sizes(),
            torch::IntArrayRef({2, 1, 7, 7}));
  PatchDiscriminator tiny(PatchDiscriminatorOptions(1).ndf(8));
  EXPECT_EQ(tiny->forward(torch::randn({3, 1, 8, 8})).sizes(), torch::IntArrayRef({3, 1, 2, 2}));
  EXPECT_THROW(tiny->forward(torch::randn({3, 2, 8, 8})), c10::Error);
}

const Normalization kNorm{{0.5f}, {0.5f}};
const Normalization kPoolNorm{{0.25f}, {0.5f}};

class MosaicKdTest : public testing::TinyMethodTest {
 protected:
  MosaicKdTest() : pool_(testing::RandomPool(3)) {}

  // A tiny G-C (nz 8, ngf 4) and D (ndf 8) on a random pool.
  MosaicKdOptions Small() const {
    MosaicKdOptions o;
    o.nz(8).ngf(4).ndf(8).synthesis_batch_size(8).crop_padding(1);
    o.norm(kNorm).pool(pool_).pool_norm(kPoolNorm);
    return o;
  }

  torch::Tensor pool_;
};

TEST_F(MosaicKdTest, DefaultsAreTheReadmeCommandValues) {
  MosaicKdOptions o;
  EXPECT_DOUBLE_EQ(o.temperature(), 1.0);
  EXPECT_EQ(o.nz(), 100);
  EXPECT_EQ(o.ngf(), 64);
  EXPECT_EQ(o.ndf(), 128);
  EXPECT_EQ(o.synthesis_batch_size(), 256);
  EXPECT_DOUBLE_EQ(o.lr_g(), 1e-3);
  EXPECT_DOUBLE_EQ(o.lr_d(), 1e-3);
  EXPECT_DOUBLE_EQ(o.local_weight(), 1.0);
  EXPECT_DOUBLE_EQ(o.align_weight(), 1.0);
  EXPECT_DOUBLE_EQ(o.adv_weight(), 1.0);
  EXPECT_DOUBLE_EQ(o.balance_weight(), 10.0);
  EXPECT_EQ(o.ood_subset(), 0);
  EXPECT_EQ(o.total_rounds(), 0);
  MosaicKd m(Small(), Deps());
  EXPECT_EQ(m.name(), "mosaickd");
  EXPECT_TRUE(m.has_pool());
  EXPECT_FALSE(m.LastSynthesized().defined());
  // The generator is G-C: the large layout (4 ngf channels after the Linear).
  EXPECT_TRUE(m.generator()->options.large());
  EXPECT_EQ(m.generator()->bn0->options.num_features(), 16);
  // A pool of the wrong shape, or a subset larger than the pool, is refused.
  EXPECT_THROW(MosaicKd(Small().pool(torch::zeros({4, 3, 8, 8}, torch::kUInt8)), Deps()),
               c10::Error);
  EXPECT_THROW(MosaicKd(Small().ood_subset(65), Deps()), c10::Error);
}

TEST_F(MosaicKdTest, SynthesizeTrainsGeneratorAndDiscriminatorOnly) {
  const std::vector<torch::Tensor> teacher_before = StateOf(*teacher_);
  const std::vector<torch::Tensor> student_before = StateOf(*student_);
  MosaicKd m(Small(), Deps());
  const std::vector<torch::Tensor> g_before = ParamsOf(*m.generator());
  const std::vector<torch::Tensor> d_before = ParamsOf(*m.discriminator());
  m.Synthesize(Ctx(0, 0));

  // The student ran in train mode, but its parameters, running statistics
  // and mode are as before, and neither model holds a gradient.
  EXPECT_TRUE(testing::Untouched(teacher_before, teacher_, /*training=*/false));
  EXPECT_TRUE(testing::Untouched(student_before, student_, /*training=*/false));

  const std::vector<torch::Tensor> g_after = ParamsOf(*m.generator());
  const std::vector<torch::Tensor> d_after = ParamsOf(*m.discriminator());
  EXPECT_FALSE(SameTensors(g_before, g_after));
  EXPECT_FALSE(SameTensors(d_before, d_after));
  for (const auto& p : m.generator()->parameters()) EXPECT_FALSE(p.grad().defined());
  for (const auto& p : m.discriminator()->parameters()) EXPECT_FALSE(p.grad().defined());

  const MosaicLossValues& l = m.last_losses();
  EXPECT_TRUE(std::isfinite(l.generator));
  EXPECT_GT(l.discriminator, 0.0);
  EXPECT_GT(l.local, 0.0);
  EXPECT_LE(l.adversarial, 0.0);
  EXPECT_GE(l.align, 0.0);
  EXPECT_LE(l.balance, 0.0);
  EXPECT_GE(l.balance, -2.0 - 1e-6);  // -log2(4)
  EXPECT_NEAR(l.generator, l.adversarial + l.align + l.local + 10 * l.balance, 1e-4);

  // With every weight 0 the D and G steps take zero-gradient Adam steps.
  MosaicKd idle(Small().local_weight(0).align_weight(0).adv_weight(0).balance_weight(0), Deps());
  const std::vector<torch::Tensor> idle_g = ParamsOf(*idle.generator());
  const std::vector<torch::Tensor> idle_d = ParamsOf(*idle.discriminator());
  idle.Synthesize(Ctx(0, 0));
  EXPECT_TRUE(SameTensors(idle_g, ParamsOf(*idle.generator())));
  EXPECT_TRUE(SameTensors(idle_d, ParamsOf(*idle.discriminator())));
}

TEST_F(MosaicKdTest, SampleIsHalfFreshGeneratorHalfAugmentedPool) {
  MosaicKd m(Small(), Deps());
  m.Synthesize(Ctx(0, 0));
  const RoundContext ctx = Ctx(0, 3);
  torch::Tensor x = m.Sample(8, ctx);
  ASSERT_EQ(x.sizes(), torch::IntArrayRef({8, 1, 8, 8}));
  EXPECT_FALSE(x.requires_grad());
  EXPECT_TRUE(torch::equal(x, m.Sample(8, ctx)));  // keyed by the step
  EXPECT_FALSE(torch::equal(x, m.Sample(8, Ctx(0, 4))));
  // The pool half: the keyed draw with crop + flip, normalised with pool_norm.
  UnlabeledSampler pool(pool_);
  torch::Tensor ood = Normalize(pool.Sample(4, StudentBatchKey(ctx), 1, true), kPoolNorm);
  EXPECT_TRUE(torch::equal(x.narrow(0, 4, 4), ood));
  // The generator half: G's images in [0, 1], normalised with the task's statistics.
  torch::Tensor fake = x.narrow(0, 0, 4);
  EXPECT_GE(fake.min().item<float>(), -1.0f - 1e-5f);
  EXPECT_LE(fake.max().item<float>(), 1.0f + 1e-5f);
  {
    // A last layer of zeros makes G paint 0.5 everywhere: 0 once normalised.
    torch::NoGradGuard no_grad;
    m.generator()->conv3->weight.zero_();
    m.generator()->conv3->bias.zero_();
  }
  torch::Tensor flat = m.Sample(8, ctx);
  EXPECT_EQ(flat.narrow(0, 0, 4).abs().max().item<float>(), 0.0f);
  EXPECT_TRUE(torch::equal(flat.narrow(0, 4, 4), ood));
  // An odd batch: 2 generator images, 3 pool images.
  torch::Tensor odd = m.Sample(5, ctx);
  ASSERT_EQ(odd.size(0), 5);
  EXPECT_EQ(odd.narrow(0, 0, 2).abs().max().item<float>(), 0.0f);
  EXPECT_TRUE(torch::equal(odd.narrow(0, 2, 3),
                           Normalize(pool.Sample(3, StudentBatchKey(ctx), 1, true), kPoolNorm)));
  EXPECT_THROW(m.Sample(1, ctx), c10::Error);
}

TEST_F(MosaicKdTest, DistillLossIsKdAtTemperatureOneOnTheKdLogits) {
  MosaicKd m(Small(), Deps());
  m.Synthesize(Ctx(0, 0));
  student_->train();
  DistillBatch b = testing::TrainerBatch(teacher_, student_, m.Sample(8, Ctx(0, 1)));
  torch::Tensor loss = m.DistillLoss(b, Ctx(0, 1));
  EXPECT_TRUE(torch::allclose(loss, KdLoss(b.student.logits, b.teacher.logits, 1.0)));
  loss.backward();
  EXPECT_GT(student_->parameters()[0].grad().abs().sum().item<double>(), 0.0);
  for (auto& p : m.generator()->parameters()) EXPECT_FALSE(p.grad().defined());
  b.kd_logits = torch::randn({8, 4});
  EXPECT_TRUE(torch::allclose(m.DistillLoss(b, Ctx(0, 1)),
                              KdLoss(b.kd_logits, b.teacher.logits, 1.0)));
}

TEST_F(MosaicKdTest, CosineScheduleOfGeneratorAndDiscriminator) {
  MosaicKd constant(Small(), Deps());
  EXPECT_DOUBLE_EQ(constant.LrFactor(0), 1.0);
  EXPECT_DOUBLE_EQ(constant.LrFactor(100), 1.0);
  MosaicKd cosine(Small().total_rounds(4).lr_g(2e-3).lr_d(4e-3), Deps());
  EXPECT_DOUBLE_EQ(cosine.LrFactor(0), 1.0);
  EXPECT_NEAR(cosine.LrFactor(1), (1 + std::cos(std::acos(-1.0) / 4)) / 2, 1e-12);
  EXPECT_NEAR(cosine.LrFactor(2), 0.5, 1e-12);
  EXPECT_NEAR(cosine.LrFactor(4), 0.0, 1e-12);
  EXPECT_NEAR(cosine.LrFactor(9), 0.0, 1e-12);
  cosine.Synthesize(Ctx(2, 10));
  auto lr = [](torch::optim::Adam& opt) {
    return static_cast<torch::optim::AdamOptions&>(opt.param_groups()[0].options()).lr();
  };
  EXPECT_NEAR(lr(cosine.generator_optimizer()), 1e-3, 1e-12);
  EXPECT_NEAR(lr(cosine.discriminator_optimizer()), 2e-3, 1e-12);
}

TEST_F(MosaicKdTest, OodSubsetKeepsTheHighestEntropyImagesOnce) {
  Classifier mean_teacher = std::make_shared<MeanTeacherImpl>();
  const torch::Tensor planted = PlantedPool();
  // By hand: the entropy falls with |mean|, i.e. with |v - 127.5|.
  std::vector<int64_t> order(64);
  for (int64_t i = 0; i < 64; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [](int64_t a, int64_t b) {
    return std::abs(PlantedValue(a) - 127.5) < std::abs(PlantedValue(b) - 127.5);
  });
  std::vector<int64_t> expected(order.begin(), order.begin() + 10);
  std::sort(expected.begin(), expected.end());

  MosaicKdOptions o = Small().pool(planted).ood_subset(10).score_chunk(4).crop_padding(0);
  MosaicKd m(o, DepsWith(mean_teacher, student_));
  EXPECT_FALSE(m.subset().defined());
  m.Synthesize(Ctx(0, 0));
  ASSERT_TRUE(m.subset().defined());
  EXPECT_TRUE(torch::equal(m.subset(), torch::tensor(expected, torch::kLong)));
  EXPECT_EQ(m.images_scored(), 64);
  EXPECT_EQ(m.pool().size(), 10);
  m.Synthesize(Ctx(1, 5));
  EXPECT_EQ(m.images_scored(), 64);  // once

  // KDCI's view: the subset, in order, normalised with pool_norm, in chunks of 4.
  std::vector<torch::Tensor> chunks;
  m.ForEachPoolChunk([&](const torch::Tensor& x) { chunks.push_back(x.clone()); });
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[2].size(0), 2);
  EXPECT_TRUE(torch::equal(torch::cat(chunks),
                           Normalize(planted.index_select(0, m.subset()), kPoolNorm)));

  // The student's pool half only ever shows subset images (no crop here).
  std::set<int64_t> allowed;
  for (int64_t i : expected) allowed.insert(PlantedValue(i));
  torch::Tensor x = m.Sample(16, Ctx(1, 6)).narrow(0, 8, 8);
  torch::Tensor levels = Denormalize(x, kPoolNorm).mul(255).round().to(torch::kLong);
  for (int64_t i = 0; i < 8; ++i) {
    EXPECT_EQ(levels[i].min().item<int64_t>(), levels[i].max().item<int64_t>());
    EXPECT_EQ(allowed.count(levels[i].min().item<int64_t>()), 1u) << levels[i].min();
  }

  // The subset travels with the checkpoint: a restored method scores nothing.
  torch::serialize::OutputArchive out;
  m.Save(out);
  std::stringstream buffer;
  out.save_to(buffer);
  MosaicKd restored(o, DepsWith(mean_teacher, student_));
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  restored.Load(in);
  EXPECT_TRUE(torch::equal(restored.subset(), m.subset()));
  restored.Synthesize(Ctx(2, 10));
  EXPECT_EQ(restored.images_scored(), 0);

  // ood_subset 0: the whole pool, never scored.
  MosaicKd whole(Small().pool(planted), DepsWith(mean_teacher, student_));
  whole.Synthesize(Ctx(0, 0));
  EXPECT_FALSE(whole.subset().defined());
  EXPECT_EQ(whole.images_scored(), 0);
  EXPECT_EQ(whole.pool().size(), 64);
}

TEST_F(MosaicKdTest, SaveLoadContinuesIdentically) {
  const MosaicKdOptions o = Small().total_rounds(5);
  MosaicKd original(o, Deps());
  original.Synthesize(Ctx(0, 0));
  original.Synthesize(Ctx(1, 5));
  torch::serialize::OutputArchive out;
  original.Save(out);
  std::stringstream buffer;
  out.save_to(buffer);

  torch::manual_seed(99);  // different initial G and D, overwritten by Load
  MosaicKd restored(o, Deps());
  EXPECT_FALSE(SameTensors(StateOf(*restored.generator()), StateOf(*original.generator())));
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  restored.Load(in);
  EXPECT_TRUE(SameTensors(StateOf(*restored.generator()), StateOf(*original.generator())));
  EXPECT_TRUE(
      SameTensors(StateOf(*restored.discriminator()), StateOf(*original.discriminator())));
  EXPECT_TRUE(torch::equal(restored.Sample(6, Ctx(1, 7)), original.Sample(6, Ctx(1, 7))));
  // The optimizers' moments came back too: the next iteration is bit-identical.
  original.Synthesize(Ctx(2, 10));
  restored.Synthesize(Ctx(2, 10));
  EXPECT_TRUE(SameTensors(ParamsOf(*restored.generator()), ParamsOf(*original.generator())));
  EXPECT_TRUE(
      SameTensors(ParamsOf(*restored.discriminator()), ParamsOf(*original.discriminator())));
}

common::JobSpec TinyMosaicJob() {
  common::JobSpec spec = testing::TinyDistillJob("mosaickd");
  spec.distill.synthesis_batch_size = 8;
  return spec;
}

TEST_F(MosaicKdTest, ResumedDistillationEqualsUninterrupted) {
  testing::TempDir dir;
  const common::JobSpec spec = TinyMosaicJob();
  JobData data = testing::TinyDistillTask(12);
  // 10 steps, kd_steps 3: rounds 0..3.
  const MosaicKdOptions o = Small().total_rounds(4).ood_subset(32);
  auto run = [&](const std::string& out, int64_t stop_at, uint64_t init_seed) {
    Classifier student = testing::TinyStudent(init_seed);
    torch::manual_seed(init_seed + 1);  // G and D init: overwritten when resuming
    testing::TinyDistillation distillation(
        spec, teacher_, student, std::make_unique<MosaicKd>(o, DepsWith(teacher_, student)));
    const bool finished = distillation.Train(data, out, stop_at);
    auto& mosaic = dynamic_cast<MosaicKd&>(distillation.method());
    return std::make_tuple(finished, student, StateOf(*mosaic.generator()),
                           StateOf(*mosaic.discriminator()), mosaic.subset().clone(),
                           mosaic.images_scored());
  };
  auto [done_a, a, gen_a, disc_a, subset_a, scored_a] = run(dir.File("a"), -1, 9);
  ASSERT_TRUE(done_a);
  EXPECT_EQ(scored_a, 64);
  auto [done_b1, b1, gen_b1, disc_b1, subset_b1, scored_b1] = run(dir.File("b"), 4, 9);
  ASSERT_FALSE(done_b1);  // stopped mid-round 1 (steps 3..5)
  auto [done_b, b, gen_b, disc_b, subset_b, scored_b] = run(dir.File("b"), -1, 77);
  ASSERT_TRUE(done_b);
  EXPECT_EQ(scored_b, 0);  // the subset came with the checkpoint
  EXPECT_TRUE(torch::equal(subset_a, subset_b));
  EXPECT_TRUE(SameTensors(gen_a, gen_b));
  EXPECT_TRUE(SameTensors(disc_a, disc_b));
  EXPECT_TRUE(testing::SameParameters(a, b));
}

}  // namespace
}  // namespace dfkd::worker
