// The class-sharded synthesis bank (worker/methods/class_bank.h) and the
// `class_bank` method: ShardOf covers every class once; a bank holds units
// and produces labels only for its own classes, with parameter counts by
// hand; one synthesis of a generator unit lowers its class's cross-entropy
// and changes only that class; a class evolves identically whichever shard
// owns it; inversion units; the teacher and student are never changed;
// class-balanced sampling from the right pools; the round schedule; the
// method's rounds, samples and KD loss; save/load per shard, a refused range
// or unit kind; a resumed distillation equals an uninterrupted one.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/testing/method_fixtures.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_task.h"
#include "worker/data/transforms.h"
#include "worker/dist/communicator.h"
#include "worker/methods/class_bank.h"
#include "worker/methods/class_bank_method.h"
#include "worker/methods/losses.h"
#include "worker/models/generator.h"
#include "worker/models/model_zoo.h"

namespace dfkd::worker {
namespace {

using testing::CloseStudent;
using testing::SameTensors;
using testing::StateOf;

// G-A at nz 8, ngf 4 on 1x8x8 (s = 2): Linear 8 -> 32 (288), BN 8 (16),
// Conv3x3 8 -> 8 (576), BN 8 (16), Conv3x3 8 -> 4 (288), BN 4 (8),
// Conv3x3 4 -> 1 with bias (37).
constexpr int64_t kTinyParams = 288 + 16 + 576 + 16 + 288 + 8 + 37;
// Its BN buffers: running mean and variance of 8, 8 and 4 channels, 3 counters.
constexpr int64_t kTinyBuffers = 2 * (8 + 8 + 4) + 3;

TEST(ShardOfTest, CoversEveryClassOnceInNearEqualContiguousRanges) {
  const std::vector<std::pair<int64_t, int64_t>> cases = {
      {1000, 1}, {1000, 2}, {1000, 3}, {1000, 7}, {10, 4}, {4, 4}, {3, 5}, {1, 2}, {100, 8}};
  for (const auto& [classes, world] : cases) {
    std::vector<int> seen(static_cast<size_t>(classes), 0);
    int64_t next = 0, smallest = classes, largest = 0;
    for (int64_t r = 0; r < world; ++r) {
      const ClassRange s = ShardOf(classes, r, world);
      EXPECT_EQ(s.begin, next) << classes << " classes, world " << world << ", rank " << r;
      EXPECT_LE(s.begin, s.end);
      for (int64_t c = s.begin; c < s.end; ++c) seen[static_cast<size_t>(c)] += 1;
      next = s.end;
      smallest = std::min(smallest, s.size());
      largest = std::max(largest, s.size());
    }
    EXPECT_EQ(next, classes) << classes << " classes, world " << world;
    EXPECT_LE(largest - smallest, 1) << classes << " classes, world " << world;
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), classes)
        << classes << " classes, world " << world;
  }
  // 1000 over 7: 142 each, the first 1000 % 7 = 6 ranks one more.
  EXPECT_EQ(ShardOf(1000, 0, 7), (ClassRange{0, 143}));
  EXPECT_EQ(ShardOf(1000, 6, 7), (ClassRange{858, 1000}));
  EXPECT_EQ(ShardOf(1000, 0, 2), (ClassRange{0, 500}));
  EXPECT_EQ(ShardOf(1000, 1, 2), (ClassRange{500, 1000}));
  EXPECT_EQ(ShardOf(1000, 0, 3), (ClassRange{0, 334}));
  EXPECT_EQ(ShardOf(1000, 2, 3), (ClassRange{667, 1000}));
  EXPECT_EQ(ShardOf(1, 1, 2).size(), 0);
  EXPECT_THROW(ShardOf(10, 2, 2), c10::Error);
  EXPECT_THROW(ShardOf(10, 0, 0), c10::Error);
  EXPECT_EQ((ClassRange{1, 3}).ToString(), "[1, 3)");
}

TEST(ClassBankOptionsTest, DefaultsAndTheUnitsOwnDefaults) {
  ClassBankOptions o;
  EXPECT_TRUE(o.unit() == ClassBankUnit::kGenerator);
  EXPECT_DOUBLE_EQ(o.temperature(), 20.0);
  EXPECT_EQ(o.nz(), 32);
  EXPECT_EQ(o.ngf(), 8);
  EXPECT_DOUBLE_EQ(o.bn_weight(), 10.0);
  EXPECT_DOUBLE_EQ(o.oh_weight(), 1.0);
  EXPECT_DOUBLE_EQ(o.adv_weight(), 0.0);
  EXPECT_EQ(o.images_per_class(), 32);
  EXPECT_EQ(o.classes_per_round(), 0);
  EXPECT_EQ(BankGSteps(o), 10);
  EXPECT_DOUBLE_EQ(BankLr(o), 1e-3);
  EXPECT_EQ(BankAdamBetas(o.unit()), std::make_pair(0.5, 0.999));
  o.unit(ClassBankUnit::kInversion);
  EXPECT_EQ(BankGSteps(o), 50);
  EXPECT_DOUBLE_EQ(BankLr(o), 0.1);
  EXPECT_EQ(BankAdamBetas(o.unit()), std::make_pair(0.5, 0.99));
  o.g_steps(7).lr(0.5);
  EXPECT_EQ(BankGSteps(o), 7);
  EXPECT_DOUBLE_EQ(BankLr(o), 0.5);
  EXPECT_TRUE(ParseClassBankUnit("generator") == ClassBankUnit::kGenerator);
  EXPECT_TRUE(ParseClassBankUnit("inversion") == ClassBankUnit::kInversion);
  EXPECT_EQ(ClassBankUnitName(ClassBankUnit::kInversion), "inversion");
  EXPECT_THROW(ParseClassBankUnit("gan"), std::invalid_argument);
  EXPECT_EQ(BankRange(ClassBankOptions(), 4), (ClassRange{0, 4}));
  EXPECT_EQ(BankRange(ClassBankOptions().class_begin(1).class_end(3), 4), (ClassRange{1, 3}));
  EXPECT_THROW(BankRange(ClassBankOptions().class_begin(3).class_end(2), 4), c10::Error);
  EXPECT_THROW(BankRange(ClassBankOptions().class_end(5), 4), c10::Error);
  EXPECT_EQ(ClassArchiveKey(42), "class_0042");
  EXPECT_EQ(ClassArchiveKey(12345), "class_12345");
}

TEST(ClassBankOptionsTest, TheDefaultTinyGeneratorHasTheDocumentedSize) {
  // nz 32, ngf 8 on 3x32x32: 37,547 parameters, 33,792 of them the Linear's.
  Generator g(GeneratorOptions(32).ngf(8).img_size(32).channels(3));
  EXPECT_EQ(CountParameters(*g), 37547);
  EXPECT_EQ(g->l1->weight.numel() + g->l1->bias.numel(), 33792);
  EXPECT_EQ(CountParameters(*Generator(GeneratorOptions(8).ngf(4).img_size(8).channels(1))),
            kTinyParams);
}

std::map<int64_t, int64_t> CountLabels(const torch::Tensor& labels) {
  std::map<int64_t, int64_t> n;
  for (int64_t i = 0; i < labels.size(0); ++i) n[labels[i].item<int64_t>()] += 1;
  return n;
}

class ClassBankTest : public testing::TinyMethodTest {
 protected:
  // Tiny generator units (G-A nz 8, ngf 4: kTinyParams each), 4 images a class.
  static ClassBankOptions Small() {
    ClassBankOptions o;
    o.nz(8).ngf(4).g_steps(2).images_per_class(4).crop_padding(1).pool_max_images(64).norm(
        {{0.5f}, {0.5f}});
    return o;
  }
};

TEST_F(ClassBankTest, ABankOfClassesOneAndTwoHoldsTwoGeneratorsAndMakesOnlyTheirLabels) {
  ClassBank bank(Small(), ClassRange{1, 3}, Deps());
  EXPECT_EQ(bank.range(), (ClassRange{1, 3}));
  EXPECT_EQ(bank.owned(), (std::vector<int64_t>{1, 2}));
  ASSERT_NE(bank.generator_units(), nullptr);
  EXPECT_EQ(bank.units().parameters_per_class(), kTinyParams);
  const BankMemory m = bank.Memory();
  EXPECT_EQ(m.classes, 2);
  EXPECT_EQ(m.parameters_per_class, kTinyParams);
  EXPECT_EQ(m.parameter_bytes, 2 * kTinyParams * 4);  // exactly two generators
  EXPECT_EQ(m.buffer_bytes, 2 * kTinyBuffers * 4);
  EXPECT_EQ(m.optimizer_state_bytes, 0);  // allocated on a class's first update
  EXPECT_EQ(m.optimizer_state_bytes_per_class, 2 * kTinyParams * 4);
  EXPECT_EQ(m.state_bytes(), 2 * (kTinyParams + kTinyBuffers) * 4);
  EXPECT_EQ(m.state_bytes_all_updated(), 2 * (3 * kTinyParams + kTinyBuffers) * 4);
  EXPECT_EQ(m.pool_bytes, 0);
  EXPECT_EQ(bank.pool_images_per_class(), 32);  // 64 over 2 classes

  LabelledImages made = bank.Synthesize(bank.RoundClasses(0, 0), 0, 7);
  ASSERT_EQ(made.images.sizes(), torch::IntArrayRef({8, 1, 8, 8}));
  EXPECT_EQ(made.images.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(made.labels, torch::tensor({1, 1, 1, 1, 2, 2, 2, 2}, torch::kLong)));
  EXPECT_TRUE(torch::equal(made.images.narrow(0, 0, 4), bank.pool(1).images()));
  EXPECT_TRUE(torch::equal(made.images.narrow(0, 4, 4), bank.pool(2).images()));
  const std::map<int64_t, int64_t> n = CountLabels(bank.Sample(50, 3).labels);
  ASSERT_EQ(n.size(), 2u);
  EXPECT_EQ(n.at(1), 25);
  EXPECT_EQ(n.at(2), 25);

  // Classes outside the range: refused before any work.
  EXPECT_THROW(bank.Synthesize({0}, 1, 7), c10::Error);
  EXPECT_THROW(bank.Synthesize({1, 3}, 1, 7), c10::Error);
  EXPECT_EQ(bank.pool_size(), 8);
  EXPECT_THROW(bank.pool(0), c10::Error);
  EXPECT_THROW(bank.generator_units()->parameters(3), c10::Error);

  const BankMemory after = bank.Memory();
  EXPECT_EQ(after.optimizer_state_bytes, 2 * 2 * kTinyParams * 4);
  EXPECT_EQ(after.classes_with_optimizer_state, 2);
  EXPECT_EQ(after.pool_bytes, 8 * 64);
}

TEST_F(ClassBankTest, OneSynthesisLowersItsGeneratorsCrossEntropyToItsClassAndChangesOnlyIt) {
  ClassBankOptions o = Small().bn_weight(0).oh_weight(1).g_steps(30).lr(0.01).images_per_class(16);
  ClassBank bank(o, ClassRange{0, 4}, Deps());
  GeneratorUnits* units = bank.generator_units();
  ASSERT_NE(units, nullptr);
  torch::manual_seed(3);
  const torch::Tensor z = torch::randn({32, 8});
  auto class_ce = [&](int64_t c) {
    torch::NoGradGuard no_grad;
    torch::Tensor x = NormalizeUnit(units->Generate(c, z), {{0.5f}, {0.5f}});
    return torch::nn::functional::cross_entropy(teacher_->forward(x),
                                                torch::full({32}, c, torch::kLong))
        .item<double>();
  };
  std::vector<torch::Tensor> before;
  for (int64_t c = 0; c < 4; ++c) before.push_back(units->parameters(c).clone());
  const double ce_before = class_ce(2);
  bank.Synthesize({2}, 0, 7);
  EXPECT_LT(class_ce(2), ce_before);
  EXPECT_TRUE(std::isfinite(units->last_losses().total));
  EXPECT_DOUBLE_EQ(units->last_losses().total, units->last_losses().one_hot);  // CE alone
  for (int64_t c = 0; c < 4; ++c) {
    const bool trained = c == 2;
    EXPECT_EQ(torch::equal(units->parameters(c), before[static_cast<size_t>(c)]), !trained)
        << "class " << c;
    EXPECT_EQ(units->has_optimizer_state(c), trained) << "class " << c;
    EXPECT_EQ(units->adam_steps(c), trained ? 30 : 0) << "class " << c;
    EXPECT_EQ(bank.pool(c).size(), trained ? 16 : 0) << "class " << c;
  }
  const BankMemory m = bank.Memory();
  EXPECT_EQ(m.optimizer_state_bytes, 2 * kTinyParams * 4);
  EXPECT_EQ(m.classes_with_optimizer_state, 1);
}

TEST_F(ClassBankTest, AClassEvolvesIdenticallyWhicheverShardOwnsIt) {
  torch::manual_seed(5);
  ClassBank whole(Small(), ClassRange{0, 4}, Deps());
  torch::manual_seed(5);
  ClassBank part(Small(), ClassRange{1, 3}, Deps());
  GeneratorUnits* w = whole.generator_units();
  GeneratorUnits* p = part.generator_units();
  // Each class starts from its own draw.
  EXPECT_FALSE(torch::equal(w->parameters(1), w->parameters(2)));
  for (int64_t c = 1; c < 3; ++c) EXPECT_TRUE(torch::equal(w->parameters(c), p->parameters(c)));
  for (int64_t r = 0; r < 2; ++r) {
    whole.Synthesize(whole.RoundClasses(r, 0), r, 7);
    part.Synthesize(part.RoundClasses(r, 0), r, 7);
  }
  for (int64_t c = 1; c < 3; ++c) {
    EXPECT_TRUE(torch::equal(w->parameters(c), p->parameters(c))) << "class " << c;
    EXPECT_TRUE(torch::equal(whole.pool(c).images(), part.pool(c).images())) << "class " << c;
  }
}

TEST_F(ClassBankTest, InversionUnitsMakeUnitRangeImagesOfTheirClassAndKeepNoState) {
  ClassBank bank(Small().unit(ClassBankUnit::kInversion).g_steps(3), ClassRange{2, 4}, Deps());
  EXPECT_EQ(bank.generator_units(), nullptr);
  EXPECT_TRUE(bank.units().kind() == ClassBankUnit::kInversion);
  EXPECT_EQ(bank.units().parameters_per_class(), 0);
  EXPECT_EQ(bank.Memory().state_bytes(), 0);

  // The models are in eval mode already (TinyTeacher, TinyStudent).
  torch::Tensor x = bank.units().Synthesize(3, 5, 11);
  ASSERT_EQ(x.sizes(), torch::IntArrayRef({5, 1, 8, 8}));
  EXPECT_EQ(x.scalar_type(), torch::kFloat32);
  EXPECT_FALSE(x.requires_grad());
  EXPECT_GE(x.min().item<float>(), 0.0f);
  EXPECT_LE(x.max().item<float>(), 1.0f);
  EXPECT_GT(x.std().item<float>(), 0.0f);
  EXPECT_GT(bank.units().last_losses().one_hot, 0.0);
  EXPECT_GT(bank.units().last_losses().bn, 0.0);
  // Nothing persists: the same key makes the same images, another key others.
  EXPECT_TRUE(torch::equal(x, bank.units().Synthesize(3, 5, 11)));
  EXPECT_FALSE(torch::equal(x, bank.units().Synthesize(3, 5, 12)));
  EXPECT_THROW(bank.units().Synthesize(1, 5, 11), c10::Error);

  LabelledImages made = bank.Synthesize({3, 2}, 0, 7);
  ASSERT_EQ(made.images.sizes(), torch::IntArrayRef({8, 1, 8, 8}));
  EXPECT_TRUE(torch::equal(made.labels, torch::tensor({3, 3, 3, 3, 2, 2, 2, 2}, torch::kLong)));
  EXPECT_EQ(bank.pool(2).size(), 4);
  EXPECT_EQ(bank.pool(3).size(), 4);
  EXPECT_EQ(bank.Memory().state_bytes(), 0);
  EXPECT_EQ(bank.Memory().pool_bytes, 8 * 64);
}

TEST_F(ClassBankTest, SynthesisLeavesTheTeacherAndTheStudentUntouched) {
  const Classifier close = CloseStudent(teacher_);
  for (ClassBankUnit unit : {ClassBankUnit::kGenerator, ClassBankUnit::kInversion}) {
    close->train();  // its mode must come back
    const std::vector<torch::Tensor> teacher_before = StateOf(*teacher_);
    const std::vector<torch::Tensor> student_before = StateOf(*close);
    ClassBank bank(Small().unit(unit).adv_weight(1.0), ClassRange{0, 4}, DepsWith(close));
    bank.Synthesize(bank.RoundClasses(0, 0), 0, 7);
    const std::string kind = ClassBankUnitName(unit);
    // The student ran (it agrees with the teacher, so the term is non-zero).
    EXPECT_LT(bank.units().last_losses().adversarial, 0.0) << kind;
    EXPECT_TRUE(testing::Untouched(teacher_before, teacher_, /*training=*/false)) << kind;
    EXPECT_TRUE(testing::Untouched(student_before, close, /*training=*/true)) << kind;
  }
}

TEST_F(ClassBankTest, SampleIsClassBalancedOverTheOwnedClassesWithImages) {
  ClassBank bank(Small().images_per_class(3), ClassRange{0, 4}, Deps());
  EXPECT_THROW(bank.Sample(4, 1), c10::Error);
  bank.Synthesize({1, 3}, 0, 7);
  LabelledImages b = bank.Sample(9, 11);
  ASSERT_EQ(b.images.sizes(), torch::IntArrayRef({9, 1, 8, 8}));
  EXPECT_EQ(b.images.scalar_type(), torch::kUInt8);
  std::map<int64_t, int64_t> n = CountLabels(b.labels);
  ASSERT_EQ(n.size(), 2u);  // only the classes with images
  EXPECT_EQ(n[1] + n[3], 9);
  EXPECT_LE(std::abs(n[1] - n[3]), 1);

  bank.Synthesize({0, 2}, 1, 7);
  n = CountLabels(bank.Sample(8, 12).labels);
  ASSERT_EQ(n.size(), 4u);
  for (int64_t c = 0; c < 4; ++c) EXPECT_EQ(n[c], 2) << "class " << c;
  n = CountLabels(bank.Sample(10, 13).labels);
  for (int64_t c = 0; c < 4; ++c) {
    EXPECT_GE(n[c], 2) << "class " << c;
    EXPECT_LE(n[c], 3) << "class " << c;
  }
  // The one extra draw of a batch of 5 goes to a keyed-random class: over
  // many keys every class gets it.
  std::set<int64_t> got_extra;
  for (uint64_t key = 0; key < 60; ++key) {
    for (const auto& [c, count] : CountLabels(bank.Sample(5, key).labels)) {
      if (count == 2) got_extra.insert(c);
    }
  }
  EXPECT_EQ(got_extra.size(), 4u);
  // Keyed.
  EXPECT_TRUE(torch::equal(bank.Sample(8, 12).images, bank.Sample(8, 12).images));
  EXPECT_FALSE(torch::equal(bank.Sample(8, 12).images, bank.Sample(8, 14).images));
}

TEST_F(ClassBankTest, SampledImagesComeFromTheirLabelsPool) {
  ClassBank bank(Small().crop_padding(0), ClassRange{0, 4}, Deps());
  bank.Synthesize(bank.RoundClasses(0, 0), 0, 7);
  LabelledImages b = bank.Sample(12, 5);
  for (int64_t i = 0; i < 12; ++i) {
    const int64_t c = b.labels[i].item<int64_t>();
    const torch::Tensor pool = bank.pool(c).images();
    const torch::Tensor image = b.images[i].unsqueeze(0);
    // No crop; a flip with p = 0.5.
    const bool found = pool.eq(image).flatten(1).all(1).any().item<bool>() ||
                       pool.flip({3}).eq(image).flatten(1).all(1).any().item<bool>();
    EXPECT_TRUE(found) << "image " << i << " labelled " << c;
  }
}

TEST_F(ClassBankTest, RoundsVisitEveryOwnedClassFirstThenRoundRobin) {
  ClassBank bank(Small(), ClassRange{1, 4}, Deps());
  using V = std::vector<int64_t>;
  EXPECT_EQ(bank.RoundClasses(0, 2), (V{1, 2, 3}));
  EXPECT_EQ(bank.RoundClasses(1, 2), (V{1, 2}));
  EXPECT_EQ(bank.RoundClasses(2, 2), (V{3, 1}));
  EXPECT_EQ(bank.RoundClasses(3, 2), (V{2, 3}));
  EXPECT_EQ(bank.RoundClasses(4, 2), (V{1, 2}));
  EXPECT_EQ(bank.RoundClasses(5, 1), (V{2}));
  EXPECT_EQ(bank.RoundClasses(5, 0), (V{1, 2, 3}));
  EXPECT_EQ(bank.RoundClasses(5, 3), (V{1, 2, 3}));
  EXPECT_EQ(bank.RoundClasses(5, 7), (V{1, 2, 3}));
}

TEST_F(ClassBankTest, MethodSynthesizesRoundsSamplesNormalisedAndScoresKd) {
  EXPECT_EQ(ClassBankMethod(Small(), Deps()).bank().range(), (ClassRange{0, 4}));
  EXPECT_THROW(ClassBankMethod(Small().class_begin(2).class_end(2), Deps()), c10::Error);

  ClassBankMethod method(Small().class_begin(1).class_end(3).classes_per_round(1), Deps());
  EXPECT_EQ(method.name(), "class_bank");
  EXPECT_DOUBLE_EQ(method.temperature(), 20.0);
  EXPECT_FALSE(method.LastSynthesized().defined());
  EXPECT_THROW(method.Sample(4, Ctx(0, 0)), c10::Error);

  method.Synthesize(Ctx(0, 0));  // round 0: both owned classes
  torch::Tensor last = method.LastSynthesized();
  ASSERT_EQ(last.sizes(), torch::IntArrayRef({8, 1, 8, 8}));
  EXPECT_EQ(last.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(method.last_labels(),
                           torch::tensor({1, 1, 1, 1, 2, 2, 2, 2}, torch::kLong)));
  const torch::Tensor stored =
      torch::cat({method.bank().pool(1).images(), method.bank().pool(2).images()});
  EXPECT_TRUE(torch::equal(last, Normalize(stored, {{0.5f}, {0.5f}})));
  method.Synthesize(Ctx(1, 3));  // one class a round: class 1
  EXPECT_TRUE(torch::equal(method.last_labels(), torch::full({4}, 1, torch::kLong)));
  EXPECT_EQ(method.bank().pool(1).size(), 8);
  EXPECT_EQ(method.bank().pool(2).size(), 4);

  torch::Tensor x = method.Sample(6, Ctx(1, 4));
  EXPECT_EQ(x.sizes(), torch::IntArrayRef({6, 1, 8, 8}));
  EXPECT_EQ(x.scalar_type(), torch::kFloat32);
  EXPECT_FALSE(x.requires_grad());
  EXPECT_GE(x.min().item<float>(), -1.0f - 1e-5f);  // [(0 - .5) / .5, (1 - .5) / .5]
  EXPECT_LE(x.max().item<float>(), 1.0f + 1e-5f);
  EXPECT_TRUE(torch::equal(x, method.Sample(6, Ctx(1, 4))));  // keyed by the step
  EXPECT_FALSE(torch::equal(x, method.Sample(6, Ctx(1, 5))));

  student_->train();
  DistillBatch b = testing::TrainerBatch(teacher_, student_, x);
  torch::Tensor loss = method.DistillLoss(b, Ctx(1, 4));
  EXPECT_TRUE(torch::allclose(loss, KdLoss(b.student.logits, b.teacher.logits, 20.0)));
  loss.backward();
  EXPECT_GT(student_->parameters()[0].grad().abs().sum().item<double>(), 0.0);
  b.kd_logits = torch::randn({6, 4});  // KDCI's compensated logits are what KD scores
  EXPECT_TRUE(torch::allclose(method.DistillLoss(b, Ctx(1, 4)),
                              KdLoss(b.kd_logits, b.teacher.logits, 20.0)));

  nlohmann::json d = method.Describe();
  EXPECT_EQ(d["method"], "class_bank");
  EXPECT_EQ(d["unit"], "generator");
  EXPECT_EQ(d["g_steps"], 2);
  EXPECT_EQ(d["lr"], 1e-3);
  EXPECT_EQ(d["class_begin"], 1);
  EXPECT_EQ(d["class_end"], 3);
  EXPECT_EQ(d["pool_size"], 12);
  EXPECT_EQ(d["parameters_per_class"], kTinyParams);
  EXPECT_EQ(d["memory"]["parameter_bytes"], 2 * kTinyParams * 4);
}

std::string Saved(const Method& method) {
  torch::serialize::OutputArchive out;
  method.Save(out);
  std::ostringstream buffer;
  out.save_to(buffer);
  return buffer.str();
}

void LoadInto(Method& method, const std::string& bytes) {
  std::istringstream buffer(bytes);
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  method.Load(in);
}

TEST_F(ClassBankTest, SaveLoadRoundTripsTheShardAndContinuesIdentically) {
  const ClassBankOptions o = Small().class_begin(1).class_end(3).classes_per_round(1);
  ClassBankMethod original(o, Deps());
  original.Synthesize(Ctx(0, 0));  // classes 1 and 2
  original.Synthesize(Ctx(1, 3));  // class 1
  const std::string bytes = Saved(original);

  torch::manual_seed(99);  // other initial generators, overwritten by Load
  ClassBankMethod restored(o, Deps());
  GeneratorUnits* a = original.bank().generator_units();
  GeneratorUnits* b = restored.bank().generator_units();
  EXPECT_FALSE(torch::equal(a->parameters(1), b->parameters(1)));
  LoadInto(restored, bytes);
  for (int64_t c = 1; c < 3; ++c) {
    EXPECT_TRUE(torch::equal(a->parameters(c), b->parameters(c))) << "class " << c;
    EXPECT_EQ(a->adam_steps(c), b->adam_steps(c)) << "class " << c;
    EXPECT_TRUE(b->has_optimizer_state(c)) << "class " << c;
    EXPECT_TRUE(torch::equal(original.bank().pool(c).images(), restored.bank().pool(c).images()))
        << "class " << c;
  }
  EXPECT_EQ(b->adam_steps(1), 4);
  EXPECT_EQ(b->adam_steps(2), 2);
  EXPECT_TRUE(torch::equal(restored.LastSynthesized(), original.LastSynthesized()));
  EXPECT_TRUE(torch::equal(restored.last_labels(), original.last_labels()));
  EXPECT_TRUE(torch::equal(restored.Sample(6, Ctx(1, 5)), original.Sample(6, Ctx(1, 5))));
  // Class 2's Adam moments and BN buffers came back: its next call is bit-identical.
  original.Synthesize(Ctx(2, 6));
  restored.Synthesize(Ctx(2, 6));
  EXPECT_TRUE(torch::equal(a->parameters(2), b->parameters(2)));
  EXPECT_TRUE(torch::equal(original.bank().pool(2).images(), restored.bank().pool(2).images()));
}

TEST_F(ClassBankTest, AClassNeverUpdatedComesBackWithoutOptimizerState) {
  const ClassBankOptions o = Small().class_begin(1).class_end(3);
  ClassBankMethod original(o, Deps());
  original.bank().Synthesize({2}, 0, 7);
  ClassBankMethod restored(o, Deps());
  restored.bank().Synthesize({1}, 0, 7);  // moments and images that Load must drop
  GeneratorUnits* b = restored.bank().generator_units();
  ASSERT_TRUE(b->has_optimizer_state(1));
  LoadInto(restored, Saved(original));
  EXPECT_FALSE(b->has_optimizer_state(1));
  EXPECT_EQ(b->adam_steps(1), 0);
  EXPECT_TRUE(b->has_optimizer_state(2));
  EXPECT_EQ(restored.bank().Memory().optimizer_state_bytes, 2 * kTinyParams * 4);
  EXPECT_EQ(restored.bank().pool(1).size(), 0);
  EXPECT_EQ(restored.bank().pool(2).size(), 4);
}

TEST_F(ClassBankTest, LoadRefusesAnotherRangeNamingBothAndAnotherUnitKind) {
  ClassBankMethod saved(Small().class_begin(1).class_end(3), Deps());
  saved.Synthesize(Ctx(0, 0));
  const std::string bytes = Saved(saved);

  ClassBankMethod other(Small().class_begin(0).class_end(2), Deps());
  try {
    LoadInto(other, bytes);
    ADD_FAILURE() << "a shard of another range was loaded";
  } catch (const c10::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("[1, 3)"), std::string::npos) << message;
    EXPECT_NE(message.find("[0, 2)"), std::string::npos) << message;
  }
  ClassBankMethod inversion(Small().unit(ClassBankUnit::kInversion).class_begin(1).class_end(3),
                            Deps());
  EXPECT_THROW(LoadInto(inversion, bytes), c10::Error);
  ClassBankMethod same(Small().class_begin(1).class_end(3), Deps());
  EXPECT_NO_THROW(LoadInto(same, bytes));
}

TEST_F(ClassBankTest, ResumedDistillationEqualsUninterrupted) {
  testing::TempDir dir;
  // The method is not read: it is built here, not by MakeMethod.
  const common::JobSpec spec = testing::TinyDistillJob("noise");
  JobData data = testing::TinyDistillTask(12);
  // Classes 1..3, two a round after round 0: rounds 0..3 visit {1, 2, 3},
  // {1, 2}, {3, 1}, {2, 3}.
  const ClassBankOptions o = Small().class_begin(1).class_end(4).classes_per_round(2);
  auto run = [&](const std::string& out, int64_t stop_at, uint64_t init_seed) {
    Classifier student = testing::TinyWrn(init_seed);
    torch::manual_seed(5);  // the bank's initial generators, as the job runner seeds them
    MethodDeps deps = DepsWith(student);
    deps.image_shape = data.image_shape;
    deps.norm = data.norm;
    testing::TinyDistillation distillation(spec, teacher_, student,
                                           std::make_unique<ClassBankMethod>(o, deps));
    const bool finished = distillation.Train(data, out, stop_at);
    auto& method = dynamic_cast<ClassBankMethod&>(distillation.method());
    std::vector<torch::Tensor> state;
    for (int64_t cls = 1; cls < 4; ++cls) {
      state.push_back(method.bank().generator_units()->parameters(cls).clone());
      state.push_back(method.bank().pool(cls).images().clone());
    }
    return std::make_tuple(finished, student, state);
  };
  auto [done_a, a, state_a] = run(dir.File("a"), -1, 9);
  ASSERT_TRUE(done_a);
  auto [done_b1, b1, state_b1] = run(dir.File("b"), 4, 9);  // mid-round 1 (steps 3..5)
  ASSERT_FALSE(done_b1);
  auto [done_b, b, state_b] = run(dir.File("b"), -1, 77);
  ASSERT_TRUE(done_b);
  ASSERT_EQ(state_a.size(), 6u);
  for (size_t i = 1; i < state_a.size(); i += 2) {
    EXPECT_EQ(state_a[i].size(0), 3 * 4) << "pool " << i / 2;  // three visits of 4 images
  }
  EXPECT_TRUE(SameTensors(state_a, state_b));
  EXPECT_TRUE(testing::SameParameters(a, b));
}

}  // namespace
}  // namespace dfkd::worker
