#include "common/pool/pool_file.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <system_error>

namespace dfkd::common {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMagicBytes = 8;
constexpr int64_t kMaxCount = int64_t{1} << 40;
constexpr int64_t kMaxChannels = 4;
constexpr int64_t kMaxSide = 65536;
constexpr int64_t kMaxDataOffset = int64_t{1} << 20;
// Bytes per fread / istream::read call.
constexpr int64_t kChunkBytes = int64_t{1} << 26;

[[noreturn]] void Fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

void PutI64(uint8_t* p, int64_t v) {
  const auto u = static_cast<uint64_t>(v);
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(u >> (8 * i));
}

uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

int64_t GetI64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return static_cast<int64_t>(v);
}

std::string Shape(int64_t c, int64_t h, int64_t w) {
  return std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w);
}

// Size of a regular file, or an error naming it.
int64_t FileSize(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) Fail(path, "no such file");
  if (ec) Fail(path, "cannot stat: " + ec.message());
  if (!fs::is_regular_file(st)) Fail(path, "not a regular file");
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) Fail(path, "cannot stat: " + ec.message());
  return static_cast<int64_t>(size);
}

// Closes a FILE* when it goes out of scope (unless Close() did).
class OutFile {
 public:
  explicit OutFile(const std::string& path) : path_(path), f_(std::fopen(path.c_str(), "wb")) {
    if (f_ == nullptr) Fail(path, std::string("cannot create: ") + std::strerror(errno));
  }
  ~OutFile() {
    if (f_ != nullptr) std::fclose(f_);
  }
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;

  void Write(const void* data, int64_t bytes) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (bytes > 0) {
      const auto chunk = static_cast<size_t>(std::min(bytes, kChunkBytes));
      if (std::fwrite(p, 1, chunk, f_) != chunk) {
        Fail(path_, std::string("write error: ") + std::strerror(errno));
      }
      p += chunk;
      bytes -= static_cast<int64_t>(chunk);
    }
  }
  // Flushes to disk and closes.
  void Close() {
    if (std::fflush(f_) != 0 || fsync(fileno(f_)) != 0) {
      Fail(path_, std::string("write error: ") + std::strerror(errno));
    }
    const int rc = std::fclose(f_);
    f_ = nullptr;
    if (rc != 0) Fail(path_, std::string("write error: ") + std::strerror(errno));
  }

 private:
  std::string path_;
  std::FILE* f_;
};

// Calls fill(file) on PATH.tmp, then renames it to PATH; the temporary file
// is removed on any error.
template <typename FillFn>
void WriteAtomically(const std::string& path, FillFn fill) {
  const std::string tmp = path + ".tmp";
  try {
    OutFile out(tmp);
    fill(out);
    out.Close();
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) Fail(path, "cannot rename " + tmp + " to it: " + ec.message());
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw;
  }
}

}  // namespace

std::string PoolHeader::ShapeString() const { return Shape(channels, height, width); }

PoolHeader ReadPoolHeader(const std::string& path) {
  const int64_t size = FileSize(path);
  uint8_t raw[kPoolHeaderBytes] = {};
  const int64_t want = std::min(size, kPoolHeaderBytes);
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) Fail(path, std::string("cannot open: ") + std::strerror(errno));
    in.read(reinterpret_cast<char*>(raw), static_cast<std::streamsize>(want));
    if (in.gcount() != want) Fail(path, "read error in the header");
  }
  if (size >= static_cast<int64_t>(kMagicBytes) &&
      std::memcmp(raw, kPoolMagic, kMagicBytes) != 0) {
    Fail(path, "not a dfkd pool file (bad magic, expected \"DFKDPOOL\")");
  }
  if (size < kPoolHeaderBytes) {
    Fail(path, "truncated: expected at least " + std::to_string(kPoolHeaderBytes) +
                   " bytes (the header) got " + std::to_string(size));
  }
  const uint32_t version = GetU32(raw + 8);
  if (version != static_cast<uint32_t>(kPoolFormatVersion)) {
    Fail(path, "pool format version " + std::to_string(version) + ", this build reads version " +
                   std::to_string(kPoolFormatVersion));
  }
  PoolHeader h;
  h.count = GetI64(raw + 16);
  h.channels = GetI64(raw + 24);
  h.height = GetI64(raw + 32);
  h.width = GetI64(raw + 40);
  h.data_offset = GetI64(raw + 48);
  const bool plausible = h.count >= 0 && h.count <= kMaxCount && h.channels >= 1 &&
                         h.channels <= kMaxChannels && h.height >= 1 && h.height <= kMaxSide &&
                         h.width >= 1 && h.width <= kMaxSide &&
                         h.data_offset >= kPoolHeaderBytes && h.data_offset <= kMaxDataOffset;
  if (!plausible) {
    Fail(path, "implausible header: " + std::to_string(h.count) + " images of " +
                   h.ShapeString() + ", data offset " + std::to_string(h.data_offset));
  }
  // With the bounds above: image_bytes <= 2^34, count <= 2^40; check the product.
  if (h.count > (std::numeric_limits<int64_t>::max() - h.data_offset) / h.image_bytes()) {
    Fail(path, "implausible header: " + std::to_string(h.count) + " images of " +
                   h.ShapeString() + " overflow a file size");
  }
  const int64_t expected = h.file_bytes();
  const std::string holds =
      " (" + std::to_string(h.count) + " images of " + h.ShapeString() + ")";
  if (size < expected) {
    Fail(path, "truncated: expected " + std::to_string(expected) + " bytes got " +
                   std::to_string(size) + holds);
  }
  if (size > expected) {
    Fail(path, "size mismatch: expected " + std::to_string(expected) + " bytes got " +
                   std::to_string(size) + holds);
  }
  return h;
}

void ReadPoolPixels(const std::string& path, const PoolHeader& header, int64_t first, int64_t n,
                    uint8_t* dst) {
  if (first < 0 || n < 0 || first > header.count - n) {
    Fail(path, "images [" + std::to_string(first) + ", " + std::to_string(first + n) +
                   ") requested, the pool holds " + std::to_string(header.count));
  }
  if (n == 0) return;
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail(path, std::string("cannot open: ") + std::strerror(errno));
  const int64_t offset = header.data_offset + first * header.image_bytes();
  in.seekg(static_cast<std::streamoff>(offset));
  if (!in) Fail(path, "cannot seek to byte offset " + std::to_string(offset));
  const int64_t total = n * header.image_bytes();
  int64_t done = 0;
  while (done < total) {
    const int64_t chunk = std::min(total - done, kChunkBytes);
    in.read(reinterpret_cast<char*>(dst + done), static_cast<std::streamsize>(chunk));
    const auto got = static_cast<int64_t>(in.gcount());
    done += got;
    if (got != chunk) {
      if (in.bad()) Fail(path, "read error at byte offset " + std::to_string(offset + done));
      Fail(path, "truncated: expected " + std::to_string(offset + total) + " bytes got " +
                     std::to_string(offset + done));
    }
  }
}

void WritePoolFile(const std::string& path, const PoolHeader& shape, const uint8_t* pixels) {
  if (shape.count < 0 || shape.count > kMaxCount || shape.channels < 1 ||
      shape.channels > kMaxChannels || shape.height < 1 || shape.height > kMaxSide ||
      shape.width < 1 || shape.width > kMaxSide) {
    Fail(path, "cannot write a pool of " + std::to_string(shape.count) + " images of " +
                   shape.ShapeString());
  }
  if (pixels == nullptr && shape.count > 0) Fail(path, "no pixels given to write");
  uint8_t raw[kPoolHeaderBytes] = {};
  std::memcpy(raw, kPoolMagic, kMagicBytes);
  PutU32(raw + 8, static_cast<uint32_t>(kPoolFormatVersion));
  PutI64(raw + 16, shape.count);
  PutI64(raw + 24, shape.channels);
  PutI64(raw + 32, shape.height);
  PutI64(raw + 40, shape.width);
  PutI64(raw + 48, kPoolHeaderBytes);
  WriteAtomically(path, [&](OutFile& out) {
    out.Write(raw, kPoolHeaderBytes);
    out.Write(pixels, shape.pixel_bytes());
  });
}

void CheckPoolFits(const std::string& path, const PoolHeader& header, int64_t channels,
                   int64_t height, int64_t width, int64_t min_count) {
  if (header.channels != channels || header.height != height || header.width != width) {
    throw std::runtime_error("pool " + path + " holds " + header.ShapeString() +
                             " images, the task needs " + Shape(channels, height, width));
  }
  if (header.count < min_count) {
    throw std::runtime_error("pool " + path + " holds " + std::to_string(header.count) +
                             " images, " + std::to_string(min_count) + " needed");
  }
}

std::string PoolProvenancePath(const std::string& pool_path) { return pool_path + ".json"; }

void WritePoolProvenance(const std::string& pool_path, const nlohmann::json& provenance) {
  const std::string text = provenance.dump(2) + "\n";
  WriteAtomically(PoolProvenancePath(pool_path), [&](OutFile& out) {
    out.Write(text.data(), static_cast<int64_t>(text.size()));
  });
}

nlohmann::json ReadPoolProvenance(const std::string& pool_path) {
  const std::string path = PoolProvenancePath(pool_path);
  FileSize(path);  // the missing-file error
  std::ifstream in(path);
  if (!in) Fail(path, std::string("cannot open: ") + std::strerror(errno));
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    Fail(path, std::string("not JSON: ") + e.what());
  }
}

}  // namespace dfkd::common
