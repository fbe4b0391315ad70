#include "server/api/auth.h"

#include <map>

namespace dfkd::server {
namespace {

constexpr Role R = Role::kResearcher;
constexpr Role W = Role::kWorker;
constexpr Role A = Role::kAdmin;

// Researchers submit, read and cancel/retry their own campaigns (ownership is
// checked in the handlers); workers lease and report only; admins do all.
const std::map<std::string, std::vector<Role>>& RpcRoles() {
  static const std::map<std::string, std::vector<Role>> kRpcRoles = {
      {"Campaigns.Submit", {R, A}},         {"Campaigns.GetCampaign", {R, A}},
      {"Campaigns.ListCampaigns", {R, A}},  {"Campaigns.ListExperiments", {R, A}},
      {"Campaigns.ListRuns", {R, A}},       {"Campaigns.GetRun", {R, A}},
      {"Campaigns.Cancel", {R, A}},         {"Campaigns.Retry", {R, A}},
      {"Campaigns.Watch", {R, A}},          {"Campaigns.Results", {R, A}},
      {"Campaigns.GetMetrics", {R, A}},
      {"Workers.Register", {W, A}},         {"Workers.Lease", {W, A}},
      {"Workers.Heartbeat", {W, A}},        {"Workers.ReportMetrics", {W, A}},
      {"Workers.ReportCheckpoint", {W, A}}, {"Workers.Finish", {W, A}},
  };
  return kRpcRoles;
}

std::string BearerToken(const grpc::ServerContext& context) {
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return "";
  std::string value(it->second.data(), it->second.size());
  const std::string prefix = "Bearer ";
  if (value.compare(0, prefix.size(), prefix) != 0) return "";
  return value.substr(prefix.size());
}

}  // namespace

std::vector<Role> RolesFor(const std::string& method) {
  auto it = RpcRoles().find(method);
  return it == RpcRoles().end() ? std::vector<Role>{} : it->second;
}

std::optional<Principal> Authenticator::Lookup(const std::string& token) {
  auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.find(token);
    if (it != cache_.end() && it->second.expires > now) return it->second.principal;
  }
  std::optional<Principal> principal = store_->Authenticate(token);
  std::lock_guard<std::mutex> lock(mu_);
  if (cache_.size() > 10000) cache_.clear();  // bounded: garbage tokens cannot grow it
  cache_[token] = Entry{principal, now + ttl_};
  return principal;
}

grpc::Status Authenticator::Check(const grpc::ServerContext& context, const std::string& method,
                                  Principal* principal) {
  std::string token = BearerToken(context);
  if (token.empty()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing 'authorization: Bearer <token>' metadata "
                        "(set DFKD_TOKEN; create one with `dfkd-scheduler token create`)");
  }
  std::optional<Principal> found = Lookup(token);
  if (!found) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "unknown or revoked token");
  for (Role role : RolesFor(method)) {
    if (role == found->role) {
      *principal = *found;
      return grpc::Status::OK;
    }
  }
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      std::string("role ") + RoleName(found->role) + " may not call " + method);
}

}  // namespace dfkd::server
