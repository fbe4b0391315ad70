// The unlabeled pool: file format (header round trip, ranges, damaged files)
// and builder (determinism, shapes, channels, flips, sources, errors), on
// small synthetic images written with OpenCV into a fresh temporary folder.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "common/pool/pool_builder.h"
#include "common/pool/pool_file.h"
#include "tests/testing/temp_dir.h"

namespace dfkd::common {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

// The message of what fn throws; "" when it throws nothing.
std::string ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

Bytes ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteBytes(const std::string& path, const std::string& data) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

// Random 8-bit content; type CV_8UC1 or CV_8UC3.
void WriteNoise(const std::string& path, int rows, int cols, int type, uint64_t seed) {
  fs::create_directories(fs::path(path).parent_path());
  cv::Mat image(rows, cols, type);
  cv::RNG rng(seed);
  rng.fill(image, cv::RNG::UNIFORM, cv::Scalar::all(0), cv::Scalar::all(256));
  ASSERT_TRUE(cv::imwrite(path, image)) << path;
}

// A folder of a few images: PNG and JPEG, colour and gray, various sizes,
// one in a subfolder.
std::string MakeImageFolder(const dfkd::testing::TempDir& dir) {
  const std::string root = dir.File("images");
  WriteNoise(root + "/a.png", 48, 64, CV_8UC3, 1);
  WriteNoise(root + "/b.jpg", 100, 80, CV_8UC3, 2);
  WriteNoise(root + "/c.png", 50, 50, CV_8UC1, 3);
  WriteNoise(root + "/deeper/d.jpeg", 37, 90, CV_8UC1, 4);
  WriteNoise(root + "/deeper/e.pgm", 70, 40, CV_8UC1, 5);
  WriteBytes(root + "/notes.txt", "not an image");
  return root;
}

PoolBuildOptions Options(const std::string& source, int64_t count, int64_t c, int64_t h,
                         int64_t w, uint64_t seed) {
  PoolBuildOptions o;
  o.sources = {source};
  o.count = count;
  o.channels = c;
  o.height = h;
  o.width = w;
  o.seed = seed;
  return o;
}

// ---------------------------------------------------------------------------
// The file format.

PoolHeader Shape(int64_t count, int64_t c, int64_t h, int64_t w) {
  PoolHeader header;
  header.count = count;
  header.channels = c;
  header.height = h;
  header.width = w;
  return header;
}

Bytes Pattern(size_t n) {
  Bytes out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>((i * 37 + 5) % 256);
  return out;
}

TEST(PoolFileTest, HeaderRoundTripAndLayout) {
  dfkd::testing::TempDir dir;
  const std::string path = dir.File("pool.bin");
  const PoolHeader shape = Shape(5, 3, 8, 10);
  const Bytes pixels = Pattern(static_cast<size_t>(shape.pixel_bytes()));
  WritePoolFile(path, shape, pixels.data());
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  const PoolHeader h = ReadPoolHeader(path);
  EXPECT_EQ(h.count, 5);
  EXPECT_EQ(h.channels, 3);
  EXPECT_EQ(h.height, 8);
  EXPECT_EQ(h.width, 10);
  EXPECT_EQ(h.data_offset, kPoolHeaderBytes);
  EXPECT_EQ(h.ShapeString(), "3x8x10");

  const Bytes file = ReadBytes(path);
  ASSERT_EQ(static_cast<int64_t>(file.size()), 64 + 5 * 3 * 8 * 10);
  EXPECT_EQ(std::string(file.begin(), file.begin() + 8), "DFKDPOOL");
  EXPECT_EQ(file[8], 1);    // format version, little-endian
  EXPECT_EQ(file[16], 5);   // count
  EXPECT_EQ(file[24], 3);   // channels
  EXPECT_EQ(file[32], 8);   // height
  EXPECT_EQ(file[40], 10);  // width
  EXPECT_EQ(file[48], 64);  // data offset
  EXPECT_EQ(Bytes(file.begin() + 64, file.end()), pixels);
}

TEST(PoolFileTest, ReadPixelsOfARangeEqualsTheSlice) {
  dfkd::testing::TempDir dir;
  const std::string path = dir.File("pool.bin");
  const PoolHeader shape = Shape(7, 1, 8, 8);
  const Bytes pixels = Pattern(static_cast<size_t>(shape.pixel_bytes()));
  WritePoolFile(path, shape, pixels.data());
  const PoolHeader h = ReadPoolHeader(path);

  Bytes got(3 * 64);
  ReadPoolPixels(path, h, 2, 3, got.data());
  EXPECT_EQ(got, Bytes(pixels.begin() + 2 * 64, pixels.begin() + 5 * 64));
  Bytes all(7 * 64);
  ReadPoolPixels(path, h, 0, 7, all.data());
  EXPECT_EQ(all, pixels);

  const std::string error = ErrorOf([&] { ReadPoolPixels(path, h, 5, 3, got.data()); });
  EXPECT_NE(error.find(path), std::string::npos) << error;
  EXPECT_NE(error.find("[5, 8)"), std::string::npos) << error;
  EXPECT_NE(error.find("holds 7"), std::string::npos) << error;
}

TEST(PoolFileTest, DamagedFilesNameTheFile) {
  dfkd::testing::TempDir dir;
  const std::string path = dir.File("pool.bin");
  const PoolHeader shape = Shape(4, 3, 8, 8);
  const Bytes pixels = Pattern(static_cast<size_t>(shape.pixel_bytes()));
  WritePoolFile(path, shape, pixels.data());

  // Missing.
  const std::string missing = dir.File("nope.bin");
  std::string error = ErrorOf([&] { ReadPoolHeader(missing); });
  EXPECT_EQ(error, missing + ": no such file");

  // Truncated in the pixels.
  const int64_t full = 64 + 4 * 192;
  fs::resize_file(path, static_cast<uintmax_t>(full - 10));
  error = ErrorOf([&] { ReadPoolHeader(path); });
  EXPECT_EQ(error.rfind(path + ": truncated: expected " + std::to_string(full) + " bytes got " +
                            std::to_string(full - 10),
                        0),
            0u)
      << error;

  // Truncated in the header.
  fs::resize_file(path, 20);
  error = ErrorOf([&] { ReadPoolHeader(path); });
  EXPECT_NE(error.find(path + ": truncated"), std::string::npos) << error;

  // Too long.
  WritePoolFile(path, shape, pixels.data());
  {
    std::ofstream out(path, std::ios::binary | std::ios::app);
    out << "x";
  }
  error = ErrorOf([&] { ReadPoolHeader(path); });
  EXPECT_NE(error.find(path + ": size mismatch: expected " + std::to_string(full)),
            std::string::npos)
      << error;

  // Not a pool.
  const std::string other = dir.File("other.bin");
  WriteBytes(other, std::string(100, 'z'));
  error = ErrorOf([&] { ReadPoolHeader(other); });
  EXPECT_NE(error.find(other + ": not a dfkd pool file"), std::string::npos) << error;
}

TEST(PoolFileTest, CheckPoolFitsComparesShapeAndCount) {
  const PoolHeader h = Shape(500, 3, 32, 32);
  EXPECT_EQ(ErrorOf([&] { CheckPoolFits("/p/pool.bin", h, 3, 32, 32, 500); }), "");
  EXPECT_EQ(ErrorOf([&] { CheckPoolFits("/p/pool.bin", h, 1, 28, 28, 10); }),
            "pool /p/pool.bin holds 3x32x32 images, the task needs 1x28x28");
  EXPECT_EQ(ErrorOf([&] { CheckPoolFits("/p/pool.bin", h, 3, 32, 32, 1000); }),
            "pool /p/pool.bin holds 500 images, 1000 needed");
}

TEST(PoolFileTest, ProvenanceRoundTrip) {
  dfkd::testing::TempDir dir;
  const std::string path = dir.File("pool.bin");
  WritePoolProvenance(path, nlohmann::json{{"seed", 3}, {"count", 10}});
  EXPECT_TRUE(fs::exists(path + ".json"));
  const nlohmann::json back = ReadPoolProvenance(path);
  EXPECT_EQ(back["seed"], 3);
  const std::string error = ErrorOf([&] { ReadPoolProvenance(dir.File("none.bin")); });
  EXPECT_NE(error.find(dir.File("none.bin.json")), std::string::npos) << error;
}

// ---------------------------------------------------------------------------
// The builder.

TEST(PoolBuilderTest, SameSeedSameBytesOtherSeedOtherBytes) {
  dfkd::testing::TempDir dir;
  const std::string root = MakeImageFolder(dir);
  const PoolBuildOptions options = Options(root, 300, 3, 32, 32, 7);
  BuildPoolFile(options, dir.File("one.bin"));
  BuildPoolFile(options, dir.File("two.bin"));
  const Bytes one = ReadBytes(dir.File("one.bin"));
  EXPECT_EQ(static_cast<int64_t>(one.size()), 64 + 300 * 3 * 32 * 32);
  EXPECT_EQ(one, ReadBytes(dir.File("two.bin")));

  PoolBuildOptions other = options;
  other.seed = 8;
  const PoolBuildResult b = BuildPool(other);
  EXPECT_NE(Bytes(one.begin() + 64, one.end()), b.pixels);
}

TEST(PoolBuilderTest, ShapesGiveTheirHeaderAndSize) {
  dfkd::testing::TempDir dir;
  const std::string root = MakeImageFolder(dir);
  struct Case {
    int64_t c, h, w;
  };
  for (const Case& s : {Case{1, 28, 28}, Case{3, 32, 32}, Case{3, 16, 24}}) {
    const std::string path = dir.File("pool_" + std::to_string(s.c) + "_" +
                                      std::to_string(s.h) + "_" + std::to_string(s.w) + ".bin");
    const nlohmann::json provenance = BuildPoolFile(Options(root, 50, s.c, s.h, s.w, 0), path);
    const PoolHeader h = ReadPoolHeader(path);
    EXPECT_EQ(h.count, 50);
    EXPECT_EQ(h.channels, s.c);
    EXPECT_EQ(h.height, s.h);
    EXPECT_EQ(h.width, s.w);
    EXPECT_EQ(static_cast<int64_t>(fs::file_size(path)), 64 + 50 * s.c * s.h * s.w);
    EXPECT_EQ(provenance["bytes"], 64 + 50 * s.c * s.h * s.w);
    EXPECT_EQ(provenance["shape"], nlohmann::json::array({s.c, s.h, s.w}));
  }
}

TEST(PoolBuilderTest, ProvenanceRecordsSourcesAndPatchCounts) {
  dfkd::testing::TempDir dir;
  const std::string root = MakeImageFolder(dir);
  const std::string path = dir.File("pool.bin");
  BuildPoolFile(Options(root, 103, 1, 28, 28, 5), path);
  const nlohmann::json p = ReadPoolProvenance(path);
  EXPECT_EQ(p["count"], 103);
  EXPECT_EQ(p["seed"], 5);
  EXPECT_EQ(p["files_found"], 5);   // notes.txt is not an image
  ASSERT_EQ(p["sources"].size(), 5u);
  int64_t patches = 0;
  for (const nlohmann::json& s : p["sources"]) {
    const int64_t n = s["patches"].get<int64_t>();
    EXPECT_TRUE(n == 20 || n == 21) << s.dump();   // balanced: 103 = 5 x 20 + 3
    patches += n;
  }
  EXPECT_EQ(patches, 103);
  EXPECT_EQ(p["sources"][0]["path"], root + "/a.png");
  EXPECT_EQ(p["sources"][0]["width"], 64);
  EXPECT_EQ(p["sources"][0]["height"], 48);
  EXPECT_EQ(p["sources"][0]["bytes"], static_cast<int64_t>(fs::file_size(root + "/a.png")));
}

TEST(PoolBuilderTest, ChannelsFollowTheSource) {
  dfkd::testing::TempDir dir;
  // One flat colour: B = 10, G = 20, R = 30 (OpenCV stores BGR).
  const std::string colour = dir.File("flat/colour.png");
  fs::create_directories(dir.File("flat"));
  ASSERT_TRUE(cv::imwrite(colour, cv::Mat(40, 60, CV_8UC3, cv::Scalar(10, 20, 30))));
  PoolBuildResult rgb = BuildPool(Options(colour, 4, 3, 8, 8, 0));
  for (int64_t i = 0; i < 4; ++i) {
    const uint8_t* image = rgb.pixels.data() + i * 3 * 64;
    EXPECT_EQ(image[0], 30);         // R plane first
    EXPECT_EQ(image[64 + 17], 20);   // G
    EXPECT_EQ(image[128 + 63], 10);  // B
  }
  // Gray: (30 * 4899 + 20 * 9617 + 10 * 1868 + 8192) >> 14 = 22, OpenCV's
  // fixed-point BGR2GRAY.
  PoolBuildResult gray = BuildPool(Options(colour, 4, 1, 8, 8, 0));
  for (uint8_t v : gray.pixels) ASSERT_EQ(v, 22);

  // A grayscale source replicated to three equal planes.
  const std::string noise = dir.File("gray/noise.png");
  WriteNoise(noise, 30, 30, CV_8UC1, 9);
  PoolBuildResult replicated = BuildPool(Options(noise, 6, 3, 8, 8, 1));
  for (int64_t i = 0; i < 6; ++i) {
    const uint8_t* image = replicated.pixels.data() + i * 3 * 64;
    for (int64_t k = 0; k < 64; ++k) {
      ASSERT_EQ(image[k], image[64 + k]);
      ASSERT_EQ(image[k], image[128 + k]);
    }
  }
}

TEST(PoolBuilderTest, FlipMirrorsTheSameCrops) {
  dfkd::testing::TempDir dir;
  const std::string root = MakeImageFolder(dir);
  PoolBuildOptions options = Options(root, 64, 1, 8, 8, 3);
  options.flip = false;
  const PoolBuildResult plain = BuildPool(options);
  options.flip = true;
  const PoolBuildResult flipped = BuildPool(options);
  int mirrored = 0;
  for (int64_t i = 0; i < 64; ++i) {
    const uint8_t* a = plain.pixels.data() + i * 64;
    const uint8_t* b = flipped.pixels.data() + i * 64;
    bool same = true;
    bool mirror = true;
    for (int64_t y = 0; y < 8; ++y) {
      for (int64_t x = 0; x < 8; ++x) {
        same = same && a[y * 8 + x] == b[y * 8 + x];
        mirror = mirror && a[y * 8 + x] == b[y * 8 + 7 - x];
      }
    }
    EXPECT_TRUE(same || mirror) << "image " << i;
    if (mirror && !same) ++mirrored;
  }
  EXPECT_GT(mirrored, 10);
  EXPECT_LT(mirrored, 54);
}

TEST(PoolBuilderTest, DuplicatesCountOnceAndFoldersAreCapped) {
  dfkd::testing::TempDir dir;
  const std::string root = dir.File("src");
  for (int i = 0; i < 30; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "/seq/frame%02d.png", i);
    WriteNoise(root + name, 8, 8, CV_8UC1, 100 + static_cast<uint64_t>(i));
  }
  WriteNoise(root + "/dup/x.png", 8, 8, CV_8UC3, 7);
  fs::copy_file(root + "/dup/x.png", root + "/dup/y.png");
  fs::copy_file(root + "/dup/x.png", root + "/dup/z.png");

  const PoolSourceList list = ListPoolSources({root}, 20);
  EXPECT_EQ(list.found, 33);
  EXPECT_EQ(list.duplicates, 2);
  EXPECT_EQ(list.capped, 10);
  ASSERT_EQ(list.files.size(), 21u);
  EXPECT_EQ(list.files[0].path, root + "/dup/x.png");
  EXPECT_EQ(list.files[1].path, root + "/seq/frame00.png");   // evenly spaced: 0, 1, 3, 4, 6, ...
  EXPECT_EQ(list.files[2].path, root + "/seq/frame01.png");
  EXPECT_EQ(list.files[3].path, root + "/seq/frame03.png");

  const PoolSourceList all = ListPoolSources({root}, 0);
  EXPECT_EQ(all.capped, 0);
  EXPECT_EQ(all.files.size(), 31u);

  // A file named explicitly is never capped.
  const PoolSourceList named = ListPoolSources({root, root + "/seq/frame02.png"}, 20);
  EXPECT_EQ(named.files.size(), 22u);
}

TEST(PoolBuilderTest, UnreadableFileIsNamed) {
  dfkd::testing::TempDir dir;
  const std::string root = dir.File("src");
  WriteNoise(root + "/good.png", 20, 20, CV_8UC3, 1);
  WriteBytes(root + "/x.png", "this is not a PNG at all");
  const std::string error = ErrorOf([&] { BuildPool(Options(root, 10, 3, 8, 8, 0)); });
  EXPECT_NE(error.find(root + "/x.png"), std::string::npos) << error;
  EXPECT_NE(error.find("cannot read or decode"), std::string::npos) << error;
}

TEST(PoolBuilderTest, EmptyOrMissingSourceIsNamed) {
  dfkd::testing::TempDir dir;
  const std::string empty = dir.File("empty");
  fs::create_directories(empty + "/sub");
  WriteBytes(empty + "/sub/readme.txt", "no images here");
  std::string error = ErrorOf([&] { BuildPool(Options(empty, 10, 3, 8, 8, 0)); });
  EXPECT_NE(error.find(empty + ": no images"), std::string::npos) << error;

  const std::string missing = dir.File("missing");
  error = ErrorOf([&] { BuildPool(Options(missing, 10, 3, 8, 8, 0)); });
  EXPECT_EQ(error, missing + ": no such file or folder");
}

TEST(PoolBuilderTest, BadOptionsNameTheField) {
  dfkd::testing::TempDir dir;
  const std::string root = MakeImageFolder(dir);
  EXPECT_EQ(ErrorOf([&] { BuildPool(Options(root, 10, 2, 8, 8, 0)); }),
            "channels must be 1 or 3, got 2");
  EXPECT_EQ(ErrorOf([&] { BuildPool(Options(root, 10, 3, 4, 8, 0)); }),
            "height must be in [8, 4096], got 4");
  EXPECT_EQ(ErrorOf([&] { BuildPool(Options(root, 10, 3, 8, 7, 0)); }),
            "width must be in [8, 4096], got 7");
  EXPECT_NE(ErrorOf([&] { BuildPool(Options(root, 0, 3, 8, 8, 0)); }).find("count"),
            std::string::npos);
  PoolBuildOptions o = Options(root, 10, 3, 8, 8, 0);
  o.min_scale = 0.5;
  o.max_scale = 0.25;
  EXPECT_NE(ErrorOf([&] { BuildPool(o); }).find("max_scale"), std::string::npos);
  o.sources.clear();
  EXPECT_NE(ErrorOf([&] { BuildPool(o); }).find("sources"), std::string::npos);
}

TEST(PoolBuilderTest, ProgressEndsAtTheCount) {
  dfkd::testing::TempDir dir;
  const std::string root = MakeImageFolder(dir);
  int64_t last_done = -1;
  int64_t last_total = -1;
  int calls = 0;
  BuildPool(Options(root, 5000, 1, 8, 8, 0), [&](int64_t done, int64_t total) {
    EXPECT_GE(done, last_done);
    last_done = done;
    last_total = total;
    ++calls;
  });
  EXPECT_EQ(last_done, 5000);
  EXPECT_EQ(last_total, 5000);
  EXPECT_GE(calls, 3);
}

// The `dfkd pool` default source (scripts/install-deps.sh installs it): every
// kept file decodes, sequences are capped, and each source gives patches.
TEST(PoolBuilderTest, VispImagesDefaultSource) {
  ASSERT_TRUE(fs::is_directory(kDefaultPoolSource))
      << kDefaultPoolSource << " is absent: install the Debian package visp-images-data "
      << "(scripts/install-deps.sh does)";
  const PoolSourceList list = ListPoolSources({kDefaultPoolSource}, 20);
  EXPECT_GT(list.found, 900);
  EXPECT_GT(list.capped, 500);
  EXPECT_GT(list.files.size(), 100u);
  EXPECT_LT(list.files.size(), 300u);
  const PoolBuildResult pool = BuildPool(Options(kDefaultPoolSource, 1000, 1, 28, 28, 0));
  EXPECT_EQ(pool.provenance["sources"].size(), list.files.size());
  EXPECT_EQ(static_cast<int64_t>(pool.pixels.size()), 1000 * 28 * 28);
}

}  // namespace
}  // namespace dfkd::common
