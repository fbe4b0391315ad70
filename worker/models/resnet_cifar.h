// CIFAR-style ResNet-18/34 (reference dfkd-methods.md §9.1, the DAFL /
// Fast-Datafree resnet.py): 3x3 stride-1 stem without max-pool, four stages
// of post-activation BasicBlocks with 1x1 conv + BN projection shortcuts,
// global average pooling and one Linear layer. Default PyTorch init.
#ifndef DFKD_WORKER_MODELS_RESNET_CIFAR_H_
#define DFKD_WORKER_MODELS_RESNET_CIFAR_H_

#include <cstdint>

#include <torch/arg.h>
#include <torch/torch.h>

#include "worker/models/batch_norm_tap.h"
#include "worker/models/classifier.h"

namespace dfkd::worker {

struct ResNetCifarOptions {
  ResNetCifarOptions(int64_t depth, int64_t num_classes)
      : depth_(depth), num_classes_(num_classes) {}
  TORCH_ARG(int64_t, depth);  // 18 or 34
  TORCH_ARG(int64_t, num_classes);
  TORCH_ARG(int64_t, in_channels) = 3;
};

class ResNetCifarImpl : public ClassifierImpl {
 public:
  // Throws std::invalid_argument for a depth other than 18 or 34.
  explicit ResNetCifarImpl(const ResNetCifarOptions& options);

  ClassifierOutput ForwardWithTaps(const torch::Tensor& x, const TapRequest& request) override;
  torch::Tensor Classify(const torch::Tensor& features) override;
  int64_t feature_dim() const override { return 512; }
  int64_t num_classes() const override { return options_.num_classes(); }
  const ResNetCifarOptions& options() const { return options_; }

 private:
  ResNetCifarOptions options_;
  TapList taps_;
  torch::nn::Conv2d conv1_{nullptr};
  TappedBatchNorm2d bn1_{nullptr};
  torch::nn::Sequential layer1_{nullptr};
  torch::nn::Sequential layer2_{nullptr};
  torch::nn::Sequential layer3_{nullptr};
  torch::nn::Sequential layer4_{nullptr};
  torch::nn::Linear linear_{nullptr};
};
TORCH_MODULE(ResNetCifar);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_MODELS_RESNET_CIFAR_H_
