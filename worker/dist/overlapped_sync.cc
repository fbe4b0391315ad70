#include "worker/dist/overlapped_sync.h"

namespace dfkd::worker {

OverlappedGradientSync::OverlappedGradientSync(Communicator& comm,
                                               const std::vector<torch::Tensor>& params,
                                               int64_t bucket_bytes)
    : comm_(comm) {
  for (const torch::Tensor& p : params) {
    if (p.requires_grad()) params_.push_back(p);
  }
  bucket_of_.assign(params_.size(), 0);
  slot_of_.assign(params_.size(), 0);
  seen_.assign(params_.size(), false);
  // Reverse order: the last layers' gradients are computed first.
  Bucket current;
  int64_t bytes = 0, numel = 0;
  auto close = [&] {
    if (current.members.empty()) return;
    current.flat = torch::zeros({numel}, params_[current.members[0]].options());
    buckets_.push_back(std::move(current));
    current = Bucket();
    bytes = numel = 0;
  };
  for (size_t i = params_.size(); i-- > 0;) {
    const torch::Tensor& p = params_[i];
    bucket_of_[i] = buckets_.size();
    slot_of_[i] = current.members.size();
    current.members.push_back(i);
    current.offsets.push_back(numel);
    numel += p.numel();
    bytes += p.numel() * p.element_size();
    if (bytes >= bucket_bytes) close();
  }
  close();
  for (size_t i = 0; i < params_.size(); ++i) {
    hook_ids_.push_back(params_[i].register_hook([this, i](const torch::Tensor& grad) {
      OnGradient(i, grad);
      return grad;
    }));
  }
}

OverlappedGradientSync::~OverlappedGradientSync() {
  for (size_t i = 0; i < params_.size(); ++i) params_[i].remove_hook(hook_ids_[i]);
}

void OverlappedGradientSync::Arm() {
  armed_ = true;
  launched_early_ = 0;
  next_launch_ = 0;
  for (Bucket& b : buckets_) {
    b.ready = 0;
    b.pending.reset();
  }
  std::fill(seen_.begin(), seen_.end(), false);
}

void OverlappedGradientSync::OnGradient(size_t param, const torch::Tensor& grad) {
  if (!armed_ || seen_[param]) return;
  seen_[param] = true;
  Bucket& b = buckets_[bucket_of_[param]];
  const int64_t n = params_[param].numel();
  b.flat.narrow(0, b.offsets[slot_of_[param]], n).copy_(grad.detach().reshape({n}));
  ++b.ready;
  // Buckets start in index order on every rank (as DDP's reducer does), so
  // the ranks' collectives always pair up.
  while (next_launch_ < buckets_.size() &&
         buckets_[next_launch_].ready ==
             static_cast<int64_t>(buckets_[next_launch_].members.size())) {
    Launch(buckets_[next_launch_++]);
  }
}

void OverlappedGradientSync::Launch(Bucket& bucket) {
  if (!finishing_) ++launched_early_;
  std::vector<torch::Tensor> one{bucket.flat};
  bucket.pending = comm_.AllReduceSumAsync(one);
}

void OverlappedGradientSync::Finish() {
  if (!armed_) return;
  finishing_ = true;
  // Parameters that got no gradient contribute zeros, so every rank
  // launches the same collectives in the same order.
  for (; next_launch_ < buckets_.size(); ++next_launch_) {
    Bucket& b = buckets_[next_launch_];
    for (size_t k = 0; k < b.members.size(); ++k) {
      const size_t i = b.members[k];
      if (!seen_[i]) {
        b.flat.narrow(0, b.offsets[k], params_[i].numel()).zero_();
        seen_[i] = true;
      }
    }
    Launch(b);
  }
  const double world = static_cast<double>(comm_.size());
  for (Bucket& b : buckets_) {
    b.pending->Wait();
    b.flat.div_(world);
    for (size_t k = 0; k < b.members.size(); ++k) {
      torch::Tensor& p = params_[b.members[k]];
      torch::Tensor part = b.flat.narrow(0, b.offsets[k], p.numel()).view(p.sizes());
      if (!p.grad().defined()) {
        p.mutable_grad() = part.clone();
      } else {
        p.mutable_grad().copy_(part);
      }
    }
  }
  finishing_ = false;
  armed_ = false;
}

}  // namespace dfkd::worker
