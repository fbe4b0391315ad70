// The classifier interface every teacher and student implements.
//
// LibTorch's C++ modules have no forward hooks, so everything a DFKD method or
// KDCI reads from a network is an explicit output: logits, the penultimate
// features (input of the last linear layer) and, on request, the batch
// statistics each BatchNorm layer saw together with its running statistics
// (DeepInversion's and CMI's BN-statistics loss) and the per-sample spatial
// means of every BatchNorm layer's input (CMI's InstanceMeanHook features).
#ifndef DFKD_WORKER_MODELS_CLASSIFIER_H_
#define DFKD_WORKER_MODELS_CLASSIFIER_H_

#include <memory>
#include <vector>

#include <torch/torch.h>

namespace dfkd::worker {

// Where a module's parameters live (the CPU for a module without any): the
// device every method, the evaluator and the sources follow.
inline torch::Device DeviceOf(const torch::nn::Module& module) {
  const std::vector<torch::Tensor> params = module.parameters();
  return params.empty() ? torch::Device(torch::kCPU) : params.front().device();
}

// Which optional outputs a caller wants; taps cost memory, so they are opt-in.
struct TapRequest {
  bool bn_statistics = false;
  bool instance_means = false;  // fills ClassifierOutput::bn_instance_means
};

// What one BatchNorm layer saw in this forward pass.
struct BatchNormTap {
  torch::Tensor mean;          // [C] mean of the layer's input over (N, H, W)
  torch::Tensor variance;      // [C] biased variance over (N, H, W)
  torch::Tensor running_mean;  // [C] the layer's running statistics (no grad)
  torch::Tensor running_var;   // [C]
};

struct ClassifierOutput {
  torch::Tensor logits;               // [N, num_classes]
  torch::Tensor features;             // [N, feature_dim]
  std::vector<BatchNormTap> bn_taps;  // in forward order; empty unless requested
  // One [N, C_l] per BatchNorm layer, in forward order: the per-sample mean
  // over (H, W) of the layer's input, autograd intact (CMI's contrastive
  // features). Empty unless TapRequest::instance_means.
  std::vector<torch::Tensor> bn_instance_means;
};

// A classifier usable as teacher or student. Not thread-safe: a forward pass
// with taps records statistics in the model's TappedBatchNorm2d layers.
class ClassifierImpl : public torch::nn::Module {
 public:
  virtual ClassifierOutput ForwardWithTaps(const torch::Tensor& x,
                                           const TapRequest& taps) = 0;
  // Applies only the final layer to penultimate features.
  virtual torch::Tensor Classify(const torch::Tensor& features) = 0;
  virtual int64_t feature_dim() const = 0;
  virtual int64_t num_classes() const = 0;

  torch::Tensor forward(const torch::Tensor& x) {
    return ForwardWithTaps(x, TapRequest{}).logits;
  }
};
using Classifier = std::shared_ptr<ClassifierImpl>;

// Number of trainable parameters (what the reference tables count).
int64_t CountParameters(torch::nn::Module& module);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_MODELS_CLASSIFIER_H_
