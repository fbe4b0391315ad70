// The scheduler's Prometheus families (prefix dfkd_scheduler_). Labels are
// low-cardinality only: state, method, code; never a run or campaign id.
#ifndef DFKD_SERVER_API_SCHEDULER_METRICS_H_
#define DFKD_SERVER_API_SCHEDULER_METRICS_H_

#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace dfkd::server {

class SchedulerMetrics {
 public:
  SchedulerMetrics();

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  void ObserveRpc(const std::string& method, const std::string& code, double seconds);
  void ObserveLease(double seconds) { lease_seconds_.Observe(seconds); leases_.Increment(); }
  void Heartbeat() { heartbeats_.Increment(); }
  void Expired(int expired, int requeued, int failed);
  void Retried(int runs) { retries_.Increment(runs); }
  // Refreshed from the store by the scheduler's housekeeping loop.
  void SetRunsByState(const std::vector<std::pair<std::string, int64_t>>& counts);
  void SetWorkersConnected(int64_t workers) { workers_.Set(static_cast<double>(workers)); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Histogram>& rpc_seconds_;
  prometheus::Family<prometheus::Gauge>& runs_;
  prometheus::Gauge& queue_depth_;
  prometheus::Counter& leases_;
  prometheus::Histogram& lease_seconds_;
  prometheus::Counter& expired_;
  prometheus::Counter& retries_;
  prometheus::Counter& heartbeats_;
  prometheus::Gauge& workers_;
  std::mutex mu_;
};

}  // namespace dfkd::server

#endif  // DFKD_SERVER_API_SCHEDULER_METRICS_H_
