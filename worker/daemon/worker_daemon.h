// dfkd-worker's composition root: registers with the scheduler, serves
// /metrics, then leases one rank at a time and runs it as a supervised
// dfkd-train child (RunSupervisor), until RequestStop().
#ifndef DFKD_WORKER_DAEMON_WORKER_DAEMON_H_
#define DFKD_WORKER_DAEMON_WORKER_DAEMON_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include <prometheus/exposer.h>

#include "worker/daemon/run_supervisor.h"
#include "worker/daemon/scheduler_client.h"
#include "worker/daemon/worker_metrics.h"
#include "worker/daemon/worker_options.h"

namespace dfkd::worker::daemon {

// The LibTorch version dfkd-train is built against, as reported to the
// scheduler (the daemon itself does not link LibTorch).
inline constexpr const char* kLibtorchVersion = "1.13.1";

class WorkerDaemon {
 public:
  // Fills in the defaults of `options` (name, dfkd_train). Throws
  // std::runtime_error if the TLS root certificate cannot be read.
  explicit WorkerDaemon(WorkerOptions options);
  ~WorkerDaemon();
  WorkerDaemon(const WorkerDaemon&) = delete;
  WorkerDaemon& operator=(const WorkerDaemon&) = delete;

  // Starts the metrics exposer and registers, retrying while the scheduler is
  // unavailable. False if RequestStop() came first; throws std::runtime_error
  // when the metrics address cannot be bound or the scheduler refuses.
  bool Start();

  // Leases and supervises runs, one at a time, until RequestStop(); the run in
  // progress is then stopped (its child checkpoints) and handed back.
  void Run();

  // Thread-safe, idempotent: stop leasing, hand back the run in progress.
  void RequestStop();

  const std::string& name() const { return options_.name; }
  const WorkerOptions& options() const { return options_; }
  int64_t worker_id() const { return worker_id_; }
  int metrics_port() const { return metrics_port_; }  // 0 = no exposer
  WorkerMetrics& metrics() { return metrics_; }

 private:
  bool Register();
  void RunAssignment(const api::Assignment& assignment);

  WorkerOptions options_;
  WorkerMetrics metrics_;
  std::unique_ptr<SchedulerClient> client_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int metrics_port_ = 0;
  int64_t worker_id_ = 0;
  double heartbeat_seconds_ = 5;
  double lease_seconds_ = 30;
  std::string artifact_root_;

  std::atomic<bool> stop_{false};
  std::mutex mu_;
  RunSupervisor* current_ = nullptr;  // guarded by mu_
};

// A TCP port free on this machine now (bound to port 0, then released); 0 if
// none could be bound.
int FindFreePort();

}  // namespace dfkd::worker::daemon

#endif  // DFKD_WORKER_DAEMON_WORKER_DAEMON_H_
