// torchvision MobileNetV2 (reference dfkd-methods.md §9.4): stride-2 3x3 stem
// (32 channels at width 1.0), 17 inverted-residual blocks (t, c, n, s) =
// (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2)
// (6,320,1,1), 1x1 conv to 1280, ReLU6 throughout, global average pool,
// Dropout(0.2) and Linear. Widths are scaled by width_mult and rounded as
// torchvision's _make_divisible(v, 8) does. torchvision's init.
#ifndef DFKD_WORKER_MODELS_MOBILENET_V2_H_
#define DFKD_WORKER_MODELS_MOBILENET_V2_H_

#include <cstdint>

#include <torch/arg.h>
#include <torch/torch.h>

#include "worker/models/batch_norm_tap.h"
#include "worker/models/classifier.h"

namespace dfkd::worker {

struct MobileNetV2Options {
  TORCH_ARG(int64_t, num_classes) = 1000;
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(double, width_mult) = 1.0;
};

// torchvision's _make_divisible: v rounded to the nearest multiple of
// divisor (at least divisor), never more than 10% below v.
int64_t MakeDivisible(double v, int64_t divisor);

class MobileNetV2Impl : public ClassifierImpl {
 public:
  // Throws std::invalid_argument unless width_mult > 0.
  explicit MobileNetV2Impl(const MobileNetV2Options& options);

  // features are the pooled 1280-d activations before the classifier's
  // Dropout (identical to the Linear's input in eval mode).
  ClassifierOutput ForwardWithTaps(const torch::Tensor& x, const TapRequest& request) override;
  torch::Tensor Classify(const torch::Tensor& features) override;
  int64_t feature_dim() const override { return feature_dim_; }
  int64_t num_classes() const override { return options_.num_classes(); }
  const MobileNetV2Options& options() const { return options_; }

 private:
  MobileNetV2Options options_;
  int64_t feature_dim_ = 0;  // last_channel
  TapList taps_;
  torch::nn::Sequential features_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
  torch::nn::Linear classifier_{nullptr};
};
TORCH_MODULE(MobileNetV2);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_MODELS_MOBILENET_V2_H_
