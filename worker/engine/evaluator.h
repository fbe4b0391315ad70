// Accuracy of a classifier on a labelled data set (the real test set).
#ifndef DFKD_WORKER_ENGINE_EVALUATOR_H_
#define DFKD_WORKER_ENGINE_EVALUATOR_H_

#include <functional>
#include <vector>

#include "worker/data/dataset.h"
#include "worker/data/transforms.h"
#include "worker/models/classifier.h"

namespace dfkd::worker {

struct EvalResult {
  double top1 = 0.0;                // percent
  double loss = 0.0;                // mean cross-entropy
  std::vector<double> per_class;    // percent per class (0 for an absent class)
  double compensated_top1 = -1.0;   // top-1 of compensate(logits); -1 if none
  int64_t samples = 0;
};

// Runs `model` in eval mode without gradients over all of `data` (no
// augmentation), then restores the model's previous train/eval mode.
EvalResult Evaluate(ClassifierImpl& model, const Dataset& data,
                    const Normalization& norm, int64_t batch_size,
                    bool channels_last = false,
                    const std::function<torch::Tensor(const torch::Tensor&)>* compensate =
                        nullptr);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_ENGINE_EVALUATOR_H_
