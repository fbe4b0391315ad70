// A thin wrapper over the Workers stub: every call carries
// `authorization: Bearer <token>` and a deadline, and a call answered
// UNAVAILABLE (scheduler down or restarting) is retried with backoff (0.1 s
// doubling to 2 s), so the daemon survives a scheduler restart on the same
// address. The channel reconnects within 2 s of the scheduler coming back.
//
// Register and Lease retry until they succeed or Interrupt() is called (the
// daemon shuts down); the attempt-scoped calls retry for the time the caller
// gives, so a run's heartbeat loop never stalls for long.
#ifndef DFKD_WORKER_DAEMON_SCHEDULER_CLIENT_H_
#define DFKD_WORKER_DAEMON_SCHEDULER_CLIENT_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>

#include "dfkd/api/v1/scheduler.grpc.pb.h"

namespace dfkd::worker::daemon {

namespace api = ::dfkd::api::v1;

class WorkerMetrics;

struct SchedulerClientOptions {
  std::string address;              // host:port
  std::string token;                // bearer token
  std::string tls_ca;               // PEM root certificate file ("" = plain text)
  double rpc_timeout_seconds = 10;  // deadline of one call (Lease adds its wait)
};

class SchedulerClient {
 public:
  // Throws std::runtime_error if the TLS root certificate cannot be read.
  explicit SchedulerClient(const SchedulerClientOptions& options,
                           WorkerMetrics* metrics = nullptr);
  // For tests: any stub (a fake) instead of a channel.
  SchedulerClient(std::unique_ptr<api::Workers::StubInterface> stub,
                  const SchedulerClientOptions& options, WorkerMetrics* metrics = nullptr);

  // Retry UNAVAILABLE until success or Interrupt().
  grpc::Status Register(const api::RegisterRequest& request, api::RegisterReply* reply);
  grpc::Status Lease(const api::LeaseRequest& request, api::LeaseReply* reply);

  // Retry UNAVAILABLE for up to `retry_seconds` (0 = one try). Not interrupted.
  grpc::Status Heartbeat(const api::HeartbeatRequest& request,
                         api::HeartbeatReply* reply, double retry_seconds);
  grpc::Status ReportMetrics(const api::ReportMetricsRequest& request,
                             api::ReportMetricsReply* reply, double retry_seconds);
  grpc::Status ReportCheckpoint(const api::ReportCheckpointRequest& request,
                                api::ReportCheckpointReply* reply, double retry_seconds);
  grpc::Status Finish(const api::FinishRequest& request, api::FinishReply* reply,
                      double retry_seconds);

  // Ends Register/Lease retries and cancels a Lease in flight (it then answers
  // CANCELLED). Thread-safe, idempotent, permanent.
  void Interrupt();
  bool interrupted() const { return interrupted_.load(); }

  // Waits `seconds` or until Interrupt(); true if interrupted. For the
  // daemon's own backoff between failed leases.
  bool SleepUnlessInterrupted(double seconds);

 private:
  using Rpc = std::function<grpc::Status(grpc::ClientContext*)>;
  // `name` for log lines; `retry_seconds` < 0 = until interrupted.
  grpc::Status Call(const char* name, const Rpc& rpc, double timeout_seconds,
                    double retry_seconds, bool interruptible);

  std::unique_ptr<api::Workers::StubInterface> stub_;
  SchedulerClientOptions options_;
  WorkerMetrics* metrics_;
  std::atomic<bool> interrupted_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  grpc::ClientContext* interruptible_call_ = nullptr;  // guarded by mu_
  std::atomic<bool> outage_logged_{false};  // one log line per scheduler outage
};

}  // namespace dfkd::worker::daemon

#endif  // DFKD_WORKER_DAEMON_SCHEDULER_CLIENT_H_
