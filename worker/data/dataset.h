// Labelled image data as the engine sees it.
//
// Small data sets (Fashion-MNIST, CIFAR) live in memory as one uint8 tensor;
// large ones (ImageNet folders) decode on demand. Either way the loader asks
// for a batch of indices and gets uint8 images [B, C, H, W] and int64 labels.
#ifndef DFKD_WORKER_DATA_DATASET_H_
#define DFKD_WORKER_DATA_DATASET_H_

#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace dfkd::worker {

// Thrown by readers for missing, truncated or corrupt files. The message
// always names the file and, where it applies, the byte offset.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Batch {
  torch::Tensor images;  // uint8 [B, C, H, W] from a dataset; float after transforms
  torch::Tensor labels;  // int64 [B]
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual int64_t num_classes() const = 0;
  virtual std::vector<int64_t> image_shape() const = 0;  // {C, H, W}
  // Thread-compatible: concurrent calls are safe for the in-memory sets.
  virtual Batch Get(const std::vector<int64_t>& indices) const = 0;
};

// A data set held in memory.
class TensorDataset final : public Dataset {
 public:
  // images: uint8 [N, C, H, W]; labels: int64 [N] in [0, num_classes).
  TensorDataset(torch::Tensor images, torch::Tensor labels, int64_t num_classes);
  int64_t size() const override { return images_.size(0); }
  int64_t num_classes() const override { return num_classes_; }
  std::vector<int64_t> image_shape() const override;
  Batch Get(const std::vector<int64_t>& indices) const override;
  // The first n samples (a view, no copy); n >= size() returns all.
  TensorDataset Head(int64_t n) const;
  const torch::Tensor& images() const { return images_; }
  const torch::Tensor& labels() const { return labels_; }

 private:
  torch::Tensor images_;
  torch::Tensor labels_;
  int64_t num_classes_;
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_DATA_DATASET_H_
