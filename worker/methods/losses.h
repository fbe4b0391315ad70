// Losses shared by training and distillation.
#ifndef DFKD_WORKER_METHODS_LOSSES_H_
#define DFKD_WORKER_METHODS_LOSSES_H_

#include <torch/torch.h>

namespace dfkd::worker {

// KL(teacher || student) at temperature T, as every zju-vipa reference repo
// computes it (datafree/criterions.py::kldiv):
//   T^2 * (1/B) * sum_b sum_c p_T(t)_bc * (log p_T(t)_bc - log p_T(s)_bc)
// with p_T(u) = softmax(u / T): "batchmean" reduction, scaled by T^2.
// Gradients flow into `student_logits` only.
torch::Tensor KdLoss(const torch::Tensor& student_logits,
                     const torch::Tensor& teacher_logits, double temperature);

// Number of rows whose argmax equals the label.
int64_t CountCorrect(const torch::Tensor& logits, const torch::Tensor& labels);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_METHODS_LOSSES_H_
