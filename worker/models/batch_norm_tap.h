// BatchNorm2d that can record the batch statistics of its input.
//
// A model registers its BatchNorm layers as TappedBatchNorm2d and keeps them in
// forward order (TapList). ForwardWithTaps arms every layer, runs the forward
// pass, and collects one BatchNormTap per layer and/or, when asked, one
// per-sample spatial mean [N, C] of each layer's input. Both are computed
// from the layer's input with autograd intact, so losses on them reach the
// input (DeepInversion and CMI optimise images through them).
#ifndef DFKD_WORKER_MODELS_BATCH_NORM_TAP_H_
#define DFKD_WORKER_MODELS_BATCH_NORM_TAP_H_

#include <vector>

#include <torch/torch.h>

#include "worker/models/classifier.h"

namespace dfkd::worker {

class TappedBatchNorm2dImpl : public torch::nn::Cloneable<TappedBatchNorm2dImpl> {
 public:
  explicit TappedBatchNorm2dImpl(int64_t channels);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);

  torch::nn::BatchNorm2d bn{nullptr};
  bool capture = false;   // record statistics on the next forward passes
  BatchNormTap last;      // set when capture is true
  bool capture_instance_means = false;  // record x.mean({2, 3}) on the next passes
  torch::Tensor last_instance_mean;     // [N, C]; set when capture_instance_means
  int64_t channels;
};
TORCH_MODULE(TappedBatchNorm2d);

// The BatchNorm layers of a model in forward order.
class TapList {
 public:
  void Add(const TappedBatchNorm2d& bn) { layers_.push_back(bn); }
  void Arm(bool on);
  std::vector<BatchNormTap> Collect();
  void ArmInstanceMeans(bool on);
  std::vector<torch::Tensor> CollectInstanceMeans();
  size_t size() const { return layers_.size(); }

 private:
  std::vector<TappedBatchNorm2d> layers_;
};

// Runs `forward` with BN taps armed when requested and fills out.bn_taps
// and/or out.bn_instance_means.
template <typename Fn>
ClassifierOutput RunWithTaps(TapList& taps, const TapRequest& request, Fn forward) {
  if (!request.bn_statistics && !request.instance_means) return forward();
  taps.Arm(request.bn_statistics);
  taps.ArmInstanceMeans(request.instance_means);
  ClassifierOutput out = forward();
  if (request.bn_statistics) out.bn_taps = taps.Collect();
  if (request.instance_means) out.bn_instance_means = taps.CollectInstanceMeans();
  taps.Arm(false);
  taps.ArmInstanceMeans(false);
  return out;
}

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_MODELS_BATCH_NORM_TAP_H_
