#include "worker/data/transforms.h"

#include <stdexcept>

namespace dfkd::worker {

Normalization NormalizationFor(const std::string& dataset) {
  if (dataset == "fashion_mnist") return {{0.2860f}, {0.3530f}};
  if (dataset == "cifar10") {
    return {{0.4914f, 0.4822f, 0.4465f}, {0.2023f, 0.1994f, 0.2010f}};
  }
  if (dataset == "cifar100") {
    return {{0.5071f, 0.4867f, 0.4408f}, {0.2675f, 0.2565f, 0.2761f}};
  }
  if (dataset == "imagenet" || dataset == "image_folder") {
    return {{0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
  }
  if (dataset == "tiny_imagenet") return {{0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};
  throw std::invalid_argument("no normalisation constants for data set '" +
                              dataset + "'");
}

namespace {
torch::Tensor Shaped(const std::vector<float>& v, int64_t channels) {
  TORCH_CHECK(static_cast<int64_t>(v.size()) == channels ||
                  v.size() == 1,
              "normalisation has ", v.size(), " channels, images have ", channels);
  torch::Tensor t = torch::tensor(v, torch::kFloat32).view({1, -1, 1, 1});
  return v.size() == 1 ? t.expand({1, channels, 1, 1}) : t;
}
}  // namespace

torch::Tensor Normalize(const torch::Tensor& images_u8, const Normalization& norm) {
  TORCH_CHECK(images_u8.dim() == 4, "Normalize expects [B, C, H, W]");
  int64_t c = images_u8.size(1);
  torch::Tensor mean = Shaped(norm.mean, c).to(images_u8.device());
  torch::Tensor stdv = Shaped(norm.std, c).to(images_u8.device());
  // One fused pass: x * (1 / (255 std)) - mean / std.
  torch::Tensor scale = 1.0f / (255.0f * stdv);
  torch::Tensor shift = -mean / stdv;
  return images_u8.to(torch::kFloat32).mul_(scale).add_(shift);
}

torch::Tensor NormalizeUnit(const torch::Tensor& images01, const Normalization& norm) {
  int64_t c = images01.size(1);
  torch::Tensor mean = Shaped(norm.mean, c).to(images01.device());
  torch::Tensor stdv = Shaped(norm.std, c).to(images01.device());
  return (images01 - mean) / stdv;
}

torch::Tensor Denormalize(const torch::Tensor& images, const Normalization& norm) {
  int64_t c = images.size(1);
  torch::Tensor mean = Shaped(norm.mean, c).to(images.device());
  torch::Tensor stdv = Shaped(norm.std, c).to(images.device());
  return images * stdv + mean;
}

torch::Tensor RandomCropFlip(const torch::Tensor& images_u8, int64_t padding,
                             bool flip, std::mt19937_64& rng) {
  TORCH_CHECK(images_u8.dim() == 4 && images_u8.scalar_type() == torch::kUInt8,
              "RandomCropFlip expects uint8 [B, C, H, W]");
  if (padding == 0 && !flip) return images_u8;
  const int64_t b = images_u8.size(0), h = images_u8.size(2), w = images_u8.size(3);
  torch::Tensor src = padding > 0
                          ? torch::constant_pad_nd(images_u8,
                                                   {padding, padding, padding, padding}, 0)
                          : images_u8;
  torch::Tensor out = torch::empty_like(images_u8);
  std::uniform_int_distribution<int64_t> offset(0, 2 * padding);
  std::bernoulli_distribution coin(0.5);
  for (int64_t i = 0; i < b; ++i) {
    // Draw in a fixed order so the stream of random numbers is stable.
    int64_t dy = offset(rng), dx = offset(rng);
    bool do_flip = flip && coin(rng);
    torch::Tensor crop = src[i].narrow(1, dy, h).narrow(2, dx, w);
    out[i].copy_(do_flip ? crop.flip({2}) : crop);
  }
  return out;
}

}  // namespace dfkd::worker
