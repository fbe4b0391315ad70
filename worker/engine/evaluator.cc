#include "worker/engine/evaluator.h"

#include "worker/data/loader.h"

namespace dfkd::worker {

EvalResult Evaluate(ClassifierImpl& model, const Dataset& data,
                    const Normalization& norm, int64_t batch_size,
                    bool channels_last,
                    const std::function<torch::Tensor(const torch::Tensor&)>* compensate) {
  const bool was_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.shuffle = false;
  lo.drop_last = false;
  lo.norm = norm;
  Loader loader(data, lo);
  loader.StartEpoch(0);
  const torch::Device device = DeviceOf(model);
  const int64_t c = data.num_classes();
  torch::Tensor correct = torch::zeros({c}, torch::kInt64);
  torch::Tensor total = torch::zeros({c}, torch::kInt64);
  double loss_sum = 0.0;
  int64_t compensated_correct = 0;
  bool has_compensated = false;
  while (auto batch = loader.Next()) {
    // Counting stays on the CPU; only the forward pass runs on the device.
    torch::Tensor x = batch->images.to(device);
    if (channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    torch::Tensor logits = model.forward(x).to(torch::kCPU);
    loss_sum += torch::cross_entropy_loss(logits, batch->labels, {},
                                          at::Reduction::Sum)
                    .item<double>();
    if (compensate != nullptr) {
      torch::Tensor adjusted = (*compensate)(logits);
      if (adjusted.defined()) {
        has_compensated = true;
        compensated_correct += adjusted.argmax(1).eq(batch->labels).sum().item<int64_t>();
      }
    }
    torch::Tensor hit = logits.argmax(1).eq(batch->labels).to(torch::kInt64);
    total.index_add_(0, batch->labels, torch::ones_like(batch->labels));
    correct.index_add_(0, batch->labels, hit);
  }
  model.train(was_training);
  EvalResult r;
  r.samples = total.sum().item<int64_t>();
  r.top1 = r.samples ? 100.0 * correct.sum().item<int64_t>() / r.samples : 0.0;
  r.loss = r.samples ? loss_sum / r.samples : 0.0;
  if (has_compensated && r.samples) r.compensated_top1 = 100.0 * compensated_correct / r.samples;
  for (int64_t k = 0; k < c; ++k) {
    int64_t n = total[k].item<int64_t>();
    r.per_class.push_back(n ? 100.0 * correct[k].item<int64_t>() / n : 0.0);
  }
  return r;
}

}  // namespace dfkd::worker
