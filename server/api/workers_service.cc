#include "server/api/workers_service.h"

#include <algorithm>

namespace dfkd::server {

std::vector<int64_t> WorkersService::Preferred() {
  std::lock_guard<std::mutex> lock(mu_);
  auto now = std::chrono::steady_clock::now();
  if (now - preferred_at_ > std::chrono::milliseconds(100)) {
    preferred_ = FairShareOrder(ctx_.store->SnapshotQueue(/*per_owner=*/64));
    preferred_at_ = now;
  }
  return preferred_;
}

grpc::Status WorkersService::Register(grpc::ServerContext* c, const api::RegisterRequest* req,
                                      api::RegisterReply* reply) {
  return ServeRpc(ctx_, "Workers.Register", c, [&](const Principal&) {
    if (req->name().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "name: required");
    }
    reply->set_worker_id(ctx_.store->RegisterWorker(req->name(), req->capabilities()));
    reply->set_lease_seconds(ctx_.store_options.lease_seconds);
    reply->set_heartbeat_seconds(std::max(0.05, ctx_.store_options.lease_seconds / 6));
    reply->set_artifact_root(ctx_.store_options.artifact_root);
    return grpc::Status::OK;
  });
}

grpc::Status WorkersService::Lease(grpc::ServerContext* c, const api::LeaseRequest* req,
                                   api::LeaseReply* reply) {
  return ServeRpc(ctx_, "Workers.Lease", c, [&](const Principal&) {
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                        std::chrono::duration<double>(std::min(req->wait_seconds(), 60.0)));
    while (true) {
      uint64_t generation = ctx_.wake->generation();
      auto start = std::chrono::steady_clock::now();
      std::optional<api::Assignment> assignment =
          batcher_.Lease(req->worker_id(), req->host(), req->offer_port());
      if (assignment) {
        ctx_.metrics->ObserveLease(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        *reply->mutable_assignment() = std::move(*assignment);
        return grpc::Status::OK;
      }
      auto now = std::chrono::steady_clock::now();
      if (now >= deadline || c->IsCancelled()) break;
      // Woken by a submit/finish/retry/expiry; the 250 ms bound catches
      // not_before backoffs and gangs formed through another scheduler.
      auto wait = std::min<std::chrono::steady_clock::duration>(
          deadline - now, std::chrono::milliseconds(250));
      ctx_.wake->WaitFor(generation, std::chrono::duration_cast<std::chrono::milliseconds>(wait));
    }
    return grpc::Status::OK;
  });
}

grpc::Status WorkersService::Heartbeat(grpc::ServerContext* c, const api::HeartbeatRequest* req,
                                       api::HeartbeatReply* reply) {
  return ServeRpc(ctx_, "Workers.Heartbeat", c, [&](const Principal&) {
    *reply = ctx_.store->Heartbeat(req->run_id(), req->attempt_token(), req->progress());
    ctx_.metrics->Heartbeat();
    return grpc::Status::OK;
  });
}

grpc::Status WorkersService::ReportMetrics(grpc::ServerContext* c,
                                           const api::ReportMetricsRequest* req,
                                           api::ReportMetricsReply* reply) {
  return ServeRpc(ctx_, "Workers.ReportMetrics", c, [&](const Principal&) {
    std::vector<api::MetricPoint> points(req->points().begin(), req->points().end());
    reply->set_stored(ctx_.store->ReportMetrics(req->run_id(), req->attempt_token(), points));
    return grpc::Status::OK;
  });
}

grpc::Status WorkersService::ReportCheckpoint(grpc::ServerContext* c,
                                              const api::ReportCheckpointRequest* req,
                                              api::ReportCheckpointReply*) {
  return ServeRpc(ctx_, "Workers.ReportCheckpoint", c, [&](const Principal&) {
    ctx_.store->ReportCheckpoint(req->run_id(), req->attempt_token(), req->step(), req->path(),
                                 req->sha256());
    return grpc::Status::OK;
  });
}

grpc::Status WorkersService::Finish(grpc::ServerContext* c, const api::FinishRequest* req,
                                    api::FinishReply*) {
  return ServeRpc(ctx_, "Workers.Finish", c, [&](const Principal&) {
    ctx_.store->Finish(*req);
    ctx_.wake->Notify();  // a finished teacher may have released its dependants
    return grpc::Status::OK;
  });
}

}  // namespace dfkd::server
