// What the pool methods (MosaicKD, DFND) share: an unlabeled uint8 image pool
// (the `dfkd pool` file, which the caller loads with LoadUnlabeledPool from
// worker/data/unlabeled_pool.h), the subset of it a method selected, keyed
// batch draws with the train transform, and one chunked teacher pass that
// scores every pool image.
//
// The pool stays one uint8 [N, C, H, W] CPU tensor (600k CIFAR-sized images
// are 1.8 GB); a selection is a list of indices into it, never a copy.
// Sample() draws exactly as ImagePool::Sample does (with replacement, from
// generators seeded with the caller's key, then random crop with zero padding
// + horizontal flip), so a resumed run draws what an uninterrupted one would.
// Not thread-safe.
#ifndef DFKD_WORKER_METHODS_UNLABELED_SAMPLER_H_
#define DFKD_WORKER_METHODS_UNLABELED_SAMPLER_H_

#include <cstdint>
#include <functional>

#include <torch/torch.h>

#include "worker/data/transforms.h"
#include "worker/dist/communicator.h"
#include "worker/models/classifier.h"

namespace dfkd::worker {

class UnlabeledSampler {
 public:
  // `images`: uint8 [N, C, H, W] on the CPU, N > 0.
  explicit UnlabeledSampler(torch::Tensor images);

  // Restricts draws and chunks to `indices` (int64, into the whole pool,
  // each in [0, N)); an undefined tensor selects the whole pool again.
  void Select(torch::Tensor indices);
  // The selected indices; undefined while the whole pool is selected.
  const torch::Tensor& selection() const { return selection_; }
  int64_t size() const;  // images selected
  const torch::Tensor& images() const { return images_; }  // the whole pool

  // `n` selected images drawn with replacement, each randomly cropped (zero
  // padding `crop_padding`) and, when `flip`, flipped with p = 0.5: uint8 on
  // the CPU. Every draw comes from generators seeded with `key`.
  torch::Tensor Sample(int64_t n, uint64_t key, int64_t crop_padding, bool flip) const;
  // The selected images in order, at most `chunk` at a time (uint8, CPU).
  void ForEachChunk(int64_t chunk, const std::function<void(const torch::Tensor&)>& fn) const;

 private:
  torch::Tensor images_;     // uint8, CPU
  torch::Tensor selection_;  // int64, CPU; undefined = all
};

// The teacher's view of every pool image, from one pass (no augmentation).
struct PoolScores {
  torch::Tensor entropy;      // float [N]: -sum_c p_c ln p_c (MosaicKD's OOD subset)
  torch::Tensor neg_log_max;  // float [N]: -ln max_c p_c = CE(t, argmax t) (DFND's score)
  torch::Tensor argmax;       // int64 [N]: the teacher's class
  torch::Tensor logits;       // float [N, K] (CPU) with keep_logits alone; else undefined
};

// Runs `teacher` (eval mode, no gradients; its mode is restored) over
// `pool` (uint8 [N, C, H, W], CPU) in chunks of `chunk` images normalised
// with `norm`, on the teacher's device. With several ranks, chunk k is scored
// by rank k % size and the results are summed, so every rank returns the
// scores of the whole pool, and a chunk holds the same images whatever the
// world size (the scores do not depend on it). `comm` may be null (alone).
// `scored`, when given, grows by the number of images this rank ran.
// `keep_logits` also returns the logits themselves, when one process scored
// the whole pool (no comm, or a world of one); bounded by kMaxKeptLogits.
inline constexpr int64_t kMaxKeptLogits = int64_t{128} << 20;  // floats: 512 MiB
PoolScores ScorePool(const torch::Tensor& pool, const Normalization& norm,
                     ClassifierImpl& teacher, int64_t chunk, Communicator* comm,
                     int64_t* scored, bool keep_logits = false);

// The indices of the `k` largest (`highest`) or smallest values of `score`
// (float [N]), ties broken by the lower index; returned in ascending index
// order (int64, CPU). k must be in [0, N].
torch::Tensor SelectByScore(const torch::Tensor& score, int64_t k, bool highest);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_METHODS_UNLABELED_SAMPLER_H_
