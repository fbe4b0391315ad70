#include "worker/data/dataset.h"

#include <cstring>
#include <utility>

namespace dfkd::worker {

TensorDataset::TensorDataset(torch::Tensor images, torch::Tensor labels,
                             int64_t num_classes)
    : images_(std::move(images)),
      labels_(std::move(labels)),
      num_classes_(num_classes) {
  TORCH_CHECK(images_.defined(), "TensorDataset: images are undefined");
  TORCH_CHECK(labels_.defined(), "TensorDataset: labels are undefined");
  TORCH_CHECK(images_.scalar_type() == torch::kUInt8,
              "TensorDataset: images must be uint8, got ",
              images_.scalar_type());
  TORCH_CHECK(images_.dim() == 4,
              "TensorDataset: images must be [N, C, H, W], got shape ",
              images_.sizes());
  TORCH_CHECK(labels_.scalar_type() == torch::kInt64,
              "TensorDataset: labels must be int64, got ",
              labels_.scalar_type());
  TORCH_CHECK(labels_.dim() == 1,
              "TensorDataset: labels must be [N], got shape ", labels_.sizes());
  TORCH_CHECK(labels_.size(0) == images_.size(0),
              "TensorDataset: ", images_.size(0), " images but ",
              labels_.size(0), " labels");
  TORCH_CHECK(num_classes_ > 0, "TensorDataset: num_classes must be > 0, got ",
              num_classes_);
  if (labels_.numel() > 0) {
    const int64_t lo = labels_.min().item<int64_t>();
    const int64_t hi = labels_.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < num_classes_,
                "TensorDataset: labels must lie in [0, ", num_classes_,
                "), got range [", lo, ", ", hi, "]");
  }
}

std::vector<int64_t> TensorDataset::image_shape() const {
  return {images_.size(1), images_.size(2), images_.size(3)};
}

Batch TensorDataset::Get(const std::vector<int64_t>& indices) const {
  const int64_t n = size();
  for (size_t i = 0; i < indices.size(); ++i) {
    TORCH_CHECK(indices[i] >= 0 && indices[i] < n, "TensorDataset::Get: index ",
                indices[i], " (position ", i,
                " in the batch) is out of range [0, ", n, ")");
  }
  torch::Tensor index =
      torch::empty({static_cast<int64_t>(indices.size())}, torch::kInt64);
  if (!indices.empty()) {
    std::memcpy(index.data_ptr<int64_t>(), indices.data(),
                indices.size() * sizeof(int64_t));
  }
  Batch batch;
  batch.images = images_.index_select(0, index);
  batch.labels = labels_.index_select(0, index);
  return batch;
}

TensorDataset TensorDataset::Head(int64_t n) const {
  TORCH_CHECK(n >= 0, "TensorDataset::Head: n must be >= 0, got ", n);
  if (n >= size()) return *this;
  return TensorDataset(images_.narrow(0, 0, n), labels_.narrow(0, 0, n),
                       num_classes_);
}

}  // namespace dfkd::worker
