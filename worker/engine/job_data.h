// Turns a spec's "data" and "model" sections into data sets and a network.
#ifndef DFKD_WORKER_ENGINE_JOB_DATA_H_
#define DFKD_WORKER_ENGINE_JOB_DATA_H_

#include <memory>
#include <string>
#include <vector>

#include "common/spec/job_spec.h"
#include "worker/data/dataset.h"
#include "worker/data/transforms.h"
#include "worker/models/model_zoo.h"

namespace dfkd::worker {

struct JobData {
  std::unique_ptr<Dataset> train;     // null when not needed (distill)
  std::unique_ptr<Dataset> test;
  Normalization norm;
  int64_t crop_padding = 4;           // resolved from the spec's -1 default
  int64_t num_classes = 0;
  std::vector<int64_t> image_shape;   // {C, H, W}
};

// Reads the test split and, when `need_train`, the training split (a
// data-free distillation never reads it). Throws DataError naming the file.
JobData LoadJobData(const common::DataSpec& spec, bool need_train = true);

// The network the spec asks for, shaped for the data (channels, classes, size).
ModelConfig ModelConfigFor(const common::ModelSpec& spec, const JobData& data);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_ENGINE_JOB_DATA_H_
