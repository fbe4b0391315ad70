// Readers of IDX, CIFAR and image-folder data: files written in the real
// formats into a fresh temporary folder are read back exactly, and damaged
// files give DataError messages that name the file and the byte offset.
#include <stdlib.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>
#include <zlib.h>

#include "worker/data/cifar_reader.h"
#include "worker/data/dataset.h"
#include "worker/data/idx_reader.h"
#include "worker/data/image_folder.h"

namespace dfkd::worker {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

constexpr int64_t kCifarPixels = 3 * 32 * 32;

// ---------------------------------------------------------------------------
// Writers for the formats under test.

void PutBigEndian32(Bytes* out, uint32_t v) {
  out->push_back(static_cast<uint8_t>(v >> 24));
  out->push_back(static_cast<uint8_t>(v >> 16));
  out->push_back(static_cast<uint8_t>(v >> 8));
  out->push_back(static_cast<uint8_t>(v));
}

// An IDX file: magic, dims, payload.
Bytes Idx(uint32_t magic, const std::vector<uint32_t>& dims,
          const Bytes& payload) {
  Bytes out;
  PutBigEndian32(&out, magic);
  for (uint32_t d : dims) PutBigEndian32(&out, d);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

Bytes Pattern(size_t n, uint32_t seed) {
  Bytes out(n);
  for (size_t i = 0; i < n; ++i) {
    out[i] = static_cast<uint8_t>((i * 37 + seed * 11 + 5) % 256);
  }
  return out;
}

void WriteFile(const std::string& path, const Bytes& data) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data.data()),
            static_cast<std::streamsize>(data.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

Bytes ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in),
               std::istreambuf_iterator<char>());
}

void WriteGzip(const std::string& path, const Bytes& data) {
  fs::create_directories(fs::path(path).parent_path());
  gzFile f = gzopen(path.c_str(), "wb");
  if (f == nullptr) throw std::runtime_error("gzopen failed for " + path);
  if (!data.empty()) {
    const int written =
        gzwrite(f, data.data(), static_cast<unsigned>(data.size()));
    if (written != static_cast<int>(data.size())) {
      gzclose(f);
      throw std::runtime_error("gzwrite failed for " + path);
    }
  }
  if (gzclose(f) != Z_OK) throw std::runtime_error("gzclose failed " + path);
}

void WriteImage(const std::string& path, const cv::Mat& image) {
  fs::create_directories(fs::path(path).parent_path());
  if (!cv::imwrite(path, image)) {
    throw std::runtime_error("cv::imwrite failed for " + path);
  }
}

// An 8-bit BGR image whose pixel (y, x) is (b, g, r) = (seed + 8y + x,
// 100 + y + seed, 200 + x).
cv::Mat BgrPattern(int h, int w, int seed) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      m.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uint8_t>(seed + 8 * y + x),
                                        static_cast<uint8_t>(100 + y + seed),
                                        static_cast<uint8_t>(200 + x));
    }
  }
  return m;
}

// The same image as the reader returns it: uint8 RGB [3, h, w].
torch::Tensor RgbTensor(const cv::Mat& bgr) {
  torch::Tensor t = torch::empty({3, bgr.rows, bgr.cols}, torch::kUInt8);
  auto a = t.accessor<uint8_t, 3>();
  for (int y = 0; y < bgr.rows; ++y) {
    for (int x = 0; x < bgr.cols; ++x) {
      const cv::Vec3b p = bgr.at<cv::Vec3b>(y, x);
      a[0][y][x] = p[2];
      a[1][y][x] = p[1];
      a[2][y][x] = p[0];
    }
  }
  return t;
}

// ---------------------------------------------------------------------------
// Checks.

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Runs fn, which must throw DataError; returns its message.
std::string DataErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const DataError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a DataError";
  return "";
}

class DataReadersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dfkd_data_readers_test_XXXXXX";
    char* dir = mkdtemp(tmpl);
    ASSERT_NE(dir, nullptr) << "mkdtemp: " << std::strerror(errno);
    dir_ = dir;
  }
  void TearDown() override {
    if (!dir_.empty()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }
  std::string Path(const std::string& name) const {
    return (fs::path(dir_) / name).string();
  }

  std::string dir_;
};

// ---------------------------------------------------------------------------
// TensorDataset.

TEST(TensorDatasetTest, GetSelectsImagesAndLabels) {
  torch::Tensor images = torch::arange(6 * 1 * 2 * 2, torch::kInt64)
                             .to(torch::kUInt8)
                             .view({6, 1, 2, 2});
  torch::Tensor labels = torch::tensor({0, 1, 2, 0, 1, 2}, torch::kInt64);
  TensorDataset ds(images, labels, 3);
  EXPECT_EQ(ds.size(), 6);
  EXPECT_EQ(ds.num_classes(), 3);
  EXPECT_EQ(ds.image_shape(), (std::vector<int64_t>{1, 2, 2}));

  Batch b = ds.Get({4, 1, 4});
  EXPECT_EQ(b.images.sizes().vec(), (std::vector<int64_t>{3, 1, 2, 2}));
  EXPECT_TRUE(torch::equal(b.images[0], images[4]));
  EXPECT_TRUE(torch::equal(b.images[1], images[1]));
  EXPECT_TRUE(torch::equal(b.labels, torch::tensor({1, 1, 1}, torch::kInt64)));

  Batch empty = ds.Get({});
  EXPECT_EQ(empty.images.size(0), 0);
  EXPECT_EQ(empty.labels.size(0), 0);
}

TEST(TensorDatasetTest, HeadIsAView) {
  torch::Tensor images = torch::zeros({5, 3, 4, 4}, torch::kUInt8);
  torch::Tensor labels = torch::zeros({5}, torch::kInt64);
  TensorDataset ds(images, labels, 10);
  TensorDataset head = ds.Head(2);
  EXPECT_EQ(head.size(), 2);
  EXPECT_EQ(head.num_classes(), 10);
  EXPECT_EQ(head.images().data_ptr(), images.data_ptr());
  EXPECT_EQ(ds.Head(100).size(), 5);
  EXPECT_EQ(ds.Head(0).size(), 0);
}

TEST(TensorDatasetTest, RejectsBadInput) {
  torch::Tensor images = torch::zeros({2, 1, 2, 2}, torch::kUInt8);
  torch::Tensor labels = torch::tensor({0, 3}, torch::kInt64);
  EXPECT_THROW((void)TensorDataset(images, labels, 3), c10::Error);  // label 3
  EXPECT_THROW((void)TensorDataset(images.to(torch::kFloat), labels, 4), c10::Error);
  EXPECT_THROW((void)TensorDataset(images[0], labels, 4), c10::Error);  // 3-D
  EXPECT_THROW((void)TensorDataset(images, labels.to(torch::kInt32), 4), c10::Error);
  EXPECT_THROW((void)TensorDataset(images, torch::zeros({3}, torch::kInt64), 4),
               c10::Error);

  TensorDataset ds(images, labels, 4);
  try {
    ds.Get({0, 2});
    ADD_FAILURE() << "expected c10::Error for index 2";
  } catch (const c10::Error& e) {
    EXPECT_TRUE(Contains(e.what(), "index 2")) << e.what();
  }
  EXPECT_THROW(ds.Get({-1}), c10::Error);
}

// ---------------------------------------------------------------------------
// IDX.

TEST_F(DataReadersTest, IdxImagesGzippedRoundTrip) {
  const Bytes pixels = Pattern(5 * 3 * 4, 1);
  const std::string path = Path("images-idx3-ubyte.gz");
  WriteGzip(path, Idx(0x00000803, {5, 3, 4}, pixels));

  torch::Tensor images = ReadIdxImages(path);
  EXPECT_EQ(images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(images.sizes().vec(), (std::vector<int64_t>{5, 1, 3, 4}));
  Bytes copy = pixels;
  EXPECT_TRUE(torch::equal(
      images, torch::from_blob(copy.data(), {5, 1, 3, 4}, torch::kUInt8)));
}

TEST_F(DataReadersTest, IdxPlainFilesReadToo) {
  const Bytes pixels = Pattern(2 * 2 * 3, 2);
  const std::string path = Path("images-idx3-ubyte");
  WriteFile(path, Idx(0x00000803, {2, 2, 3}, pixels));
  torch::Tensor images = ReadIdxImages(path);
  Bytes copy = pixels;
  EXPECT_TRUE(torch::equal(
      images, torch::from_blob(copy.data(), {2, 1, 2, 3}, torch::kUInt8)));
}

TEST_F(DataReadersTest, IdxLabelsRoundTrip) {
  const std::string path = Path("labels-idx1-ubyte.gz");
  WriteGzip(path, Idx(0x00000801, {6}, {0, 9, 3, 3, 7, 255}));
  torch::Tensor labels = ReadIdxLabels(path);
  EXPECT_EQ(labels.scalar_type(), torch::kInt64);
  EXPECT_TRUE(
      torch::equal(labels, torch::tensor({0, 9, 3, 3, 7, 255}, torch::kInt64)));
}

TEST_F(DataReadersTest, LoadFashionMnistGzippedAndPlain) {
  // Train split gzipped, test split as plain files (the .gz fallback).
  const Bytes train_pixels = Pattern(4 * 5 * 6, 3);
  WriteGzip(Path("fm/train-images-idx3-ubyte.gz"),
            Idx(0x00000803, {4, 5, 6}, train_pixels));
  WriteGzip(Path("fm/train-labels-idx1-ubyte.gz"),
            Idx(0x00000801, {4}, {9, 0, 4, 2}));
  const Bytes test_pixels = Pattern(3 * 5 * 6, 4);
  WriteFile(Path("fm/t10k-images-idx3-ubyte"),
            Idx(0x00000803, {3, 5, 6}, test_pixels));
  WriteFile(Path("fm/t10k-labels-idx1-ubyte"), Idx(0x00000801, {3}, {1, 1, 8}));

  TensorDataset train = LoadFashionMnist(Path("fm"), /*train=*/true);
  EXPECT_EQ(train.size(), 4);
  EXPECT_EQ(train.num_classes(), 10);
  EXPECT_EQ(train.image_shape(), (std::vector<int64_t>{1, 5, 6}));
  Bytes copy = train_pixels;
  EXPECT_TRUE(
      torch::equal(train.images(),
                   torch::from_blob(copy.data(), {4, 1, 5, 6}, torch::kUInt8)));
  EXPECT_TRUE(
      torch::equal(train.labels(), torch::tensor({9, 0, 4, 2}, torch::kInt64)));

  TensorDataset test = LoadFashionMnist(Path("fm"), /*train=*/false);
  EXPECT_EQ(test.size(), 3);
  Bytes test_copy = test_pixels;
  EXPECT_TRUE(torch::equal(
      test.images(),
      torch::from_blob(test_copy.data(), {3, 1, 5, 6}, torch::kUInt8)));
  EXPECT_TRUE(
      torch::equal(test.labels(), torch::tensor({1, 1, 8}, torch::kInt64)));
}

TEST_F(DataReadersTest, TruncatedIdxNamesFileAndOffset) {
  // The header promises 5 images of 3x4 (16 + 60 bytes); 2 are present.
  const std::string path = Path("cut-images-idx3-ubyte.gz");
  WriteGzip(path, Idx(0x00000803, {5, 3, 4}, Pattern(2 * 3 * 4, 5)));
  const std::string msg = DataErrorOf([&] { ReadIdxImages(path); });
  EXPECT_TRUE(Contains(msg, path)) << msg;
  EXPECT_TRUE(Contains(msg, "offset")) << msg;
  EXPECT_TRUE(Contains(msg, "truncated at byte offset 40")) << msg;
  EXPECT_TRUE(Contains(msg, "expected 76 bytes")) << msg;
}

TEST_F(DataReadersTest, TruncatedIdxHeader) {
  const std::string path = Path("short-labels.gz");
  WriteGzip(path, {0, 0, 8, 1, 0, 0});
  const std::string msg = DataErrorOf([&] { ReadIdxLabels(path); });
  EXPECT_TRUE(Contains(msg, path)) << msg;
  EXPECT_TRUE(Contains(msg, "truncated at byte offset 6")) << msg;
}

TEST_F(DataReadersTest, IdxTrailingBytesAreAnError) {
  const std::string path = Path("long-labels.gz");
  WriteGzip(path, Idx(0x00000801, {2}, {1, 2, 3}));
  const std::string msg = DataErrorOf([&] { ReadIdxLabels(path); });
  EXPECT_TRUE(Contains(msg, path)) << msg;
  EXPECT_TRUE(Contains(msg, "offset 10")) << msg;
}

TEST_F(DataReadersTest, BadIdxMagic) {
  const std::string path = Path("bad-magic.gz");
  WriteGzip(path, Idx(0x00000804, {1, 1, 1}, {7}));
  const std::string msg = DataErrorOf([&] { ReadIdxImages(path); });
  EXPECT_TRUE(Contains(msg, path)) << msg;
  EXPECT_TRUE(
      Contains(msg, "bad magic 0x00000804 at offset 0, expected 0x00000803"))
      << msg;

  // A labels file given as images.
  const std::string labels = Path("labels.gz");
  WriteGzip(labels, Idx(0x00000801, {1}, {7}));
  const std::string msg2 = DataErrorOf([&] { ReadIdxImages(labels); });
  EXPECT_TRUE(Contains(msg2, "bad magic 0x00000801")) << msg2;
}

TEST_F(DataReadersTest, CorruptGzipDeflateData) {
  const std::string path = Path("corrupt-images.gz");
  WriteGzip(path, Idx(0x00000803, {4, 8, 8}, Pattern(4 * 8 * 8, 6)));
  Bytes gz = ReadFile(path);
  ASSERT_GT(gz.size(), 20u);
  ASSERT_EQ(gz[0], 0x1f);
  // gzopen writes a 10-byte gzip header; the first deflate byte then says
  // "final block of the reserved type 3": invalid block type.
  gz[10] = 0xff;
  WriteFile(path, gz);
  const std::string msg = DataErrorOf([&] { ReadIdxImages(path); });
  EXPECT_TRUE(Contains(msg, path)) << msg;
  EXPECT_TRUE(Contains(msg, "corrupt gzip")) << msg;
  EXPECT_TRUE(Contains(msg, "offset")) << msg;
}

TEST_F(DataReadersTest, CorruptGzipChecksum) {
  const std::string path = Path("bad-crc-images.gz");
  WriteGzip(path, Idx(0x00000803, {4, 8, 8}, Pattern(4 * 8 * 8, 7)));
  Bytes gz = ReadFile(path);
  ASSERT_GT(gz.size(), 20u);
  gz[gz.size() - 8] ^= 0xff;  // first byte of the CRC-32 trailer
  WriteFile(path, gz);
  const std::string msg = DataErrorOf([&] { ReadIdxImages(path); });
  EXPECT_TRUE(Contains(msg, path)) << msg;
  EXPECT_TRUE(Contains(msg, "corrupt gzip")) << msg;
}

TEST_F(DataReadersTest, MissingIdxFile) {
  const std::string path = Path("absent-images-idx3-ubyte.gz");
  const std::string msg = DataErrorOf([&] { ReadIdxImages(path); });
  EXPECT_TRUE(Contains(msg, path)) << msg;
  EXPECT_TRUE(Contains(msg, "no such file")) << msg;

  const std::string msg2 =
      DataErrorOf([&] { LoadFashionMnist(Path("none"), true); });
  EXPECT_TRUE(Contains(msg2, "train-images-idx3-ubyte.gz")) << msg2;
}

TEST_F(DataReadersTest, FashionMnistLabelOutOfRange) {
  WriteGzip(Path("fm/t10k-images-idx3-ubyte.gz"),
            Idx(0x00000803, {3, 2, 2}, Pattern(12, 8)));
  const std::string labels = Path("fm/t10k-labels-idx1-ubyte.gz");
  WriteGzip(labels, Idx(0x00000801, {3}, {1, 12, 3}));
  const std::string msg =
      DataErrorOf([&] { LoadFashionMnist(Path("fm"), false); });
  EXPECT_TRUE(Contains(msg, labels)) << msg;
  EXPECT_TRUE(Contains(msg, "label 12 at byte offset 9")) << msg;
}

TEST_F(DataReadersTest, FashionMnistCountMismatch) {
  const std::string images = Path("fm/t10k-images-idx3-ubyte.gz");
  WriteGzip(images, Idx(0x00000803, {3, 2, 2}, Pattern(12, 9)));
  WriteGzip(Path("fm/t10k-labels-idx1-ubyte.gz"), Idx(0x00000801, {2}, {1, 2}));
  const std::string msg =
      DataErrorOf([&] { LoadFashionMnist(Path("fm"), false); });
  EXPECT_TRUE(Contains(msg, images)) << msg;
}

TEST(FashionMnistTest, RealDataSet) {
  const std::string test_images =
      std::string(kFashionMnistDefaultRoot) + "/t10k-images-idx3-ubyte.gz";
  ASSERT_TRUE(fs::exists(test_images))
      << test_images << " is absent: install dataset-fashion-mnist (scripts/install-deps.sh)";
  for (bool train : {false, true}) {
    const int64_t n = train ? 60000 : 10000;
    TensorDataset ds = LoadFashionMnist(kFashionMnistDefaultRoot, train);
    EXPECT_EQ(ds.images().sizes().vec(), (std::vector<int64_t>{n, 1, 28, 28}));
    EXPECT_EQ(ds.num_classes(), 10);
    std::vector<int64_t> counts(10, 0);
    const int64_t* l = ds.labels().data_ptr<int64_t>();
    for (int64_t i = 0; i < ds.size(); ++i) ++counts[static_cast<size_t>(l[i])];
    EXPECT_EQ(counts, std::vector<int64_t>(10, n / 10)) << "train=" << train;
  }
}

// ---------------------------------------------------------------------------
// CIFAR.

// A CIFAR record: the label bytes, then the pixels of record number k.
Bytes CifarRecords(const std::vector<std::vector<uint8_t>>& label_bytes,
                   uint32_t first) {
  Bytes out;
  for (size_t r = 0; r < label_bytes.size(); ++r) {
    out.insert(out.end(), label_bytes[r].begin(), label_bytes[r].end());
    const Bytes px = Pattern(kCifarPixels, first + static_cast<uint32_t>(r));
    out.insert(out.end(), px.begin(), px.end());
  }
  return out;
}

// uint8 [n, 3, 32, 32] with the pixels of records first .. first + n - 1.
torch::Tensor CifarPixels(int64_t n, uint32_t first) {
  Bytes all;
  for (int64_t r = 0; r < n; ++r) {
    const Bytes px = Pattern(kCifarPixels, first + static_cast<uint32_t>(r));
    all.insert(all.end(), px.begin(), px.end());
  }
  return torch::from_blob(all.data(), {n, 3, 32, 32}, torch::kUInt8).clone();
}

TEST_F(DataReadersTest, Cifar10RoundTrip) {
  const std::string dir = Path("cifar/cifar-10-batches-bin");
  std::vector<int64_t> expected_labels;
  for (int b = 1; b <= 5; ++b) {
    std::vector<std::vector<uint8_t>> labels;
    for (int r = 0; r < 2; ++r) {
      const int k = 2 * (b - 1) + r;
      labels.push_back({static_cast<uint8_t>(k % 10)});
      expected_labels.push_back(k % 10);
    }
    WriteFile(dir + "/data_batch_" + std::to_string(b) + ".bin",
              CifarRecords(labels, static_cast<uint32_t>(2 * (b - 1))));
  }
  WriteFile(dir + "/test_batch.bin", CifarRecords({{3}, {9}, {0}}, 100));

  // root = the parent folder.
  TensorDataset train = LoadCifar10(Path("cifar"), /*train=*/true);
  EXPECT_EQ(train.size(), 10);
  EXPECT_EQ(train.num_classes(), 10);
  EXPECT_EQ(train.image_shape(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_TRUE(torch::equal(train.images(), CifarPixels(10, 0)));
  EXPECT_TRUE(torch::equal(train.labels(),
                           torch::tensor(expected_labels, torch::kInt64)));

  // root = the folder with the .bin files.
  TensorDataset test = LoadCifar10(dir, /*train=*/false);
  EXPECT_EQ(test.size(), 3);
  EXPECT_TRUE(torch::equal(test.images(), CifarPixels(3, 100)));
  EXPECT_TRUE(
      torch::equal(test.labels(), torch::tensor({3, 9, 0}, torch::kInt64)));
}

TEST_F(DataReadersTest, Cifar100UsesFineLabels) {
  const std::string dir = Path("c100/cifar-100-binary");
  WriteFile(dir + "/train.bin", CifarRecords({{19, 99}, {0, 0}, {7, 42}}, 10));
  WriteFile(dir + "/test.bin", CifarRecords({{4, 55}}, 20));

  TensorDataset train = LoadCifar100(Path("c100"), /*train=*/true);
  EXPECT_EQ(train.size(), 3);
  EXPECT_EQ(train.num_classes(), 100);
  EXPECT_TRUE(torch::equal(train.images(), CifarPixels(3, 10)));
  EXPECT_TRUE(
      torch::equal(train.labels(), torch::tensor({99, 0, 42}, torch::kInt64)));

  TensorDataset test = LoadCifar100(dir, /*train=*/false);
  EXPECT_EQ(test.size(), 1);
  EXPECT_TRUE(torch::equal(test.images(), CifarPixels(1, 20)));
  EXPECT_TRUE(torch::equal(test.labels(), torch::tensor({55}, torch::kInt64)));
}

TEST_F(DataReadersTest, CifarTruncatedRecord) {
  const std::string path = Path("c10/data_batch_1.bin");
  Bytes data = CifarRecords({{1}}, 0);   // 3073 bytes
  data.resize(data.size() + 100, 0x55);  // and 100 of a second record
  WriteFile(path, data);
  const std::string msg = DataErrorOf([&] { LoadCifar10(Path("c10"), true); });
  EXPECT_TRUE(Contains(msg, path)) << msg;
  EXPECT_TRUE(Contains(msg, "truncated record at byte offset 3073")) << msg;
}

TEST_F(DataReadersTest, CifarLabelOutOfRange) {
  const std::string path = Path("c10/test_batch.bin");
  WriteFile(path, CifarRecords({{1}, {11}}, 0));
  const std::string msg = DataErrorOf([&] { LoadCifar10(Path("c10"), false); });
  EXPECT_TRUE(Contains(msg, path)) << msg;
  EXPECT_TRUE(Contains(msg, "label 11 at byte offset 3073")) << msg;

  const std::string path100 = Path("c100/test.bin");
  WriteFile(path100, CifarRecords({{2, 100}}, 0));
  const std::string msg2 =
      DataErrorOf([&] { LoadCifar100(Path("c100"), false); });
  EXPECT_TRUE(Contains(msg2, path100)) << msg2;
  EXPECT_TRUE(Contains(msg2, "label 100 at byte offset 1")) << msg2;
}

TEST_F(DataReadersTest, CifarMissingFiles) {
  fs::create_directories(Path("c10"));
  const std::string msg = DataErrorOf([&] { LoadCifar10(Path("c10"), true); });
  EXPECT_TRUE(Contains(msg, "data_batch_1.bin")) << msg;

  // Batches 1 and 2 present, 3 absent.
  WriteFile(Path("c10/data_batch_1.bin"), CifarRecords({{1}}, 0));
  WriteFile(Path("c10/data_batch_2.bin"), CifarRecords({{2}}, 1));
  const std::string msg2 = DataErrorOf([&] { LoadCifar10(Path("c10"), true); });
  EXPECT_TRUE(Contains(msg2, Path("c10/data_batch_3.bin"))) << msg2;
}

// ---------------------------------------------------------------------------
// Image folders.

TEST_F(DataReadersTest, ImageFolderListsAndDecodes) {
  const cv::Mat a0 = BgrPattern(8, 8, 0);
  const cv::Mat b0 = BgrPattern(8, 8, 1);
  WriteImage(Path("folder/alpha/a0.png"), a0);
  WriteFile(Path("folder/alpha/notes.txt"), {'h', 'i'});
  WriteImage(Path("folder/beta/sub/b0.PNG"), b0);
  WriteImage(Path("folder/beta/b1.jpg"), BgrPattern(8, 8, 2));
  WriteImage(Path("folder/.hidden/h.png"), a0);  // not a class

  ImageFolderDataset ds(Path("folder"), /*image_size=*/8);
  EXPECT_EQ(ds.class_names(), (std::vector<std::string>{"alpha", "beta"}));
  EXPECT_EQ(ds.num_classes(), 2);
  ASSERT_EQ(ds.size(), 3);
  EXPECT_EQ(ds.image_shape(), (std::vector<int64_t>{3, 8, 8}));
  EXPECT_EQ(ds.path(0), Path("folder/alpha/a0.png"));
  EXPECT_EQ(ds.path(1), Path("folder/beta/b1.jpg"));
  EXPECT_EQ(ds.path(2), Path("folder/beta/sub/b0.PNG"));
  EXPECT_EQ(ds.label(0), 0);
  EXPECT_EQ(ds.label(1), 1);
  EXPECT_EQ(ds.label(2), 1);

  Batch b = ds.Get({0, 2, 1});
  EXPECT_EQ(b.images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(b.images.sizes().vec(), (std::vector<int64_t>{3, 3, 8, 8}));
  EXPECT_TRUE(torch::equal(b.images[0], RgbTensor(a0)));  // PNG: exact, RGB
  EXPECT_TRUE(torch::equal(b.images[1], RgbTensor(b0)));
  EXPECT_TRUE(torch::equal(b.labels, torch::tensor({0, 1, 1}, torch::kInt64)));
  EXPECT_THROW(ds.Get({3}), c10::Error);
}

TEST_F(DataReadersTest, ImageFolderResizesShorterSideAndCentreCrops) {
  // 16 wide x 8 high: left half red, right half blue. Shorter side 8 -> 4
  // gives 8x4 (exact 2x2 averages), and the centre 4x4 crop keeps columns
  // 2..5: two red, two blue.
  cv::Mat wide(8, 16, CV_8UC3, cv::Scalar(255, 0, 0));      // BGR blue
  wide(cv::Rect(0, 0, 8, 8)).setTo(cv::Scalar(0, 0, 255));  // BGR red
  WriteImage(Path("resize/c/wide.png"), wide);
  // 2 wide x 4 high, uniform: grows to 4x8, cropped to 4x4.
  WriteImage(Path("resize/c/zz_tall.png"),
             cv::Mat(4, 2, CV_8UC3, cv::Scalar(10, 20, 30)));

  ImageFolderDataset ds(Path("resize"), /*image_size=*/4);
  ASSERT_EQ(ds.size(), 2);
  Batch b = ds.Get({0, 1});
  EXPECT_EQ(b.images.sizes().vec(), (std::vector<int64_t>{2, 3, 4, 4}));

  torch::Tensor expected = torch::zeros({3, 4, 4}, torch::kUInt8);
  expected[0].narrow(1, 0, 2).fill_(255);  // R on the left
  expected[2].narrow(1, 2, 2).fill_(255);  // B on the right
  EXPECT_TRUE(torch::equal(b.images[0], expected)) << b.images[0];

  torch::Tensor tall = torch::empty({3, 4, 4}, torch::kUInt8);
  tall[0].fill_(30);
  tall[1].fill_(20);
  tall[2].fill_(10);
  EXPECT_TRUE(torch::equal(b.images[1], tall)) << b.images[1];
}

TEST_F(DataReadersTest, ImageFolderGrayscale) {
  cv::Mat gray(4, 4, CV_8UC1);
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 4; ++x)
      gray.at<uint8_t>(y, x) = static_cast<uint8_t>(16 * y + x);
  }
  WriteImage(Path("gray/only/g.png"), gray);
  ImageFolderDataset ds(Path("gray"), /*image_size=*/4, /*channels=*/1);
  EXPECT_EQ(ds.image_shape(), (std::vector<int64_t>{1, 4, 4}));
  Batch b = ds.Get({0});
  EXPECT_EQ(b.images.sizes().vec(), (std::vector<int64_t>{1, 1, 4, 4}));
  torch::Tensor expected = (torch::arange(4, torch::kInt64).view({4, 1}) * 16 +
                            torch::arange(4, torch::kInt64).view({1, 4}))
                               .to(torch::kUInt8)
                               .view({1, 1, 4, 4});
  EXPECT_TRUE(torch::equal(b.images, expected)) << b.images;
}

TEST_F(DataReadersTest, TinyImageNetLayout) {
  // train/<wnid>/images/*.JPEG-like files (PNG here, for exact pixels).
  WriteImage(Path("tiny/train/n01/images/n01_0.png"), BgrPattern(8, 8, 3));
  WriteFile(Path("tiny/train/n01/n01_boxes.txt"), {'x'});
  WriteImage(Path("tiny/train/n02/images/n02_0.png"), BgrPattern(8, 8, 4));
  ImageFolderDataset train(Path("tiny/train"), /*image_size=*/8);
  ASSERT_EQ(train.size(), 2);
  EXPECT_EQ(train.path(1), Path("tiny/train/n02/images/n02_0.png"));

  const cv::Mat v0 = BgrPattern(8, 8, 5);
  const cv::Mat v1 = BgrPattern(8, 8, 6);
  WriteImage(Path("tiny/val/images/val_0.png"), v0);
  WriteImage(Path("tiny/val/images/val_1.png"), v1);
  const std::string ann =
      "val_0.png\tn02\t0\t0\t7\t7\nval_1.png\tn01\t1\t1\t6\t6\r\n";
  WriteFile(Path("tiny/val/val_annotations.txt"),
            Bytes(ann.begin(), ann.end()));

  ImageFolderDataset val = ImageFolderDataset::TinyImageNetVal(
      Path("tiny/val"), train.class_names(), /*image_size=*/8);
  ASSERT_EQ(val.size(), 2);
  EXPECT_EQ(val.num_classes(), 2);
  EXPECT_EQ(val.class_names(), train.class_names());
  EXPECT_EQ(val.path(0), Path("tiny/val/images/val_0.png"));
  Batch b = val.Get({0, 1});
  EXPECT_TRUE(torch::equal(b.labels, torch::tensor({1, 0}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(b.images[0], RgbTensor(v0)));
  EXPECT_TRUE(torch::equal(b.images[1], RgbTensor(v1)));

  // An unknown class, and a listed file that is absent.
  const std::string bad = "val_0.png\tn99\t0\t0\t7\t7\n";
  WriteFile(Path("tiny/val/val_annotations.txt"),
            Bytes(bad.begin(), bad.end()));
  const std::string msg = DataErrorOf([&] {
    ImageFolderDataset::TinyImageNetVal(Path("tiny/val"), train.class_names(),
                                        8);
  });
  EXPECT_TRUE(Contains(msg, Path("tiny/val/val_annotations.txt"))) << msg;
  EXPECT_TRUE(Contains(msg, "n99")) << msg;

  const std::string gone = "val_7.png\tn01\t0\t0\t7\t7\n";
  WriteFile(Path("tiny/val/val_annotations.txt"),
            Bytes(gone.begin(), gone.end()));
  const std::string msg2 = DataErrorOf([&] {
    ImageFolderDataset::TinyImageNetVal(Path("tiny/val"), train.class_names(),
                                        8);
  });
  EXPECT_TRUE(Contains(msg2, Path("tiny/val/images/val_7.png"))) << msg2;
}

TEST_F(DataReadersTest, CorruptJpegNamesTheFile) {
  // Not any image format's signature, then random bytes.
  Bytes junk = {'N', 'O', 'T', ' ', 'A', 'N', ' ', 'I', 'M', 'A', 'G', 'E'};
  std::mt19937 rng(1234);
  for (int i = 0; i < 500; ++i)
    junk.push_back(static_cast<uint8_t>(rng() & 0xff));
  const std::string bad = Path("junk/c/bad.jpg");
  WriteFile(bad, junk);
  WriteImage(Path("junk/c/good.png"), BgrPattern(8, 8, 7));

  ImageFolderDataset ds(Path("junk"), /*image_size=*/8);
  ASSERT_EQ(ds.size(), 2);
  ASSERT_EQ(ds.path(0), bad);
  EXPECT_NO_THROW(ds.Get({1}));
  const std::string msg = DataErrorOf([&] { ds.Get({1, 0}); });
  EXPECT_TRUE(Contains(msg, bad)) << msg;
}

TEST_F(DataReadersTest, ImageFolderStructureErrors) {
  // Missing root.
  const std::string missing = Path("nowhere");
  std::string msg = DataErrorOf([&] { (void)ImageFolderDataset(missing, 8); });
  EXPECT_TRUE(Contains(msg, missing)) << msg;

  // Empty root.
  const std::string empty = Path("empty");
  fs::create_directories(empty);
  msg = DataErrorOf([&] { (void)ImageFolderDataset(empty, 8); });
  EXPECT_TRUE(Contains(msg, empty)) << msg;

  // A class folder without images.
  WriteImage(Path("partial/a/x.png"), BgrPattern(4, 4, 0));
  WriteFile(Path("partial/b/readme.txt"), {'x'});
  msg = DataErrorOf([&] { (void)ImageFolderDataset(Path("partial"), 8); });
  EXPECT_TRUE(Contains(msg, Path("partial/b"))) << msg;
}

}  // namespace
}  // namespace dfkd::worker
