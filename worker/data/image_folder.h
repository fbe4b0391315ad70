// A labelled folder of image files (ImageNet / Tiny-ImageNet layout),
// decoded on demand.
//
//   root/<class>/**/<image>.{jpg,jpeg,png}
//
// Classes are the sorted names of root's subfolders; the images of a class are
// the files under its folder, at any depth (Tiny-ImageNet keeps them in
// train/<wnid>/images/), with a .jpg, .jpeg or .png extension in any case,
// sorted by path. Names starting with '.' are skipped. Get() decodes with
// OpenCV, resizes the shorter side to image_size and centre-crops to
// image_size x image_size, giving uint8 RGB (or grayscale) [B, C, S, S].
#ifndef DFKD_WORKER_DATA_IMAGE_FOLDER_H_
#define DFKD_WORKER_DATA_IMAGE_FOLDER_H_

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "worker/data/dataset.h"

namespace dfkd::worker {

class ImageFolderDataset final : public Dataset {
 public:
  // Lists root. Throws DataError for a missing or empty root, or a class
  // folder without images. channels is 3 (RGB) or 1 (grayscale).
  ImageFolderDataset(const std::string& root, int64_t image_size,
                     int64_t channels = 3);

  // Tiny-ImageNet's validation split: val_root/val_annotations.txt lists
  // "<file>\t<wnid>\t..." per line, the files lying in val_root/images/.
  // Labels follow class_names (the train set's class order).
  static ImageFolderDataset TinyImageNetVal(
      const std::string& val_root, const std::vector<std::string>& class_names,
      int64_t image_size, int64_t channels = 3);

  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  int64_t num_classes() const override {
    return static_cast<int64_t>(class_names_.size());
  }
  std::vector<int64_t> image_shape() const override {
    return {channels_, image_size_, image_size_};
  }
  // Decodes the images; a file that cannot be read or decoded throws
  // DataError naming it. Safe to call from several threads at once.
  Batch Get(const std::vector<int64_t>& indices) const override;

  const std::vector<std::string>& class_names() const { return class_names_; }
  // The file and the label of sample i.
  const std::string& path(int64_t i) const;
  int64_t label(int64_t i) const;

 private:
  ImageFolderDataset(std::vector<std::string> class_names,
                     std::vector<std::string> files,
                     std::vector<int64_t> labels, int64_t image_size,
                     int64_t channels);
  void CheckIndex(int64_t i) const;
  // Decodes files_[i] into out, a uint8 [C, S, S] tensor.
  void Decode(int64_t i, torch::Tensor out) const;

  std::vector<std::string> class_names_;
  std::vector<std::string> files_;
  std::vector<int64_t> labels_;
  int64_t image_size_;
  int64_t channels_;
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_DATA_IMAGE_FOLDER_H_
