// MosaicKD's patch discriminator (dfkd-methods.md §7.2, §9.5; zju-vipa/MosaicKD
// engine/models/generator.py PatchDiscriminator, output_stride 1):
//
//   Conv4x4 s2 p1 (nc -> ndf, bias) -> LeakyReLU(0.2)
//   -> Conv4x4 s2 p1 (ndf -> 2 ndf, no bias) -> BN(2 ndf) -> LeakyReLU(0.2)
//   -> Conv1x1 (2 ndf -> 1, no bias)
//
// One logit per patch: [B, 1, H/4, W/4] for H, W divisible by 4 (32x32 -> 8x8,
// each logit seeing a 10x10 patch; 28x28 -> 7x7; 8x8 -> 2x2). No sigmoid: the
// losses use BCE with logits. PyTorch's default initialisation, as the
// reference (which sets none).
#ifndef DFKD_WORKER_MODELS_PATCH_DISCRIMINATOR_H_
#define DFKD_WORKER_MODELS_PATCH_DISCRIMINATOR_H_

#include <torch/arg.h>
#include <torch/torch.h>

namespace dfkd::worker {

struct PatchDiscriminatorOptions {
  explicit PatchDiscriminatorOptions(int64_t nc) : nc_(nc) {}
  TORCH_ARG(int64_t, nc);          // input channels
  TORCH_ARG(int64_t, ndf) = 128;   // width of the first convolution
};

class PatchDiscriminatorImpl : public torch::nn::Module {
 public:
  explicit PatchDiscriminatorImpl(PatchDiscriminatorOptions options);
  // Normalised images [B, nc, H, W] -> patch logits [B, 1, H', W'].
  torch::Tensor forward(const torch::Tensor& x);

  PatchDiscriminatorOptions options;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(PatchDiscriminator);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_MODELS_PATCH_DISCRIMINATOR_H_
