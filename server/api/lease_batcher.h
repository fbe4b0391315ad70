// Groups the Lease calls that arrive together into one store transaction
// (Store::TryLeaseBatch): under a burst of workers, one round trip and one
// commit serve many leases, which is what lets the API keep up with a raw
// SKIP LOCKED dequeue (bench/lease_bench.sh). A call waits only for the batch
// in flight ahead of it; a lone call goes straight through.
#ifndef DFKD_SERVER_API_LEASE_BATCHER_H_
#define DFKD_SERVER_API_LEASE_BATCHER_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "server/store/store.h"

namespace dfkd::server {

class LeaseBatcher {
 public:
  // `preferred` gives the fair-share order for each batch. `threads` batches
  // run concurrently (each one transaction); `max_batch` bounds a batch.
  LeaseBatcher(Store* store, std::function<std::vector<int64_t>()> preferred, int threads = 2,
               size_t max_batch = 64);
  ~LeaseBatcher();
  LeaseBatcher(const LeaseBatcher&) = delete;
  LeaseBatcher& operator=(const LeaseBatcher&) = delete;

  // Blocks until this worker's lease is decided. Throws StoreError like
  // Store::TryLease (kNotFound for an unregistered worker).
  std::optional<api::Assignment> Lease(int64_t worker_id, const std::string& host, int port);

 private:
  struct Pending {
    Store::LeaseAsk ask;
    bool done = false;
    Store::LeaseAnswer answer;
    std::exception_ptr error;
  };
  void Loop();

  Store* store_;
  std::function<std::vector<int64_t>()> preferred_;
  size_t max_batch_;
  std::mutex mu_;
  std::condition_variable work_cv_;   // pending requests for the batch threads
  std::condition_variable done_cv_;   // finished requests for their callers
  std::deque<std::shared_ptr<Pending>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace dfkd::server

#endif  // DFKD_SERVER_API_LEASE_BATCHER_H_
