// Batch transforms: normalisation constants per data set, random crop with
// zero padding and horizontal flip (the CIFAR train transform of the DFKD
// references), and uint8 -> normalised float.
//
// Every random choice comes from the std::mt19937_64 the caller passes, so a
// batch is a pure function of (data, seed): a resumed run sees the same
// augmented batches as an uninterrupted one.
#ifndef DFKD_WORKER_DATA_TRANSFORMS_H_
#define DFKD_WORKER_DATA_TRANSFORMS_H_

#include <random>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace dfkd::worker {

struct Normalization {
  std::vector<float> mean;  // per channel, in [0, 1] pixel units
  std::vector<float> std;
};

// fashion_mnist, cifar10, cifar100, imagenet, tiny_imagenet (dfkd-methods.md
// §2.1; Fashion-MNIST's are its training-set statistics). Throws
// std::invalid_argument for an unknown name.
Normalization NormalizationFor(const std::string& dataset);

// uint8 [B, C, H, W] -> float [B, C, H, W], (x/255 - mean) / std.
torch::Tensor Normalize(const torch::Tensor& images_u8, const Normalization& norm);

// Float images in [0, 1] (a generator's output) -> normalised, keeping
// autograd (gradients flow back into the generator).
torch::Tensor NormalizeUnit(const torch::Tensor& images01, const Normalization& norm);

// The inverse of Normalize, into [0, 1].
torch::Tensor Denormalize(const torch::Tensor& images, const Normalization& norm);

// RandomCrop(H, padding) with zero fill, then RandomHorizontalFlip(0.5) when
// `flip`, per sample, on uint8 [B, C, H, W]. padding 0 and !flip is identity.
torch::Tensor RandomCropFlip(const torch::Tensor& images_u8, int64_t padding,
                             bool flip, std::mt19937_64& rng);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_DATA_TRANSFORMS_H_
