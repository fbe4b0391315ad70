#include "worker/models/batch_norm_tap.h"

namespace dfkd::worker {

TappedBatchNorm2dImpl::TappedBatchNorm2dImpl(int64_t channels_in)
    : channels(channels_in) {
  reset();
}

void TappedBatchNorm2dImpl::reset() {
  bn = register_module("bn", torch::nn::BatchNorm2d(channels));
}

torch::Tensor TappedBatchNorm2dImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = bn->forward(x);
  if (capture) {
    // Biased variance over (N, H, W), as the reference DeepInversionHook does;
    // running statistics read after the pass, as a forward hook sees them.
    last.mean = x.mean({0, 2, 3});
    last.variance = x.var({0, 2, 3}, /*unbiased=*/false);
    last.running_mean = bn->running_mean.detach().clone();
    last.running_var = bn->running_var.detach().clone();
  }
  if (capture_instance_means) {
    // CMI's InstanceMeanHook: the per-sample spatial mean of the input.
    last_instance_mean = x.mean({2, 3});
  }
  return y;
}

void TapList::Arm(bool on) {
  for (auto& l : layers_) l->capture = on;
}

std::vector<BatchNormTap> TapList::Collect() {
  std::vector<BatchNormTap> out;
  out.reserve(layers_.size());
  for (auto& l : layers_) {
    out.push_back(l->last);
    l->last = BatchNormTap{};
  }
  return out;
}

void TapList::ArmInstanceMeans(bool on) {
  for (auto& l : layers_) l->capture_instance_means = on;
}

std::vector<torch::Tensor> TapList::CollectInstanceMeans() {
  std::vector<torch::Tensor> out;
  out.reserve(layers_.size());
  for (auto& l : layers_) {
    out.push_back(l->last_instance_mean);
    l->last_instance_mean = torch::Tensor();
  }
  return out;
}

int64_t CountParameters(torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) {
    if (p.requires_grad()) n += p.numel();
  }
  return n;
}

}  // namespace dfkd::worker
