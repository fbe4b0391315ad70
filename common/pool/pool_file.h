// The unlabeled image pool file: patches cut once from image folders
// (pool_builder.h) and read by the sampling-based methods (MosaicKD, DFND;
// dfkd-methods.md §7.1, §8.1) without decoding anything again.
//
//   offset  bytes  field
//   0       8      magic "DFKDPOOL"
//   8       4      format version (uint32, little-endian; kPoolFormatVersion)
//   12      4      zero
//   16      8      count     (int64, little-endian)
//   24      8      channels  (1 or 3)
//   32      8      height
//   40      8      width
//   48      8      data offset (64)
//   56      8      zero
//   64      ...    count * channels * height * width uint8 pixels, NCHW
//                  (image-major, then channel, row, column; RGB for 3 channels)
//
// The file size is exactly data_offset + count * C * H * W; anything else is
// reported as truncated (or oversized). Beside PATH lies PATH.json, the
// provenance (sources with their sizes and patch counts, seed, shape, count,
// scale range, build time, builder version): see pool_builder.h.
//
// Every error is a std::runtime_error whose message starts with the file's
// path: "/data/pool.bin: truncated: expected 307200064 bytes got 1000".
#ifndef DFKD_COMMON_POOL_POOL_FILE_H_
#define DFKD_COMMON_POOL_POOL_FILE_H_

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace dfkd::common {

inline constexpr char kPoolMagic[] = "DFKDPOOL";   // 8 bytes on disk, no NUL
inline constexpr int64_t kPoolFormatVersion = 1;
inline constexpr int64_t kPoolHeaderBytes = 64;

struct PoolHeader {
  int64_t count = 0;
  int64_t channels = 0;
  int64_t height = 0;
  int64_t width = 0;
  int64_t data_offset = kPoolHeaderBytes;   // where the pixels start

  int64_t image_bytes() const { return channels * height * width; }
  int64_t pixel_bytes() const { return count * image_bytes(); }
  int64_t file_bytes() const { return data_offset + pixel_bytes(); }
  // "3x32x32"
  std::string ShapeString() const;
};

// Reads and checks the header against the file's size. Throws
// std::runtime_error naming the file: no such file, bad magic, unsupported
// version, implausible dimensions, "truncated: expected N bytes got M".
PoolHeader ReadPoolHeader(const std::string& path);

// Copies images [first, first + n) of the pool into dst (n * image_bytes()
// bytes). `header` is what ReadPoolHeader returned for this path. A range
// outside [0, count) or a short read throws std::runtime_error naming the file.
void ReadPoolPixels(const std::string& path, const PoolHeader& header, int64_t first, int64_t n,
                    uint8_t* dst);

// Writes the header (shape's count, channels, height, width; the data offset
// is always kPoolHeaderBytes) and shape.pixel_bytes() bytes of pixels to
// PATH.tmp, flushes it to disk, then renames it to PATH, so readers never see
// a partial pool. Throws std::runtime_error naming the file.
void WritePoolFile(const std::string& path, const PoolHeader& shape, const uint8_t* pixels);

// Throws std::runtime_error naming the file when the pool's images are not
// channels x height x width ("pool FILE holds 3x32x32 images, the task needs
// 1x28x28") or when it holds fewer than min_count images ("pool FILE holds
// 500 images, 1000 needed").
void CheckPoolFits(const std::string& path, const PoolHeader& header, int64_t channels,
                   int64_t height, int64_t width, int64_t min_count);

// PATH + ".json": where the provenance of the pool at PATH lies.
std::string PoolProvenancePath(const std::string& pool_path);
// Writes the provenance (pretty-printed) atomically beside the pool.
void WritePoolProvenance(const std::string& pool_path, const nlohmann::json& provenance);
// Reads it back; throws std::runtime_error naming the .json file when it is
// missing or not JSON.
nlohmann::json ReadPoolProvenance(const std::string& pool_path);

}  // namespace dfkd::common

#endif  // DFKD_COMMON_POOL_POOL_FILE_H_
