#include "server/api/scheduler_metrics.h"

namespace dfkd::server {
namespace {

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  return kBuckets;
}

}  // namespace

SchedulerMetrics::SchedulerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      rpc_seconds_(prometheus::BuildHistogram()
                       .Name("dfkd_scheduler_rpc_duration_seconds")
                       .Help("Time to answer a gRPC call, by method and status code "
                             "(long-poll leases include their wait)")
                       .Register(*registry_)),
      runs_(prometheus::BuildGauge()
                .Name("dfkd_scheduler_runs")
                .Help("Runs by state")
                .Register(*registry_)),
      queue_depth_(prometheus::BuildGauge()
                       .Name("dfkd_scheduler_queue_depth")
                       .Help("Runs waiting for a worker (queued)")
                       .Register(*registry_)
                       .Add({})),
      leases_(prometheus::BuildCounter()
                  .Name("dfkd_scheduler_leases_total")
                  .Help("Assignments handed to workers (one per rank)")
                  .Register(*registry_)
                  .Add({})),
      lease_seconds_(prometheus::BuildHistogram()
                         .Name("dfkd_scheduler_lease_claim_seconds")
                         .Help("Time to claim a run in the store, excluding the long-poll wait")
                         .Register(*registry_)
                         .Add({}, LatencyBuckets())),
      expired_(prometheus::BuildCounter()
                   .Name("dfkd_scheduler_expired_leases_total")
                   .Help("Attempts whose lease ran out without a heartbeat")
                   .Register(*registry_)
                   .Add({})),
      retries_(prometheus::BuildCounter()
                   .Name("dfkd_scheduler_retries_total")
                   .Help("Runs put back in the queue for another attempt")
                   .Register(*registry_)
                   .Add({})),
      heartbeats_(prometheus::BuildCounter()
                      .Name("dfkd_scheduler_heartbeats_total")
                      .Help("Heartbeats received")
                      .Register(*registry_)
                      .Add({})),
      workers_(prometheus::BuildGauge()
                   .Name("dfkd_scheduler_workers_connected")
                   .Help("Workers seen within the lease timeout")
                   .Register(*registry_)
                   .Add({})) {}

void SchedulerMetrics::ObserveRpc(const std::string& method, const std::string& code,
                                  double seconds) {
  std::lock_guard<std::mutex> lock(mu_);  // Family::Add is thread-safe; keep Observe cheap
  rpc_seconds_.Add({{"method", method}, {"code", code}}, LatencyBuckets()).Observe(seconds);
}

void SchedulerMetrics::Expired(int expired, int requeued, int failed) {
  (void)failed;
  expired_.Increment(expired);
  retries_.Increment(requeued);
}

void SchedulerMetrics::SetRunsByState(const std::vector<std::pair<std::string, int64_t>>& counts) {
  static const char* kStates[] = {"blocked", "queued", "leased", "running",
                                  "succeeded", "failed", "cancelled"};
  std::lock_guard<std::mutex> lock(mu_);
  for (const char* state : kStates) {
    double value = 0;
    for (const auto& [name, count] : counts) {
      if (name == state) value = static_cast<double>(count);
    }
    runs_.Add({{"state", state}}).Set(value);
    if (std::string(state) == "queued") queue_depth_.Set(value);
  }
}

}  // namespace dfkd::server
