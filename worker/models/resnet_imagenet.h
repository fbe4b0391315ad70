// torchvision-style ResNet-18 (BasicBlock) and ResNet-50 (Bottleneck, stride
// on the 3x3 conv) for ImageNet-sized inputs (reference dfkd-methods.md §9.4):
// 7x7 stride-2 stem conv, BN, ReLU, 3x3 stride-2 max-pool, four stages
// (64, 128, 256, 512 planes), global average pool and fc. torchvision's init
// (Kaiming-normal fan-out convs, BN weight 1 / bias 0, default fc).
#ifndef DFKD_WORKER_MODELS_RESNET_IMAGENET_H_
#define DFKD_WORKER_MODELS_RESNET_IMAGENET_H_

#include <cstdint>

#include <torch/arg.h>
#include <torch/torch.h>

#include "worker/models/batch_norm_tap.h"
#include "worker/models/classifier.h"

namespace dfkd::worker {

struct ResNetImageNetOptions {
  explicit ResNetImageNetOptions(int64_t depth) : depth_(depth) {}
  TORCH_ARG(int64_t, depth);  // 18 or 50
  TORCH_ARG(int64_t, num_classes) = 1000;
  TORCH_ARG(int64_t, in_channels) = 3;
};

class ResNetImageNetImpl : public ClassifierImpl {
 public:
  // Throws std::invalid_argument for a depth other than 18 or 50.
  explicit ResNetImageNetImpl(const ResNetImageNetOptions& options);

  ClassifierOutput ForwardWithTaps(const torch::Tensor& x, const TapRequest& request) override;
  torch::Tensor Classify(const torch::Tensor& features) override;
  int64_t feature_dim() const override { return feature_dim_; }
  int64_t num_classes() const override { return options_.num_classes(); }
  const ResNetImageNetOptions& options() const { return options_; }

 private:
  ResNetImageNetOptions options_;
  int64_t feature_dim_ = 0;  // 512 * block expansion
  TapList taps_;
  torch::nn::Conv2d conv1_{nullptr};
  TappedBatchNorm2d bn1_{nullptr};
  torch::nn::Sequential layer1_{nullptr};
  torch::nn::Sequential layer2_{nullptr};
  torch::nn::Sequential layer3_{nullptr};
  torch::nn::Sequential layer4_{nullptr};
  torch::nn::Linear fc_{nullptr};
};
TORCH_MODULE(ResNetImageNet);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_MODELS_RESNET_IMAGENET_H_
