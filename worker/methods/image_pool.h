// ImagePool: the growing pool of synthesized images that inversion-style
// methods (DeepInv, Fast; later CMI) keep and the student samples from
// (Fast-Datafree's datafree/utils ImagePool + DataIter, dfkd-methods.md §2.4).
//
// The reference writes every kept batch as 8-bit PNGs and rebuilds a shuffled
// loader over all of them; here the images live in memory as uint8
// [N, C, H, W] (the same quantisation, a quarter of float's memory), bounded
// by `max_images` (the oldest are dropped first). Sample() draws with
// replacement from generators keyed by the caller's key, then applies the
// data set's train transform (random crop with zero padding + horizontal
// flip), so a resumed run draws exactly the batches an uninterrupted one
// would. Not thread-safe.
#ifndef DFKD_WORKER_METHODS_IMAGE_POOL_H_
#define DFKD_WORKER_METHODS_IMAGE_POOL_H_

#include <cstdint>
#include <string>

#include <torch/torch.h>

#include "worker/data/transforms.h"

namespace dfkd::worker {

class ImagePool {
 public:
  // How [0, 1] floats become uint8 levels.
  enum class Quantize {
    kRound,     // round(255 x): the nearest level
    kTruncate,  // floor(255 x): what the reference's save_image_batch does
                // ((x.clamp(0, 1) * 255).astype(uint8))
  };

  ImagePool(int64_t max_images, Quantize quantize);

  // Appends float [B, C, H, W] images in pixel units (values outside [0, 1]
  // are clamped), then drops the oldest beyond max_images.
  void Add(const torch::Tensor& images01);
  // `n` images drawn with replacement, each randomly cropped (zero padding
  // `crop_padding`) and, when `flip`, flipped with p = 0.5: uint8 on the CPU.
  // Every draw comes from generators seeded with `key`.
  torch::Tensor Sample(int64_t n, uint64_t key, int64_t crop_padding, bool flip) const;

  // uint8 [N, C, H, W], oldest first; undefined while empty.
  const torch::Tensor& images() const { return images_; }
  int64_t size() const { return images_.defined() ? images_.size(0) : 0; }
  int64_t max_images() const { return max_images_; }

  // Written under `key` when non-empty; Load() restores an empty pool when
  // the archive has no such key.
  void Save(torch::serialize::OutputArchive& archive, const std::string& key) const;
  void Load(torch::serialize::InputArchive& archive, const std::string& key);

 private:
  int64_t max_images_;
  Quantize quantize_;
  torch::Tensor images_;  // uint8, CPU
};

// The student batch of an inversion method (DeepInv, Fast, CMI): `batch_size`
// pool images drawn with `key`, cropped (zero padding `crop_padding`) and
// flipped, normalised with `norm`, on `device`. `method` names the caller in
// the error for an empty pool.
torch::Tensor SampleStudentBatch(const ImagePool& pool, int64_t batch_size, uint64_t key,
                                 int64_t crop_padding, const Normalization& norm,
                                 torch::Device device, const char* method);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_METHODS_IMAGE_POOL_H_
