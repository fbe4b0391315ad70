#include "worker/models/patch_discriminator.h"

namespace dfkd::worker {

PatchDiscriminatorImpl::PatchDiscriminatorImpl(PatchDiscriminatorOptions opts) : options(opts) {
  TORCH_CHECK(options.nc() > 0 && options.ndf() > 0,
              "patch discriminator: nc and ndf must be positive");
  using torch::nn::Conv2dOptions;
  const int64_t ndf = options.ndf();
  conv1 = register_module(
      "conv1", torch::nn::Conv2d(Conv2dOptions(options.nc(), ndf, 4).stride(2).padding(1)));
  conv2 = register_module(
      "conv2",
      torch::nn::Conv2d(Conv2dOptions(ndf, 2 * ndf, 4).stride(2).padding(1).bias(false)));
  bn = register_module("bn", torch::nn::BatchNorm2d(2 * ndf));
  conv3 = register_module("conv3", torch::nn::Conv2d(Conv2dOptions(2 * ndf, 1, 1).bias(false)));
}

torch::Tensor PatchDiscriminatorImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options.nc(), "patch discriminator: expects [B, ",
              options.nc(), ", H, W] inputs, got ", x.sizes());
  torch::Tensor h = torch::leaky_relu(conv1(x), 0.2);
  h = torch::leaky_relu(bn(conv2(h)), 0.2);
  return conv3(h);
}

}  // namespace dfkd::worker
