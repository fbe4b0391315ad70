#include "worker/data/image_folder.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <unordered_map>
#include <utility>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace dfkd::worker {
namespace {

namespace fs = std::filesystem;

bool IsHidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

bool IsImageFile(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) {
    return static_cast<char>(std::tolower(c));
  });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

// The image files under folder at any depth, sorted by path.
std::vector<std::string> ListImages(const fs::path& folder) {
  std::vector<std::string> files;
  try {
    fs::recursive_directory_iterator it(folder);
    for (; it != fs::recursive_directory_iterator(); ++it) {
      const fs::directory_entry& entry = *it;
      if (IsHidden(entry.path())) {
        if (entry.is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (entry.is_regular_file() && IsImageFile(entry.path())) {
        files.push_back(entry.path().string());
      }
    }
  } catch (const fs::filesystem_error& e) {
    throw DataError(folder.string() + ": cannot list: " + e.what());
  }
  std::sort(files.begin(), files.end());
  return files;
}

void CheckParams(int64_t image_size, int64_t channels) {
  TORCH_CHECK(image_size > 0 && image_size <= 65536,
              "ImageFolderDataset: image_size must be in [1, 65536], got ",
              image_size);
  TORCH_CHECK(channels == 1 || channels == 3,
              "ImageFolderDataset: channels must be 1 or 3, got ", channels);
}

}  // namespace

ImageFolderDataset::ImageFolderDataset(const std::string& root,
                                       int64_t image_size, int64_t channels)
    : image_size_(image_size), channels_(channels) {
  CheckParams(image_size, channels);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    throw DataError(root + ": no such folder");
  }
  try {
    for (const fs::directory_entry& entry : fs::directory_iterator(root)) {
      if (!IsHidden(entry.path()) && entry.is_directory()) {
        class_names_.push_back(entry.path().filename().string());
      }
    }
  } catch (const fs::filesystem_error& e) {
    throw DataError(root + ": cannot list: " + e.what());
  }
  if (class_names_.empty()) {
    throw DataError(root + ": no class folders in the image folder root");
  }
  std::sort(class_names_.begin(), class_names_.end());

  for (size_t c = 0; c < class_names_.size(); ++c) {
    const fs::path folder = fs::path(root) / class_names_[c];
    std::vector<std::string> images = ListImages(folder);
    if (images.empty()) {
      throw DataError(folder.string() +
                      ": class folder holds no images (.jpg, .jpeg, .png)");
    }
    for (std::string& f : images) {
      files_.push_back(std::move(f));
      labels_.push_back(static_cast<int64_t>(c));
    }
  }
}

ImageFolderDataset::ImageFolderDataset(std::vector<std::string> class_names,
                                       std::vector<std::string> files,
                                       std::vector<int64_t> labels,
                                       int64_t image_size, int64_t channels)
    : class_names_(std::move(class_names)),
      files_(std::move(files)),
      labels_(std::move(labels)),
      image_size_(image_size),
      channels_(channels) {
  CheckParams(image_size, channels);
}

ImageFolderDataset ImageFolderDataset::TinyImageNetVal(
    const std::string& val_root, const std::vector<std::string>& class_names,
    int64_t image_size, int64_t channels) {
  TORCH_CHECK(!class_names.empty(),
              "ImageFolderDataset::TinyImageNetVal: class_names is empty");
  std::unordered_map<std::string, int64_t> class_index;
  for (size_t i = 0; i < class_names.size(); ++i) {
    class_index.emplace(class_names[i], static_cast<int64_t>(i));
  }

  const fs::path root(val_root);
  const std::string annotations = (root / "val_annotations.txt").string();
  std::error_code ec;
  if (!fs::is_regular_file(annotations, ec)) {
    throw DataError(annotations + ": no such file");
  }
  std::ifstream in(annotations);
  if (!in) throw DataError(annotations + ": cannot open");

  std::vector<std::string> files;
  std::vector<int64_t> labels;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const std::string where = annotations + ":" + std::to_string(line_no);
    const size_t tab1 = line.find('\t');
    if (tab1 == std::string::npos || tab1 == 0) {
      throw DataError(where + ": expected \"<file>\\t<wnid>\\t...\"");
    }
    const size_t tab2 = line.find('\t', tab1 + 1);
    const std::string file = line.substr(0, tab1);
    const std::string wnid =
        line.substr(tab1 + 1, tab2 == std::string::npos ? std::string::npos
                                                        : tab2 - tab1 - 1);
    const auto found = class_index.find(wnid);
    if (found == class_index.end()) {
      throw DataError(where + ": class '" + wnid +
                      "' is not among the given class names");
    }
    const std::string image_path = (root / "images" / file).string();
    if (!fs::is_regular_file(image_path, ec)) {
      throw DataError(image_path + ": no such file (listed at " + where + ")");
    }
    files.push_back(image_path);
    labels.push_back(found->second);
  }
  if (in.bad()) throw DataError(annotations + ": read error");
  if (files.empty()) throw DataError(annotations + ": no entries");
  return ImageFolderDataset(class_names, std::move(files), std::move(labels),
                            image_size, channels);
}

const std::string& ImageFolderDataset::path(int64_t i) const {
  CheckIndex(i);
  return files_[static_cast<size_t>(i)];
}

int64_t ImageFolderDataset::label(int64_t i) const {
  CheckIndex(i);
  return labels_[static_cast<size_t>(i)];
}

void ImageFolderDataset::CheckIndex(int64_t i) const {
  TORCH_CHECK(i >= 0 && i < size(), "ImageFolderDataset: index ", i,
              " is out of range [0, ", size(), ")");
}

Batch ImageFolderDataset::Get(const std::vector<int64_t>& indices) const {
  for (int64_t i : indices) CheckIndex(i);
  const auto b = static_cast<int64_t>(indices.size());
  Batch batch;
  batch.images =
      torch::empty({b, channels_, image_size_, image_size_}, torch::kUInt8);
  batch.labels = torch::empty({b}, torch::kInt64);
  int64_t* labels = batch.labels.data_ptr<int64_t>();
  for (int64_t k = 0; k < b; ++k) {
    const int64_t i = indices[static_cast<size_t>(k)];
    Decode(i, batch.images[k]);
    labels[k] = labels_[static_cast<size_t>(i)];
  }
  return batch;
}

void ImageFolderDataset::Decode(int64_t i, torch::Tensor out) const {
  const std::string& file = files_[static_cast<size_t>(i)];
  const int s = static_cast<int>(image_size_);
  cv::Mat image;
  try {
    image = cv::imread(
        file, channels_ == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    throw DataError(file + ": cannot decode image: " + e.what());
  }
  if (image.empty()) {
    throw DataError(file + ": cannot read or decode image");
  }

  // Shorter side to s (the longer one scaled alike, truncated as torchvision's
  // Resize does), then the centre s x s crop.
  const int64_t h = image.rows;
  const int64_t w = image.cols;
  const int64_t shorter = std::min(h, w);
  int64_t new_h = s;
  int64_t new_w = s;
  if (h < w) {
    new_w = std::max<int64_t>(s, w * s / h);
  } else if (w < h) {
    new_h = std::max<int64_t>(s, h * s / w);
  }
  cv::Mat resized;
  if (new_h == h && new_w == w) {
    resized = image;
  } else {
    try {
      cv::resize(image, resized,
                 cv::Size(static_cast<int>(new_w), static_cast<int>(new_h)), 0,
                 0, s < shorter ? cv::INTER_AREA : cv::INTER_LINEAR);
    } catch (const cv::Exception& e) {
      throw DataError(file + ": cannot resize image: " + e.what());
    }
  }
  const int x0 = static_cast<int>((new_w - s) / 2);
  const int y0 = static_cast<int>((new_h - s) / 2);
  const cv::Mat crop = resized(cv::Rect(x0, y0, s, s));

  cv::Mat pixels;  // continuous [s, s, C]
  if (channels_ == 3) {
    cv::cvtColor(crop, pixels, cv::COLOR_BGR2RGB);
  } else {
    pixels = crop.clone();
  }
  const torch::Tensor hwc = torch::from_blob(
      pixels.data, {image_size_, image_size_, channels_}, torch::kUInt8);
  out.copy_(hwc.permute({2, 0, 1}));
}

}  // namespace dfkd::worker
