#include "worker/engine/job_data.h"

#include <filesystem>

#include "worker/data/cifar_reader.h"
#include "worker/data/idx_reader.h"
#ifdef DFKD_WITH_OPENCV
#include "worker/data/image_folder.h"
#endif

namespace dfkd::worker {
namespace {

std::unique_ptr<Dataset> Limit(TensorDataset d, int64_t limit) {
  if (limit > 0) d = d.Head(limit);
  return std::make_unique<TensorDataset>(std::move(d));
}

}  // namespace

JobData LoadJobData(const common::DataSpec& spec, bool need_train) {
  JobData out;
  const std::string& ds = spec.dataset;
  if (ds == "fashion_mnist") {
    std::string root = spec.root.empty() ? kFashionMnistDefaultRoot : spec.root;
    if (need_train) out.train = Limit(LoadFashionMnist(root, /*train=*/true), spec.train_limit);
    out.test = Limit(LoadFashionMnist(root, /*train=*/false), spec.test_limit);
    out.norm = NormalizationFor(ds);
    out.crop_padding = 2;
  } else if (ds == "cifar10" || ds == "cifar100") {
    auto load = ds == "cifar10" ? LoadCifar10 : LoadCifar100;
    if (need_train) out.train = Limit(load(spec.root, true), spec.train_limit);
    out.test = Limit(load(spec.root, false), spec.test_limit);
    out.norm = NormalizationFor(ds);
    out.crop_padding = 4;
  } else if (ds == "image_folder") {
#ifndef DFKD_WITH_OPENCV
    throw DataError("data.dataset: image_folder needs OpenCV, and this engine was built "
                    "without it");
#else
    namespace fs = std::filesystem;
    fs::path root(spec.root);
    auto train = std::make_unique<ImageFolderDataset>((root / "train").string(),
                                                      spec.image_size);
    std::unique_ptr<Dataset> test;
    if (fs::exists(root / "val" / "val_annotations.txt")) {
      test = std::make_unique<ImageFolderDataset>(ImageFolderDataset::TinyImageNetVal(
          (root / "val").string(), train->class_names(), spec.image_size));
    } else {
      test = std::make_unique<ImageFolderDataset>((root / "val").string(),
                                                  spec.image_size);
    }
    if (need_train) out.train = std::move(train);
    out.test = std::move(test);
    out.norm = NormalizationFor(spec.image_size == 64 ? "tiny_imagenet" : "imagenet");
    out.crop_padding = spec.image_size <= 64 ? 4 : 0;
#endif
  } else {
    throw DataError("data.dataset: unknown data set '" + ds + "'");
  }
  if (spec.crop_padding >= 0) out.crop_padding = spec.crop_padding;
  // The test split declares the task (classes, shape) even when no training
  // data is read.
  out.num_classes = out.test->num_classes();
  out.image_shape = out.test->image_shape();
  return out;
}

ModelConfig ModelConfigFor(const common::ModelSpec& spec, const JobData& data) {
  ModelConfig c;
  c.arch = spec.arch;
  c.depth = spec.depth;
  c.widen_factor = spec.widen_factor;
  c.width_mult = spec.width_mult;
  c.dropout = spec.dropout;
  c.num_classes = data.num_classes;
  c.in_channels = data.image_shape.at(0);
  c.input_size = data.image_shape.at(1);
  return c;
}

}  // namespace dfkd::worker
