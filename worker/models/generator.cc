#include "worker/models/generator.h"

namespace dfkd::worker {

GeneratorImpl::GeneratorImpl(GeneratorOptions opts) : options(opts) {
  TORCH_CHECK(options.img_size() % 4 == 0, "generator: img_size ", options.img_size(),
              " must be divisible by 4");
  const int64_t s = options.img_size() / 4, ngf = options.ngf();
  const int64_t c0 = options.large() ? 4 * ngf : 2 * ngf;
  using torch::nn::Conv2dOptions;
  l1 = register_module("l1", torch::nn::Linear(options.nz(), c0 * s * s));
  bn0 = register_module("bn0", torch::nn::BatchNorm2d(c0));
  conv1 = register_module("conv1",
                          torch::nn::Conv2d(Conv2dOptions(c0, 2 * ngf, 3).padding(1).bias(false)));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(2 * ngf));
  conv2 = register_module("conv2",
                          torch::nn::Conv2d(Conv2dOptions(2 * ngf, ngf, 3).padding(1).bias(false)));
  bn2 = register_module("bn2", torch::nn::BatchNorm2d(ngf));
  conv3 = register_module("conv3", torch::nn::Conv2d(Conv2dOptions(ngf, options.channels(), 3)
                                                         .padding(1)));
}

torch::Tensor GeneratorImpl::forward(const torch::Tensor& z) {
  namespace F = torch::nn::functional;
  const int64_t s = options.img_size() / 4;
  auto up = F::InterpolateFuncOptions().scale_factor(std::vector<double>{2, 2}).mode(torch::kNearest);
  torch::Tensor h = bn0(l1(z).view({z.size(0), -1, s, s}));
  h = F::interpolate(h, up);
  h = torch::leaky_relu(bn1(conv1(h)), 0.2);
  h = F::interpolate(h, up);
  h = torch::leaky_relu(bn2(conv2(h)), 0.2);
  return torch::sigmoid(conv3(h));
}

}  // namespace dfkd::worker
