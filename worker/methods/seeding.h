// Seeds for a method's random draws. Every draw is keyed by (job seed,
// stream, index) - index being the round or the global step - so a resumed
// run draws exactly what an uninterrupted one would, whatever ran before.
#ifndef DFKD_WORKER_METHODS_SEEDING_H_
#define DFKD_WORKER_METHODS_SEEDING_H_

#include <cstdint>

#include "worker/methods/method.h"

namespace dfkd::worker {

inline uint64_t StreamSeed(uint64_t seed, uint64_t stream, uint64_t index) {
  return seed * 0x9e3779b97f4a7c15ull ^ (stream << 48) ^ index;
}

// This process's rank in the run (0 alone), to give each rank its own draws.
inline uint64_t RankOf(const RoundContext& ctx) {
  return ctx.comm != nullptr ? static_cast<uint64_t>(ctx.comm->rank()) : 0;
}

// The key of this step's student batch drawn from a method's image pool
// (stream 2, one per rank): DeepInv and Fast sample with it.
inline uint64_t StudentBatchKey(const RoundContext& ctx) {
  return StreamSeed(ctx.seed, 2 + (RankOf(ctx) << 8), ctx.global_step);
}

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_METHODS_SEEDING_H_
