#include "worker/daemon/scheduler_client.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "worker/daemon/log.h"
#include "worker/daemon/worker_metrics.h"

namespace dfkd::worker::daemon {
namespace {

std::string ReadFileOrThrow(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot read");
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::unique_ptr<api::Workers::StubInterface> MakeStub(const SchedulerClientOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.tls_ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFileOrThrow(options.tls_ca);
    credentials = grpc::SslCredentials(ssl);
  }
  // gRPC's default reconnect backoff grows to 120 s: after a long scheduler
  // outage the daemon would notice the restart minutes late.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  return api::Workers::NewStub(grpc::CreateCustomChannel(options.address, credentials, args));
}

std::chrono::system_clock::time_point DeadlineIn(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(
             std::chrono::duration<double>(std::max(0.001, seconds)));
}

}  // namespace

SchedulerClient::SchedulerClient(const SchedulerClientOptions& options, WorkerMetrics* metrics)
    : SchedulerClient(MakeStub(options), options, metrics) {}

SchedulerClient::SchedulerClient(std::unique_ptr<api::Workers::StubInterface> stub,
                                 const SchedulerClientOptions& options, WorkerMetrics* metrics)
    : stub_(std::move(stub)), options_(options), metrics_(metrics) {}

grpc::Status SchedulerClient::Register(const api::RegisterRequest& request,
                                       api::RegisterReply* reply) {
  return Call(
      "Register",
      [&](grpc::ClientContext* c) { return stub_->Register(c, request, reply); },
      options_.rpc_timeout_seconds, /*retry_seconds=*/-1, /*interruptible=*/true);
}

grpc::Status SchedulerClient::Lease(const api::LeaseRequest& request, api::LeaseReply* reply) {
  return Call(
      "Lease", [&](grpc::ClientContext* c) { return stub_->Lease(c, request, reply); },
      request.wait_seconds() + options_.rpc_timeout_seconds, /*retry_seconds=*/-1,
      /*interruptible=*/true);
}

grpc::Status SchedulerClient::Heartbeat(const api::HeartbeatRequest& request,
                                        api::HeartbeatReply* reply, double retry_seconds) {
  return Call(
      "Heartbeat", [&](grpc::ClientContext* c) { return stub_->Heartbeat(c, request, reply); },
      options_.rpc_timeout_seconds, std::max(0.0, retry_seconds), /*interruptible=*/false);
}

grpc::Status SchedulerClient::ReportMetrics(const api::ReportMetricsRequest& request,
                                            api::ReportMetricsReply* reply,
                                            double retry_seconds) {
  return Call(
      "ReportMetrics",
      [&](grpc::ClientContext* c) { return stub_->ReportMetrics(c, request, reply); },
      options_.rpc_timeout_seconds, std::max(0.0, retry_seconds), /*interruptible=*/false);
}

grpc::Status SchedulerClient::ReportCheckpoint(const api::ReportCheckpointRequest& request,
                                               api::ReportCheckpointReply* reply,
                                               double retry_seconds) {
  return Call(
      "ReportCheckpoint",
      [&](grpc::ClientContext* c) { return stub_->ReportCheckpoint(c, request, reply); },
      options_.rpc_timeout_seconds, std::max(0.0, retry_seconds), /*interruptible=*/false);
}

grpc::Status SchedulerClient::Finish(const api::FinishRequest& request, api::FinishReply* reply,
                                     double retry_seconds) {
  return Call(
      "Finish", [&](grpc::ClientContext* c) { return stub_->Finish(c, request, reply); },
      options_.rpc_timeout_seconds, std::max(0.0, retry_seconds), /*interruptible=*/false);
}

void SchedulerClient::Interrupt() {
  std::lock_guard<std::mutex> lock(mu_);
  interrupted_.store(true);
  if (interruptible_call_ != nullptr) interruptible_call_->TryCancel();
  cv_.notify_all();
}

bool SchedulerClient::SleepUnlessInterrupted(double seconds) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::duration<double>(std::max(0.0, seconds)),
                      [this] { return interrupted_.load(); });
}

grpc::Status SchedulerClient::Call(const char* name, const Rpc& rpc, double timeout_seconds,
                                   double retry_seconds, bool interruptible) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point give_up =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(std::max(0.0, retry_seconds)));
  double backoff = 0.1;
  while (true) {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + options_.token);
    context.set_deadline(DeadlineIn(timeout_seconds));
    if (interruptible) {
      std::lock_guard<std::mutex> lock(mu_);
      if (interrupted_.load()) return grpc::Status(grpc::StatusCode::CANCELLED, "interrupted");
      interruptible_call_ = &context;
    }
    grpc::Status status = rpc(&context);
    if (interruptible) {
      std::lock_guard<std::mutex> lock(mu_);
      interruptible_call_ = nullptr;
    }
    if (status.ok()) {
      if (outage_logged_.exchange(false)) LogLine("scheduler " + options_.address + " is back");
      return status;
    }
    if (metrics_ != nullptr) metrics_->SchedulerError();
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return status;
    if (interruptible && interrupted_.load()) return status;
    const Clock::time_point now = Clock::now();
    if (retry_seconds >= 0 && now >= give_up) return status;
    if (!outage_logged_.exchange(true)) {
      LogLine(std::string(name) + ": scheduler " + options_.address + " unavailable (" +
              status.error_message() + "); retrying");
    }
    double wait = backoff;
    if (retry_seconds >= 0) {
      wait = std::min(wait, std::chrono::duration<double>(give_up - now).count());
    }
    if (interruptible) {
      if (SleepUnlessInterrupted(wait)) return status;
    } else {
      // Not interruptible: an Interrupt() wake-up only makes the retry earlier.
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::duration<double>(wait));
    }
    backoff = std::min(backoff * 2, 2.0);
  }
}

}  // namespace dfkd::worker::daemon
