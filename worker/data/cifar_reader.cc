#include "worker/data/cifar_reader.h"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace dfkd::worker {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kCifarSide = 32;
constexpr int64_t kCifarPixelBytes = 3 * kCifarSide * kCifarSide;  // 3072

struct CifarFormat {
  const char* subdir;      // folder name inside the archive's parent
  int64_t label_bytes;     // label bytes before the pixels of a record
  int64_t label_index;     // which of them is the label used
  int64_t num_classes;     // range of that label
  int64_t coarse_classes;  // range of the other label byte, if any
};

constexpr CifarFormat kCifar10{"cifar-10-batches-bin", 1, 0, 10, 0};
constexpr CifarFormat kCifar100{"cifar-100-binary", 2, 1, 100, 20};

// Closes a FILE* when it goes out of scope.
class File {
 public:
  explicit File(std::FILE* f) : f_(f) {}
  ~File() {
    if (f_ != nullptr) std::fclose(f_);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  std::FILE* get() const { return f_; }

 private:
  std::FILE* f_;
};

// The folder that holds `first_file`: root itself or root/subdir.
fs::path ResolveDir(const std::string& root, const char* subdir,
                    const std::string& first_file) {
  const fs::path direct = fs::path(root);
  std::error_code ec;
  if (fs::exists(direct / first_file, ec)) return direct;
  const fs::path nested = direct / subdir;
  if (fs::exists(nested / first_file, ec)) return nested;
  throw DataError((direct / first_file).string() +
                  ": no such file (also looked in " + nested.string() + ")");
}

// Size of a CIFAR file, checked to be a whole number of records.
uint64_t CheckedSize(const std::string& path, uint64_t record) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) {
    throw DataError(path + ": no such file");
  }
  if (ec) throw DataError(path + ": cannot stat: " + ec.message());
  if (!fs::is_regular_file(st)) {
    throw DataError(path + ": not a regular file");
  }
  const uint64_t size = fs::file_size(path, ec);
  if (ec) throw DataError(path + ": cannot stat: " + ec.message());
  if (size == 0) throw DataError(path + ": empty file, expected records");
  if (size % record != 0) {
    throw DataError(path + ": truncated record at byte offset " +
                    std::to_string(size / record * record) + " (file size " +
                    std::to_string(size) + " is not a multiple of the " +
                    std::to_string(record) + "-byte record)");
  }
  return size;
}

void ReadWholeFile(const std::string& path, std::vector<unsigned char>* buf) {
  File f(std::fopen(path.c_str(), "rb"));
  if (f.get() == nullptr) {
    throw DataError(path + ": cannot open: " + std::strerror(errno));
  }
  size_t done = 0;
  while (done < buf->size()) {
    const size_t got =
        std::fread(buf->data() + done, 1, buf->size() - done, f.get());
    if (got == 0) {
      if (std::ferror(f.get()) != 0) {
        throw DataError(path + ": read error at byte offset " +
                        std::to_string(done));
      }
      throw DataError(path + ": truncated at byte offset " +
                      std::to_string(done) + ", expected " +
                      std::to_string(buf->size()) + " bytes");
    }
    done += got;
  }
}

TensorDataset LoadCifar(const std::string& root,
                        const std::vector<std::string>& names,
                        const CifarFormat& format) {
  const fs::path dir = ResolveDir(root, format.subdir, names.front());
  const uint64_t record =
      static_cast<uint64_t>(format.label_bytes + kCifarPixelBytes);

  // Sizes first, so that the tensors are allocated once.
  std::vector<std::string> paths;
  std::vector<uint64_t> sizes;
  int64_t total = 0;
  for (const std::string& name : names) {
    paths.push_back((dir / name).string());
    sizes.push_back(CheckedSize(paths.back(), record));
    total += static_cast<int64_t>(sizes.back() / record);
  }

  torch::Tensor images =
      torch::empty({total, 3, kCifarSide, kCifarSide}, torch::kUInt8);
  torch::Tensor labels = torch::empty({total}, torch::kInt64);
  uint8_t* image_out = images.data_ptr<uint8_t>();
  int64_t* label_out = labels.data_ptr<int64_t>();

  std::vector<unsigned char> buf;
  int64_t next = 0;
  for (size_t f = 0; f < paths.size(); ++f) {
    const std::string& path = paths[f];
    buf.resize(sizes[f]);
    ReadWholeFile(path, &buf);
    const uint64_t records = sizes[f] / record;
    for (uint64_t r = 0; r < records; ++r) {
      const unsigned char* rec = buf.data() + r * record;
      const uint64_t rec_offset = r * record;
      for (int64_t b = 0; b < format.label_bytes; ++b) {
        const int64_t value = rec[b];
        const bool is_label = b == format.label_index;
        const int64_t limit =
            is_label ? format.num_classes : format.coarse_classes;
        if (value >= limit) {
          throw DataError(
              path + ": " + (is_label ? "" : "coarse ") + "label " +
              std::to_string(value) + " at byte offset " +
              std::to_string(rec_offset + static_cast<uint64_t>(b)) +
              " (record " + std::to_string(r) + "), expected < " +
              std::to_string(limit));
        }
      }
      label_out[next] = rec[format.label_index];
      std::memcpy(image_out + next * kCifarPixelBytes, rec + format.label_bytes,
                  static_cast<size_t>(kCifarPixelBytes));
      ++next;
    }
  }
  return TensorDataset(std::move(images), std::move(labels),
                       format.num_classes);
}

}  // namespace

TensorDataset LoadCifar10(const std::string& root, bool train) {
  std::vector<std::string> names;
  if (train) {
    for (int i = 1; i <= 5; ++i) {
      names.push_back("data_batch_" + std::to_string(i) + ".bin");
    }
  } else {
    names.push_back("test_batch.bin");
  }
  return LoadCifar(root, names, kCifar10);
}

TensorDataset LoadCifar100(const std::string& root, bool train) {
  return LoadCifar(root, {train ? "train.bin" : "test.bin"}, kCifar100);
}

}  // namespace dfkd::worker
