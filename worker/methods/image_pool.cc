#include "worker/methods/image_pool.h"

#include <random>

#include <ATen/CPUGeneratorImpl.h>

#include "worker/data/transforms.h"

namespace dfkd::worker {

ImagePool::ImagePool(int64_t max_images, Quantize quantize)
    : max_images_(max_images), quantize_(quantize) {
  TORCH_CHECK(max_images_ > 0, "image pool: pool_max_images must be positive");
}

void ImagePool::Add(const torch::Tensor& images01) {
  TORCH_CHECK(images01.dim() == 4, "image pool: expects [B, C, H, W] images");
  torch::NoGradGuard no_grad;
  torch::Tensor levels = quantize_ == Quantize::kRound
                             ? (images01.detach() * 255.0).round().clamp(0, 255)
                             : (images01.detach().clamp(0, 1) * 255.0).floor();
  torch::Tensor u8 = levels.to(torch::kUInt8).cpu().contiguous();
  if (images_.defined()) {
    TORCH_CHECK(u8.sizes().slice(1).equals(images_.sizes().slice(1)),
                "image pool: images of shape ", u8.sizes(), " do not match the pool's ",
                images_.sizes());
  }
  images_ = images_.defined() ? torch::cat({images_, u8}, 0) : u8;
  const int64_t n = images_.size(0);
  if (n > max_images_) images_ = images_.narrow(0, n - max_images_, max_images_).clone();
}

torch::Tensor ImagePool::Sample(int64_t n, uint64_t key, int64_t crop_padding,
                                bool flip) const {
  TORCH_CHECK(size() > 0, "image pool: Sample() before any images were added");
  TORCH_CHECK(n > 0, "image pool: batch size must be positive");
  at::Generator gen = at::detail::createCPUGenerator(key);
  std::mt19937_64 rng(key);
  torch::Tensor idx = torch::randint(0, size(), {n}, gen, torch::kLong);
  return RandomCropFlip(images_.index_select(0, idx), crop_padding, flip, rng);
}

void ImagePool::Save(torch::serialize::OutputArchive& archive, const std::string& key) const {
  if (images_.defined()) archive.write(key, images_);
}

void ImagePool::Load(torch::serialize::InputArchive& archive, const std::string& key) {
  torch::Tensor images;
  images_ = archive.try_read(key, images) ? images.cpu() : torch::Tensor();  // kept on the CPU
}

torch::Tensor SampleStudentBatch(const ImagePool& pool, int64_t batch_size, uint64_t key,
                                 int64_t crop_padding, const Normalization& norm,
                                 torch::Device device, const char* method) {
  TORCH_CHECK(pool.size() > 0, method, ": Sample() before any Synthesize()");
  TORCH_CHECK(batch_size > 0, method, ": batch_size must be positive");
  torch::Tensor images = pool.Sample(batch_size, key, crop_padding, /*flip=*/true);
  return Normalize(images, norm).to(device);
}

}  // namespace dfkd::worker
