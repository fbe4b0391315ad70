// VGG-11 with BatchNorm, CIFAR variant (reference dfkd-methods.md §9.2, the
// RepDistiller / Fast-Datafree vgg.py): five conv blocks [64], [128],
// [256, 256], [512, 512], [512, 512] of Conv3x3 (with bias) -> BN -> ReLU,
// max-pools after blocks 0-2 (and 3 for 64-pixel inputs), global average pool
// and Linear(512 -> C). No 4096-wide FC layers, no dropout.
#ifndef DFKD_WORKER_MODELS_VGG_H_
#define DFKD_WORKER_MODELS_VGG_H_

#include <cstdint>

#include <torch/arg.h>
#include <torch/torch.h>

#include "worker/models/batch_norm_tap.h"
#include "worker/models/classifier.h"

namespace dfkd::worker {

struct VggOptions {
  explicit VggOptions(int64_t num_classes) : num_classes_(num_classes) {}
  TORCH_ARG(int64_t, num_classes);
  TORCH_ARG(int64_t, in_channels) = 3;
};

// VGG-11-BN.
class VggImpl : public ClassifierImpl {
 public:
  explicit VggImpl(const VggOptions& options);

  ClassifierOutput ForwardWithTaps(const torch::Tensor& x, const TapRequest& request) override;
  torch::Tensor Classify(const torch::Tensor& features) override;
  int64_t feature_dim() const override { return 512; }
  int64_t num_classes() const override { return options_.num_classes(); }
  const VggOptions& options() const { return options_; }

 private:
  VggOptions options_;
  TapList taps_;
  // Each block ends with a BN; the ReLU after it is applied in forward().
  torch::nn::Sequential block0_{nullptr};
  torch::nn::Sequential block1_{nullptr};
  torch::nn::Sequential block2_{nullptr};
  torch::nn::Sequential block3_{nullptr};
  torch::nn::Sequential block4_{nullptr};
  torch::nn::Linear classifier_{nullptr};
};
TORCH_MODULE(Vgg);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_MODELS_VGG_H_
