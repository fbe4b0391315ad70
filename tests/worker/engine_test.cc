// Losses, schedules, transforms, loader determinism, evaluation, and the
// checkpoint/resume contract of the supervised trainer.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/testing/temp_dir.h"
#include "worker/data/loader.h"
#include "worker/data/transforms.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/evaluator.h"
#include "worker/methods/losses.h"
#include "worker/engine/lr_schedule.h"
#include "worker/engine/supervised_source.h"
#include "worker/engine/trainer.h"
#include "worker/models/model_zoo.h"

namespace dfkd::worker {
namespace {

TEST(KdLossTest, MatchesHandComputedValue) {
  torch::Tensor s = torch::tensor({{1.0, 2.0, 0.0}, {0.5, 0.5, 0.5}}, torch::kFloat64);
  torch::Tensor t = torch::tensor({{2.0, 1.0, 0.0}, {0.0, 1.0, 3.0}}, torch::kFloat64);
  const double T = 4.0;
  double expected = 0.0;
  for (int b = 0; b < 2; ++b) {
    double zs = 0, zt = 0;
    for (int c = 0; c < 3; ++c) {
      zs += std::exp(s[b][c].item<double>() / T);
      zt += std::exp(t[b][c].item<double>() / T);
    }
    for (int c = 0; c < 3; ++c) {
      double pt = std::exp(t[b][c].item<double>() / T) / zt;
      double ps = std::exp(s[b][c].item<double>() / T) / zs;
      expected += pt * (std::log(pt) - std::log(ps));
    }
  }
  expected = expected / 2 * T * T;
  EXPECT_NEAR(KdLoss(s, t, T).item<double>(), expected, 1e-12);
}

TEST(KdLossTest, ZeroForEqualLogitsAndGradientOnlyToStudent) {
  torch::Tensor t = torch::randn({4, 10}, torch::requires_grad());
  torch::Tensor s = t.detach().clone().requires_grad_();
  EXPECT_NEAR(KdLoss(s, t, 20.0).item<double>(), 0.0, 1e-5);
  torch::Tensor s2 = torch::randn({4, 10}, torch::requires_grad());
  KdLoss(s2, t, 20.0).backward();
  EXPECT_TRUE(s2.grad().defined());
  EXPECT_GT(s2.grad().abs().sum().item<double>(), 0.0);
  EXPECT_FALSE(t.grad().defined());
}

TEST(LrScheduleTest, CosineMultistepWarmup) {
  common::OptimSpec o;
  o.lr = 0.1;
  o.eta_min = 0.001;
  EXPECT_DOUBLE_EQ(LearningRateAt(o, 0, 100), 0.1);
  EXPECT_NEAR(LearningRateAt(o, 50, 100), (0.1 + 0.001) / 2, 1e-12);
  EXPECT_NEAR(LearningRateAt(o, 100, 100), 0.001, 1e-12);
  o.schedule = "multistep";
  o.milestones = {0.5, 0.75};
  o.gamma = 0.2;
  EXPECT_DOUBLE_EQ(LearningRateAt(o, 49, 100), 0.1);
  EXPECT_NEAR(LearningRateAt(o, 50, 100), 0.02, 1e-12);
  EXPECT_NEAR(LearningRateAt(o, 80, 100), 0.004, 1e-12);
  o.schedule = "constant";
  o.warmup_steps = 10;
  EXPECT_NEAR(LearningRateAt(o, 0, 100), 0.01, 1e-12);
  EXPECT_NEAR(LearningRateAt(o, 9, 100), 0.1, 1e-12);
}

TEST(TransformsTest, NormalizeAndDenormalize) {
  torch::Tensor x = torch::full({1, 1, 2, 2}, 255, torch::kUInt8);
  Normalization n{{0.5f}, {0.25f}};
  EXPECT_NEAR(Normalize(x, n).max().item<float>(), 2.0f, 1e-5);
  EXPECT_NEAR(Denormalize(Normalize(x, n), n).min().item<float>(), 1.0f, 1e-5);
  EXPECT_THROW(NormalizationFor("mnist-typo"), std::invalid_argument);
}

TEST(TransformsTest, CropMovesPixelByAtMostPaddingAndIsSeeded) {
  torch::Tensor x = torch::zeros({64, 1, 12, 12}, torch::kUInt8);
  x.index_put_({torch::indexing::Slice(), 0, 6, 5}, 255);
  std::mt19937_64 rng(7);
  torch::Tensor y = RandomCropFlip(x, 2, /*flip=*/true, rng);
  ASSERT_EQ(y.sizes(), x.sizes());
  std::set<std::pair<int64_t, int64_t>> positions;
  for (int64_t i = 0; i < 64; ++i) {
    torch::Tensor nz = y[i][0].nonzero();
    ASSERT_EQ(nz.size(0), 1) << "sample " << i;
    int64_t r = nz[0][0].item<int64_t>(), c = nz[0][1].item<int64_t>();
    EXPECT_LE(std::abs(r - 6), 2);
    // Unflipped column 5 moves to 5 +- 2; flipped it is 11 - 5 = 6 +- 2.
    EXPECT_TRUE(std::abs(c - 5) <= 2 || std::abs(c - 6) <= 2);
    positions.insert({r, c});
  }
  EXPECT_GT(positions.size(), 5u);  // crops actually vary
  std::mt19937_64 rng2(7);
  EXPECT_TRUE(torch::equal(RandomCropFlip(x, 2, true, rng2), y));
  std::mt19937_64 rng3(7);
  EXPECT_TRUE(torch::equal(RandomCropFlip(x, 0, false, rng3), x));
}

TensorDataset MakeData(int64_t n, int64_t classes, int64_t size, uint64_t seed) {
  torch::manual_seed(seed);
  torch::Tensor labels = torch::arange(n, torch::kInt64).remainder(classes);
  // Class-dependent brightness makes the task learnable.
  torch::Tensor images = (torch::rand({n, 1, size, size}) * 80 +
                          labels.view({n, 1, 1, 1}).to(torch::kFloat32) * 17)
                             .clamp(0, 255)
                             .to(torch::kUInt8);
  return TensorDataset(images, labels, classes);
}

std::vector<int64_t> Labels(const Batch& b) {
  return std::vector<int64_t>(b.labels.data_ptr<int64_t>(),
                              b.labels.data_ptr<int64_t>() + b.labels.numel());
}

TEST(LoaderTest, EpochVisitsEverySampleOnceAndIsSeeded) {
  // Labels equal indices, so batches reveal the order.
  TensorDataset data(torch::zeros({103, 1, 4, 4}, torch::kUInt8),
                     torch::arange(103, torch::kInt64), 103);
  LoaderOptions o;
  o.batch_size = 10;
  o.drop_last = false;
  o.seed = 5;
  Loader a(data, o), b(data, o);
  EXPECT_EQ(a.batches_per_epoch(), 11);
  std::vector<int64_t> seen_a, seen_b, seen_epoch1;
  a.StartEpoch(0);
  b.StartEpoch(0);
  while (auto x = a.Next()) {
    auto l = Labels(*x);
    seen_a.insert(seen_a.end(), l.begin(), l.end());
  }
  while (auto x = b.Next()) {
    auto l = Labels(*x);
    seen_b.insert(seen_b.end(), l.begin(), l.end());
  }
  EXPECT_EQ(seen_a, seen_b);
  std::vector<int64_t> sorted = seen_a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> all(103);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(sorted, all);
  EXPECT_NE(seen_a, all);  // shuffled
  a.StartEpoch(1);
  while (auto x = a.Next()) {
    auto l = Labels(*x);
    seen_epoch1.insert(seen_epoch1.end(), l.begin(), l.end());
  }
  EXPECT_NE(seen_epoch1, seen_a);  // reshuffled per epoch
}

TEST(LoaderTest, ResumeMidEpochAndPrefetchGiveTheSameBatches) {
  TensorDataset data = MakeData(64, 4, 8, 1);
  LoaderOptions o;
  o.batch_size = 8;
  o.augment = true;
  o.crop_padding = 2;
  o.norm = {{0.5f}, {0.5f}};
  Loader loader(data, o);
  loader.StartEpoch(3, /*skip=*/5);
  for (int64_t b = 5; b < 8; ++b) {
    auto batch = loader.Next();
    ASSERT_TRUE(batch.has_value());
    Batch direct = loader.MakeBatch(3, b);
    EXPECT_TRUE(torch::equal(batch->images, direct.images)) << "batch " << b;
    EXPECT_TRUE(torch::equal(batch->labels, direct.labels));
  }
  EXPECT_FALSE(loader.Next().has_value());
}

TEST(LoaderTest, RanksGetDisjointShards) {
  TensorDataset data(torch::zeros({40, 1, 2, 2}, torch::kUInt8),
                     torch::arange(40, torch::kInt64), 40);
  std::set<int64_t> all;
  for (int64_t rank = 0; rank < 4; ++rank) {
    LoaderOptions o;
    o.batch_size = 5;
    o.rank = rank;
    o.world_size = 4;
    Loader l(data, o);
    EXPECT_EQ(l.batches_per_epoch(), 2);
    l.StartEpoch(0);
    while (auto b = l.Next()) {
      for (int64_t v : Labels(*b)) EXPECT_TRUE(all.insert(v).second) << v;
    }
  }
  EXPECT_EQ(all.size(), 40u);
}

// Predicts class = first pixel value % classes (scaled back from [0,1]), or a
// constant class when `constant` >= 0.
class FakeClassifierImpl : public ClassifierImpl {
 public:
  FakeClassifierImpl(int64_t classes, int64_t constant) : classes_(classes), constant_(constant) {}
  ClassifierOutput ForwardWithTaps(const torch::Tensor& x, const TapRequest&) override {
    torch::Tensor cls = constant_ >= 0
        ? torch::full({x.size(0)}, constant_, torch::kInt64)
        : (x.flatten(1).select(1, 0) * 255).round().to(torch::kInt64).remainder(classes_);
    return {torch::one_hot(cls, classes_).to(torch::kFloat32), x.flatten(1), {}, {}};
  }
  torch::Tensor Classify(const torch::Tensor& f) override { return f; }
  int64_t feature_dim() const override { return 1; }
  int64_t num_classes() const override { return classes_; }

 private:
  int64_t classes_, constant_;
};

// Weights are written as CPU tensors in Module::save's layout and read by
// copying into the module's own tensors (so they load on any device and
// optimizers keep their tensors); a wrong shape names the tensor.
TEST(ModuleStateTest, RoundTripCopiesIntoTheSameTensorsAndNamesAWrongShape) {
  dfkd::testing::TempDir dir;
  torch::manual_seed(1);
  torch::nn::Sequential a(torch::nn::Linear(3, 4), torch::nn::BatchNorm1d(4));
  a->ptr(1)->as<torch::nn::BatchNorm1d>()->running_mean.fill_(0.5);
  SaveWeights(dir.File("w.pt"), *a);
  // Stock LibTorch reads the file too: the layout is Module::save's.
  torch::nn::Sequential stock(torch::nn::Linear(3, 4), torch::nn::BatchNorm1d(4));
  torch::serialize::InputArchive archive;
  archive.load_from(dir.File("w.pt"));
  stock->load(archive);

  torch::manual_seed(2);
  torch::nn::Sequential b(torch::nn::Linear(3, 4), torch::nn::BatchNorm1d(4));
  const torch::Tensor weight = b->parameters()[0];
  const void* storage = weight.data_ptr();
  LoadWeights(dir.File("w.pt"), *b);
  EXPECT_EQ(b->parameters()[0].data_ptr(), storage) << "copied into, not replaced";
  for (size_t i = 0; i < a->parameters().size(); ++i) {
    EXPECT_TRUE(torch::equal(a->parameters()[i], b->parameters()[i])) << i;
    EXPECT_TRUE(torch::equal(a->parameters()[i], stock->parameters()[i])) << i;
  }
  for (size_t i = 0; i < a->buffers().size(); ++i) {
    EXPECT_TRUE(torch::equal(a->buffers()[i], b->buffers()[i])) << i;
  }

  torch::nn::Sequential wide(torch::nn::Linear(3, 5), torch::nn::BatchNorm1d(5));
  try {
    LoadWeights(dir.File("w.pt"), *wide);
    ADD_FAILURE() << "a [4, 3] weight loaded into a [5, 3] one";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("parameter 0.weight: saved shape [4, 3], model shape "
                                         "[5, 3]"),
              std::string::npos)
        << e.what();
  }
}

TEST(EvaluatorTest, TopOneAndPerClass) {
  torch::Tensor labels = torch::tensor({0, 1, 2, 0, 1, 2, 0}, torch::kInt64);
  torch::Tensor images = labels.to(torch::kUInt8).view({7, 1, 1, 1});
  TensorDataset data(images, labels, 3);
  Normalization identity{{0.0f}, {1.0f}};
  FakeClassifierImpl perfect(3, -1), zero(3, 0);
  EvalResult p = Evaluate(perfect, data, identity, 3);
  EXPECT_DOUBLE_EQ(p.top1, 100.0);
  EXPECT_EQ(p.samples, 7);
  EvalResult z = Evaluate(zero, data, identity, 4);
  EXPECT_NEAR(z.top1, 300.0 / 7, 1e-9);
  EXPECT_EQ(z.per_class, (std::vector<double>{100.0, 0.0, 0.0}));
}

class TrainerTest : public ::testing::Test {
 protected:
  common::JobSpec Spec() {
    common::JobSpec s;
    s.kind = common::JobKind::kTrainTeacher;
    s.seed = 3;
    s.model.arch = "wrn";
    s.model.depth = 16;
    s.train.epochs = 2;
    s.train.batch_size = 16;
    s.train.eval_batch_size = 32;
    s.train.checkpoint_every_steps = 4;
    s.train.optim.lr = 0.05;
    return s;
  }
  JobData Data() {
    JobData d;
    d.train = std::make_unique<TensorDataset>(MakeData(96, 4, 16, 11));
    d.test = std::make_unique<TensorDataset>(MakeData(32, 4, 16, 12));
    d.norm = {{0.3f}, {0.3f}};
    d.crop_padding = 2;
    d.num_classes = 4;
    d.image_shape = {1, 16, 16};
    return d;
  }
  RunOutcome Train(const common::JobSpec& s, Classifier model, const JobData& d,
                   const std::string& dir, const RunControl& control) {
    LocalCommunicator comm;
    SupervisedSource source(s, model, d, comm);
    return Trainer(s, model, d, comm, source, dir).Run(control);
  }
  Classifier Model(const JobData& d, const common::JobSpec& s) {
    torch::manual_seed(s.seed);
    return MakeClassifier(ModelConfigFor(s.model, d));
  }
  testing::TempDir dir_;
};

TEST_F(TrainerTest, ResumedRunEqualsUninterruptedRun) {
  common::JobSpec spec = Spec();
  JobData data = Data();
  LocalCommunicator comm;
  RunControl quiet;
  quiet.quiet = true;

  Classifier a = Model(data, spec);
  SupervisedSource sa(spec, a, data, comm);
  Trainer ta(spec, a, data, comm, sa, dir_.File("a"));
  ASSERT_EQ(ta.total_steps(), 12);
  RunOutcome full = ta.Run(quiet);
  ASSERT_TRUE(full.finished);
  EXPECT_EQ(full.step, 12);

  // Stop mid-epoch (step 5 of 6 per epoch), then resume in a new trainer with
  // a freshly initialised model, as a restarted process would.
  RunControl stop_early = quiet;
  stop_early.stop_at_step = 5;
  Classifier b1 = Model(data, spec);
  RunOutcome part = Train(spec, b1, data, dir_.File("b"), stop_early);
  EXPECT_FALSE(part.finished);
  EXPECT_EQ(part.step, 5);
  EXPECT_FALSE(std::filesystem::exists(dir_.File("b/result.json")));
  torch::manual_seed(999);  // a different init must not matter after loading
  Classifier b2 = MakeClassifier(ModelConfigFor(spec.model, data));
  RunOutcome rest = Train(spec, b2, data, dir_.File("b"), quiet);
  ASSERT_TRUE(rest.finished);

  auto pa = a->named_parameters(), pb = b2->named_parameters();
  for (const auto& kv : pa) {
    EXPECT_TRUE(torch::equal(kv.value(), pb[kv.key()])) << kv.key();
  }
  auto ba = a->named_buffers(), bb = b2->named_buffers();
  for (const auto& kv : ba) {
    EXPECT_TRUE(torch::equal(kv.value(), bb[kv.key()])) << kv.key();
  }
  EXPECT_EQ(full.result["test_top1"], rest.result["test_top1"]);
  EXPECT_TRUE(std::filesystem::exists(dir_.File("b/model.pt")));
  // A run that trained at all must differ from its initialisation.
  Classifier init = Model(data, spec);
  EXPECT_FALSE(torch::equal(init->parameters()[0], a->parameters()[0]));
}

TEST_F(TrainerTest, LearnsAnEasyTaskAndWritesResult) {
  common::JobSpec spec = Spec();
  spec.train.epochs = 6;
  JobData data = Data();
  RunControl quiet;
  quiet.quiet = true;
  RunOutcome out = Train(spec, Model(data, spec), data, dir_.File("r"), quiet);
  ASSERT_TRUE(out.finished);
  EXPECT_GT(out.result["test_top1"].get<double>(), 50.0);  // chance is 25%
  std::ifstream in(dir_.File("r/result.json"));
  nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["steps"], 36);
  EXPECT_EQ(j["per_class_top1"].size(), 4u);
  std::ifstream m(dir_.File("r/metrics.jsonl"));
  int lines = 0;
  for (std::string l; std::getline(m, l);) ++lines;
  EXPECT_EQ(lines, 6);  // one evaluation per epoch
}

TEST_F(TrainerTest, CheckpointOfAnotherSpecIsRefused) {
  common::JobSpec spec = Spec();
  JobData data = Data();
  RunControl stop;
  stop.quiet = true;
  stop.stop_at_step = 2;
  Train(spec, Model(data, spec), data, dir_.File("c"), stop);
  common::JobSpec other = spec;
  other.train.optim.lr = 0.01;
  try {
    Train(other, Model(data, other), data, dir_.File("c"), stop);
    FAIL() << "expected a refusal";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("belongs to spec"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dfkd::worker
