#include "worker/data/idx_reader.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>
#include <vector>

#include <zlib.h>

namespace dfkd::worker {
namespace {

namespace fs = std::filesystem;

// gzread takes an unsigned length and fails for lengths above INT_MAX.
constexpr uint64_t kMaxReadChunk = uint64_t{1} << 30;
// A header describing more payload than this is taken to be corrupt rather
// than allocated (a flipped bit in a dimension would ask for terabytes).
constexpr uint64_t kMaxPayloadBytes = uint64_t{1} << 36;
constexpr int64_t kFashionMnistClasses = 10;

std::string Hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", static_cast<unsigned>(v));
  return buf;
}

uint32_t LoadBigEndian32(const unsigned char* p) {
  return (static_cast<uint32_t>(p[0]) << 24) |
         (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | static_cast<uint32_t>(p[3]);
}

// Throws DataError unless path names an existing file (not a folder).
void CheckIsFile(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) {
    throw DataError(path + ": no such file");
  }
  if (ec) throw DataError(path + ": cannot stat: " + ec.message());
  if (fs::is_directory(st)) {
    throw DataError(path + ": is a directory, expected a file");
  }
}

// A file read through zlib that counts the uncompressed bytes consumed, so
// that every error can name its byte offset.
class GzInput {
 public:
  explicit GzInput(const std::string& path) : path_(path) {
    CheckIsFile(path);
    errno = 0;
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) {
      const int err = errno;
      throw DataError(path + ": cannot open: " +
                      (err != 0 ? std::strerror(err) : "out of memory"));
    }
    // A larger input buffer than the 8 KiB default: fewer read() calls.
    gzbuffer(file_, 1u << 20);
  }
  ~GzInput() {
    if (file_ != nullptr) gzclose(file_);
  }
  GzInput(const GzInput&) = delete;
  GzInput& operator=(const GzInput&) = delete;

  // Reads exactly n bytes into dst, in chunks of at most kMaxReadChunk.
  void ReadExact(void* dst, uint64_t n) {
    expected_total_ = std::max(expected_total_, offset_ + n);
    auto* out = static_cast<unsigned char*>(dst);
    uint64_t done = 0;
    while (done < n) {
      const auto chunk =
          static_cast<unsigned>(std::min<uint64_t>(n - done, kMaxReadChunk));
      const int got = gzread(file_, out + done, chunk);
      if (got < 0) ThrowStreamError();
      if (got == 0) ThrowTruncated();
      done += static_cast<uint64_t>(got);
      offset_ += static_cast<uint64_t>(got);
    }
  }

  // Declares the total size the header implies, for truncation messages.
  void ExpectTotal(uint64_t n) { expected_total_ = n; }

  // Checks that the stream ends here: no trailing bytes, and a gzip stream
  // that is complete (its CRC is verified when its end is read).
  void CheckEnd() {
    unsigned char extra = 0;
    const int got = gzread(file_, &extra, 1);
    if (got < 0) ThrowStreamError();
    if (got > 0) {
      throw DataError(path_ + ": unexpected data after byte offset " +
                      std::to_string(offset_) + " (the header implies " +
                      std::to_string(expected_total_) + " bytes)");
    }
    int errnum = Z_OK;
    const char* msg = gzerror(file_, &errnum);
    if (errnum != Z_OK) {
      throw DataError(path_ + ": corrupt gzip data after byte offset " +
                      std::to_string(offset_) + ": " + StripPath(msg));
    }
  }

 private:
  // zlib prefixes its messages with the path given to gzopen.
  std::string StripPath(const char* msg) const {
    std::string s = msg != nullptr ? msg : "unknown error";
    const std::string prefix = path_ + ": ";
    if (s.compare(0, prefix.size(), prefix) == 0) s.erase(0, prefix.size());
    return s;
  }

  [[noreturn]] void ThrowStreamError() const {
    int errnum = Z_OK;
    const char* msg = gzerror(file_, &errnum);
    // The failing gzread may have produced part of its chunk before the
    // error; offset_ is where that read started.
    const char* what = errnum == Z_ERRNO ? "read error" : "corrupt gzip data";
    throw DataError(path_ + ": " + what + " at or after byte offset " +
                    std::to_string(offset_) + ": " + StripPath(msg));
  }

  [[noreturn]] void ThrowTruncated() const {
    std::string msg = path_ + ": truncated at byte offset " +
                      std::to_string(offset_) + ", expected " +
                      std::to_string(expected_total_) + " bytes";
    int errnum = Z_OK;
    const char* zmsg = gzerror(file_, &errnum);
    if (errnum != Z_OK) msg += " (gzip: " + StripPath(zmsg) + ")";
    throw DataError(msg);
  }

  std::string path_;
  gzFile file_ = nullptr;
  uint64_t offset_ = 0;
  uint64_t expected_total_ = 0;
};

// Reads an IDX file of uint8 data with `ndims` dimensions and the given
// magic; returns a contiguous uint8 tensor of the header's shape.
torch::Tensor ReadIdxUint8(const std::string& path, uint32_t expected_magic,
                           int ndims) {
  GzInput in(path);
  unsigned char magic_raw[4];
  in.ReadExact(magic_raw, sizeof(magic_raw));
  const uint32_t magic = LoadBigEndian32(magic_raw);
  if (magic != expected_magic) {
    throw DataError(path + ": bad magic " + Hex32(magic) +
                    " at offset 0, expected " + Hex32(expected_magic));
  }

  std::vector<unsigned char> dims_raw(4 * static_cast<size_t>(ndims));
  in.ReadExact(dims_raw.data(), dims_raw.size());
  const uint64_t header_bytes = 4 + dims_raw.size();
  std::vector<int64_t> shape;
  uint64_t payload = 1;
  for (int d = 0; d < ndims; ++d) {
    const uint32_t dim = LoadBigEndian32(dims_raw.data() + 4 * d);
    if (d > 0 && dim == 0) {
      throw DataError(path + ": bad header: dimension " + std::to_string(d) +
                      " is 0 at offset " + std::to_string(4 + 4 * d));
    }
    if (dim != 0 && payload > kMaxPayloadBytes / dim) {
      throw DataError(path + ": bad header: dimension " + std::to_string(d) +
                      " = " + std::to_string(dim) + " at offset " +
                      std::to_string(4 + 4 * d) +
                      " makes the payload implausibly large");
    }
    payload *= dim;
    shape.push_back(static_cast<int64_t>(dim));
  }
  in.ExpectTotal(header_bytes + payload);

  torch::Tensor data;
  try {
    data = torch::empty(shape, torch::kUInt8);
  } catch (const c10::Error& e) {
    throw DataError(path + ": cannot allocate " + std::to_string(payload) +
                    " bytes for the payload: " + e.what_without_backtrace());
  }
  if (payload > 0) in.ReadExact(data.data_ptr<uint8_t>(), payload);
  in.CheckEnd();
  return data;
}

// root/name, or root/name without its .gz suffix when only that exists.
std::string FindFile(const std::string& root, const std::string& name) {
  const fs::path gz = fs::path(root) / name;
  std::error_code ec;
  if (fs::exists(gz, ec)) return gz.string();
  fs::path plain = gz;
  plain.replace_extension();  // drops ".gz"
  if (fs::exists(plain, ec)) return plain.string();
  throw DataError(gz.string() + ": no such file (also tried " + plain.string() +
                  ")");
}

}  // namespace

torch::Tensor ReadIdxImages(const std::string& path) {
  torch::Tensor data = ReadIdxUint8(path, kIdxImagesMagic, 3);
  return data.unsqueeze(1);  // [N, 1, H, W]
}

torch::Tensor ReadIdxLabels(const std::string& path) {
  return ReadIdxUint8(path, kIdxLabelsMagic, 1).to(torch::kInt64);
}

TensorDataset LoadFashionMnist(const std::string& root, bool train) {
  const std::string dir = root.empty() ? kFashionMnistDefaultRoot : root;
  const std::string prefix = train ? "train" : "t10k";
  const std::string images_path =
      FindFile(dir, prefix + "-images-idx3-ubyte.gz");
  const std::string labels_path =
      FindFile(dir, prefix + "-labels-idx1-ubyte.gz");

  torch::Tensor images = ReadIdxImages(images_path);
  torch::Tensor labels = ReadIdxLabels(labels_path);
  if (images.size(0) != labels.size(0)) {
    throw DataError(images_path + " holds " + std::to_string(images.size(0)) +
                    " images but " + labels_path + " holds " +
                    std::to_string(labels.size(0)) + " labels");
  }
  const int64_t* l = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < labels.size(0); ++i) {
    if (l[i] < 0 || l[i] >= kFashionMnistClasses) {
      throw DataError(labels_path + ": label " + std::to_string(l[i]) +
                      " at byte offset " + std::to_string(8 + i) + " (sample " +
                      std::to_string(i) + "), expected < " +
                      std::to_string(kFashionMnistClasses));
    }
  }
  return TensorDataset(std::move(images), std::move(labels),
                       kFashionMnistClasses);
}

}  // namespace dfkd::worker
