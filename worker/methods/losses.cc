#include "worker/methods/losses.h"

namespace dfkd::worker {

torch::Tensor KdLoss(const torch::Tensor& student_logits,
                     const torch::Tensor& teacher_logits, double temperature) {
  TORCH_CHECK(student_logits.sizes() == teacher_logits.sizes(),
              "KdLoss: student logits ", student_logits.sizes(),
              " vs teacher logits ", teacher_logits.sizes());
  TORCH_CHECK(temperature > 0, "KdLoss: temperature must be positive");
  torch::Tensor log_p_s = torch::log_softmax(student_logits / temperature, 1);
  torch::Tensor log_p_t =
      torch::log_softmax(teacher_logits.detach() / temperature, 1);
  torch::Tensor kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum() /
                     static_cast<double>(student_logits.size(0));
  return kl * (temperature * temperature);
}

int64_t CountCorrect(const torch::Tensor& logits, const torch::Tensor& labels) {
  return logits.argmax(1).eq(labels).sum().item<int64_t>();
}

}  // namespace dfkd::worker
