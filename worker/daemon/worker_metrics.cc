#include "worker/daemon/worker_metrics.h"

#include <nlohmann/json.hpp>

namespace dfkd::worker::daemon {

TrainLabels TrainLabelsFromSpec(const std::string& spec_json) {
  TrainLabels labels;
  nlohmann::json spec = nlohmann::json::parse(spec_json, nullptr, /*allow_exceptions=*/false);
  if (!spec.is_object()) return labels;
  auto kind = spec.find("kind");
  if (kind == spec.end() || !kind->is_string()) return labels;
  labels.method = kind->get<std::string>();
  if (labels.method != "distill") return labels;
  labels.method = "noise";  // the spec's default method
  auto distill = spec.find("distill");
  if (distill != spec.end() && distill->is_object()) {
    auto method = distill->find("method");
    if (method != distill->end() && method->is_string()) labels.method = method->get<std::string>();
  }
  auto kdci = spec.find("kdci");
  if (kdci != spec.end() && kdci->is_object()) {
    auto enabled = kdci->find("enabled");
    if (enabled != kdci->end() && enabled->is_boolean() && enabled->get<bool>()) {
      labels.kdci = "true";
    }
  }
  return labels;
}

WorkerMetrics::WorkerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      runs_(prometheus::BuildCounter()
                .Name("dfkd_worker_runs_total")
                .Help("Attempts this worker ended, by outcome (succeeded, failed, cancelled, "
                      "lease_lost, handed_back)")
                .Register(*registry_)),
      busy_(prometheus::BuildGauge()
                .Name("dfkd_worker_busy")
                .Help("1 while this worker runs an attempt, else 0")
                .Register(*registry_)
                .Add({})),
      heartbeats_(prometheus::BuildCounter()
                      .Name("dfkd_worker_heartbeats_total")
                      .Help("Heartbeats the scheduler answered")
                      .Register(*registry_)
                      .Add({})),
      scheduler_errors_(prometheus::BuildCounter()
                            .Name("dfkd_worker_scheduler_errors_total")
                            .Help("Calls to the scheduler that failed (each retry counts)")
                            .Register(*registry_)
                            .Add({})),
      steps_(prometheus::BuildCounter()
                 .Name("dfkd_train_steps_total")
                 .Help("Training steps run on this worker (from dfkd-train's progress events)")
                 .Register(*registry_)),
      images_per_second_(prometheus::BuildGauge()
                             .Name("dfkd_train_images_per_second")
                             .Help("Training throughput of the latest progress event")
                             .Register(*registry_)),
      loss_(prometheus::BuildGauge()
                .Name("dfkd_train_loss")
                .Help("Training loss of the latest progress event")
                .Register(*registry_)),
      test_top1_(prometheus::BuildGauge()
                     .Name("dfkd_train_test_top1")
                     .Help("Test top-1 accuracy (%) of the latest evaluation")
                     .Register(*registry_)),
      progress_(prometheus::BuildGauge()
                    .Name("dfkd_train_progress_ratio")
                    .Help("Progress (0..1) of the run this worker trains")
                    .Register(*registry_)) {
  busy_.Set(0);
}

void WorkerMetrics::RunFinished(const std::string& outcome) {
  runs_.Add({{"outcome", outcome}}).Increment();
}

void WorkerMetrics::AddSteps(const TrainLabels& labels, int64_t steps) {
  if (steps > 0) steps_.Add(Of(labels)).Increment(static_cast<double>(steps));
}

void WorkerMetrics::SetImagesPerSecond(const TrainLabels& labels, double value) {
  images_per_second_.Add(Of(labels)).Set(value);
}

void WorkerMetrics::SetLoss(const TrainLabels& labels, double value) {
  loss_.Add(Of(labels)).Set(value);
}

void WorkerMetrics::SetTestTop1(const TrainLabels& labels, double value) {
  test_top1_.Add(Of(labels)).Set(value);
}

void WorkerMetrics::SetProgress(const TrainLabels& labels, double ratio) {
  progress_.Add(Of(labels)).Set(ratio);
}

}  // namespace dfkd::worker::daemon
