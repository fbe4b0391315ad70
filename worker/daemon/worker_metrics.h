// dfkd-worker's Prometheus families (prefixes dfkd_worker_ and dfkd_train_).
// Labels are low-cardinality only: outcome, method, kdci; never a run id.
// The registry is served by the daemon's exposer (--metrics-listen).
#ifndef DFKD_WORKER_DAEMON_WORKER_METRICS_H_
#define DFKD_WORKER_DAEMON_WORKER_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/labels.h>
#include <prometheus/registry.h>

namespace dfkd::worker::daemon {

// The {method, kdci} labels of a run's training series.
struct TrainLabels {
  std::string method = "unknown";  // distill.method, or the kind for teacher/scratch runs
  std::string kdci = "false";      // "true" | "false"
};

// Labels from a job spec JSON: method = distill.method (default "noise") for
// kind distill, else the kind; kdci = kdci.enabled. Tolerant: anything that
// cannot be read keeps the defaults above.
TrainLabels TrainLabelsFromSpec(const std::string& spec_json);

class WorkerMetrics {
 public:
  WorkerMetrics();

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // outcome: succeeded | failed | cancelled | lease_lost | handed_back
  void RunFinished(const std::string& outcome);
  void SetBusy(bool busy) { busy_.Set(busy ? 1 : 0); }
  void Heartbeat() { heartbeats_.Increment(); }
  void SchedulerError() { scheduler_errors_.Increment(); }

  void AddSteps(const TrainLabels& labels, int64_t steps);
  void SetImagesPerSecond(const TrainLabels& labels, double value);
  void SetLoss(const TrainLabels& labels, double value);
  void SetTestTop1(const TrainLabels& labels, double value);
  void SetProgress(const TrainLabels& labels, double ratio);

 private:
  static prometheus::Labels Of(const TrainLabels& labels) {
    return {{"method", labels.method}, {"kdci", labels.kdci}};
  }

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& runs_;
  prometheus::Gauge& busy_;
  prometheus::Counter& heartbeats_;
  prometheus::Counter& scheduler_errors_;
  prometheus::Family<prometheus::Counter>& steps_;
  prometheus::Family<prometheus::Gauge>& images_per_second_;
  prometheus::Family<prometheus::Gauge>& loss_;
  prometheus::Family<prometheus::Gauge>& test_top1_;
  prometheus::Family<prometheus::Gauge>& progress_;
};

}  // namespace dfkd::worker::daemon

#endif  // DFKD_WORKER_DAEMON_WORKER_METRICS_H_
