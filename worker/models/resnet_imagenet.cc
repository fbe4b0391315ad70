#include "worker/models/resnet_imagenet.h"

#include <stdexcept>
#include <string>
#include <vector>

namespace dfkd::worker {
namespace {

torch::nn::Conv2d Conv3x3(int64_t in, int64_t out, int64_t stride) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}

torch::nn::Conv2d Conv1x1(int64_t in, int64_t out, int64_t stride) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1).stride(stride).bias(false));
}

// Conv1x1 + BN projection when the block changes resolution or width; an
// empty Sequential (identity) otherwise. Its BN runs last in the block.
torch::nn::Sequential MakeDownsample(int64_t in, int64_t out, int64_t stride, TapList& taps) {
  if (stride == 1 && in == out) return torch::nn::Sequential(nullptr);
  TappedBatchNorm2d bn(out);
  taps.Add(bn);
  return torch::nn::Sequential(Conv1x1(in, out, stride), bn);
}

// torchvision BasicBlock (expansion 1).
class BasicBlockImpl : public torch::nn::Module {
 public:
  BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride, TapList& taps) {
    conv1_ = register_module("conv1", Conv3x3(in_planes, planes, stride));
    bn1_ = register_module("bn1", TappedBatchNorm2d(planes));
    taps.Add(bn1_);
    conv2_ = register_module("conv2", Conv3x3(planes, planes, 1));
    bn2_ = register_module("bn2", TappedBatchNorm2d(planes));
    taps.Add(bn2_);
    downsample_ = MakeDownsample(in_planes, planes, stride, taps);
    if (!downsample_.is_empty()) register_module("downsample", downsample_);
  }

  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor out = torch::relu(bn1_(conv1_(x)));
    out = bn2_(conv2_(out));
    out = out + (downsample_.is_empty() ? x : downsample_->forward(x));
    return torch::relu(out);
  }

 private:
  torch::nn::Conv2d conv1_{nullptr};
  TappedBatchNorm2d bn1_{nullptr};
  torch::nn::Conv2d conv2_{nullptr};
  TappedBatchNorm2d bn2_{nullptr};
  torch::nn::Sequential downsample_{nullptr};
};
TORCH_MODULE(BasicBlock);

// torchvision Bottleneck (expansion 4, "ResNet v1.5": stride on the 3x3).
class BottleneckImpl : public torch::nn::Module {
 public:
  static constexpr int64_t kExpansion = 4;

  BottleneckImpl(int64_t in_planes, int64_t planes, int64_t stride, TapList& taps) {
    conv1_ = register_module("conv1", Conv1x1(in_planes, planes, 1));
    bn1_ = register_module("bn1", TappedBatchNorm2d(planes));
    taps.Add(bn1_);
    conv2_ = register_module("conv2", Conv3x3(planes, planes, stride));
    bn2_ = register_module("bn2", TappedBatchNorm2d(planes));
    taps.Add(bn2_);
    conv3_ = register_module("conv3", Conv1x1(planes, planes * kExpansion, 1));
    bn3_ = register_module("bn3", TappedBatchNorm2d(planes * kExpansion));
    taps.Add(bn3_);
    downsample_ = MakeDownsample(in_planes, planes * kExpansion, stride, taps);
    if (!downsample_.is_empty()) register_module("downsample", downsample_);
  }

  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor out = torch::relu(bn1_(conv1_(x)));
    out = torch::relu(bn2_(conv2_(out)));
    out = bn3_(conv3_(out));
    out = out + (downsample_.is_empty() ? x : downsample_->forward(x));
    return torch::relu(out);
  }

 private:
  torch::nn::Conv2d conv1_{nullptr};
  TappedBatchNorm2d bn1_{nullptr};
  torch::nn::Conv2d conv2_{nullptr};
  TappedBatchNorm2d bn2_{nullptr};
  torch::nn::Conv2d conv3_{nullptr};
  TappedBatchNorm2d bn3_{nullptr};
  torch::nn::Sequential downsample_{nullptr};
};
TORCH_MODULE(Bottleneck);

// One stage; updates *in_planes to the stage's output width.
torch::nn::Sequential MakeStage(bool bottleneck, int64_t* in_planes, int64_t planes, int64_t blocks,
                                int64_t stride, TapList& taps) {
  torch::nn::Sequential stage;
  for (int64_t i = 0; i < blocks; ++i) {
    const int64_t s = i == 0 ? stride : 1;
    if (bottleneck) {
      stage->push_back(Bottleneck(*in_planes, planes, s, taps));
      *in_planes = planes * BottleneckImpl::kExpansion;
    } else {
      stage->push_back(BasicBlock(*in_planes, planes, s, taps));
      *in_planes = planes;
    }
  }
  return stage;
}

std::vector<int64_t> BlocksPerStage(int64_t depth) {
  if (depth == 18) return {2, 2, 2, 2};
  if (depth == 50) return {3, 4, 6, 3};
  throw std::invalid_argument("ResNetImageNetOptions.depth must be 18 or 50, got " +
                              std::to_string(depth));
}

// torchvision init: Kaiming-normal (fan-out, ReLU gain) convs, BN weight 1
// and bias 0; the fc keeps PyTorch's default init.
void InitWeights(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (const auto& m : model.modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2dImpl>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
    } else if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) {
      bn->weight.fill_(1.0);
      bn->bias.zero_();
    }
  }
}

}  // namespace

ResNetImageNetImpl::ResNetImageNetImpl(const ResNetImageNetOptions& options) : options_(options) {
  const std::vector<int64_t> blocks = BlocksPerStage(options_.depth());
  const bool bottleneck = options_.depth() == 50;
  conv1_ = register_module("conv1",
                           torch::nn::Conv2d(torch::nn::Conv2dOptions(options_.in_channels(), 64, 7)
                                                 .stride(2)
                                                 .padding(3)
                                                 .bias(false)));
  bn1_ = register_module("bn1", TappedBatchNorm2d(64));
  taps_.Add(bn1_);
  int64_t in_planes = 64;
  layer1_ = register_module("layer1", MakeStage(bottleneck, &in_planes, 64, blocks[0], 1, taps_));
  layer2_ = register_module("layer2", MakeStage(bottleneck, &in_planes, 128, blocks[1], 2, taps_));
  layer3_ = register_module("layer3", MakeStage(bottleneck, &in_planes, 256, blocks[2], 2, taps_));
  layer4_ = register_module("layer4", MakeStage(bottleneck, &in_planes, 512, blocks[3], 2, taps_));
  feature_dim_ = in_planes;
  fc_ = register_module("fc", torch::nn::Linear(feature_dim_, options_.num_classes()));
  InitWeights(*this);
}

ClassifierOutput ResNetImageNetImpl::ForwardWithTaps(const torch::Tensor& x,
                                                     const TapRequest& request) {
  return RunWithTaps(taps_, request, [&] {
    torch::Tensor h = torch::relu(bn1_(conv1_(x)));
    h = torch::max_pool2d(h, {3, 3}, {2, 2}, {1, 1});
    h = layer1_->forward(h);
    h = layer2_->forward(h);
    h = layer3_->forward(h);
    h = layer4_->forward(h);
    ClassifierOutput out;
    out.features = torch::adaptive_avg_pool2d(h, {1, 1}).flatten(1);
    out.logits = fc_(out.features);
    return out;
  });
}

torch::Tensor ResNetImageNetImpl::Classify(const torch::Tensor& features) { return fc_(features); }

}  // namespace dfkd::worker
