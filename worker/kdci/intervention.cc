#include "worker/kdci/intervention.h"

namespace dfkd::worker {

KdciInterventionImpl::KdciInterventionImpl(InterventionOptions opts) : options(opts) {
  const int64_t d = options.classes();
  const int64_t h = options.hidden() > 0 ? options.hidden() : d;
  TORCH_CHECK(d >= 1 && options.dictionary_dim() >= 1, "kdci: bad dimensions");
  auto lin = [&](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(options.bias()));
  };
  w_q = register_module("w_q", lin(d, h));
  w_k = register_module("w_k", lin(d, h));
  w_t = register_module("w_t", lin(h, 1));
  if (options.ablation() == KdciAblation::kOtherZ) {
    mapping = register_module("mapping", lin(options.dictionary_dim(), d));
  } else {
    TORCH_CHECK(options.dictionary_dim() == d, "kdci: dictionary dimension ",
                options.dictionary_dim(), " != classes ", d,
                " (only the other_z ablation maps dimensions)");
  }
}

torch::Tensor KdciInterventionImpl::Attention(const torch::Tensor& s,
                                              const torch::Tensor& keys_in) {
  torch::Tensor q = w_q(options.detach_query() ? s.detach() : s);  // [B, h]
  torch::Tensor k = w_k(keys_in);                                  // [N, h]
  torch::Tensor e = w_t(torch::tanh(q.unsqueeze(1) + k.unsqueeze(0))).squeeze(-1);
  return torch::softmax(e, 1);  // [B, N]
}

torch::Tensor KdciInterventionImpl::PriorTerm(const torch::Tensor& s,
                                              const torch::Tensor& prototypes,
                                              const torch::Tensor& prior,
                                              const torch::Tensor& random_lambda) {
  TORCH_CHECK(prototypes.dim() == 2 && prior.dim() == 1 &&
                  prior.size(0) == prototypes.size(0),
              "kdci: prototypes [N, d'] and prior [N] expected");
  // The dictionary (and random_lambda) may be kept on the CPU: follow the
  // logits' device (a no-op when they are already there).
  const torch::Device dev = s.device();
  torch::Tensor z = mapping ? mapping(prototypes.to(dev)) : prototypes.to(dev);  // [N, d]
  torch::Tensor lambda;
  if (options.ablation() == KdciAblation::kRandomLambda) {
    TORCH_CHECK(random_lambda.defined() && random_lambda.size(1) == z.size(0),
                "kdci: random_lambda ablation needs weights [B, N]");
    lambda = random_lambda.to(dev);
  } else {
    lambda = Attention(s, z);
  }
  torch::Tensor weighted = options.ablation() == KdciAblation::kNoPrior
                               ? z
                               : z * prior.to(dev).unsqueeze(1);  // z_i P(z_i)
  return torch::matmul(lambda, weighted);                 // [B, d]
}

}  // namespace dfkd::worker
