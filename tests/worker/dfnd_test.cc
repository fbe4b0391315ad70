// DFND (worker/methods/dfnd.h): the noise transition and the noise-adaptation
// loss against hand computations; selection of the images a planted teacher
// is most confident on, once; keyed sampling from the selection; the loss
// (KD on the KD logits + noise adaptation on the raw ones); theta's lag-one
// Adam; save/load and a resumed distillation that does not score the pool
// again; KDCI's dictionary built from the selection.
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
#include "worker/engine/distill_source.h"
#include "worker/kdci/kdci_method.h"
#include "worker/methods/dfnd.h"
#include "worker/methods/losses.h"
#include "worker/methods/mode_guard.h"
#include "worker/methods/seeding.h"
#include "worker/methods/unlabeled_sampler.h"
#include "worker/models/model_zoo.h"

namespace dfkd::worker {
namespace {

using testing::MeanTeacherImpl;
using testing::PlantedPool;
using testing::PlantedValue;
using testing::Softmax;

TEST(NoiseTransitionTest, ZeroThetaSpreadsTheTeachersErrorEvenly) {
  torch::Tensor q = NoiseTransition(torch::zeros({4, 3}), 0.9);
  ASSERT_EQ(q.sizes(), torch::IntArrayRef({4, 4}));
  for (int64_t i = 0; i < 4; ++i) {
    for (int64_t j = 0; j < 4; ++j) {
      EXPECT_NEAR(q[i][j].item<double>(), i == j ? 0.9 : 0.1 / 3, 1e-6) << i << "," << j;
    }
  }
  EXPECT_THROW(NoiseTransition(torch::zeros({4, 4}), 0.9), c10::Error);
  EXPECT_THROW(NoiseTransition(torch::zeros({4, 3}), 1.5), c10::Error);
}

TEST(NoiseTransitionTest, RowsSumToOneAndSkipTheDiagonalInColumnOrder) {
  torch::manual_seed(0);
  torch::Tensor theta = torch::randn({5, 4}).requires_grad_(true);
  const double a = 0.7;
  torch::Tensor q = NoiseTransition(theta, a);
  EXPECT_TRUE(torch::allclose(q.sum(1), torch::ones({5}), 1e-6, 1e-6));
  for (int64_t i = 0; i < 5; ++i) {
    std::vector<double> row(4);
    for (int64_t k = 0; k < 4; ++k) row[k] = theta[i][k].item<double>();
    std::vector<double> p = Softmax(row);
    for (int64_t j = 0; j < 5; ++j) {
      const double expected = j == i ? a : (1 - a) * p[j < i ? j : j - 1];
      EXPECT_NEAR(q[i][j].item<double>(), expected, 1e-6) << i << "," << j;
    }
  }
  // Differentiable in theta: one entry depends on its row only.
  q[2][0].backward();
  EXPECT_GT(theta.grad()[2].abs().sum().item<double>(), 0.0);
  for (int64_t i = 0; i < 5; ++i) {
    if (i != 2) {
      EXPECT_EQ(theta.grad()[i].abs().sum().item<double>(), 0.0) << "row " << i;
    }
  }
}

TEST(NoiseAdaptationLossTest, MatchesAHandComputation) {
  // C = 3, theta = 0, a = 0.8: Q = 0.8 on the diagonal, 0.1 elsewhere, so
  // (p Q)_j = 0.8 p_j + 0.1 (1 - p_j). Teacher labels: 1, 0.
  const std::vector<std::vector<double>> s = {{1, 0, 0}, {0, 2, -1}};
  const std::vector<int64_t> label = {1, 0};
  double expected = 0;
  for (size_t b = 0; b < 2; ++b) {
    const double p = Softmax(s[b])[label[b]];
    expected -= std::log(0.8 * p + 0.1 * (1 - p)) / 2;
  }
  torch::Tensor ts = torch::tensor({{1.f, 0.f, 0.f}, {0.f, 2.f, -1.f}}).requires_grad_(true);
  torch::Tensor tt = torch::tensor({{0.f, 3.f, 0.f}, {1.f, 0.f, 0.f}});
  torch::Tensor q = NoiseTransition(torch::zeros({3, 2}), 0.8);
  torch::Tensor loss = NoiseAdaptationLoss(ts, tt, q);
  EXPECT_NEAR(loss.item<double>(), expected, 1e-6);
  loss.backward();
  EXPECT_GT(ts.grad().abs().sum().item<double>(), 0.0);
}

const Normalization kNorm{{0.5f}, {0.5f}};
const Normalization kPoolNorm{{0.25f}, {0.5f}};

class DfndTest : public testing::TinyMethodTest {
 protected:
  DfndTest() : TinyMethodTest(/*teacher_warmup_passes=*/0), pool_(testing::RandomPool(3)) {}

  DfndOptions Small() const {
    DfndOptions o;
    o.num_select(32).teacher_accuracy(0.8).select_chunk(16).crop_padding(1);
    o.norm(kNorm).pool(pool_).pool_norm(kPoolNorm);
    return o;
  }
  // The trainer's part of a step: both models on a sampled batch.
  DistillBatch Batch(Dfnd& method, const RoundContext& ctx) {
    return testing::TrainerBatch(teacher_, student_, method.Sample(8, ctx));
  }

  torch::Tensor pool_;
};

TEST_F(DfndTest, DefaultsAreTheReferenceValues) {
  DfndOptions o;
  EXPECT_DOUBLE_EQ(o.temperature(), 4.0);
  EXPECT_EQ(o.num_select(), 0);
  EXPECT_DOUBLE_EQ(o.teacher_accuracy(), 0.9523);
  EXPECT_DOUBLE_EQ(o.lr_theta(), 1e-3);
  EXPECT_EQ(o.select_chunk(), 1024);
  Dfnd d(Small(), Deps());
  EXPECT_EQ(d.name(), "dfnd");
  EXPECT_TRUE(d.has_pool());
  EXPECT_FALSE(d.LastSynthesized().defined());
  EXPECT_EQ(d.theta().sizes(), torch::IntArrayRef({4, 3}));
  EXPECT_EQ(d.theta().abs().sum().item<float>(), 0.0f);
  EXPECT_THROW(Dfnd(Small().num_select(65), Deps()), c10::Error);
  EXPECT_THROW(Dfnd(Small().pool(torch::zeros({4, 3, 8, 8}, torch::kUInt8)), Deps()), c10::Error);
}

TEST_F(DfndTest, SelectsTheImagesThePlantedTeacherIsMostConfidentOnOnce) {
  Classifier mean_teacher = std::make_shared<MeanTeacherImpl>();
  const torch::Tensor planted = PlantedPool();
  // By hand: confidence grows with |mean| = |v - 127.5| / 127.5.
  std::vector<int64_t> order(64);
  for (int64_t i = 0; i < 64; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [](int64_t a, int64_t b) {
    return std::abs(PlantedValue(a) - 127.5) > std::abs(PlantedValue(b) - 127.5);
  });
  std::vector<int64_t> expected(order.begin(), order.begin() + 10);
  std::sort(expected.begin(), expected.end());
  int64_t above = 0;  // class 0: mean above 0
  for (int64_t i : expected) above += PlantedValue(i) > 127.5;

  DfndOptions o = Small().pool(planted).pool_norm(kNorm).num_select(10).select_chunk(8);
  Dfnd d(o.crop_padding(0), DepsWith(mean_teacher, student_));
  EXPECT_FALSE(d.selected());
  d.Synthesize(Ctx(0, 0));
  ASSERT_TRUE(d.selected());
  EXPECT_TRUE(torch::equal(d.selection(), torch::tensor(expected, torch::kLong)));
  EXPECT_EQ(d.images_scored(), 64);
  EXPECT_TRUE(torch::equal(d.class_histogram(),
                           torch::tensor({above, 10 - above, int64_t{0}, int64_t{0}})));
  d.Synthesize(Ctx(1, 400));
  EXPECT_EQ(d.images_scored(), 64);  // once

  nlohmann::json j = d.Describe();
  EXPECT_EQ(j["method"], "dfnd");
  EXPECT_EQ(j["selected_images"], 10);
  EXPECT_EQ(j["images_scored"], 64);
  EXPECT_EQ(j["class_histogram"].get<std::vector<int64_t>>(),
            (std::vector<int64_t>{above, 10 - above, 0, 0}));
  EXPECT_TRUE(j.contains("selection_seconds"));

  // Student batches only show selected images (no crop here; flips keep a
  // constant image), normalised with pool_norm.
  std::set<int64_t> allowed;
  for (int64_t i : expected) allowed.insert(PlantedValue(i));
  torch::Tensor x = d.Sample(12, Ctx(0, 3));
  ASSERT_EQ(x.sizes(), torch::IntArrayRef({12, 1, 8, 8}));
  torch::Tensor levels = Denormalize(x, kNorm).mul(255).round().to(torch::kLong);
  for (int64_t i = 0; i < 12; ++i) {
    EXPECT_EQ(levels[i].min().item<int64_t>(), levels[i].max().item<int64_t>());
    EXPECT_EQ(allowed.count(levels[i].min().item<int64_t>()), 1u) << levels[i].min();
  }

  // KDCI's view: the selection in index order, chunks of 8.
  std::vector<torch::Tensor> chunks;
  d.ForEachPoolChunk([&](const torch::Tensor& c) { chunks.push_back(c.clone()); });
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_TRUE(torch::equal(torch::cat(chunks),
                           Normalize(planted.index_select(0, d.selection()), kNorm)));

  // num_select 0 keeps the whole pool.
  Dfnd all(Small().pool(planted).num_select(0), DepsWith(mean_teacher, student_));
  all.Synthesize(Ctx(0, 0));
  EXPECT_TRUE(torch::equal(all.selection(), torch::arange(64, torch::kLong)));
}

TEST_F(DfndTest, SampleIsAKeyedAugmentedDrawFromTheSelection) {
  Dfnd d(Small(), Deps());
  d.Synthesize(Ctx(0, 0));
  ASSERT_EQ(d.selection().size(0), 32);
  const RoundContext ctx = Ctx(0, 5);
  torch::Tensor x = d.Sample(6, ctx);
  UnlabeledSampler pool(pool_);
  pool.Select(d.selection());
  EXPECT_TRUE(torch::equal(x, Normalize(pool.Sample(6, StudentBatchKey(ctx), 1, true), kPoolNorm)));
  EXPECT_TRUE(torch::equal(x, d.Sample(6, ctx)));
  EXPECT_FALSE(torch::equal(x, d.Sample(6, Ctx(0, 6))));
}

TEST_F(DfndTest, LossIsKdOnTheKdLogitsPlusNoiseAdaptationOnTheRawOnes) {
  Dfnd d(Small(), Deps());
  d.Synthesize(Ctx(0, 0));
  student_->train();
  DistillBatch b = Batch(d, Ctx(0, 1));
  torch::Tensor q0 = NoiseTransition(torch::zeros({4, 3}), 0.8);
  torch::Tensor loss = d.DistillLoss(b, Ctx(0, 1));
  torch::Tensor noise = NoiseAdaptationLoss(b.student.logits, b.teacher.logits, q0);
  EXPECT_TRUE(torch::allclose(loss, KdLoss(b.student.logits, b.teacher.logits, 4.0) + noise));
  // KDCI's compensated logits reach the KD term only.
  b.kd_logits = torch::randn({8, 4});
  EXPECT_TRUE(torch::allclose(d.DistillLoss(b, Ctx(0, 1)),
                              KdLoss(b.kd_logits, b.teacher.logits, 4.0) + noise));
}

TEST_F(DfndTest, ThetaIsTrainedByItsOwnAdamOneStepLate) {
  Dfnd d(Small(), Deps());
  d.Synthesize(Ctx(0, 0));
  student_->train();
  DistillBatch b0 = Batch(d, Ctx(0, 0));
  d.DistillLoss(b0, Ctx(0, 0)).backward();
  ASSERT_TRUE(d.theta().grad().defined());
  const torch::Tensor g = d.theta().grad().clone();
  EXPECT_GT(g.abs().sum().item<double>(), 0.0);
  EXPECT_EQ(d.theta().abs().sum().item<float>(), 0.0f);  // not applied yet
  EXPECT_EQ(d.theta_steps(), 0);
  EXPECT_GT(student_->parameters()[0].grad().abs().sum().item<double>(), 0.0);

  // The next step applies it first: Adam's first step is lr * g / (|g| + eps).
  DistillBatch b1 = Batch(d, Ctx(0, 1));
  torch::Tensor loss1 = d.DistillLoss(b1, Ctx(0, 1));
  EXPECT_EQ(d.theta_steps(), 1);
  EXPECT_FALSE(d.theta().grad().defined());
  EXPECT_TRUE(torch::allclose(d.theta().detach(), -1e-3 * g / (g.abs() + 1e-8), 1e-5, 1e-7));
  EXPECT_TRUE(torch::allclose(d.Transition().sum(1), torch::ones({4}), 1e-6, 1e-6));
  // And the loss already sees the new theta.
  EXPECT_NEAR(loss1.item<double>(),
              (KdLoss(b1.student.logits, b1.teacher.logits, 4.0) +
               NoiseAdaptationLoss(b1.student.logits, b1.teacher.logits,
                                   NoiseTransition(d.theta().detach(), 0.8)))
                  .item<double>(),
              1e-6);
  // Without a backward nothing is pending: no step.
  d.DistillLoss(b1, Ctx(0, 2));
  EXPECT_EQ(d.theta_steps(), 1);
}

TEST_F(DfndTest, SaveLoadKeepsSelectionThetaAndThePendingGradient) {
  Dfnd original(Small(), Deps());
  original.Synthesize(Ctx(0, 0));
  student_->train();
  for (int64_t step = 0; step < 3; ++step) {
    original.DistillLoss(Batch(original, Ctx(0, step)), Ctx(0, step)).backward();
  }
  ASSERT_TRUE(original.theta().grad().defined());  // step 2's, pending
  torch::serialize::OutputArchive out;
  original.Save(out);
  std::stringstream buffer;
  out.save_to(buffer);

  Dfnd restored(Small(), Deps());
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  restored.Load(in);
  EXPECT_TRUE(restored.selected());
  EXPECT_EQ(restored.images_scored(), 0);
  EXPECT_TRUE(torch::equal(restored.selection(), original.selection()));
  EXPECT_TRUE(torch::equal(restored.class_histogram(), original.class_histogram()));
  EXPECT_TRUE(torch::equal(restored.theta(), original.theta()));
  EXPECT_TRUE(torch::equal(restored.theta().grad(), original.theta().grad()));
  EXPECT_EQ(restored.theta_steps(), original.theta_steps());
  restored.Synthesize(Ctx(1, 3));
  EXPECT_EQ(restored.images_scored(), 0);
  // Both apply the pending step with the same Adam moments.
  DistillBatch b = Batch(original, Ctx(0, 3));
  EXPECT_TRUE(torch::equal(b.inputs, restored.Sample(8, Ctx(0, 3))));
  torch::Tensor la = original.DistillLoss(b, Ctx(0, 3));
  torch::Tensor lb = restored.DistillLoss(b, Ctx(0, 3));
  EXPECT_TRUE(torch::equal(restored.theta(), original.theta()));
  EXPECT_TRUE(torch::equal(la, lb));
}

TEST_F(DfndTest, ResumedDistillationEqualsUninterruptedAndDoesNotScoreAgain) {
  testing::TempDir dir;
  const common::JobSpec spec = testing::TinyDistillJob("dfnd");
  JobData data = testing::TinyDistillTask(12);
  auto run = [&](const std::string& out, int64_t stop_at, uint64_t init_seed) {
    Classifier student = testing::TinyStudent(init_seed);
    testing::TinyDistillation distillation(
        spec, teacher_, student, std::make_unique<Dfnd>(Small(), DepsWith(teacher_, student)));
    const bool finished = distillation.Train(data, out, stop_at);
    auto& dfnd = dynamic_cast<Dfnd&>(distillation.method());
    return std::make_tuple(finished, student, dfnd.theta().detach().clone(),
                           dfnd.selection().clone(), dfnd.images_scored(), dfnd.theta_steps());
  };
  auto [done_a, a, theta_a, sel_a, scored_a, steps_a] = run(dir.File("a"), -1, 9);
  ASSERT_TRUE(done_a);
  EXPECT_EQ(scored_a, 64);
  EXPECT_EQ(steps_a, 9);  // 10 steps; the last gradient is never applied
  EXPECT_GT(theta_a.abs().sum().item<double>(), 0.0);
  auto [done_b1, b1, theta_b1, sel_b1, scored_b1, steps_b1] = run(dir.File("b"), 4, 9);
  ASSERT_FALSE(done_b1);
  EXPECT_EQ(scored_b1, 64);
  auto [done_b, b, theta_b, sel_b, scored_b, steps_b] = run(dir.File("b"), -1, 77);
  ASSERT_TRUE(done_b);
  EXPECT_EQ(scored_b, 0);  // the selection came with the checkpoint
  EXPECT_EQ(steps_b, 9);
  EXPECT_TRUE(torch::equal(sel_a, sel_b));
  EXPECT_TRUE(torch::equal(theta_a, theta_b));
  EXPECT_TRUE(testing::SameParameters(a, b));
}

TEST_F(DfndTest, KdciBuildsItsDictionaryOnceFromTheSelection) {
  DictionaryOptions dict;
  dict.num_prototypes(4).seed(1);
  KdciOptions options(dict, InterventionOptions(4, 4));
  auto inner = std::make_unique<Dfnd>(Small(), Deps());
  Dfnd* dfnd = inner.get();
  auto kdci = std::make_unique<KdciMethod>(std::move(inner), options, teacher_);
  KdciMethod* wrapper = kdci.get();
  EXPECT_EQ(wrapper->name(), "dfnd+kdci");
  EXPECT_TRUE(wrapper->has_pool());
  common::JobSpec spec = testing::TinyDistillJob("dfnd");
  LocalCommunicator comm;
  student_->train();
  DistillSource source(spec, teacher_, student_, std::move(kdci), comm);
  StepResult r = source.Step(0);
  EXPECT_EQ(r.images, 8);
  EXPECT_TRUE(dfnd->selected());
  ASSERT_TRUE(wrapper->prototypes().defined());
  EXPECT_LE(wrapper->prototypes().size(0), 4);
  EXPECT_EQ(wrapper->prototypes().size(1), 4);
  ASSERT_TRUE(r.loss.defined());
  EXPECT_TRUE(std::isfinite(r.loss.item<double>()));
  r.loss.backward();
  EXPECT_GT(student_->parameters()[0].grad().abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(dfnd->theta().grad().defined());
}

// The selection already ran the teacher over the pool: KDCI's dictionary
// reads those logits instead of a second pass, and gets the dictionary a
// second pass would have given.
TEST_F(DfndTest, KdciReusesTheSelectionsTeacherLogits) {
  DictionaryOptions dict;
  dict.num_prototypes(4).seed(1);
  KdciOptions options(dict, InterventionOptions(4, 4));
  RoundContext ctx;
  ctx.seed = 5;

  auto inner = std::make_unique<Dfnd>(Small(), Deps());
  Dfnd* dfnd = inner.get();
  KdciMethod reusing(std::move(inner), options, teacher_);
  reusing.Synthesize(ctx);
  ASSERT_TRUE(dfnd->selected());
  const torch::Tensor cached = dfnd->CachedPoolLogits(*teacher_);
  ASSERT_TRUE(cached.defined());
  EXPECT_EQ(cached.sizes(), torch::IntArrayRef({32, 4}));
  EXPECT_FALSE(dfnd->CachedPoolLogits(*student_).defined()) << "only the teacher's are cached";
  // They are the teacher's logits of what ForEachPoolChunk feeds, in order.
  std::vector<torch::Tensor> fed;
  {
    torch::NoGradGuard no_grad;
    ModeGuard mode(*teacher_);
    teacher_->eval();
    dfnd->ForEachPoolChunk([&](const torch::Tensor& x) { fed.push_back(teacher_->forward(x)); });
  }
  EXPECT_TRUE(torch::allclose(cached, torch::cat(fed, 0), 1e-5, 1e-6));

  // The same teacher as another module object: no cache, a second pass.
  Classifier copy = testing::TinyTeacher(1, /*warmup_passes=*/0);
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < copy->parameters().size(); ++i) {
      copy->parameters()[i].copy_(teacher_->parameters()[i]);
    }
    for (size_t i = 0; i < copy->buffers().size(); ++i) {
      copy->buffers()[i].copy_(teacher_->buffers()[i]);
    }
  }
  KdciMethod recomputing(std::make_unique<Dfnd>(Small(), Deps()), options, copy);
  recomputing.Synthesize(ctx);
  EXPECT_TRUE(reusing.Describe()["kdci"]["pool_logits_reused"].get<bool>());
  EXPECT_FALSE(recomputing.Describe()["kdci"]["pool_logits_reused"].get<bool>());
  ASSERT_EQ(reusing.prototypes().sizes(), recomputing.prototypes().sizes());
  EXPECT_TRUE(torch::allclose(reusing.prototypes(), recomputing.prototypes(), 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(reusing.prior(), recomputing.prior()));
}

}  // namespace
}  // namespace dfkd::worker
