#include "worker/models/wide_resnet.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace dfkd::worker {
namespace {

torch::nn::Conv2d Conv3x3(int64_t in, int64_t out, int64_t stride) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}

// Pre-activation block. With equal widths:
//   out = x + conv2(dropout(relu(bn2(conv1(relu(bn1(x)))))))
// otherwise the pre-activation a = relu(bn1(x)) feeds both conv1 and the 1x1
// projection shortcut:
//   out = shortcut(a) + conv2(dropout(relu(bn2(conv1(a)))))
class WideBlockImpl : public torch::nn::Module {
 public:
  WideBlockImpl(int64_t in_planes, int64_t out_planes, int64_t stride, double dropout,
                TapList& taps)
      : dropout_(dropout) {
    bn1_ = register_module("bn1", TappedBatchNorm2d(in_planes));
    taps.Add(bn1_);
    conv1_ = register_module("conv1", Conv3x3(in_planes, out_planes, stride));
    bn2_ = register_module("bn2", TappedBatchNorm2d(out_planes));
    taps.Add(bn2_);
    conv2_ = register_module("conv2", Conv3x3(out_planes, out_planes, 1));
    // The reference tests in != out only; stride != 1 never comes with equal
    // widths there, and would need a projection anyway.
    if (in_planes != out_planes || stride != 1) {
      shortcut_ = register_module(
          "conv_shortcut",
          torch::nn::Conv2d(
              torch::nn::Conv2dOptions(in_planes, out_planes, 1).stride(stride).bias(false)));
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const torch::Tensor act = torch::relu(bn1_(x));
    torch::Tensor h = torch::relu(bn2_(conv1_(act)));
    if (dropout_ > 0.0) h = torch::dropout(h, dropout_, is_training());
    h = conv2_(h);
    return h + (shortcut_.is_empty() ? x : shortcut_(act));
  }

 private:
  double dropout_;
  TappedBatchNorm2d bn1_{nullptr};
  torch::nn::Conv2d conv1_{nullptr};
  TappedBatchNorm2d bn2_{nullptr};
  torch::nn::Conv2d conv2_{nullptr};
  torch::nn::Conv2d shortcut_{nullptr};  // empty for the identity
};
TORCH_MODULE(WideBlock);

// One group of n blocks; the stride applies to the first block only.
torch::nn::Sequential MakeGroup(int64_t in_planes, int64_t out_planes, int64_t n, int64_t stride,
                                double dropout, TapList& taps) {
  torch::nn::Sequential group;
  for (int64_t i = 0; i < n; ++i) {
    group->push_back(
        WideBlock(i == 0 ? in_planes : out_planes, out_planes, i == 0 ? stride : 1, dropout, taps));
  }
  return group;
}

void Validate(const WideResNetOptions& o) {
  if (o.depth() < 10 || (o.depth() - 4) % 6 != 0) {
    throw std::invalid_argument("WideResNetOptions.depth must be 6n + 4 with n >= 1, got " +
                                std::to_string(o.depth()));
  }
  if (o.widen_factor() < 1) {
    throw std::invalid_argument("WideResNetOptions.widen_factor must be >= 1, got " +
                                std::to_string(o.widen_factor()));
  }
  if (!(o.dropout() >= 0.0 && o.dropout() < 1.0)) {
    throw std::invalid_argument("WideResNetOptions.dropout must be in [0, 1), got " +
                                std::to_string(o.dropout()));
  }
}

// Reference init: Conv N(0, sqrt(2 / (k * k * out_channels))); BN weight 1,
// bias 0; Linear bias 0 with the default weight init.
void InitWeights(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (const auto& m : model.modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2dImpl>()) {
      const torch::Tensor& w = conv->weight;
      const double n = static_cast<double>(w.size(0) * w.size(2) * w.size(3));
      conv->weight.normal_(0.0, std::sqrt(2.0 / n));
    } else if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      bn->weight.fill_(1.0);
      bn->bias.zero_();
    } else if (auto* linear = m->as<torch::nn::LinearImpl>()) {
      linear->bias.zero_();
    }
  }
}

}  // namespace

WideResNetImpl::WideResNetImpl(const WideResNetOptions& options) : options_(options) {
  Validate(options_);
  const int64_t n = (options_.depth() - 4) / 6;
  const int64_t k = options_.widen_factor();
  const double p = options_.dropout();
  conv1_ = register_module("conv1", Conv3x3(options_.in_channels(), 16, 1));
  block1_ = register_module("block1", MakeGroup(16, 16 * k, n, 1, p, taps_));
  block2_ = register_module("block2", MakeGroup(16 * k, 32 * k, n, 2, p, taps_));
  block3_ = register_module("block3", MakeGroup(32 * k, 64 * k, n, 2, p, taps_));
  bn1_ = register_module("bn1", TappedBatchNorm2d(64 * k));
  taps_.Add(bn1_);
  fc_ = register_module("fc", torch::nn::Linear(64 * k, options_.num_classes()));
  InitWeights(*this);
}

ClassifierOutput WideResNetImpl::ForwardWithTaps(const torch::Tensor& x,
                                                 const TapRequest& request) {
  return RunWithTaps(taps_, request, [&] {
    torch::Tensor h = conv1_(x);
    h = block1_->forward(h);
    h = block2_->forward(h);
    h = block3_->forward(h);
    h = torch::relu(bn1_(h));
    ClassifierOutput out;
    out.features = torch::adaptive_avg_pool2d(h, {1, 1}).flatten(1);
    out.logits = fc_(out.features);
    return out;
  });
}

torch::Tensor WideResNetImpl::Classify(const torch::Tensor& features) { return fc_(features); }

}  // namespace dfkd::worker
