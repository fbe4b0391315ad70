#include "worker/models/resnet_cifar.h"

#include <stdexcept>
#include <string>
#include <vector>

namespace dfkd::worker {
namespace {

torch::nn::Conv2d Conv3x3(int64_t in, int64_t out, int64_t stride) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}

// Conv3x3 -> BN -> ReLU -> Conv3x3 -> BN -> add shortcut -> ReLU. The
// shortcut is the identity or Conv1x1 + BN when the shape changes.
class BasicBlockImpl : public torch::nn::Module {
 public:
  BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride, TapList& taps) {
    conv1_ = register_module("conv1", Conv3x3(in_planes, planes, stride));
    bn1_ = register_module("bn1", TappedBatchNorm2d(planes));
    taps.Add(bn1_);
    conv2_ = register_module("conv2", Conv3x3(planes, planes, 1));
    bn2_ = register_module("bn2", TappedBatchNorm2d(planes));
    taps.Add(bn2_);
    if (stride != 1 || in_planes != planes) {
      TappedBatchNorm2d bn(planes);
      taps.Add(bn);  // runs after bn2 in forward()
      shortcut_ = register_module(
          "shortcut",
          torch::nn::Sequential(
              torch::nn::Conv2d(
                  torch::nn::Conv2dOptions(in_planes, planes, 1).stride(stride).bias(false)),
              bn));
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor out = torch::relu(bn1_(conv1_(x)));
    out = bn2_(conv2_(out));
    out = out + (shortcut_.is_empty() ? x : shortcut_->forward(x));
    return torch::relu(out);
  }

 private:
  torch::nn::Conv2d conv1_{nullptr};
  TappedBatchNorm2d bn1_{nullptr};
  torch::nn::Conv2d conv2_{nullptr};
  TappedBatchNorm2d bn2_{nullptr};
  torch::nn::Sequential shortcut_{nullptr};  // empty for the identity
};
TORCH_MODULE(BasicBlock);

// One stage; updates *in_planes to the stage's output width.
torch::nn::Sequential MakeStage(int64_t* in_planes, int64_t planes, int64_t blocks, int64_t stride,
                                TapList& taps) {
  torch::nn::Sequential stage;
  for (int64_t i = 0; i < blocks; ++i) {
    stage->push_back(BasicBlock(*in_planes, planes, i == 0 ? stride : 1, taps));
    *in_planes = planes;
  }
  return stage;
}

std::vector<int64_t> BlocksPerStage(int64_t depth) {
  if (depth == 18) return {2, 2, 2, 2};
  if (depth == 34) return {3, 4, 6, 3};
  throw std::invalid_argument("ResNetCifarOptions.depth must be 18 or 34, got " +
                              std::to_string(depth));
}

}  // namespace

ResNetCifarImpl::ResNetCifarImpl(const ResNetCifarOptions& options) : options_(options) {
  const std::vector<int64_t> blocks = BlocksPerStage(options_.depth());
  conv1_ = register_module("conv1", Conv3x3(options_.in_channels(), 64, 1));
  bn1_ = register_module("bn1", TappedBatchNorm2d(64));
  taps_.Add(bn1_);
  int64_t in_planes = 64;
  layer1_ = register_module("layer1", MakeStage(&in_planes, 64, blocks[0], 1, taps_));
  layer2_ = register_module("layer2", MakeStage(&in_planes, 128, blocks[1], 2, taps_));
  layer3_ = register_module("layer3", MakeStage(&in_planes, 256, blocks[2], 2, taps_));
  layer4_ = register_module("layer4", MakeStage(&in_planes, 512, blocks[3], 2, taps_));
  linear_ = register_module("linear", torch::nn::Linear(512, options_.num_classes()));
}

ClassifierOutput ResNetCifarImpl::ForwardWithTaps(const torch::Tensor& x,
                                                  const TapRequest& request) {
  return RunWithTaps(taps_, request, [&] {
    torch::Tensor h = torch::relu(bn1_(conv1_(x)));
    h = layer1_->forward(h);
    h = layer2_->forward(h);
    h = layer3_->forward(h);
    h = layer4_->forward(h);
    ClassifierOutput out;
    out.features = torch::adaptive_avg_pool2d(h, {1, 1}).flatten(1);
    out.logits = linear_(out.features);
    return out;
  });
}

torch::Tensor ResNetCifarImpl::Classify(const torch::Tensor& features) { return linear_(features); }

}  // namespace dfkd::worker
