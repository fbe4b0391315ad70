#include "server/api/lease_batcher.h"

namespace dfkd::server {

LeaseBatcher::LeaseBatcher(Store* store, std::function<std::vector<int64_t>()> preferred,
                           int threads, size_t max_batch)
    : store_(store), preferred_(std::move(preferred)), max_batch_(max_batch) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
}

LeaseBatcher::~LeaseBatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

std::optional<api::Assignment> LeaseBatcher::Lease(int64_t worker_id, const std::string& host,
                                                   int port) {
  auto pending = std::make_shared<Pending>();
  pending->ask = Store::LeaseAsk{worker_id, host, port};
  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_) throw StoreError(StoreError::Code::kUnavailable, "scheduler is shutting down");
  queue_.push_back(pending);
  work_cv_.notify_one();
  done_cv_.wait(lock, [&] { return pending->done; });
  if (pending->error) std::rethrow_exception(pending->error);
  if (!pending->answer.registered) {
    throw StoreError(StoreError::Code::kNotFound,
                     "worker " + std::to_string(worker_id) + " is not registered");
  }
  return pending->answer.assignment;
}

void LeaseBatcher::Loop() {
  while (true) {
    std::vector<std::shared_ptr<Pending>> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      while (!queue_.empty() && batch.size() < max_batch_) {
        batch.push_back(queue_.front());
        queue_.pop_front();
      }
    }
    std::vector<Store::LeaseAsk> asks;
    for (const auto& p : batch) asks.push_back(p->ask);
    std::vector<Store::LeaseAnswer> answers;
    std::exception_ptr error;
    try {
      answers = store_->TryLeaseBatch(asks, preferred_());
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = 0; i < batch.size(); ++i) {
        batch[i]->error = error;
        if (!error && i < answers.size()) batch[i]->answer = answers[i];
        batch[i]->done = true;
      }
    }
    done_cv_.notify_all();
  }
}

}  // namespace dfkd::server
