// The task a distillation test runs on: 4 classes of 1x8x8 images, normalised
// with mean 0.5 / std 0.5, and a random labelled test split of `test_size`
// images (distillation reads no training split).
#ifndef DFKD_TESTS_TESTING_TINY_TASK_H_
#define DFKD_TESTS_TESTING_TINY_TASK_H_

#include <memory>

#include <torch/torch.h>

#include "worker/engine/job_data.h"

namespace dfkd::testing {

inline worker::JobData TinyDistillTask(int64_t test_size) {
  worker::JobData data;
  data.test = std::make_unique<worker::TensorDataset>(
      torch::randint(256, {test_size, 1, 8, 8}, torch::kUInt8),
      torch::arange(test_size).remainder(4), 4);
  data.norm = {{0.5f}, {0.5f}};
  data.num_classes = 4;
  data.image_shape = {1, 8, 8};
  return data;
}

}  // namespace dfkd::testing

#endif  // DFKD_TESTS_TESTING_TINY_TASK_H_
