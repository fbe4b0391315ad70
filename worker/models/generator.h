// Generators of the generation-based DFKD methods (dfkd-methods.md §9.5).
//
//   G-A  Generator(nz, ngf=64): Linear(nz -> 2ngf*s*s) -> BN -> Up x2 ->
//        Conv3x3(2ngf->2ngf) -> BN -> LReLU(0.2) -> Up x2 -> Conv3x3(2ngf->ngf)
//        -> BN -> LReLU(0.2) -> Conv3x3(ngf->C, bias) -> Sigmoid
//        (Fast, CMI; Fast-Datafree's DAFL with nz = 512), s = img_size / 4.
//   G-B  the same with 4ngf channels after the Linear (CMI-repo DAFL, MosaicKD's
//        G-C with nz = 100): `large(true)`.
// Output: images in [0, 1], [B, C, img_size, img_size]; callers normalise.
#ifndef DFKD_WORKER_MODELS_GENERATOR_H_
#define DFKD_WORKER_MODELS_GENERATOR_H_

#include <torch/arg.h>
#include <torch/torch.h>

namespace dfkd::worker {

struct GeneratorOptions {
  explicit GeneratorOptions(int64_t nz) : nz_(nz) {}
  TORCH_ARG(int64_t, nz);
  TORCH_ARG(int64_t, ngf) = 64;
  TORCH_ARG(int64_t, img_size) = 32;    // must be divisible by 4
  TORCH_ARG(int64_t, channels) = 3;
  TORCH_ARG(bool, large) = false;       // G-B: 4 ngf channels after the Linear
};

class GeneratorImpl : public torch::nn::Module {
 public:
  explicit GeneratorImpl(GeneratorOptions options);
  torch::Tensor forward(const torch::Tensor& z);

  GeneratorOptions options;
  torch::nn::Linear l1{nullptr};
  torch::nn::BatchNorm2d bn0{nullptr}, bn1{nullptr}, bn2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
};
TORCH_MODULE(Generator);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_MODELS_GENERATOR_H_
