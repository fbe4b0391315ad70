#include "worker/daemon/worker_daemon.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "worker/daemon/log.h"

namespace dfkd::worker::daemon {
namespace {

std::string Describe(const grpc::Status& status) {
  return std::to_string(static_cast<int>(status.error_code())) + " " + status.error_message();
}

WorkerOptions WithDefaults(WorkerOptions options) {
  if (options.name.empty()) options.name = DefaultWorkerName();
  if (options.dfkd_train.empty()) options.dfkd_train = DefaultDfkdTrainPath();
  if (options.host.empty()) options.host = "127.0.0.1";
  return options;
}

}  // namespace

int FindFreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = 0;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    socklen_t len = sizeof addr;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port = ntohs(addr.sin_port);
    }
  }
  ::close(fd);
  return port;
}

WorkerDaemon::WorkerDaemon(WorkerOptions options) : options_(WithDefaults(std::move(options))) {
  SchedulerClientOptions client;
  client.address = options_.scheduler;
  client.token = options_.token;
  client.tls_ca = options_.tls_ca;
  client.rpc_timeout_seconds = options_.rpc_timeout_seconds;
  client_ = std::make_unique<SchedulerClient>(client, &metrics_);
}

WorkerDaemon::~WorkerDaemon() = default;

bool WorkerDaemon::Start() {
  if (!options_.metrics_listen.empty() && !exposer_) {
    try {
      exposer_ = std::make_unique<prometheus::Exposer>(options_.metrics_listen);
    } catch (const std::exception& e) {
      throw std::runtime_error("--metrics-listen " + options_.metrics_listen +
                               ": cannot listen (" + e.what() + ")");
    }
    exposer_->RegisterCollectable(metrics_.registry());
    std::vector<int> ports = exposer_->GetListeningPorts();
    metrics_port_ = ports.empty() ? 0 : ports.front();
  }
  return Register();
}

bool WorkerDaemon::Register() {
  api::RegisterRequest request;
  request.set_name(options_.name);
  api::Capabilities* caps = request.mutable_capabilities();
  caps->set_devices(0);
  caps->set_threads(options_.threads > 0
                        ? options_.threads
                        : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  caps->set_libtorch_version(kLibtorchVersion);
  caps->set_cuda_version("");
  caps->set_hostname(HostName());
  api::RegisterReply reply;
  grpc::Status status = client_->Register(request, &reply);
  if (!status.ok()) {
    if (client_->interrupted()) return false;
    throw std::runtime_error("register with scheduler " + options_.scheduler + " as " +
                             options_.name + ": " + Describe(status));
  }
  worker_id_ = reply.worker_id();
  if (reply.heartbeat_seconds() > 0) heartbeat_seconds_ = reply.heartbeat_seconds();
  if (reply.lease_seconds() > 0) lease_seconds_ = reply.lease_seconds();
  artifact_root_ = reply.artifact_root();
  return true;
}

void WorkerDaemon::Run() {
  int failures = 0;
  while (!stop_.load()) {
    api::LeaseRequest request;
    request.set_worker_id(worker_id_);
    request.set_wait_seconds(std::max(0.0, options_.lease_wait_seconds));
    request.set_host(options_.host);
    request.set_offer_port(FindFreePort());
    api::LeaseReply reply;
    grpc::Status status = client_->Lease(request, &reply);
    if (!status.ok()) {
      if (stop_.load()) break;
      LogLine("Lease failed (" + Describe(status) + ")");
      if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
        // The scheduler does not know this worker (a new database?): again.
        try {
          if (Register()) LogLine("registered again as worker " + std::to_string(worker_id_));
        } catch (const std::exception& e) {
          LogLine(e.what());
        }
      }
      double backoff = std::min(10.0, 0.5 * static_cast<double>(1 << std::min(failures, 5)));
      ++failures;
      if (client_->SleepUnlessInterrupted(backoff)) break;
      continue;
    }
    failures = 0;
    if (!reply.has_assignment()) continue;
    RunAssignment(reply.assignment());
  }
}

void WorkerDaemon::RunAssignment(const api::Assignment& assignment) {
  SupervisorConfig config;
  config.worker_name = options_.name;
  config.dfkd_train = options_.dfkd_train;
  config.threads = options_.threads;
  config.heartbeat_seconds = heartbeat_seconds_;
  config.lease_seconds = lease_seconds_;
  config.artifact_root = artifact_root_;
  config.host = options_.host;
  config.stop_grace_seconds = options_.stop_grace_seconds;
  RunSupervisor supervisor(client_.get(), &metrics_, std::move(config), assignment);
  {
    std::lock_guard<std::mutex> lock(mu_);
    current_ = &supervisor;
    // A stop that came while the lease was answered: hand it back unstarted.
    if (stop_.load()) supervisor.RequestShutdown();
  }
  metrics_.SetBusy(true);
  RunOutcome outcome = supervisor.Run();
  metrics_.SetBusy(false);
  metrics_.RunFinished(RunOutcomeName(outcome));
  std::lock_guard<std::mutex> lock(mu_);
  current_ = nullptr;
}

void WorkerDaemon::RequestStop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    if (current_ != nullptr) current_->RequestShutdown();
  }
  client_->Interrupt();
}

}  // namespace dfkd::worker::daemon
