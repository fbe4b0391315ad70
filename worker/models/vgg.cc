#include "worker/models/vgg.h"

#include <cmath>
#include <vector>

namespace dfkd::worker {
namespace {

// Conv3x3 -> BN -> ReLU per width, without the final ReLU. Updates
// *in_channels to the block's output width.
torch::nn::Sequential MakeBlock(const std::vector<int64_t>& widths, int64_t* in_channels,
                                TapList& taps) {
  torch::nn::Sequential block;
  for (size_t i = 0; i < widths.size(); ++i) {
    const int64_t width = widths[i];
    block->push_back(
        torch::nn::Conv2d(torch::nn::Conv2dOptions(*in_channels, width, 3).padding(1).bias(true)));
    TappedBatchNorm2d bn(width);
    taps.Add(bn);
    block->push_back(bn);
    if (i + 1 < widths.size()) block->push_back(torch::nn::ReLU());
    *in_channels = width;
  }
  return block;
}

// Reference init: Conv N(0, sqrt(2 / (k * k * out_channels))), bias 0; BN
// weight 1, bias 0; Linear N(0, 0.01), bias 0.
void InitWeights(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (const auto& m : model.modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2dImpl>()) {
      const torch::Tensor& w = conv->weight;
      const double n = static_cast<double>(w.size(0) * w.size(2) * w.size(3));
      conv->weight.normal_(0.0, std::sqrt(2.0 / n));
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

VggImpl::VggImpl(const VggOptions& options) : options_(options) {
  int64_t in_channels = options_.in_channels();
  block0_ = register_module("block0", MakeBlock({64}, &in_channels, taps_));
  block1_ = register_module("block1", MakeBlock({128}, &in_channels, taps_));
  block2_ = register_module("block2", MakeBlock({256, 256}, &in_channels, taps_));
  block3_ = register_module("block3", MakeBlock({512, 512}, &in_channels, taps_));
  block4_ = register_module("block4", MakeBlock({512, 512}, &in_channels, taps_));
  classifier_ = register_module("classifier", torch::nn::Linear(512, options_.num_classes()));
  InitWeights(*this);
}

ClassifierOutput VggImpl::ForwardWithTaps(const torch::Tensor& x, const TapRequest& request) {
  return RunWithTaps(taps_, request, [&] {
    // The reference pools after block 3 only for 64-pixel (Tiny-ImageNet)
    // inputs; CIFAR runs blocks 3 and 4 both at 4x4.
    const bool pool3 = x.size(2) == 64;
    torch::Tensor h = torch::relu(block0_->forward(x));
    h = torch::max_pool2d(h, {2, 2}, {2, 2});
    h = torch::relu(block1_->forward(h));
    h = torch::max_pool2d(h, {2, 2}, {2, 2});
    h = torch::relu(block2_->forward(h));
    h = torch::max_pool2d(h, {2, 2}, {2, 2});
    h = torch::relu(block3_->forward(h));
    if (pool3) h = torch::max_pool2d(h, {2, 2}, {2, 2});
    h = torch::relu(block4_->forward(h));
    ClassifierOutput out;
    out.features = torch::adaptive_avg_pool2d(h, {1, 1}).flatten(1);
    out.logits = classifier_(out.features);
    return out;
  });
}

torch::Tensor VggImpl::Classify(const torch::Tensor& features) { return classifier_(features); }

}  // namespace dfkd::worker
