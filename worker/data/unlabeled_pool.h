// The unlabeled "wild" pool of the sampling-based methods (MosaicKD's
// out-of-domain images, dfkd-methods.md §7.1; DFND's wild set, §8.1), as
// built by `dfkd pool` (common/pool/pool_builder.h) into the file format of
// common/pool/pool_file.h. The pool is read whole, uint8 NCHW, straight from
// the file into the tensor's memory: no decoding, no second copy.
#ifndef DFKD_WORKER_DATA_UNLABELED_POOL_H_
#define DFKD_WORKER_DATA_UNLABELED_POOL_H_

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace dfkd::worker {

// uint8 CPU [N, C, H, W], all N images of the pool at `path`. Throws
// DataError naming the file when it is missing, not a pool, truncated, holds
// images of another shape ("pool FILE holds 3x32x32 images, the task needs
// 1x28x28") or fewer than min_count images ("pool FILE holds 500 images,
// 1000 needed"). expected_chw is {C, H, W} (TORCH_CHECK otherwise).
torch::Tensor LoadUnlabeledPool(const std::string& path,
                                const std::vector<int64_t>& expected_chw,
                                int64_t min_count);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_DATA_UNLABELED_POOL_H_
