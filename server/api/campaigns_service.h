// The researcher-facing service: submit, read, cancel, retry, watch, results.
#ifndef DFKD_SERVER_API_CAMPAIGNS_SERVICE_H_
#define DFKD_SERVER_API_CAMPAIGNS_SERVICE_H_

#include "dfkd/api/v1/scheduler.grpc.pb.h"
#include "server/api/service_context.h"

namespace dfkd::server {

class CampaignsService final : public api::Campaigns::Service {
 public:
  explicit CampaignsService(ServiceContext* ctx) : ctx_(*ctx) {}

  grpc::Status Submit(grpc::ServerContext* c, const api::SubmitRequest* req,
                      api::SubmitReply* reply) override;
  grpc::Status GetCampaign(grpc::ServerContext* c, const api::GetCampaignRequest* req,
                           api::Campaign* reply) override;
  grpc::Status ListCampaigns(grpc::ServerContext* c, const api::ListCampaignsRequest* req,
                             api::ListCampaignsReply* reply) override;
  grpc::Status ListExperiments(grpc::ServerContext* c, const api::ListExperimentsRequest* req,
                               api::ListExperimentsReply* reply) override;
  grpc::Status ListRuns(grpc::ServerContext* c, const api::ListRunsRequest* req,
                        api::ListRunsReply* reply) override;
  grpc::Status GetRun(grpc::ServerContext* c, const api::GetRunRequest* req,
                      api::Run* reply) override;
  grpc::Status Cancel(grpc::ServerContext* c, const api::CancelRequest* req,
                      api::CancelReply* reply) override;
  grpc::Status Retry(grpc::ServerContext* c, const api::RetryRequest* req,
                     api::RetryReply* reply) override;
  grpc::Status Watch(grpc::ServerContext* c, const api::WatchRequest* req,
                     grpc::ServerWriter<api::WatchEvent>* writer) override;
  grpc::Status Results(grpc::ServerContext* c, const api::ResultsRequest* req,
                       api::ResultsReply* reply) override;
  grpc::Status GetMetrics(grpc::ServerContext* c, const api::GetMetricsRequest* req,
                          api::GetMetricsReply* reply) override;

 private:
  // PERMISSION_DENIED unless an admin or the campaign's owner.
  grpc::Status CheckOwner(const Principal& who, const std::string& owner, const char* what);

  ServiceContext& ctx_;
};

}  // namespace dfkd::server

#endif  // DFKD_SERVER_API_CAMPAIGNS_SERVICE_H_
