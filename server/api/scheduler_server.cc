#include "server/api/scheduler_server.h"

#include <fstream>
#include <iostream>
#include <sstream>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

namespace dfkd::server {

std::string ReadFileOrThrow(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot read");
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

SchedulerServer::SchedulerServer(SchedulerOptions options) : options_(std::move(options)) {}

SchedulerServer::~SchedulerServer() { Shutdown(); }

void SchedulerServer::Start() {
  store_ = Store::Open(options_.store);
  auth_ = std::make_unique<Authenticator>(store_.get());
  ctx_.store = store_.get();
  ctx_.auth = auth_.get();
  ctx_.metrics = &metrics_;
  ctx_.wake = &wake_;
  ctx_.code_version = options_.code_version;
  ctx_.limits = options_.limits;
  ctx_.store_options = options_.store;
  campaigns_ = std::make_unique<CampaignsService>(&ctx_);
  workers_ = std::make_unique<WorkersService>(&ctx_);

  if (!options_.metrics_listen.empty()) {
    exposer_ = std::make_unique<prometheus::Exposer>(options_.metrics_listen);
    exposer_->RegisterCollectable(metrics_.registry());
    metrics_port_ = exposer_->GetListeningPorts().front();
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options_.tls_cert.empty() || !options_.tls_key.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back(
        {ReadFileOrThrow(options_.tls_key), ReadFileOrThrow(options_.tls_cert)});
    credentials = grpc::SslServerCredentials(ssl);
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen, credentials, &port_);
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  builder.RegisterService(campaigns_.get());
  builder.RegisterService(workers_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    throw std::runtime_error("cannot listen on " + options_.listen +
                             " (address in use or invalid?)");
  }
  server_->GetHealthCheckService()->SetServingStatus(true);
  housekeeping_ = std::thread([this] { Housekeeping(); });
}

void SchedulerServer::Housekeeping() {
  auto period = std::chrono::duration<double>(options_.housekeeping_seconds);
  while (!stopping_) {
    try {
      ExpireReport report = store_->ExpireLeases();
      metrics_.Expired(report.expired, report.requeued, report.failed);
      if (report.expired > 0 || report.gang_slots_dropped > 0) wake_.Notify();
      metrics_.SetRunsByState(store_->CountRunsByState());
      metrics_.SetWorkersConnected(store_->WorkersSeenWithin(options_.store.lease_seconds));
    } catch (const std::exception& e) {
      std::cerr << "dfkd-scheduler: housekeeping: " << e.what() << "\n";
    }
    std::unique_lock<std::mutex> lock(stop_mu_);
    stop_cv_.wait_for(lock, period, [this] { return stopping_.load(); });
  }
}

void SchedulerServer::Wait() {
  if (server_) server_->Wait();
}

void SchedulerServer::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    if (stopping_.exchange(true)) return;
  }
  stop_cv_.notify_all();
  wake_.Notify();
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (housekeeping_.joinable()) housekeeping_.join();
}

}  // namespace dfkd::server
