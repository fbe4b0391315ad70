// Batching, shuffling and augmentation over a Dataset.
//
// The order of an epoch is a seeded permutation that depends only on
// (seed, epoch); the augmentation of batch b depends only on (seed, epoch, b).
// So any batch can be rebuilt from its coordinates: a run resumed at step s
// gets exactly the batches an uninterrupted run would (tested), and a
// prefetching thread cannot change results.
//
// Distributed: with world_size W each rank takes every W-th index of the
// shared permutation (a disjoint shard; like torch's DistributedSampler, the
// permutation is padded by wrapping so all ranks get the same batch count).
#ifndef DFKD_WORKER_DATA_LOADER_H_
#define DFKD_WORKER_DATA_LOADER_H_

#include <cstdint>
#include <future>
#include <optional>
#include <vector>

#include "worker/data/dataset.h"
#include "worker/data/transforms.h"

namespace dfkd::worker {

struct LoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = true;
  bool drop_last = true;       // training: every step sees a full batch
  uint64_t seed = 0;
  bool augment = false;
  int64_t crop_padding = 4;
  bool horizontal_flip = true;
  Normalization norm;          // empty = leave images as uint8
  int64_t rank = 0;
  int64_t world_size = 1;
  bool prefetch = true;        // build batch b+1 on a thread while b trains
};

class Loader {
 public:
  // `dataset` must outlive the loader.
  Loader(const Dataset& dataset, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  int64_t batches_per_epoch() const;
  // Starts `epoch`, skipping its first `skip` batches (resume mid-epoch).
  void StartEpoch(int64_t epoch, int64_t skip = 0);
  // The next batch of the epoch, or nullopt at its end.
  std::optional<Batch> Next();
  // Batch b of epoch e, built synchronously (what Next() returns for it).
  Batch MakeBatch(int64_t epoch, int64_t b) const;

 private:
  std::vector<int64_t> ShardOrder(int64_t epoch) const;
  Batch Build(const std::vector<int64_t>& order, int64_t epoch, int64_t b) const;

  const Dataset& dataset_;
  LoaderOptions options_;
  int64_t epoch_ = 0;
  int64_t next_ = 0;
  std::vector<int64_t> order_;
  std::future<Batch> pending_;
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_DATA_LOADER_H_
