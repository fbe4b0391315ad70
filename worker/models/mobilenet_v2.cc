#include "worker/models/mobilenet_v2.h"

#include <algorithm>
#include <array>
#include <stdexcept>
#include <string>

namespace dfkd::worker {
namespace {

constexpr double kDropout = 0.2;
constexpr int64_t kRoundNearest = 8;

// torchvision Conv2dNormActivation with ReLU6: Conv(k, stride, groups,
// padding (k - 1) / 2, no bias) -> BN -> ReLU6.
class ConvBnReLU6Impl : public torch::nn::Module {
 public:
  ConvBnReLU6Impl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups,
                  TapList& taps) {
    conv_ = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel)
                                                          .stride(stride)
                                                          .padding((kernel - 1) / 2)
                                                          .groups(groups)
                                                          .bias(false)));
    bn_ = register_module("bn", TappedBatchNorm2d(out));
    taps.Add(bn_);
  }

  torch::Tensor forward(const torch::Tensor& x) {
    return torch::hardtanh(bn_(conv_(x)), 0.0, 6.0);  // ReLU6
  }

 private:
  torch::nn::Conv2d conv_{nullptr};
  TappedBatchNorm2d bn_{nullptr};
};
TORCH_MODULE(ConvBnReLU6);

// Optional 1x1 expansion -> depthwise 3x3 (stride) -> linear 1x1 projection
// with BN; residual connection when stride is 1 and widths match.
class InvertedResidualImpl : public torch::nn::Module {
 public:
  InvertedResidualImpl(int64_t in, int64_t out, int64_t stride, int64_t expand_ratio, TapList& taps)
      : use_residual_(stride == 1 && in == out) {
    const int64_t hidden = in * expand_ratio;
    if (expand_ratio != 1) {
      expand_ = register_module("expand", ConvBnReLU6(in, hidden, 1, 1, 1, taps));
    }
    depthwise_ = register_module("depthwise", ConvBnReLU6(hidden, hidden, 3, stride, hidden, taps));
    project_ = register_module(
        "project", torch::nn::Conv2d(torch::nn::Conv2dOptions(hidden, out, 1).bias(false)));
    project_bn_ = register_module("project_bn", TappedBatchNorm2d(out));
    taps.Add(project_bn_);
  }

  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = expand_.is_empty() ? x : expand_(x);
    h = project_bn_(project_(depthwise_(h)));
    return use_residual_ ? x + h : h;
  }

 private:
  bool use_residual_;
  ConvBnReLU6 expand_{nullptr};  // empty when expand_ratio is 1
  ConvBnReLU6 depthwise_{nullptr};
  torch::nn::Conv2d project_{nullptr};
  TappedBatchNorm2d project_bn_{nullptr};
};
TORCH_MODULE(InvertedResidual);

struct StageSetting {
  int64_t expand_ratio;  // t
  int64_t channels;      // c
  int64_t blocks;        // n
  int64_t stride;        // s
};

constexpr std::array<StageSetting, 7> kSettings = {{
    {1, 16, 1, 1},
    {6, 24, 2, 2},
    {6, 32, 3, 2},
    {6, 64, 4, 2},
    {6, 96, 3, 1},
    {6, 160, 3, 2},
    {6, 320, 1, 1},
}};

// torchvision init: Kaiming-normal fan-out convs, bias 0; BN weight 1, bias 0;
// Linear N(0, 0.01), bias 0.
void InitWeights(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (const auto& m : model.modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2dImpl>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      bn->weight.fill_(1.0);
      bn->bias.zero_();
    } else if (auto* linear = m->as<torch::nn::LinearImpl>()) {
      linear->weight.normal_(0.0, 0.01);
      linear->bias.zero_();
    }
  }
}

}  // namespace

int64_t MakeDivisible(double v, int64_t divisor) {
  const double d = static_cast<double>(divisor);
  int64_t rounded = static_cast<int64_t>(v + d / 2.0) / divisor * divisor;
  rounded = std::max(divisor, rounded);
  if (static_cast<double>(rounded) < 0.9 * v) rounded += divisor;
  return rounded;
}

MobileNetV2Impl::MobileNetV2Impl(const MobileNetV2Options& options) : options_(options) {
  const double w = options_.width_mult();
  if (!(w > 0.0)) {
    throw std::invalid_argument("MobileNetV2Options.width_mult must be > 0, got " +
                                std::to_string(w));
  }
  int64_t in = MakeDivisible(32.0 * w, kRoundNearest);
  feature_dim_ = MakeDivisible(1280.0 * std::max(1.0, w), kRoundNearest);

  torch::nn::Sequential features;
  features->push_back(ConvBnReLU6(options_.in_channels(), in, 3, 2, 1, taps_));
  for (const StageSetting& s : kSettings) {
    const int64_t out = MakeDivisible(static_cast<double>(s.channels) * w, kRoundNearest);
    for (int64_t i = 0; i < s.blocks; ++i) {
      features->push_back(InvertedResidual(in, out, i == 0 ? s.stride : 1, s.expand_ratio, taps_));
      in = out;
    }
  }
  features->push_back(ConvBnReLU6(in, feature_dim_, 1, 1, 1, taps_));
  features_ = register_module("features", features);
  dropout_ = register_module("dropout", torch::nn::Dropout(torch::nn::DropoutOptions(kDropout)));
  classifier_ =
      register_module("classifier", torch::nn::Linear(feature_dim_, options_.num_classes()));
  InitWeights(*this);
}

ClassifierOutput MobileNetV2Impl::ForwardWithTaps(const torch::Tensor& x,
                                                  const TapRequest& request) {
  return RunWithTaps(taps_, request, [&] {
    torch::Tensor h = features_->forward(x);
    ClassifierOutput out;
    out.features = torch::adaptive_avg_pool2d(h, {1, 1}).flatten(1);
    out.logits = classifier_(dropout_(out.features));
    return out;
  });
}

torch::Tensor MobileNetV2Impl::Classify(const torch::Tensor& features) {
  return classifier_(features);
}

}  // namespace dfkd::worker
