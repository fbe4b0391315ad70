// Wide ResNet WRN-depth-k (reference dfkd-methods.md §9.3, the ZSKT /
// Fast-Datafree wresnet.py): 3x3 stem conv, three groups of pre-activation
// BasicBlocks (widths 16k, 32k, 64k) whose projection shortcuts share the
// block's pre-activation, then BN -> ReLU -> global average pool -> Linear.
#ifndef DFKD_WORKER_MODELS_WIDE_RESNET_H_
#define DFKD_WORKER_MODELS_WIDE_RESNET_H_

#include <cstdint>

#include <torch/arg.h>
#include <torch/torch.h>

#include "worker/models/batch_norm_tap.h"
#include "worker/models/classifier.h"

namespace dfkd::worker {

struct WideResNetOptions {
  WideResNetOptions(int64_t depth, int64_t num_classes)
      : depth_(depth), num_classes_(num_classes) {}
  TORCH_ARG(int64_t, depth);  // 6n + 4: 16 or 40 in the reference
  TORCH_ARG(int64_t, num_classes);
  TORCH_ARG(int64_t, widen_factor) = 1;
  TORCH_ARG(double, dropout) = 0.0;  // between the two convs of a block
  TORCH_ARG(int64_t, in_channels) = 3;
};

class WideResNetImpl : public ClassifierImpl {
 public:
  // Throws std::invalid_argument unless depth = 6n + 4 (n >= 1),
  // widen_factor >= 1 and 0 <= dropout < 1.
  explicit WideResNetImpl(const WideResNetOptions& options);

  ClassifierOutput ForwardWithTaps(const torch::Tensor& x, const TapRequest& request) override;
  torch::Tensor Classify(const torch::Tensor& features) override;
  int64_t feature_dim() const override { return 64 * options_.widen_factor(); }
  int64_t num_classes() const override { return options_.num_classes(); }
  const WideResNetOptions& options() const { return options_; }

 private:
  WideResNetOptions options_;
  TapList taps_;
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::Sequential block1_{nullptr};
  torch::nn::Sequential block2_{nullptr};
  torch::nn::Sequential block3_{nullptr};
  TappedBatchNorm2d bn1_{nullptr};
  torch::nn::Linear fc_{nullptr};
};
TORCH_MODULE(WideResNet);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_MODELS_WIDE_RESNET_H_
