#include <torch/csrc/utils/tensor_flatten.h>

#include "worker/dist/communicator.h"

namespace dfkd::worker {

namespace {
class DoneCollective final : public PendingCollective {
 public:
  void Wait() override {}
};
}  // namespace

std::unique_ptr<PendingCollective> Communicator::AllReduceSumAsync(
    std::vector<torch::Tensor>& tensors) {
  AllReduceSum(tensors);
  return std::make_unique<DoneCollective>();
}

void BroadcastModule(Communicator& comm, torch::nn::Module& module) {
  if (comm.size() == 1) return;
  std::vector<torch::Tensor> tensors;
  for (auto& p : module.parameters()) tensors.push_back(p.data());
  for (auto& b : module.buffers()) tensors.push_back(b);
  comm.Broadcast(tensors, 0);
}

void AverageGradients(Communicator& comm, const std::vector<torch::Tensor>& params,
                      int64_t bucket_bytes) {
  if (comm.size() == 1) return;
  std::vector<torch::Tensor> bucket;
  int64_t bytes = 0;
  auto flush = [&] {
    if (bucket.empty()) return;
    torch::Tensor flat = torch::utils::flatten_dense_tensors(bucket);
    std::vector<torch::Tensor> one{flat};
    comm.AllReduceSum(one);
    flat.div_(static_cast<double>(comm.size()));
    auto parts = torch::utils::unflatten_dense_tensors(flat, bucket);
    for (size_t i = 0; i < bucket.size(); ++i) bucket[i].copy_(parts[i]);
    bucket.clear();
    bytes = 0;
  };
  for (const torch::Tensor& p : params) {
    if (!p.requires_grad()) continue;
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    bucket.push_back(p.grad());
    bytes += p.numel() * p.element_size();
    if (bytes >= bucket_bytes) flush();
  }
  flush();
}

}  // namespace dfkd::worker
