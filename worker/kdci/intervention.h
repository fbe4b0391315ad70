// KDCI's causal-intervention prior (Eq. 4-5 of the paper, dfkd-methods.md §1.3):
//
//   e_{b,i}      = w_t . tanh(W_q s_b + W_k z_i)         additive attention
//   lambda_{b,i} = softmax_i(e_{b,i})
//   F(z)_b       = sum_i lambda_{b,i} z_i P(z_i)
//   s_hat_b      = s_b + F(z)_b                           fusion by addition
//
// s: student logits [B, d]; Z: prototypes [N, d]; P: priors [N]. W_q, W_k, w_t
// (and, for the "other Z" ablation, the d' -> d mapping of the prototypes) are
// trained with the student's optimizer. Defaults follow §1.7: hidden width
// d_n = d, no biases, PyTorch's default Linear init.
#ifndef DFKD_WORKER_KDCI_INTERVENTION_H_
#define DFKD_WORKER_KDCI_INTERVENTION_H_

#include <torch/arg.h>
#include <torch/torch.h>

namespace dfkd::worker {

// The paper's Table 4 and 5 settings; kNone is "(1) original F(z)".
enum class KdciAblation {
  kNone,          // (1) original F(z)
  kRandomLambda,  // (2) random attention weights instead of learned ones
  kRandomZ,       // (3) random dictionary instead of clustered teacher logits
  kNoPrior,       // (4) F(z) = sum_i lambda_i z_i, without P(z_i)
  kOtherZ,        // Table 5: dictionary from another teacher, mapped d' -> d
};

struct InterventionOptions {
  InterventionOptions(int64_t classes, int64_t dictionary_dim)
      : classes_(classes), dictionary_dim_(dictionary_dim) {}
  TORCH_ARG(int64_t, classes);         // d: student logit size
  TORCH_ARG(int64_t, dictionary_dim);  // d' (== d unless "other Z")
  TORCH_ARG(int64_t, hidden) = 0;      // d_n; 0 = d (the paper's shapes)
  TORCH_ARG(bool, bias) = false;       // CCIM's habit: no biases
  TORCH_ARG(bool, detach_query) = false;  // stop gradients from F into s
  TORCH_ARG(KdciAblation, ablation) = KdciAblation::kNone;
};

class KdciInterventionImpl : public torch::nn::Module {
 public:
  explicit KdciInterventionImpl(InterventionOptions options);

  // F(z) [B, d] for student logits s [B, d], prototypes [N, d'], prior [N].
  // `random_lambda` supplies the kRandomLambda weights [B, N] (rows sum to 1)
  // and is ignored otherwise.
  torch::Tensor PriorTerm(const torch::Tensor& s, const torch::Tensor& prototypes,
                          const torch::Tensor& prior,
                          const torch::Tensor& random_lambda = {});
  // The attention weights lambda [B, N] (for tests and diagnostics).
  torch::Tensor Attention(const torch::Tensor& s, const torch::Tensor& keys_in);
  // s + F(z).
  torch::Tensor forward(const torch::Tensor& s, const torch::Tensor& prototypes,
                        const torch::Tensor& prior,
                        const torch::Tensor& random_lambda = {}) {
    return s + PriorTerm(s, prototypes, prior, random_lambda);
  }

  InterventionOptions options;
  torch::nn::Linear w_q{nullptr}, w_k{nullptr}, w_t{nullptr};
  torch::nn::Linear mapping{nullptr};  // d' -> d, only for kOtherZ
};
TORCH_MODULE(KdciIntervention);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_KDCI_INTERVENTION_H_
