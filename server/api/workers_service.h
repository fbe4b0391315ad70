// The worker-facing service: register, lease (long-poll), heartbeat, report,
// finish. Every write after a lease carries the attempt token; the store
// refuses stale ones, so a zombie attempt can never overwrite a live one.
#ifndef DFKD_SERVER_API_WORKERS_SERVICE_H_
#define DFKD_SERVER_API_WORKERS_SERVICE_H_

#include <chrono>
#include <mutex>
#include <vector>

#include "dfkd/api/v1/scheduler.grpc.pb.h"
#include "server/api/lease_batcher.h"
#include "server/api/service_context.h"
#include "server/policy/fair_share.h"

namespace dfkd::server {

class WorkersService final : public api::Workers::Service {
 public:
  explicit WorkersService(ServiceContext* ctx)
      : ctx_(*ctx), batcher_(ctx->store, [this] { return Preferred(); }) {}

  grpc::Status Register(grpc::ServerContext* c, const api::RegisterRequest* req,
                        api::RegisterReply* reply) override;
  grpc::Status Lease(grpc::ServerContext* c, const api::LeaseRequest* req,
                     api::LeaseReply* reply) override;
  grpc::Status Heartbeat(grpc::ServerContext* c, const api::HeartbeatRequest* req,
                         api::HeartbeatReply* reply) override;
  grpc::Status ReportMetrics(grpc::ServerContext* c, const api::ReportMetricsRequest* req,
                             api::ReportMetricsReply* reply) override;
  grpc::Status ReportCheckpoint(grpc::ServerContext* c, const api::ReportCheckpointRequest* req,
                                api::ReportCheckpointReply* reply) override;
  grpc::Status Finish(grpc::ServerContext* c, const api::FinishRequest* req,
                      api::FinishReply* reply) override;

 private:
  // The fair-share order of the queue's head, recomputed at most every 100 ms
  // (one snapshot query serves a burst of leases).
  std::vector<int64_t> Preferred();

  ServiceContext& ctx_;
  std::mutex mu_;
  std::vector<int64_t> preferred_;
  std::chrono::steady_clock::time_point preferred_at_{};
  LeaseBatcher batcher_;   // last: its threads use the members above
};

}  // namespace dfkd::server

#endif  // DFKD_SERVER_API_WORKERS_SERVICE_H_
