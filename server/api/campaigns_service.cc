#include "server/api/campaigns_service.h"

#include <map>
#include <thread>
#include <tuple>

#include <nlohmann/json.hpp>

namespace dfkd::server {
namespace {

grpc::Status Invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

}  // namespace

grpc::Status CampaignsService::CheckOwner(const Principal& who, const std::string& owner,
                                          const char* what) {
  if (who.role == Role::kAdmin || who.name == owner) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      std::string(what) + " belongs to " + owner + "; only its owner or an "
                      "admin may change it");
}

grpc::Status CampaignsService::Submit(grpc::ServerContext* c, const api::SubmitRequest* req,
                                      api::SubmitReply* reply) {
  return ServeRpc(ctx_, "Campaigns.Submit", c, [&](const Principal& who) {
    nlohmann::json json = nlohmann::json::parse(req->campaign_json(), nullptr, false);
    if (json.is_discarded()) return Invalid("campaign_json: not valid JSON");
    common::CampaignParseResult parsed =
        common::ExpandCampaign(json, ctx_.code_version, ctx_.limits);
    if (!parsed.ok()) return Invalid("invalid campaign:\n" + parsed.ErrorText());
    const common::ExpandedCampaign& campaign = *parsed.campaign;
    if (req->validate_only()) {
      reply->set_experiments(static_cast<int>(campaign.experiments.size()));
      reply->set_runs(static_cast<int>(campaign.runs.size()));
      return grpc::Status::OK;
    }
    *reply = ctx_.store->SubmitCampaign(who.name, campaign, req->force());
    ctx_.wake->Notify();
    return grpc::Status::OK;
  });
}

grpc::Status CampaignsService::GetCampaign(grpc::ServerContext* c,
                                           const api::GetCampaignRequest* req,
                                           api::Campaign* reply) {
  return ServeRpc(ctx_, "Campaigns.GetCampaign", c, [&](const Principal&) {
    *reply = ctx_.store->GetCampaign(req->campaign_id());
    return grpc::Status::OK;
  });
}

grpc::Status CampaignsService::ListCampaigns(grpc::ServerContext* c,
                                             const api::ListCampaignsRequest* req,
                                             api::ListCampaignsReply* reply) {
  return ServeRpc(ctx_, "Campaigns.ListCampaigns", c, [&](const Principal&) {
    *reply = ctx_.store->ListCampaigns(*req);
    return grpc::Status::OK;
  });
}

grpc::Status CampaignsService::ListExperiments(grpc::ServerContext* c,
                                               const api::ListExperimentsRequest* req,
                                               api::ListExperimentsReply* reply) {
  return ServeRpc(ctx_, "Campaigns.ListExperiments", c, [&](const Principal&) {
    for (auto& e : ctx_.store->ListExperiments(req->campaign_id())) {
      *reply->add_experiments() = std::move(e);
    }
    return grpc::Status::OK;
  });
}

grpc::Status CampaignsService::ListRuns(grpc::ServerContext* c, const api::ListRunsRequest* req,
                                        api::ListRunsReply* reply) {
  return ServeRpc(ctx_, "Campaigns.ListRuns", c, [&](const Principal&) {
    *reply = ctx_.store->ListRuns(*req, "");
    return grpc::Status::OK;
  });
}

grpc::Status CampaignsService::GetRun(grpc::ServerContext* c, const api::GetRunRequest* req,
                                      api::Run* reply) {
  return ServeRpc(ctx_, "Campaigns.GetRun", c, [&](const Principal&) {
    *reply = ctx_.store->GetRun(req->run_id());
    return grpc::Status::OK;
  });
}

grpc::Status CampaignsService::Cancel(grpc::ServerContext* c, const api::CancelRequest* req,
                                      api::CancelReply* reply) {
  return ServeRpc(ctx_, "Campaigns.Cancel", c, [&](const Principal& who) {
    if ((req->campaign_id() != 0) == (req->run_id() != 0)) {
      return Invalid("give exactly one of campaign_id and run_id");
    }
    if (req->campaign_id() != 0) {
      grpc::Status owner = CheckOwner(who, ctx_.store->CampaignOwner(req->campaign_id()),
                                      "this campaign");
      if (!owner.ok()) return owner;
      reply->set_cancelled_runs(ctx_.store->CancelCampaign(req->campaign_id()));
    } else {
      grpc::Status owner = CheckOwner(who, ctx_.store->RunOwner(req->run_id()), "this run");
      if (!owner.ok()) return owner;
      reply->set_cancelled_runs(ctx_.store->CancelRun(req->run_id()));
    }
    return grpc::Status::OK;
  });
}

grpc::Status CampaignsService::Retry(grpc::ServerContext* c, const api::RetryRequest* req,
                                     api::RetryReply* reply) {
  return ServeRpc(ctx_, "Campaigns.Retry", c, [&](const Principal& who) {
    grpc::Status owner =
        CheckOwner(who, ctx_.store->CampaignOwner(req->campaign_id()), "this campaign");
    if (!owner.ok()) return owner;
    int n = ctx_.store->RetryCampaign(req->campaign_id(), req->include_cancelled());
    reply->set_requeued_runs(n);
    ctx_.metrics->Retried(n);
    ctx_.wake->Notify();
    return grpc::Status::OK;
  });
}

grpc::Status CampaignsService::Watch(grpc::ServerContext* c, const api::WatchRequest* req,
                                     grpc::ServerWriter<api::WatchEvent>* writer) {
  return ServeRpc(ctx_, "Campaigns.Watch", c, [&](const Principal&) {
    ctx_.store->GetCampaign(req->campaign_id());  // NOT_FOUND early
    double poll = req->poll_seconds() > 0 ? req->poll_seconds() : 0.5;
    // What the client last saw of each run; only changes are sent.
    std::map<int64_t, std::tuple<int, int, double, double>> seen;
    bool first = true;
    while (!c->IsCancelled()) {
      bool done = ctx_.store->CampaignDone(req->campaign_id());
      api::WatchEvent event;
      event.set_snapshot(first);
      for (api::Run& run : ctx_.store->RunsOfCampaign(req->campaign_id())) {
        auto key = std::make_tuple(static_cast<int>(run.state()), run.attempt(), run.progress(),
                                   run.latest_accuracy());
        auto it = seen.find(run.id());
        if (first || it == seen.end() || it->second != key) {
          seen[run.id()] = key;
          *event.add_runs() = std::move(run);
        }
      }
      event.set_campaign_done(done);
      if (first || event.runs_size() > 0 || done) {
        if (!writer->Write(event)) break;
      }
      if (done) break;
      first = false;
      std::this_thread::sleep_for(std::chrono::duration<double>(poll));
    }
    return grpc::Status::OK;
  });
}

grpc::Status CampaignsService::Results(grpc::ServerContext* c, const api::ResultsRequest* req,
                                       api::ResultsReply* reply) {
  return ServeRpc(ctx_, "Campaigns.Results", c, [&](const Principal&) {
    *reply = ctx_.store->Results(req->campaign_id());
    return grpc::Status::OK;
  });
}

grpc::Status CampaignsService::GetMetrics(grpc::ServerContext* c,
                                          const api::GetMetricsRequest* req,
                                          api::GetMetricsReply* reply) {
  return ServeRpc(ctx_, "Campaigns.GetMetrics", c, [&](const Principal&) {
    *reply = ctx_.store->GetMetrics(*req);
    return grpc::Status::OK;
  });
}

}  // namespace dfkd::server
