// KDCI as a wrapper: the intervention's formula, what each ablation changes,
// that only the KD term sees compensated logits, gradients, the factory's
// enabled=false path, and checkpoint/resume of a distillation with KDCI.
#include <filesystem>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_task.h"
#include "worker/engine/distill_source.h"
#include "worker/engine/method_factory.h"
#include "worker/engine/trainer.h"
#include "worker/kdci/kdci_method.h"
#include "worker/methods/losses.h"
#include "worker/methods/noise_method.h"
#include "worker/models/model_zoo.h"

namespace dfkd::worker {
namespace {

// Records what DistillLoss saw; its synthesized batch is fixed.
class RecordingMethod final : public Method {
 public:
  explicit RecordingMethod(torch::Tensor data) : data_(std::move(data)) {}
  std::string name() const override { return "recording"; }
  void Synthesize(const RoundContext&) override { ++synthesized; }
  torch::Tensor Sample(int64_t b, const RoundContext&) override { return data_.narrow(0, 0, b); }
  torch::Tensor DistillLoss(const DistillBatch& batch, const RoundContext&) override {
    seen = batch;
    return KdLoss(batch.KdStudentLogits(), batch.teacher.logits, 4.0) +
           batch.student.logits.pow(2).mean();  // a "non-KD" term on raw logits
  }
  double temperature() const override { return 4.0; }
  torch::Tensor LastSynthesized() const override { return data_; }
  void Save(torch::serialize::OutputArchive&) const override {}
  void Load(torch::serialize::InputArchive&) override {}
  DistillBatch seen;
  int synthesized = 0;

 private:
  torch::Tensor data_;
};

Classifier Tiny(int64_t classes, uint64_t seed) {
  torch::manual_seed(seed);
  Classifier m = MakeClassifier({"wrn", 16, 1, 1.0, 0.0, classes, 1, 8});
  m->eval();
  return m;
}

InterventionOptions Inter(int64_t d, KdciAblation a = KdciAblation::kNone) {
  return InterventionOptions(d, d).ablation(a);
}

TEST(InterventionTest, MatchesTheFormulaByHand) {
  torch::manual_seed(0);
  KdciIntervention iv(Inter(3));
  torch::Tensor s = torch::randn({2, 3});
  torch::Tensor z = torch::randn({4, 3});
  torch::Tensor p = torch::tensor({0.1f, 0.2f, 0.3f, 0.4f});
  torch::Tensor f = iv->PriorTerm(s, z, p);
  for (int64_t b = 0; b < 2; ++b) {
    std::vector<double> e(4);
    double zsum = 0;
    for (int64_t i = 0; i < 4; ++i) {
      torch::Tensor h = torch::tanh(torch::matmul(iv->w_q->weight, s[b]) +
                                    torch::matmul(iv->w_k->weight, z[i]));
      e[i] = std::exp(torch::dot(iv->w_t->weight[0], h).item<double>());
      zsum += e[i];
    }
    torch::Tensor expected = torch::zeros({3});
    for (int64_t i = 0; i < 4; ++i) expected += (e[i] / zsum) * z[i] * p[i];
    EXPECT_TRUE(torch::allclose(f[b], expected, 1e-5, 1e-6)) << f[b] << expected;
  }
  EXPECT_TRUE(torch::allclose(iv->forward(s, z, p), s + f));
}

TEST(InterventionTest, ZeroWtGivesUniformAttention) {
  KdciIntervention iv(Inter(5));
  torch::NoGradGuard g;
  iv->w_t->weight.zero_();
  torch::Tensor lambda = iv->Attention(torch::randn({3, 5}), torch::randn({7, 5}));
  EXPECT_TRUE(torch::allclose(lambda, torch::full({3, 7}, 1.0f / 7)));
}

TEST(InterventionTest, AblationsChangeWhatTheyShould) {
  torch::manual_seed(1);
  torch::Tensor s = torch::randn({2, 3}), z = torch::randn({4, 3});
  torch::Tensor p = torch::tensor({0.1f, 0.2f, 0.3f, 0.4f});
  KdciIntervention full(Inter(3));
  KdciIntervention no_prior(Inter(3, KdciAblation::kNoPrior));
  KdciIntervention random(Inter(3, KdciAblation::kRandomLambda));
  {
    torch::NoGradGuard g;
    auto src = full->named_parameters();
    for (auto& kv : no_prior->named_parameters()) kv.value().copy_(src[kv.key()]);
  }
  // (4) without P(z): same attention, P dropped.
  torch::Tensor lambda = full->Attention(s, z);
  EXPECT_TRUE(torch::allclose(no_prior->PriorTerm(s, z, p), torch::matmul(lambda, z), 1e-5));
  EXPECT_FALSE(torch::allclose(full->PriorTerm(s, z, p), no_prior->PriorTerm(s, z, p)));
  // (2) random lambda: the given weights replace the attention entirely.
  torch::Tensor w = torch::tensor({{1.0f, 0.f, 0.f, 0.f}, {0.25f, 0.25f, 0.25f, 0.25f}});
  torch::Tensor f = random->PriorTerm(s, z, p, w);
  EXPECT_TRUE(torch::allclose(f[0], z[0] * 0.1f));
  EXPECT_TRUE(torch::allclose(f[1], (z * p.unsqueeze(1)).mean(0)));
  // Other Z: a d' = 6 dictionary mapped into the 3 student classes.
  KdciIntervention other(InterventionOptions(3, 6).ablation(KdciAblation::kOtherZ));
  ASSERT_TRUE(other->mapping);
  torch::Tensor f6 = other->PriorTerm(s, torch::randn({4, 6}), p);
  EXPECT_EQ(f6.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_THROW(KdciIntervention(InterventionOptions(3, 6)), c10::Error);
}

struct Fixture {
  Classifier teacher = Tiny(4, 1);
  Classifier student = Tiny(4, 2);
  torch::Tensor data = torch::randn({32, 1, 8, 8});
  KdciOptions Options(KdciAblation a = KdciAblation::kNone, int64_t n = 3) {
    return KdciOptions(DictionaryOptions().num_prototypes(n), Inter(4, a));
  }
  DistillBatch Batch() {
    DistillBatch b;
    b.inputs = data.narrow(0, 0, 8);
    {
      torch::NoGradGuard g;
      b.teacher = teacher->ForwardWithTaps(b.inputs, {});
    }
    b.student = student->ForwardWithTaps(b.inputs, {});
    return b;
  }
};

TEST(KdciMethodTest, OnlyTheKdTermSeesCompensatedLogitsAndGradientsFlow) {
  Fixture fx;
  auto inner = std::make_unique<RecordingMethod>(fx.data);
  RecordingMethod* rec = inner.get();
  KdciMethod kdci(std::move(inner), fx.Options(), fx.teacher);
  RoundContext ctx;
  kdci.Synthesize(ctx);
  EXPECT_EQ(rec->synthesized, 1);
  ASSERT_EQ(kdci.prototypes().size(0), 3);
  EXPECT_NEAR(kdci.prior().sum().item<float>(), 1.0f, 1e-6);
  DistillBatch batch = fx.Batch();
  torch::Tensor loss = kdci.DistillLoss(batch, ctx);
  EXPECT_TRUE(torch::equal(rec->seen.student.logits, batch.student.logits));  // raw kept
  torch::Tensor expected = kdci.intervention()->forward(batch.student.logits, kdci.prototypes(),
                                                        kdci.prior());
  EXPECT_TRUE(torch::allclose(rec->seen.kd_logits, expected));
  EXPECT_FALSE(torch::allclose(rec->seen.kd_logits, batch.student.logits));
  loss.backward();
  for (auto& kv : kdci.intervention()->named_parameters()) {
    ASSERT_TRUE(kv.value().grad().defined()) << kv.key();
    EXPECT_GT(kv.value().grad().abs().sum().item<double>(), 0.0) << kv.key();
  }
  EXPECT_GT(fx.student->parameters()[0].grad().abs().sum().item<double>(), 0.0);
  for (auto& p : fx.teacher->parameters()) EXPECT_FALSE(p.grad().defined());
  EXPECT_EQ(kdci.ExtraStudentParameters().size(), 3u);  // W_q, W_k, w_t (no biases)
}

TEST(KdciMethodTest, RandomZIsDrawnOnceAndNotFromClusteredLogits) {
  Fixture fx;
  KdciMethod clustered(std::make_unique<RecordingMethod>(fx.data), fx.Options(), fx.teacher);
  KdciMethod random(std::make_unique<RecordingMethod>(fx.data),
                    fx.Options(KdciAblation::kRandomZ), fx.teacher);
  RoundContext ctx;
  clustered.Synthesize(ctx);
  random.Synthesize(ctx);
  EXPECT_FALSE(torch::allclose(clustered.prototypes(), random.prototypes()));
  EXPECT_TRUE(torch::allclose(random.prior(), torch::full({3}, 1.0f / 3)));
  torch::Tensor first = random.prototypes().clone();
  ctx.round = 1;
  random.Synthesize(ctx);  // not rebuilt
  EXPECT_TRUE(torch::equal(first, random.prototypes()));
}

TEST(KdciMethodTest, RandomLambdaTrainsNoAttention) {
  Fixture fx;
  KdciMethod kdci(std::make_unique<RecordingMethod>(fx.data),
                  fx.Options(KdciAblation::kRandomLambda), fx.teacher);
  RoundContext ctx;
  kdci.Synthesize(ctx);
  kdci.DistillLoss(fx.Batch(), ctx).backward();
  for (auto& p : kdci.intervention()->parameters()) {
    EXPECT_TRUE(!p.grad().defined() || p.grad().abs().sum().item<double>() == 0.0);
  }
}

TEST(KdciFactoryTest, DisabledIsTheInnerMethodBitForBit) {
  Fixture fx;
  common::JobSpec spec;
  spec.kind = common::JobKind::kDistill;
  spec.distill.method = "noise";
  MethodDeps deps{fx.teacher, fx.student, {1, 8, 8}, 4, {{0.5f}, {0.5f}}};
  std::unique_ptr<Method> off = MakeMethod(spec, deps);
  EXPECT_EQ(off->name(), "noise");
  NoiseMethod direct(NoiseOptions().temperature(20.0), deps);
  RoundContext ctx;
  ctx.seed = 3;
  off->Synthesize(ctx);
  direct.Synthesize(ctx);
  EXPECT_TRUE(torch::equal(off->Sample(8, ctx), direct.Sample(8, ctx)));
  DistillBatch b = fx.Batch();
  EXPECT_TRUE(torch::equal(off->DistillLoss(b, ctx), direct.DistillLoss(b, ctx)));
  spec.kdci.enabled = true;
  std::unique_ptr<Method> on = MakeMethod(spec, deps);
  EXPECT_EQ(on->name(), "noise+kdci");
  EXPECT_EQ(on->Describe()["kdci"]["num_prototypes"], 8);  // the paper's N for generators
  // KDCI does not touch what the inner method samples.
  on->Synthesize(ctx);
  EXPECT_TRUE(torch::equal(on->Sample(8, ctx), direct.Sample(8, ctx)));
}

// A whole distillation with KDCI stopped mid-round and resumed ends with the
// same student, attention weights and dictionary as an uninterrupted run.
TEST(KdciDistillTest, ResumeMidRoundEqualsUninterrupted) {
  testing::TempDir dir;
  Fixture fx;
  common::JobSpec spec;
  spec.kind = common::JobKind::kDistill;
  spec.seed = 5;
  spec.model.arch = "wrn";
  spec.train.epochs = 2;
  spec.train.batch_size = 16;
  spec.train.checkpoint_every_steps = 100;
  spec.train.optim.lr = 0.05;
  spec.distill.steps_per_epoch = 6;
  spec.distill.kd_steps = 4;  // rounds straddle epochs
  spec.distill.synthesis_batch_size = 32;
  spec.kdci.enabled = true;
  spec.kdci.num_prototypes = 4;
  JobData data = testing::TinyDistillTask(20);
  auto run = [&](const std::string& out, int64_t stop_at, Classifier student) {
    LocalCommunicator comm;
    MethodDeps deps{fx.teacher, student, data.image_shape, 4, data.norm};
    DistillSource source(spec, fx.teacher, student, MakeMethod(spec, deps), comm);
    RunControl c;
    c.quiet = true;
    c.stop_at_step = stop_at;
    RunOutcome o = Trainer(spec, student, data, comm, source, out).Run(c);
    auto& kdci = dynamic_cast<KdciMethod&>(source.method());
    return std::make_tuple(o, kdci.prototypes().clone(),
                           kdci.intervention()->w_q->weight.detach().clone());
  };
  Classifier a = Tiny(4, 9);
  auto [full, proto_a, wq_a] = run(dir.File("a"), -1, a);
  ASSERT_TRUE(full.finished);
  EXPECT_EQ(full.step, 12);
  EXPECT_TRUE(full.result.contains("test_top1_compensated"));
  EXPECT_EQ(full.result["method"]["kdci"]["dictionary_builds"], 3);
  auto [part, p1, w1] = run(dir.File("b"), 6, Tiny(4, 9));  // mid-round 2 (steps 4..7)
  ASSERT_FALSE(part.finished);
  Classifier b = Tiny(4, 77);
  auto [rest, proto_b, wq_b] = run(dir.File("b"), -1, b);
  ASSERT_TRUE(rest.finished);
  EXPECT_TRUE(torch::equal(proto_a, proto_b));
  EXPECT_TRUE(torch::equal(wq_a, wq_b));
  for (auto& kv : a->named_parameters()) {
    EXPECT_TRUE(torch::equal(kv.value(), b->named_parameters()[kv.key()])) << kv.key();
  }
}

}  // namespace
}  // namespace dfkd::worker
