// dfkd-scheduler as a library: the store, both services, the standard health
// and reflection services, a Prometheus exposer and a housekeeping thread
// (lease expiry, gauges). main.cc and the tests start it the same way.
#ifndef DFKD_SERVER_API_SCHEDULER_SERVER_H_
#define DFKD_SERVER_API_SCHEDULER_SERVER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <prometheus/exposer.h>

#include "server/api/campaigns_service.h"
#include "server/api/service_context.h"
#include "server/api/workers_service.h"

namespace dfkd::server {

struct SchedulerOptions {
  std::string listen = "127.0.0.1:7070";   // host:port; port 0 = pick a free one
  std::string metrics_listen;              // host:port for /metrics; "" = no exposer
  std::string tls_cert;                    // PEM files; both empty = plaintext
  std::string tls_key;
  double housekeeping_seconds = 1.0;       // lease expiry and gauge refresh period
  int max_message_bytes = 4 << 20;         // a campaign larger than this is refused
  std::string code_version;                // part of every run's identity
  common::CampaignLimits limits;
  StoreOptions store;
};

class SchedulerServer {
 public:
  explicit SchedulerServer(SchedulerOptions options);
  ~SchedulerServer();

  // Opens the store (migrating it), starts serving; throws on failure.
  void Start();
  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  void Wait();
  void Shutdown();

 private:
  void Housekeeping();

  SchedulerOptions options_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Authenticator> auth_;
  SchedulerMetrics metrics_;
  WakeUp wake_;
  ServiceContext ctx_;
  std::unique_ptr<CampaignsService> campaigns_;
  std::unique_ptr<WorkersService> workers_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::unique_ptr<grpc::Server> server_;
  std::thread housekeeping_;
  std::atomic<bool> stopping_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  int port_ = 0;
  int metrics_port_ = 0;
};

// Reads a whole file (TLS certificates); throws naming the file.
std::string ReadFileOrThrow(const std::string& path);

}  // namespace dfkd::server

#endif  // DFKD_SERVER_API_SCHEDULER_SERVER_H_
