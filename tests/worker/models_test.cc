// The model definitions against the reference (dfkd-methods.md §9): trainable
// parameter counts of §9.6, forward shapes on Fashion-MNIST, CIFAR and small
// ImageNet inputs, the BatchNorm taps, Classify() and the model zoo.
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "worker/models/batch_norm_tap.h"
#include "worker/models/classifier.h"
#include "worker/models/mobilenet_v2.h"
#include "worker/models/model_zoo.h"
#include "worker/models/resnet_cifar.h"
#include "worker/models/resnet_imagenet.h"
#include "worker/models/vgg.h"
#include "worker/models/wide_resnet.h"

namespace dfkd::worker {
namespace {

using Shape = std::vector<int64_t>;

ModelConfig Config(const std::string& arch, int64_t depth, int64_t widen_factor,
                   int64_t num_classes, int64_t in_channels) {
  ModelConfig c;
  c.arch = arch;
  c.depth = depth;
  c.widen_factor = widen_factor;
  c.num_classes = num_classes;
  c.in_channels = in_channels;
  return c;
}

struct Case {
  std::string name;
  ModelConfig config;
  size_t bn_layers;        // BatchNorm2d layers in the architecture
  std::string first_conv;  // module whose output is the first BN's input
  int64_t feature_dim;
};

std::vector<Case> CifarCases(int64_t num_classes, int64_t in_channels) {
  const int64_t n = num_classes;
  const int64_t c = in_channels;
  return {
      {"resnet-18", Config("resnet", 18, 1, n, c), 20, "conv1", 512},
      {"resnet-34", Config("resnet", 34, 1, n, c), 36, "conv1", 512},
      {"vgg-11-bn", Config("vgg", 11, 1, n, c), 8, "block0.0", 512},
      {"wrn-16-1", Config("wrn", 16, 1, n, c), 13, "conv1", 64},
      {"wrn-16-2", Config("wrn", 16, 2, n, c), 13, "conv1", 128},
      {"wrn-40-1", Config("wrn", 40, 1, n, c), 37, "conv1", 64},
      {"wrn-40-2", Config("wrn", 40, 2, n, c), 37, "conv1", 128},
  };
}

std::vector<Case> ImageNetCases(int64_t num_classes) {
  const int64_t n = num_classes;
  return {
      {"resnet-18-imagenet", Config("resnet_imagenet", 18, 1, n, 3), 20, "conv1", 512},
      {"resnet-50-imagenet", Config("resnet_imagenet", 50, 1, n, 3), 53, "conv1", 2048},
      {"mobilenet-v2", Config("mobilenet_v2", 0, 1, n, 3), 52, "features.0.conv", 1280},
  };
}

// Every case with the input shape it is tested at.
struct Sized {
  Case c;
  std::vector<int64_t> input;  // {N, C, H, W}
};

std::vector<Sized> AllCases() {
  std::vector<Sized> all;
  for (const Case& c : CifarCases(10, 3)) all.push_back({c, {2, 3, 32, 32}});
  for (const Case& c : ImageNetCases(10)) all.push_back({c, {2, 3, 64, 64}});
  return all;
}

std::vector<torch::nn::BatchNorm2dImpl*> BatchNorms(torch::nn::Module& model) {
  std::vector<torch::nn::BatchNorm2dImpl*> out;
  for (const auto& m : model.modules(/*include_self=*/false)) {
    if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) out.push_back(bn);
  }
  return out;
}

torch::nn::Conv2dImpl* FindConv(torch::nn::Module& model, const std::string& name) {
  auto named = model.named_modules();
  std::shared_ptr<torch::nn::Module>* m = named.find(name);
  return m == nullptr ? nullptr : (*m)->as<torch::nn::Conv2dImpl>();
}

TapRequest WithTaps() {
  TapRequest r;
  r.bn_statistics = true;
  return r;
}

// ----------------------------------------------------------- parameter counts

TEST(ResNetCifarTest, ParameterCountsMatchReference) {
  EXPECT_EQ(CountParameters(*ResNetCifar(ResNetCifarOptions(18, 10))), int64_t{11'173'962});
  EXPECT_EQ(CountParameters(*ResNetCifar(ResNetCifarOptions(18, 100))), int64_t{11'220'132});
  EXPECT_EQ(CountParameters(*ResNetCifar(ResNetCifarOptions(34, 10))), int64_t{21'282'122});
  EXPECT_EQ(CountParameters(*ResNetCifar(ResNetCifarOptions(34, 100))), int64_t{21'328'292});
  EXPECT_THROW(ResNetCifar(ResNetCifarOptions(50, 10)), std::invalid_argument);
}

TEST(VggTest, ParameterCountsMatchReference) {
  EXPECT_EQ(CountParameters(*Vgg(VggOptions(10))), int64_t{9'231'114});
  EXPECT_EQ(CountParameters(*Vgg(VggOptions(100))), int64_t{9'277'284});
}

TEST(WideResNetTest, ParameterCountsMatchReference) {
  auto count = [](int64_t depth, int64_t k, int64_t classes) {
    return CountParameters(*WideResNet(WideResNetOptions(depth, classes).widen_factor(k)));
  };
  EXPECT_EQ(count(16, 1, 10), int64_t{175'066});
  EXPECT_EQ(count(16, 1, 100), int64_t{180'916});
  EXPECT_EQ(count(16, 2, 10), int64_t{691'674});
  EXPECT_EQ(count(16, 2, 100), int64_t{703'284});
  EXPECT_EQ(count(40, 1, 10), int64_t{563'930});
  EXPECT_EQ(count(40, 1, 100), int64_t{569'780});
  EXPECT_EQ(count(40, 2, 10), int64_t{2'243'546});
  EXPECT_EQ(count(40, 2, 100), int64_t{2'255'156});
  EXPECT_THROW(WideResNet(WideResNetOptions(20, 10)), std::invalid_argument);
}

TEST(WideResNetTest, ReferenceInit) {
  WideResNet model(WideResNetOptions(16, 10).widen_factor(2));
  for (const auto& m : model->modules(/*include_self=*/false)) {
    if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      EXPECT_TRUE(torch::all(bn->weight == 1.0).item<bool>());
      EXPECT_TRUE(torch::all(bn->bias == 0.0).item<bool>());
    } else if (auto* linear = m->as<torch::nn::LinearImpl>()) {
      EXPECT_TRUE(torch::all(linear->bias == 0.0).item<bool>());
    }
  }
  // block3's conv2 has 3 * 3 * 128 fan-out: std sqrt(2 / 1152) ~ 0.0417.
  auto* conv = FindConv(*model, "block3.0.conv2");
  ASSERT_NE(conv, nullptr);
  EXPECT_NEAR(conv->weight.std().item<double>(), std::sqrt(2.0 / 1152.0), 0.002);
}

TEST(ResNetImageNetTest, ParameterCountsMatchTorchvision) {
  EXPECT_EQ(CountParameters(*ResNetImageNet(ResNetImageNetOptions(18))), int64_t{11'689'512});
  EXPECT_EQ(CountParameters(*ResNetImageNet(ResNetImageNetOptions(50))), int64_t{25'557'032});
  EXPECT_THROW(ResNetImageNet(ResNetImageNetOptions(34)), std::invalid_argument);
}

TEST(MobileNetV2Test, ParameterCountsMatchTorchvision) {
  EXPECT_EQ(CountParameters(*MobileNetV2(MobileNetV2Options())), int64_t{3'504'872});
  // torchvision mobilenet_v2(width_mult=0.5): last conv stays 1280.
  EXPECT_EQ(CountParameters(*MobileNetV2(MobileNetV2Options().width_mult(0.5))),
            int64_t{1'968'680});
}

TEST(MobileNetV2Test, MakeDivisibleMatchesTorchvision) {
  EXPECT_EQ(MakeDivisible(16.0, 8), 16);
  EXPECT_EQ(MakeDivisible(1280.0, 8), 1280);
  EXPECT_EQ(MakeDivisible(8.4, 8), 8);
  EXPECT_EQ(MakeDivisible(5.6, 8), 8);    // never below the divisor
  EXPECT_EQ(MakeDivisible(10.0, 8), 16);  // 8 would be > 10% below 10
  EXPECT_EQ(MakeDivisible(44.8, 8), 48);
  EXPECT_EQ(MakeDivisible(12.0, 8), 16);
}

// ------------------------------------------------------------------- forward

TEST(CifarModelsTest, ForwardOnFashionMnistShape) {
  torch::manual_seed(0);
  const torch::Tensor x = torch::randn({2, 1, 28, 28});
  for (const Case& c : CifarCases(10, 1)) {
    SCOPED_TRACE(c.name);
    Classifier model = MakeClassifier(c.config);
    EXPECT_EQ(model->num_classes(), 10);
    EXPECT_EQ(model->feature_dim(), c.feature_dim);
    ClassifierOutput out = model->ForwardWithTaps(x, TapRequest{});
    EXPECT_EQ(out.logits.sizes(), Shape({2, 10}));
    EXPECT_EQ(out.features.sizes(), Shape({2, c.feature_dim}));
    EXPECT_TRUE(out.bn_taps.empty());
    EXPECT_TRUE(torch::isfinite(out.logits).all().item<bool>());
  }
}

TEST(ImageNetModelsTest, ForwardOnSmallInput) {
  torch::manual_seed(0);
  const torch::Tensor x = torch::randn({2, 3, 64, 64});
  for (const Case& c : ImageNetCases(1000)) {
    SCOPED_TRACE(c.name);
    Classifier model = MakeClassifier(c.config);
    EXPECT_EQ(model->feature_dim(), c.feature_dim);
    ClassifierOutput out = model->ForwardWithTaps(x, TapRequest{});
    EXPECT_EQ(out.logits.sizes(), Shape({2, 1000}));
    EXPECT_EQ(out.features.sizes(), Shape({2, c.feature_dim}));
    EXPECT_TRUE(torch::isfinite(out.logits).all().item<bool>());
  }
}

TEST(VggTest, PoolsAfterBlock3OnlyFor64PixelInputs) {
  // Recomputes the reference forward from the registered blocks: pools after
  // blocks 0-2, after block 3 only when the input height is 64.
  torch::manual_seed(0);
  Vgg model(VggOptions(10));
  model->eval();
  torch::NoGradGuard no_grad;
  auto block = [&](const std::string& name) {
    auto named = model->named_modules();
    std::shared_ptr<torch::nn::Module>* m = named.find(name);
    EXPECT_NE(m, nullptr) << name;
    return (*m)->as<torch::nn::SequentialImpl>();
  };
  auto pool = [](const torch::Tensor& t) { return torch::max_pool2d(t, {2, 2}, {2, 2}); };
  for (int64_t size : {32, 64}) {
    SCOPED_TRACE(size);
    const torch::Tensor x = torch::randn({2, 3, size, size});
    torch::Tensor h = pool(torch::relu(block("block0")->forward(x)));
    h = pool(torch::relu(block("block1")->forward(h)));
    h = pool(torch::relu(block("block2")->forward(h)));
    h = torch::relu(block("block3")->forward(h));
    if (size == 64) h = pool(h);
    EXPECT_EQ(h.size(2), 4);  // block 4 runs at 4x4 in both cases
    h = torch::relu(block("block4")->forward(h));
    const torch::Tensor features = h.mean({2, 3});
    ClassifierOutput out = model->ForwardWithTaps(x, TapRequest{});
    EXPECT_EQ(out.features.sizes(), Shape({2, 512}));
    EXPECT_TRUE(torch::allclose(out.features, features, /*rtol=*/1e-4,
                                /*atol=*/1e-5));
  }
}

// ---------------------------------------------------------------------- taps

TEST(ModelsTest, BatchNormTapsFollowTheLayers) {
  torch::manual_seed(0);
  for (const Sized& s : AllCases()) {
    SCOPED_TRACE(s.c.name);
    Classifier model = MakeClassifier(s.c.config);
    const std::vector<torch::nn::BatchNorm2dImpl*> bns = BatchNorms(*model);
    EXPECT_EQ(bns.size(), s.c.bn_layers);
    const torch::Tensor x = torch::randn(s.input);
    ClassifierOutput out = model->ForwardWithTaps(x, WithTaps());
    ASSERT_EQ(out.bn_taps.size(), bns.size());
    for (size_t i = 0; i < bns.size(); ++i) {
      const int64_t channels = bns[i]->weight.size(0);
      const BatchNormTap& tap = out.bn_taps[i];
      ASSERT_TRUE(tap.mean.defined() && tap.variance.defined());
      EXPECT_EQ(tap.mean.sizes(), Shape({channels})) << i;
      EXPECT_EQ(tap.variance.sizes(), Shape({channels})) << i;
      EXPECT_EQ(tap.running_mean.sizes(), Shape({channels})) << i;
      EXPECT_EQ(tap.running_var.sizes(), Shape({channels})) << i;
    }
    // The first BN's input, computed independently from the stem conv.
    torch::nn::Conv2dImpl* stem = FindConv(*model, s.c.first_conv);
    ASSERT_NE(stem, nullptr);
    torch::NoGradGuard no_grad;
    const torch::Tensor y = stem->forward(x);
    EXPECT_TRUE(torch::allclose(out.bn_taps[0].mean, y.mean({0, 2, 3}),
                                /*rtol=*/1e-4, /*atol=*/1e-5));
    EXPECT_TRUE(torch::allclose(out.bn_taps[0].variance, y.var({0, 2, 3}, /*unbiased=*/false),
                                /*rtol=*/1e-4, /*atol=*/1e-5));
    EXPECT_TRUE(torch::equal(out.bn_taps[0].running_mean, bns[0]->running_mean));
  }
}

TEST(ModelsTest, TapsOnlyWhenRequestedAndDisarmedAfter) {
  torch::manual_seed(0);
  Classifier model = MakeClassifier(Config("wrn", 16, 1, 10, 3));
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  EXPECT_TRUE(model->ForwardWithTaps(x, TapRequest{}).bn_taps.empty());
  EXPECT_EQ(model->ForwardWithTaps(x, WithTaps()).bn_taps.size(), 13u);
  for (const auto& m : model->modules(/*include_self=*/false)) {
    if (auto* tapped = m->as<TappedBatchNorm2dImpl>()) {
      EXPECT_FALSE(tapped->capture);
    }
  }
  EXPECT_TRUE(model->ForwardWithTaps(x, TapRequest{}).bn_taps.empty());
}

TEST(ModelsTest, TapStatisticsCarryGradientsToTheInput) {
  // DeepInversion optimises images through the BN statistics.
  torch::manual_seed(0);
  Classifier model = MakeClassifier(Config("resnet", 18, 1, 10, 3));
  model->eval();
  const torch::Tensor x = torch::randn({2, 3, 32, 32}).requires_grad_(true);
  ClassifierOutput out = model->ForwardWithTaps(x, WithTaps());
  std::vector<torch::Tensor> terms;
  for (const BatchNormTap& tap : out.bn_taps) {
    terms.push_back((tap.mean - tap.running_mean).norm());
    terms.push_back((tap.variance - tap.running_var).norm());
  }
  torch::stack(terms).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_GT(x.grad().abs().sum().item<double>(), 0.0);
}

// ------------------------------------------------------------------ Classify

TEST(ModelsTest, ClassifyReproducesLogitsInEval) {
  torch::manual_seed(0);
  for (const Sized& s : AllCases()) {
    SCOPED_TRACE(s.c.name);
    Classifier model = MakeClassifier(s.c.config);
    model->eval();
    torch::NoGradGuard no_grad;
    const torch::Tensor x = torch::randn(s.input);
    ClassifierOutput out = model->ForwardWithTaps(x, TapRequest{});
    EXPECT_EQ(out.features.size(1), model->feature_dim());
    EXPECT_EQ(out.logits.size(1), model->num_classes());
    EXPECT_TRUE(torch::allclose(model->Classify(out.features), out.logits,
                                /*rtol=*/1e-5, /*atol=*/1e-6));
    EXPECT_TRUE(torch::allclose(model->forward(x), out.logits,
                                /*rtol=*/1e-5, /*atol=*/1e-6));
  }
}

// ----------------------------------------------------------------- model zoo

TEST(ModelZooTest, Names) {
  EXPECT_EQ(ModelName(Config("resnet", 18, 1, 10, 3)), "resnet-18");
  EXPECT_EQ(ModelName(Config("resnet", 34, 1, 10, 3)), "resnet-34");
  EXPECT_EQ(ModelName(Config("wrn", 40, 2, 10, 3)), "wrn-40-2");
  EXPECT_EQ(ModelName(Config("wrn", 16, 1, 10, 3)), "wrn-16-1");
  EXPECT_EQ(ModelName(Config("vgg", 11, 1, 10, 3)), "vgg-11-bn");
  EXPECT_EQ(ModelName(Config("resnet_imagenet", 50, 1, 1000, 3)), "resnet-50-imagenet");
  EXPECT_EQ(ModelName(Config("resnet_imagenet", 18, 1, 1000, 3)), "resnet-18-imagenet");
  ModelConfig mobilenet = Config("mobilenet_v2", 0, 1, 1000, 3);
  EXPECT_EQ(ModelName(mobilenet), "mobilenet-v2");
  mobilenet.width_mult = 0.5;
  EXPECT_EQ(ModelName(mobilenet), "mobilenet-v2-x0.5");
  EXPECT_THROW(ModelName(Config("densenet", 121, 1, 10, 3)), std::invalid_argument);
}

std::string ErrorOf(const ModelConfig& config) {
  try {
    MakeClassifier(config);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(ModelZooTest, RejectionsNameTheField) {
  EXPECT_TRUE(Contains(ErrorOf(Config("densenet", 121, 1, 10, 3)), "ModelConfig.arch"));
  EXPECT_TRUE(Contains(ErrorOf(Config("resnet", 50, 1, 10, 3)), "ModelConfig.depth"));
  EXPECT_TRUE(Contains(ErrorOf(Config("wrn", 20, 1, 10, 3)), "ModelConfig.depth"));
  EXPECT_TRUE(Contains(ErrorOf(Config("wrn", 16, 0, 10, 3)), "ModelConfig.widen_factor"));
  EXPECT_TRUE(Contains(ErrorOf(Config("vgg", 16, 1, 10, 3)), "ModelConfig.depth"));
  EXPECT_TRUE(Contains(ErrorOf(Config("resnet_imagenet", 34, 1, 10, 3)), "ModelConfig.depth"));
  EXPECT_TRUE(Contains(ErrorOf(Config("resnet", 18, 1, 0, 3)), "ModelConfig.num_classes"));
  EXPECT_TRUE(Contains(ErrorOf(Config("resnet", 18, 1, 10, 0)), "ModelConfig.in_channels"));
  ModelConfig wrn = Config("wrn", 16, 1, 10, 3);
  wrn.dropout = 1.5;
  EXPECT_TRUE(Contains(ErrorOf(wrn), "ModelConfig.dropout"));
  ModelConfig mobilenet = Config("mobilenet_v2", 0, 1, 10, 3);
  mobilenet.width_mult = 0.0;
  EXPECT_TRUE(Contains(ErrorOf(mobilenet), "ModelConfig.width_mult"));
}

TEST(ModelZooTest, BuildsTheConfiguredModel) {
  ModelConfig c = Config("wrn", 40, 2, 100, 3);
  c.dropout = 0.3;
  Classifier model = MakeClassifier(c);
  auto* wrn = dynamic_cast<WideResNetImpl*>(model.get());
  ASSERT_NE(wrn, nullptr);
  EXPECT_DOUBLE_EQ(wrn->options().dropout(), 0.3);
  EXPECT_EQ(CountParameters(*model), int64_t{2'255'156});
  EXPECT_EQ(model->num_classes(), 100);
  EXPECT_NE(dynamic_cast<VggImpl*>(MakeClassifier(Config("vgg", 11, 1, 10, 1)).get()), nullptr);
}

}  // namespace
}  // namespace dfkd::worker
