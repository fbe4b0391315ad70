// What both services share: the store, auth, metrics, a wake-up signal for
// long-polling leases, and the one wrapper every handler runs inside
// (authenticate, time, map store errors to gRPC codes, count).
#ifndef DFKD_SERVER_API_SERVICE_CONTEXT_H_
#define DFKD_SERVER_API_SERVICE_CONTEXT_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>

#include "common/campaign/campaign.h"
#include "server/api/auth.h"
#include "server/api/scheduler_metrics.h"
#include "server/store/store.h"

namespace dfkd::server {

// Lease long-polls wait on this; a submit, finish, retry or expiry wakes them.
class WakeUp {
 public:
  void Notify() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++generation_;
    }
    cv_.notify_all();
  }
  // Waits until Notify() or `timeout`; returns whether something happened.
  bool WaitFor(uint64_t seen, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return generation_ != seen; });
  }
  uint64_t generation() {
    std::lock_guard<std::mutex> lock(mu_);
    return generation_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t generation_ = 0;
};

struct ServiceContext {
  Store* store = nullptr;
  Authenticator* auth = nullptr;
  SchedulerMetrics* metrics = nullptr;
  WakeUp* wake = nullptr;
  std::string code_version;
  common::CampaignLimits limits;
  StoreOptions store_options;
};

grpc::Status ToStatus(const StoreError& error);
const char* CodeName(grpc::StatusCode code);

// Runs `body` as `method` ("Campaigns.Submit") for an authenticated caller,
// turning StoreError and other exceptions into gRPC statuses and recording the
// call's latency and code.
grpc::Status ServeRpc(ServiceContext& ctx, const std::string& method,
                      grpc::ServerContext* server_context,
                      const std::function<grpc::Status(const Principal&)>& body);

}  // namespace dfkd::server

#endif  // DFKD_SERVER_API_SERVICE_CONTEXT_H_
