// CMI (worker/methods/cmi.h): the contrastive loss against a hand
// computation; the per-sample BN-input means the teacher taps; the circular
// memory bank and its negative draws; the generator reset; the local view
// (resized crop + flip) and its gradients; that synthesis trains only the
// generator and the head, fills the pool and the bank, and draws negatives
// from the bank; that the KD loss reaches the student only; save/load and a
// resumed distillation; KDCI around CMI.
#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/spec/job_spec.h"
#include "tests/testing/method_fixtures.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_task.h"
#include "worker/data/transforms.h"
#include "worker/dist/communicator.h"
#include "worker/engine/distill_source.h"
#include "worker/engine/method_factory.h"
#include "worker/methods/cmi.h"
#include "worker/methods/losses.h"
#include "worker/methods/seeding.h"
#include "worker/models/batch_norm_tap.h"
#include "worker/models/generator.h"
#include "worker/models/model_zoo.h"

namespace dfkd::worker {
namespace {

using testing::ParamsOf;
using testing::SameTensors;
using testing::StateOf;
using testing::TinyWrn;

// ------------------------------------------------------------ contrastive loss

TEST(ContrastiveLossTest, MatchesAHandComputationAndSplitsCurrentFromCachedRows) {
  const std::vector<std::vector<double>> l = {{1, 0}, {0, 1}, {0.6, 0.8}};
  const std::vector<std::vector<double>> g = {{0.8, 0.6}, {0, 1}, {1, 0}};
  const double tau = 0.5;
  std::vector<double> ce(3);
  std::vector<std::vector<double>> p(3, std::vector<double>(3));
  for (size_t i = 0; i < 3; ++i) {
    std::vector<double> logit(3);
    double z = 0;
    for (size_t j = 0; j < 3; ++j) {
      logit[j] = (l[i][0] * g[j][0] + l[i][1] * g[j][1]) / tau;
      z += std::exp(logit[j]);
    }
    ce[i] = std::log(z) - logit[i];
    for (size_t j = 0; j < 3; ++j) p[i][j] = std::exp(logit[j]) / z;
  }

  torch::Tensor pl = torch::tensor({{1.f, 0.f}, {0.f, 1.f}, {0.6f, 0.8f}}).requires_grad_(true);
  torch::Tensor pg = torch::tensor({{0.8f, 0.6f}, {0.f, 1.f}, {1.f, 0.f}}).requires_grad_(true);
  // Two current rows and one cached: mean(ce0, ce1) + mean(ce2).
  torch::Tensor loss = ContrastiveLoss(pl, pg, 2, tau);
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_NEAR(loss.item<double>(), (ce[0] + ce[1]) / 2 + ce[2], 1e-5);
  // No cached rows: the plain mean.
  EXPECT_NEAR(ContrastiveLoss(pl, pg, 3, tau).item<double>(), (ce[0] + ce[1] + ce[2]) / 3,
              1e-5);

  // The global projections are detached; d/d pl_i = w_i (sum_j p_ij g_j - g_i) / tau
  // with w = 1/2 for the current rows and 1 for the single cached row.
  loss.backward();
  EXPECT_FALSE(pg.grad().defined());
  ASSERT_TRUE(pl.grad().defined());
  const std::vector<double> w = {0.5, 0.5, 1.0};
  for (size_t i = 0; i < 3; ++i) {
    for (size_t k = 0; k < 2; ++k) {
      double expected = -g[i][k];
      for (size_t j = 0; j < 3; ++j) expected += p[i][j] * g[j][k];
      expected *= w[i] / tau;
      EXPECT_NEAR(pl.grad()[static_cast<int64_t>(i)][static_cast<int64_t>(k)].item<double>(),
                  expected, 1e-5)
          << i << "," << k;
    }
  }
  EXPECT_THROW(ContrastiveLoss(pl, pg, 0, tau), c10::Error);
  EXPECT_THROW(ContrastiveLoss(pl, pg, 4, tau), c10::Error);
  EXPECT_THROW(ContrastiveLoss(pl, pg.narrow(0, 0, 2), 2, tau), c10::Error);
}

// ------------------------------------------------------------- instance means

TEST(InstanceMeanTapsTest, EqualTheBnInputMeansPerSampleAndCarryGradients) {
  Classifier model = TinyWrn(3);
  model->eval();
  const torch::Tensor x = torch::randn({3, 1, 8, 8}).requires_grad_(true);
  TapRequest both;
  both.bn_statistics = true;
  both.instance_means = true;
  ClassifierOutput out = model->ForwardWithTaps(x, both);
  ASSERT_FALSE(out.bn_taps.empty());
  ASSERT_EQ(out.bn_instance_means.size(), out.bn_taps.size());
  for (size_t i = 0; i < out.bn_taps.size(); ++i) {
    const torch::Tensor& m = out.bn_instance_means[i];
    ASSERT_EQ(m.dim(), 2) << i;
    EXPECT_EQ(m.size(0), 3) << i;
    EXPECT_EQ(m.size(1), out.bn_taps[i].mean.size(0)) << i;
    // The batch mean of the per-sample means is the BN tap's (N, H, W) mean.
    EXPECT_TRUE(torch::allclose(m.mean(0), out.bn_taps[i].mean, 1e-4, 1e-5)) << i;
  }
  // The first BN's input is the stem conv's output: x.mean({2, 3}) of it.
  auto* stem = model->named_modules()["conv1"]->as<torch::nn::Conv2dImpl>();
  ASSERT_NE(stem, nullptr);
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::allclose(out.bn_instance_means[0], stem->forward(x).mean({2, 3}), 1e-4,
                                1e-5));
  }
  // Autograd intact: the last layer's means reach the input.
  std::vector<torch::Tensor> grad =
      torch::autograd::grad({out.bn_instance_means.back().pow(2).sum()}, {x});
  ASSERT_TRUE(grad[0].defined());
  EXPECT_GT(grad[0].abs().sum().item<double>(), 0.0);

  // Opt-in, independently of the statistics, and disarmed after.
  TapRequest means_only;
  means_only.instance_means = true;
  ClassifierOutput m = model->ForwardWithTaps(x, means_only);
  EXPECT_TRUE(m.bn_taps.empty());
  EXPECT_EQ(m.bn_instance_means.size(), out.bn_taps.size());
  ClassifierOutput plain = model->ForwardWithTaps(x, TapRequest{});
  EXPECT_TRUE(plain.bn_instance_means.empty());
  TapRequest stats_only;
  stats_only.bn_statistics = true;
  EXPECT_TRUE(model->ForwardWithTaps(x, stats_only).bn_instance_means.empty());
  for (const auto& module : model->modules(/*include_self=*/false)) {
    if (auto* tapped = module->as<TappedBatchNorm2dImpl>()) {
      EXPECT_FALSE(tapped->capture_instance_means);
      EXPECT_FALSE(tapped->last_instance_mean.defined());
    }
  }
}

// --------------------------------------------------------------- memory bank

// Rows r = first, first + 1, ...: [r, -r].
torch::Tensor Rows(int64_t first, int64_t n) {
  torch::Tensor r = torch::arange(first, first + n, torch::kFloat32).unsqueeze(1);
  return torch::cat({r, -r}, 1);
}

std::vector<float> FirstColumn(const torch::Tensor& t) {
  torch::Tensor c = t.select(1, 0).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

TEST(MemoryBankTest, WritesCircularlyAndCounts) {
  MemoryBank bank(5);
  EXPECT_EQ(bank.size(), 0);
  EXPECT_FALSE(bank.data().defined());
  bank.Add(Rows(0, 3));
  EXPECT_EQ(bank.size(), 3);
  EXPECT_EQ(bank.position(), 3);
  EXPECT_EQ(bank.updates(), 3);
  ASSERT_EQ(bank.data().sizes(), torch::IntArrayRef({5, 2}));
  // 3, 4 at the end, then 5, 6 wrap around over 0, 1.
  bank.Add(Rows(3, 4));
  EXPECT_EQ(bank.size(), 5);
  EXPECT_EQ(bank.position(), 2);
  EXPECT_EQ(bank.updates(), 7);
  EXPECT_EQ(FirstColumn(bank.data()), (std::vector<float>{5, 6, 2, 3, 4}));
  EXPECT_TRUE(torch::equal(bank.data().select(1, 1), -bank.data().select(1, 0)));
  // More rows than the bank holds: as if written one by one from position 2.
  bank.Add(Rows(7, 7));
  EXPECT_EQ(FirstColumn(bank.data()), (std::vector<float>{10, 11, 12, 13, 9}));
  EXPECT_EQ(bank.position(), 4);
  EXPECT_EQ(bank.updates(), 14);
  EXPECT_EQ(bank.size(), 5);
  // Rows of another width, or not 2-D, are refused.
  EXPECT_THROW(bank.Add(torch::zeros({2, 3})), c10::Error);
  EXPECT_THROW(bank.Add(torch::zeros({4})), c10::Error);
  EXPECT_THROW(MemoryBank(0), c10::Error);
}

TEST(MemoryBankTest, DrawsDistinctWrittenRowsUniformlyAndKeyed) {
  MemoryBank bank(8);
  at::Generator g0 = at::detail::createCPUGenerator(1);
  EXPECT_THROW(bank.Sample(2, g0), c10::Error);  // empty
  bank.Add(Rows(1, 3));
  // Fewer rows than asked: each written row once, never an unwritten one.
  torch::Tensor s = bank.Sample(8, g0);
  ASSERT_EQ(s.sizes(), torch::IntArrayRef({3, 2}));
  std::vector<float> got = FirstColumn(s);
  EXPECT_EQ(std::set<float>(got.begin(), got.end()), (std::set<float>{1, 2, 3}));
  EXPECT_THROW(bank.Sample(0, g0), c10::Error);

  bank.Add(Rows(4, 5));  // full: 1..8
  std::map<float, int> counts;
  at::Generator g = at::detail::createCPUGenerator(7);
  for (int draw = 0; draw < 400; ++draw) {
    std::vector<float> v = FirstColumn(bank.Sample(3, g));
    ASSERT_EQ(v.size(), 3u);
    EXPECT_EQ(std::set<float>(v.begin(), v.end()).size(), 3u);  // without replacement
    for (float x : v) {
      EXPECT_GE(x, 1.0f);
      EXPECT_LE(x, 8.0f);
      ++counts[x];
    }
  }
  // 400 x 3 / 8 = 150 expected per row.
  ASSERT_EQ(counts.size(), 8u);
  for (const auto& kv : counts) {
    EXPECT_GT(kv.second, 100) << kv.first;
    EXPECT_LT(kv.second, 200) << kv.first;
  }
  // Keyed: the same generator seed draws the same rows.
  at::Generator a = at::detail::createCPUGenerator(11), b = at::detail::createCPUGenerator(11);
  EXPECT_TRUE(torch::equal(bank.Sample(4, a), bank.Sample(4, b)));
}

TEST(MemoryBankTest, SaveLoadRestoresRowsPositionAndCount) {
  MemoryBank bank(5);
  bank.Add(Rows(0, 7));
  torch::serialize::OutputArchive out;
  bank.Save(out, "bank");
  std::stringstream buffer;
  out.save_to(buffer);
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  MemoryBank restored(5);
  restored.Add(Rows(100, 1));  // overwritten by Load
  restored.Load(in, "bank");
  EXPECT_TRUE(torch::equal(restored.data(), bank.data()));
  EXPECT_EQ(restored.position(), bank.position());
  EXPECT_EQ(restored.updates(), bank.updates());
  restored.Load(in, "absent");
  EXPECT_EQ(restored.size(), 0);
  EXPECT_EQ(restored.position(), 0);
}

// --------------------------------------------------------------- reset_model

TEST(ResetGeneratorTest, ConvAndLinearNormalZeroBnNormalOneBiasesZeroKeyed) {
  Generator g(GeneratorOptions(64).ngf(16).img_size(8).channels(1));
  g->train();
  {
    torch::NoGradGuard no_grad;
    g->forward(torch::randn({4, 64}) * 3);  // running statistics move
  }
  ResetGenerator(g, 3);
  auto near_normal = [](const torch::Tensor& w, double mean_tol, double std_tol) {
    EXPECT_NEAR(w.mean().item<double>(), 0.0, mean_tol);
    EXPECT_NEAR(w.std().item<double>(), 0.02, std_tol);
  };
  near_normal(g->l1->weight, 0.002, 0.002);     // 8192 draws
  near_normal(g->conv1->weight, 0.002, 0.002);  // 9216
  near_normal(g->conv2->weight, 0.002, 0.002);  // 4608
  near_normal(g->conv3->weight, 0.01, 0.006);   // 144
  EXPECT_EQ(g->l1->bias.abs().max().item<float>(), 0.0f);
  EXPECT_EQ(g->conv3->bias.abs().max().item<float>(), 0.0f);
  for (auto* bn : {g->bn0.get(), g->bn1.get(), g->bn2.get()}) {
    EXPECT_NEAR(bn->weight.mean().item<double>(), 1.0, 0.02);
    EXPECT_LT(bn->weight.std().item<double>(), 0.05);
    EXPECT_GT(bn->weight.std().item<double>(), 0.005);
    EXPECT_EQ(bn->bias.abs().max().item<float>(), 0.0f);
    EXPECT_EQ(bn->running_mean.abs().max().item<float>(), 0.0f);
    EXPECT_TRUE(torch::equal(bn->running_var, torch::ones_like(bn->running_var)));
  }
  // A pure function of the key.
  Generator same(GeneratorOptions(64).ngf(16).img_size(8).channels(1));
  ResetGenerator(same, 3);
  EXPECT_TRUE(SameTensors(StateOf(*same), StateOf(*g)));
  ResetGenerator(same, 4);
  EXPECT_FALSE(SameTensors(ParamsOf(*same), ParamsOf(*g)));
}

// ---------------------------------------------------------------- local view

torch::Tensor BilinearResize(const torch::Tensor& x, int64_t h, int64_t w) {
  namespace F = torch::nn::functional;
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{h, w})
                               .mode(torch::kBilinear)
                               .align_corners(true));
}

TEST(LocalViewTest, ResizedCropIsTheAlignedCornersResizeOfTheBoxAndFlipMirrorsIt) {
  torch::manual_seed(0);
  const torch::Tensor x = torch::rand({3, 2, 8, 8});
  CropBox full;
  full.height = 8;
  full.width = 8;
  CropBox box;
  box.top = 2;
  box.left = 1;
  box.height = 4;
  box.width = 5;
  torch::Tensor out = ResizedCropFlip(x, {full, full, box}, {false, true, false});
  ASSERT_EQ(out.sizes(), x.sizes());
  EXPECT_TRUE(torch::allclose(out[0], x[0], 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(out[1], x[1].flip({2}), 1e-5, 1e-5));
  const torch::Tensor crop = x.narrow(0, 2, 1).narrow(2, 2, 4).narrow(3, 1, 5);
  EXPECT_TRUE(torch::allclose(out.narrow(0, 2, 1), BilinearResize(crop, 8, 8), 1e-5, 1e-5));
  // Corners land on the box's corner pixels.
  EXPECT_NEAR(out[2][1][0][0].item<float>(), x[2][1][2][1].item<float>(), 1e-5);
  EXPECT_NEAR(out[2][1][7][7].item<float>(), x[2][1][5][5].item<float>(), 1e-5);
  torch::Tensor flipped = ResizedCropFlip(x.narrow(0, 2, 1), {box}, {true});
  EXPECT_TRUE(torch::allclose(flipped, BilinearResize(crop, 8, 8).flip({3}), 1e-5, 1e-5));
  // Boxes outside the image, or too few of them, are refused.
  CropBox outside = box;
  outside.left = 4;
  EXPECT_THROW(ResizedCropFlip(x.narrow(0, 0, 1), {outside}, {false}), c10::Error);
  EXPECT_THROW(ResizedCropFlip(x, {box}, {false}), c10::Error);
}

TEST(LocalViewTest, BoxDrawsStayInsideWithTheScaleBoundAndFallBackToTheCentre) {
  std::mt19937_64 rng(5);
  for (int i = 0; i < 500; ++i) {
    CropBox b = DrawResizedCropBox(32, 32, 0.25, rng);
    EXPECT_GE(b.top, 0);
    EXPECT_GE(b.left, 0);
    EXPECT_LE(b.top + b.height, 32);
    EXPECT_LE(b.left + b.width, 32);
    // area in [0.25, 1] x 1024 up to the rounding of each side.
    EXPECT_GE(b.height * b.width, 230);
    const double ratio = static_cast<double>(b.width) / static_cast<double>(b.height);
    EXPECT_GE(ratio, 0.75 * 0.9);
    EXPECT_LE(ratio, 4.0 / 3.0 / 0.9);
  }
  // A tall 8x3 image at full scale: no draw fits in 10 tries, so the centre
  // crop with the ratio clamped to 3/4: height round(3 / 0.75) = 4.
  CropBox c = DrawResizedCropBox(8, 3, 1.0, rng);
  EXPECT_EQ(c.top, 2);
  EXPECT_EQ(c.left, 0);
  EXPECT_EQ(c.height, 4);
  EXPECT_EQ(c.width, 3);
}

TEST(LocalViewTest, RandomLocalViewKeepsShapeAndRangeAndItsGradientsReachTheGenerator) {
  torch::manual_seed(1);
  Generator g(GeneratorOptions(8).ngf(4).img_size(8).channels(1));
  g->train();
  const torch::Tensor x = g->forward(torch::randn({6, 8}));
  std::mt19937_64 a(3), b(3), c(4);
  torch::Tensor v = RandomResizedCropFlip(x, 0.25, a);
  ASSERT_EQ(v.sizes(), x.sizes());
  EXPECT_GE(v.min().item<float>(), x.min().item<float>() - 1e-5f);
  EXPECT_LE(v.max().item<float>(), x.max().item<float>() + 1e-5f);
  EXPECT_TRUE(torch::equal(v, RandomResizedCropFlip(x, 0.25, b)));  // keyed
  EXPECT_FALSE(torch::equal(v, RandomResizedCropFlip(x, 0.25, c)));
  std::vector<torch::Tensor> params = g->parameters();
  std::vector<torch::Tensor> grads =
      torch::autograd::grad({v.pow(2).sum()}, params, {}, false, false, /*allow_unused=*/true);
  ASSERT_TRUE(grads[0].defined());  // l1.weight
  EXPECT_GT(grads[0].abs().sum().item<double>(), 0.0);
  double total = 0;
  for (const torch::Tensor& gr : grads) {
    if (gr.defined()) total += gr.abs().sum().item<double>();
  }
  EXPECT_GT(total, 0.0);
}

// ------------------------------------------------------------------- method

class CmiTest : public testing::TinyMethodTest {
 protected:
  // A tiny G-A (nz 8, ngf 4), 3 inner steps, a small head and bank.
  static CmiOptions Small() {
    CmiOptions o;
    o.nz(8)
        .ngf(4)
        .synthesis_batch_size(8)
        .g_steps(3)
        .head_dim(8)
        .bank_size(32)
        .n_neg(8)
        .crop_padding(1)
        .norm({{0.5f}, {0.5f}});
    return o;
  }
  int64_t TeacherBnWidth() {
    TapRequest r;
    r.bn_statistics = true;
    int64_t d = 0;
    ClassifierOutput out = teacher_->ForwardWithTaps(torch::zeros({2, 1, 8, 8}), r);
    for (const BatchNormTap& tap : out.bn_taps) d += tap.mean.size(0);
    return d;
  }
};

TEST_F(CmiTest, DefaultsAreTheReferenceScriptValues) {
  CmiOptions o;
  EXPECT_DOUBLE_EQ(o.temperature(), 20.0);
  EXPECT_EQ(o.nz(), 256);
  EXPECT_EQ(o.ngf(), 64);
  EXPECT_EQ(o.synthesis_batch_size(), 256);
  EXPECT_EQ(o.g_steps(), 200);
  EXPECT_DOUBLE_EQ(o.lr_g(), 1e-3);
  EXPECT_DOUBLE_EQ(o.bn_weight(), 1.0);
  EXPECT_DOUBLE_EQ(o.oh_weight(), 1.0);
  EXPECT_DOUBLE_EQ(o.adv_weight(), 0.5);
  EXPECT_DOUBLE_EQ(o.cr_weight(), 0.8);
  EXPECT_DOUBLE_EQ(o.cr_temperature(), 0.2);
  EXPECT_EQ(o.head_dim(), 256);
  EXPECT_EQ(o.bank_size(), 40960);
  EXPECT_EQ(o.n_neg(), 4096);
  EXPECT_DOUBLE_EQ(o.local_scale_min(), 0.25);
  EXPECT_EQ(o.pool_max_images(), 51200);
}

TEST_F(CmiTest, SynthesizeTrainsOnlyTheGeneratorAndTheHeadAndFillsPoolAndBank) {
  student_->train();  // its mode must come back
  const std::vector<torch::Tensor> teacher_before = StateOf(*teacher_);
  const std::vector<torch::Tensor> student_before = StateOf(*student_);
  CmiMethod cmi(Small(), Deps());
  EXPECT_EQ(cmi.name(), "cmi");
  const int64_t d = TeacherBnWidth();
  EXPECT_EQ(cmi.feature_dim(), d);
  EXPECT_EQ(cmi.head()->fc1->weight.sizes(), torch::IntArrayRef({d, d}));
  EXPECT_EQ(cmi.head()->fc2->weight.sizes(), torch::IntArrayRef({8, d}));
  const std::vector<torch::Tensor> head_before = ParamsOf(*cmi.head());
  EXPECT_THROW(cmi.Sample(4, Ctx(0, 0)), c10::Error);
  cmi.Synthesize(Ctx(0, 0));

  EXPECT_TRUE(testing::Untouched(teacher_before, teacher_, /*training=*/false));
  EXPECT_TRUE(testing::Untouched(student_before, student_, /*training=*/true));
  EXPECT_FALSE(SameTensors(head_before, ParamsOf(*cmi.head())));
  for (const auto& p : cmi.head()->parameters()) EXPECT_FALSE(p.grad().defined());
  for (const auto& p : cmi.generator()->parameters()) EXPECT_FALSE(p.grad().defined());
  // The generator was reset from the call's key, then trained.
  Generator reset(GeneratorOptions(8).ngf(4).img_size(8).channels(1));
  ResetGenerator(reset, StreamSeed(7, 4, 0));
  EXPECT_FALSE(SameTensors(ParamsOf(*reset), ParamsOf(*cmi.generator())));

  const CmiLosses& l = cmi.last_losses();
  EXPECT_TRUE(std::isfinite(l.total));
  EXPECT_GT(l.bn, 0.0);
  EXPECT_GT(l.one_hot, 0.0);
  EXPECT_GT(l.contrastive, 0.0);

  // The kept batch: G(z) in [0, 1], normalised; the pool truncates it to uint8.
  ASSERT_EQ(cmi.pool().size(), 8);
  torch::Tensor last = cmi.LastSynthesized();
  ASSERT_EQ(last.sizes(), torch::IntArrayRef({8, 1, 8, 8}));
  EXPECT_FALSE(last.requires_grad());
  torch::Tensor gap = last - Normalize(cmi.pool().images(), {{0.5f}, {0.5f}});
  EXPECT_GE(gap.min().item<float>(), -1e-5f);              // truncation: never above
  EXPECT_LE(gap.max().item<float>(), 2.0f / 255 + 1e-5f);  // less than a level / std
  // Its [h_l, h_g] joined the bank.
  EXPECT_EQ(cmi.bank().size(), 8);
  ASSERT_EQ(cmi.bank().data().size(1), 2 * d);
  EXPECT_TRUE(torch::isfinite(cmi.bank().data()).all().item<bool>());
  EXPECT_GT(cmi.bank().data().narrow(0, 0, 8).abs().sum().item<double>(), 0.0);

  torch::Tensor x = cmi.Sample(5, Ctx(0, 3));
  EXPECT_EQ(x.sizes(), torch::IntArrayRef({5, 1, 8, 8}));
  EXPECT_FALSE(x.requires_grad());
  EXPECT_GE(x.min().item<float>(), -1.0f - 1e-5f);
  EXPECT_LE(x.max().item<float>(), 1.0f + 1e-5f);
  EXPECT_TRUE(torch::equal(x, cmi.Sample(5, Ctx(0, 3))));  // keyed by the step
  EXPECT_FALSE(torch::equal(x, cmi.Sample(5, Ctx(0, 4))));

  cmi.Synthesize(Ctx(1, 10));
  EXPECT_EQ(cmi.pool().size(), 16);
  EXPECT_EQ(cmi.bank().size(), 16);
  EXPECT_EQ(cmi.bank().position(), 16);

  nlohmann::json desc = cmi.Describe();
  EXPECT_EQ(desc["method"], "cmi");
  EXPECT_EQ(desc["g_steps"], 3);
  EXPECT_EQ(desc["feature_dim"], d);
  EXPECT_EQ(desc["pool_size"], 16);
  EXPECT_EQ(desc["bank_entries"], 16);
}

TEST_F(CmiTest, EveryCallStartsFromTheGeneratorResetKeyedByTheCall) {
  // lr 0: the generator stays where the reset put it.
  CmiMethod cmi(Small().lr_g(0.0), Deps());
  cmi.Synthesize(Ctx(0, 0));
  cmi.Synthesize(Ctx(1, 10));
  Generator reset(GeneratorOptions(8).ngf(4).img_size(8).channels(1));
  ResetGenerator(reset, StreamSeed(7, 4, 1));
  EXPECT_TRUE(SameTensors(ParamsOf(*reset), ParamsOf(*cmi.generator())));
}

TEST_F(CmiTest, NegativesComeFromTheBankOnceItHoldsEntries) {
  // n_neg 0 never reads the bank; n_neg 8 does from the second call on. The
  // first calls (empty bank: the plain mean) are identical.
  torch::manual_seed(5);  // the same head for both
  CmiMethod with_bank(Small(), Deps());
  torch::manual_seed(5);
  CmiMethod without(Small().n_neg(0), Deps());
  with_bank.Synthesize(Ctx(0, 0));
  without.Synthesize(Ctx(0, 0));
  EXPECT_TRUE(torch::equal(with_bank.pool().images(), without.pool().images()));
  EXPECT_TRUE(SameTensors(ParamsOf(*with_bank.head()), ParamsOf(*without.head())));
  EXPECT_DOUBLE_EQ(with_bank.last_losses().contrastive, without.last_losses().contrastive);
  with_bank.Synthesize(Ctx(1, 10));
  without.Synthesize(Ctx(1, 10));
  EXPECT_NE(with_bank.last_losses().contrastive, without.last_losses().contrastive);
  EXPECT_FALSE(SameTensors(ParamsOf(*with_bank.head()), ParamsOf(*without.head())));
}

TEST_F(CmiTest, WithoutTheContrastiveTermNeitherHeadNorBankIsUsed) {
  CmiMethod cmi(Small().cr_weight(0.0), Deps());
  const std::vector<torch::Tensor> head_before = ParamsOf(*cmi.head());
  cmi.Synthesize(Ctx(0, 0));
  EXPECT_EQ(cmi.pool().size(), 8);
  EXPECT_EQ(cmi.bank().size(), 0);
  EXPECT_EQ(cmi.last_losses().contrastive, 0.0);
  EXPECT_TRUE(SameTensors(head_before, ParamsOf(*cmi.head())));
}

TEST_F(CmiTest, DistillLossIsKdAndReachesTheStudentOnly) {
  CmiMethod cmi(Small(), Deps());
  cmi.Synthesize(Ctx(0, 0));
  student_->train();
  DistillBatch b = testing::TrainerBatch(teacher_, student_, cmi.Sample(8, Ctx(0, 1)));
  torch::Tensor loss = cmi.DistillLoss(b, Ctx(0, 1));
  EXPECT_TRUE(torch::allclose(loss, KdLoss(b.student.logits, b.teacher.logits, 20.0)));
  loss.backward();
  EXPECT_GT(student_->parameters()[0].grad().abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(testing::NoGradientReached(*cmi.generator()));
  EXPECT_TRUE(testing::NoGradientReached(*cmi.head()));
  // KDCI's compensated logits are what the KD term scores.
  b.kd_logits = torch::randn({8, 4});
  EXPECT_TRUE(torch::allclose(cmi.DistillLoss(b, Ctx(0, 1)),
                              KdLoss(b.kd_logits, b.teacher.logits, 20.0)));
}

TEST_F(CmiTest, SaveLoadContinuesIdentically) {
  const CmiOptions o = Small().bank_size(20);  // wraps at the third call
  CmiMethod original(o, Deps());
  original.Synthesize(Ctx(0, 0));
  original.Synthesize(Ctx(1, 10));
  torch::serialize::OutputArchive out;
  original.Save(out);
  std::stringstream buffer;
  out.save_to(buffer);

  torch::manual_seed(99);  // a different initial head, overwritten by Load
  CmiMethod restored(o, Deps());
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  restored.Load(in);
  EXPECT_TRUE(SameTensors(ParamsOf(*restored.head()), ParamsOf(*original.head())));
  EXPECT_TRUE(torch::equal(restored.pool().images(), original.pool().images()));
  EXPECT_TRUE(torch::equal(restored.LastSynthesized(), original.LastSynthesized()));
  EXPECT_TRUE(torch::equal(restored.bank().data(), original.bank().data()));
  EXPECT_EQ(restored.bank().position(), original.bank().position());
  EXPECT_EQ(restored.bank().updates(), original.bank().updates());
  EXPECT_TRUE(torch::equal(restored.Sample(4, Ctx(1, 17)), original.Sample(4, Ctx(1, 17))));
  // The head's optimizer moments came back too: the next call is bit-identical.
  original.Synthesize(Ctx(2, 20));
  restored.Synthesize(Ctx(2, 20));
  EXPECT_EQ(original.bank().updates(), 24);
  EXPECT_TRUE(SameTensors(ParamsOf(*restored.head()), ParamsOf(*original.head())));
  EXPECT_TRUE(SameTensors(ParamsOf(*restored.generator()), ParamsOf(*original.generator())));
  EXPECT_TRUE(torch::equal(restored.pool().images(), original.pool().images()));
  EXPECT_TRUE(torch::equal(restored.bank().data(), original.bank().data()));
  EXPECT_EQ(restored.bank().position(), original.bank().position());
}

// The job spec as a user writes it (method "cmi", the distill.cmi object).
common::JobSpec TinyCmiJob(int64_t synthesis_batch_size, bool kdci) {
  const nlohmann::json model = {{"arch", "wrn"}, {"depth", 16}};
  const nlohmann::json j = {
      {"version", common::kJobSpecVersion},
      {"kind", "distill"},
      {"seed", 2},
      {"model", model},
      {"train", {{"epochs", 2}, {"batch_size", 8}, {"checkpoint_every_steps", 1000}}},
      {"distill",
       {{"teacher", {{"weights", "unused.pt"}, {"model", model}}},
        {"method", "cmi"},
        {"steps_per_epoch", 5},
        {"kd_steps", 3},
        {"synthesis_batch_size", synthesis_batch_size},
        {"cmi",
         {{"nz", 8},
          {"g_steps", 2},
          {"head_dim", 8},
          {"bank_size", 32},
          {"n_neg", 8},
          {"cr_temperature", 0.2},
          {"local_scale_min", 0.25}}}}},
      {"kdci", {{"enabled", kdci}}}};
  common::SpecParseResult r = common::ParseJobSpec(j);
  EXPECT_TRUE(r.ok()) << r.ErrorText();
  return r.ok() ? *r.spec : common::JobSpec{};
}

TEST_F(CmiTest, ResumedDistillationEqualsUninterrupted) {
  testing::TempDir dir;
  const common::JobSpec spec = TinyCmiJob(8, false);
  ASSERT_EQ(spec.distill.method, "cmi");
  JobData data = testing::TinyDistillTask(12);
  auto run = [&](const std::string& out, int64_t stop_at, uint64_t init_seed) {
    Classifier student = TinyWrn(init_seed);
    torch::manual_seed(5);  // the head's init, as the job runner seeds it
    MethodDeps deps = DepsWith(student);
    deps.image_shape = data.image_shape;
    deps.norm = data.norm;
    testing::TinyDistillation distillation(spec, teacher_, student, MakeMethod(spec, deps));
    const bool finished = distillation.Train(data, out, stop_at);
    auto& cmi = dynamic_cast<CmiMethod&>(distillation.method());
    return std::make_tuple(finished, student, ParamsOf(*cmi.head()),
                           cmi.pool().images().clone(), cmi.bank().data().clone());
  };
  auto [done_a, a, head_a, pool_a, bank_a] = run(dir.File("a"), -1, 9);
  ASSERT_TRUE(done_a);
  auto [done_b1, b1, head_b1, pool_b1, bank_b1] = run(dir.File("b"), 4, 9);  // mid-round 1
  ASSERT_FALSE(done_b1);
  auto [done_b, b, head_b, pool_b, bank_b] = run(dir.File("b"), -1, 77);
  ASSERT_TRUE(done_b);
  // Rounds 0..3 (steps 0-2, 3-5, 6-8, 9): 4 calls of 8 images; the bank of
  // 32 is exactly full after the last.
  EXPECT_EQ(pool_a.size(0), 4 * 8);
  EXPECT_TRUE(torch::equal(pool_a, pool_b));
  EXPECT_TRUE(torch::equal(bank_a, bank_b));
  EXPECT_TRUE(SameTensors(head_a, head_b));
  EXPECT_TRUE(testing::SameParameters(a, b));
}

TEST_F(CmiTest, KdciWrapsCmiAndTakesAStep) {
  const common::JobSpec spec = TinyCmiJob(32, true);
  ASSERT_TRUE(spec.kdci.enabled);
  student_->train();
  std::unique_ptr<Method> method = MakeMethod(spec, Deps());
  EXPECT_EQ(method->name(), "cmi+kdci");
  LocalCommunicator comm;
  DistillSource source(spec, teacher_, student_, std::move(method), comm);
  StepResult r = source.Step(0);
  EXPECT_EQ(r.images, 8);
  ASSERT_TRUE(r.loss.defined());
  EXPECT_TRUE(std::isfinite(r.loss.item<double>()));
  r.loss.backward();
  EXPECT_GT(student_->parameters()[0].grad().abs().sum().item<double>(), 0.0);
  nlohmann::json d = source.Describe();
  EXPECT_EQ(d["kdci"]["num_prototypes"], 32);  // the paper's N for inversion methods
  EXPECT_EQ(source.method().LastSynthesized().size(0), 32);
}

}  // namespace
}  // namespace dfkd::worker
