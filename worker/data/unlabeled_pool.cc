#include "worker/data/unlabeled_pool.h"

#include <stdexcept>

#include "common/pool/pool_file.h"
#include "worker/data/dataset.h"

namespace dfkd::worker {

torch::Tensor LoadUnlabeledPool(const std::string& path,
                                const std::vector<int64_t>& expected_chw,
                                int64_t min_count) {
  TORCH_CHECK(expected_chw.size() == 3,
              "LoadUnlabeledPool: expected_chw must be {C, H, W}, got ",
              expected_chw.size(), " values");
  TORCH_CHECK(min_count >= 0, "LoadUnlabeledPool: min_count must be >= 0, got ",
              min_count);
  try {
    const common::PoolHeader header = common::ReadPoolHeader(path);
    common::CheckPoolFits(path, header, expected_chw[0], expected_chw[1],
                          expected_chw[2], min_count);
    torch::Tensor images = torch::empty(
        {header.count, header.channels, header.height, header.width},
        torch::kUInt8);
    common::ReadPoolPixels(path, header, 0, header.count,
                           images.data_ptr<uint8_t>());
    return images;
  } catch (const std::runtime_error& e) {
    throw DataError(e.what());
  }
}

}  // namespace dfkd::worker
