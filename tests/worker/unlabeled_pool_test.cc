// LoadUnlabeledPool: a pool file written with common/pool/pool_file.h comes
// back as the same uint8 [N, C, H, W] tensor; a pool of the wrong shape, too
// small, missing or damaged gives a DataError that names the file.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/pool/pool_file.h"
#include "tests/testing/temp_dir.h"
#include "worker/data/dataset.h"
#include "worker/data/unlabeled_pool.h"

namespace dfkd::worker {
namespace {

namespace fs = std::filesystem;

// Writes count images of c x h x w, pixel k = (k * 7 + 3) % 256.
std::vector<uint8_t> WritePool(const std::string& path, int64_t count, int64_t c, int64_t h,
                               int64_t w) {
  common::PoolHeader shape;
  shape.count = count;
  shape.channels = c;
  shape.height = h;
  shape.width = w;
  std::vector<uint8_t> pixels(static_cast<size_t>(shape.pixel_bytes()));
  for (size_t k = 0; k < pixels.size(); ++k) {
    pixels[k] = static_cast<uint8_t>((k * 7 + 3) % 256);
  }
  common::WritePoolFile(path, shape, pixels.data());
  return pixels;
}

std::string DataErrorOf(const std::string& path, const std::vector<int64_t>& chw,
                        int64_t min_count) {
  try {
    LoadUnlabeledPool(path, chw, min_count);
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

TEST(UnlabeledPoolTest, ValuesEqualWhatWasWritten) {
  dfkd::testing::TempDir dir;
  const std::string path = dir.File("pool.bin");
  const std::vector<uint8_t> pixels = WritePool(path, 6, 3, 32, 32);
  const torch::Tensor pool = LoadUnlabeledPool(path, {3, 32, 32}, 6);
  EXPECT_EQ(pool.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(pool.device().is_cpu());
  EXPECT_TRUE(pool.is_contiguous());
  ASSERT_EQ(pool.sizes().vec(), (std::vector<int64_t>{6, 3, 32, 32}));
  const torch::Tensor expected =
      torch::tensor(std::vector<int64_t>(pixels.begin(), pixels.end()))
          .to(torch::kUInt8)
          .view({6, 3, 32, 32});
  EXPECT_TRUE(torch::equal(pool, expected));
  // NCHW: image 1, channel 2, row 3, column 4.
  const int64_t k = ((1 * 3 + 2) * 32 + 3) * 32 + 4;
  EXPECT_EQ(pool[1][2][3][4].item<int64_t>(), (k * 7 + 3) % 256);

  // min_count 0 and fewer than held are fine.
  EXPECT_EQ(LoadUnlabeledPool(path, {3, 32, 32}, 0).size(0), 6);
}

TEST(UnlabeledPoolTest, WrongShapeNamesTheFileAndBothShapes) {
  dfkd::testing::TempDir dir;
  const std::string path = dir.File("pool.bin");
  WritePool(path, 4, 3, 32, 32);
  EXPECT_EQ(DataErrorOf(path, {1, 28, 28}, 1),
            "pool " + path + " holds 3x32x32 images, the task needs 1x28x28");
}

TEST(UnlabeledPoolTest, TooFewImagesNamesTheFile) {
  dfkd::testing::TempDir dir;
  const std::string path = dir.File("pool.bin");
  WritePool(path, 5, 1, 28, 28);
  EXPECT_EQ(DataErrorOf(path, {1, 28, 28}, 10), "pool " + path + " holds 5 images, 10 needed");
}

TEST(UnlabeledPoolTest, MissingOrTruncatedFileIsADataError) {
  dfkd::testing::TempDir dir;
  const std::string missing = dir.File("none.bin");
  EXPECT_EQ(DataErrorOf(missing, {1, 28, 28}, 1), missing + ": no such file");

  const std::string path = dir.File("pool.bin");
  WritePool(path, 5, 1, 28, 28);
  fs::resize_file(path, 64 + 3 * 28 * 28);
  const std::string error = DataErrorOf(path, {1, 28, 28}, 1);
  EXPECT_NE(error.find(path + ": truncated: expected " + std::to_string(64 + 5 * 28 * 28)),
            std::string::npos)
      << error;
}

TEST(UnlabeledPoolTest, ExpectedShapeMustHaveThreeValues) {
  dfkd::testing::TempDir dir;
  const std::string path = dir.File("pool.bin");
  WritePool(path, 2, 1, 8, 8);
  EXPECT_THROW(LoadUnlabeledPool(path, {8, 8}, 1), c10::Error);
}

}  // namespace
}  // namespace dfkd::worker
