#include "worker/data/loader.h"

#include <algorithm>
#include <numeric>
#include <random>

namespace dfkd::worker {
namespace {

// SplitMix64: turns (seed, epoch, batch) into well-separated RNG seeds.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

Loader::Loader(const Dataset& dataset, LoaderOptions options)
    : dataset_(dataset), options_(std::move(options)) {
  TORCH_CHECK(options_.batch_size > 0, "batch_size must be positive");
  TORCH_CHECK(options_.world_size >= 1 && options_.rank >= 0 &&
                  options_.rank < options_.world_size,
              "bad rank ", options_.rank, " of ", options_.world_size);
}

Loader::~Loader() {
  if (pending_.valid()) pending_.wait();
}

int64_t Loader::batches_per_epoch() const {
  int64_t per_rank =
      (dataset_.size() + options_.world_size - 1) / options_.world_size;
  return options_.drop_last ? per_rank / options_.batch_size
                            : (per_rank + options_.batch_size - 1) / options_.batch_size;
}

std::vector<int64_t> Loader::ShardOrder(int64_t epoch) const {
  const int64_t n = dataset_.size();
  std::vector<int64_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  if (options_.shuffle) {
    // Own Fisher-Yates: std::shuffle's algorithm is not fixed by the standard.
    std::mt19937_64 rng(Mix(options_.seed ^ Mix(static_cast<uint64_t>(epoch))));
    for (int64_t i = n - 1; i > 0; --i) {
      std::uniform_int_distribution<int64_t> pick(0, i);
      std::swap(perm[i], perm[pick(rng)]);
    }
  }
  if (options_.world_size == 1) return perm;
  const int64_t per_rank = (n + options_.world_size - 1) / options_.world_size;
  std::vector<int64_t> shard;
  shard.reserve(per_rank);
  for (int64_t k = 0; k < per_rank; ++k) {
    shard.push_back(perm[(k * options_.world_size + options_.rank) % n]);
  }
  return shard;
}

Batch Loader::Build(const std::vector<int64_t>& order, int64_t epoch,
                    int64_t b) const {
  const int64_t begin = b * options_.batch_size;
  const int64_t end =
      std::min<int64_t>(begin + options_.batch_size, order.size());
  std::vector<int64_t> idx(order.begin() + begin, order.begin() + end);
  Batch batch = dataset_.Get(idx);
  if (options_.augment) {
    std::mt19937_64 rng(Mix(options_.seed ^ Mix(static_cast<uint64_t>(epoch) << 32 ^
                                                static_cast<uint64_t>(b)) ^
                            0x5bd1e995ull));
    batch.images = RandomCropFlip(batch.images, options_.crop_padding,
                                  options_.horizontal_flip, rng);
  }
  if (!options_.norm.mean.empty()) batch.images = Normalize(batch.images, options_.norm);
  return batch;
}

Batch Loader::MakeBatch(int64_t epoch, int64_t b) const {
  return Build(ShardOrder(epoch), epoch, b);
}

void Loader::StartEpoch(int64_t epoch, int64_t skip) {
  if (pending_.valid()) pending_.wait();
  pending_ = {};
  epoch_ = epoch;
  next_ = skip;
  order_ = ShardOrder(epoch);
}

std::optional<Batch> Loader::Next() {
  const int64_t total = batches_per_epoch();
  if (next_ >= total) return std::nullopt;
  Batch batch = pending_.valid() ? pending_.get() : Build(order_, epoch_, next_);
  ++next_;
  if (options_.prefetch && next_ < total) {
    pending_ = std::async(std::launch::async, [this, b = next_] {
      return Build(order_, epoch_, b);
    });
  }
  return batch;
}

}  // namespace dfkd::worker
