#include "server/store/connection_pool.h"

#include <utility>

namespace dfkd::server {

ConnectionPool::ConnectionPool(std::string url, int size)
    : url_(std::move(url)), size_(size < 1 ? 1 : size) {}

ConnectionPool::Lease::Lease(Lease&& other) noexcept
    : pool_(other.pool_), connection_(std::move(other.connection_)), broken_(other.broken_) {
  other.pool_ = nullptr;
}

ConnectionPool::Lease::~Lease() {
  if (pool_ != nullptr && connection_ != nullptr) pool_->Release(std::move(connection_), broken_);
}

ConnectionPool::Lease ConnectionPool::Acquire() {
  std::unique_lock<std::mutex> lock(mu_);
  available_.wait(lock, [this] { return !idle_.empty() || open_ < size_; });
  if (!idle_.empty()) {
    std::unique_ptr<pqxx::connection> connection = std::move(idle_.back());
    idle_.pop_back();
    return Lease(this, std::move(connection));
  }
  ++open_;   // reserve the slot, then connect without holding the mutex
  lock.unlock();
  try {
    return Lease(this, std::make_unique<pqxx::connection>(url_));
  } catch (...) {
    lock.lock();
    --open_;
    available_.notify_one();
    throw;
  }
}

void ConnectionPool::Release(std::unique_ptr<pqxx::connection> connection, bool broken) {
  std::unique_ptr<pqxx::connection> to_close;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken || !connection->is_open()) {
      to_close = std::move(connection);
      --open_;
    } else {
      idle_.push_back(std::move(connection));
    }
  }
  available_.notify_one();
  // `to_close` is destroyed here, outside the mutex (closing may block).
}

}  // namespace dfkd::server
