// The scheduler's PostgreSQL store: the only code in dfkd that includes
// libpqxx. Every piece of scheduler state lives here, so dfkd-scheduler can be
// killed at any moment and restarted without losing or doubling a run.
//
// Schema: migrations/NNNN_*.sql, embedded into the binary at build time and
// applied by Open() inside one transaction under an advisory lock.
//
// Concurrency: every method is thread-safe (a small connection pool); each
// call is one transaction. Leasing claims rows with FOR UPDATE SKIP LOCKED, so
// any number of scheduler threads (or scheduler processes on one database)
// lease concurrently without two holders for one run.
//
// Errors: StoreError carries a gRPC-like code so the service maps it 1:1.
#ifndef DFKD_SERVER_STORE_STORE_H_
#define DFKD_SERVER_STORE_STORE_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/campaign/campaign.h"
#include "server/policy/fair_share.h"
#include "dfkd/api/v1/scheduler.pb.h"

namespace dfkd::server {

namespace api = ::dfkd::api::v1;

class StoreError : public std::runtime_error {
 public:
  enum class Code { kNotFound, kInvalidArgument, kFailedPrecondition, kPermissionDenied,
                    kAborted, kUnavailable, kInternal };
  StoreError(Code code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  Code code() const { return code_; }

 private:
  Code code_;
};

enum class Role { kResearcher, kWorker, kAdmin };
const char* RoleName(Role role);
std::optional<Role> ParseRole(const std::string& name);

struct Principal {
  int64_t token_id = 0;
  std::string name;     // the token's name: owner of the campaigns it submits
  Role role = Role::kResearcher;
};

struct StoreOptions {
  std::string url;                      // postgresql://...
  int pool_size = 8;                    // connections
  double lease_seconds = 60;            // no heartbeat for this long: the lease expires
  double retry_backoff_seconds = 5;     // first retry waits this long, doubling
  double retry_backoff_max_seconds = 600;
  std::string artifact_root = "/tmp/dfkd-artifacts";
};

// What one ExpireLeases sweep did (for Prometheus counters).
struct ExpireReport {
  int expired = 0;      // attempts whose lease ran out
  int requeued = 0;     // ... of which runs went back to the queue (retry)
  int failed = 0;       // ... of which runs failed: attempts exhausted
  int gang_slots_dropped = 0;   // ranks of a forming gang whose worker went away
};

class Store {
 public:
  // Connects and applies pending migrations (under pg_advisory_xact_lock, so
  // concurrent Open()s are safe). A database whose schema is newer than this
  // binary knows is refused with kFailedPrecondition and a clear message.
  static std::unique_ptr<Store> Open(const StoreOptions& options);
  virtual ~Store() = default;

  // Highest migration version this binary knows / the database is at.
  static int KnownSchemaVersion();
  virtual int SchemaVersion() = 0;

  // ---- tokens. The plain token is returned once and stored only as SHA-256.
  virtual std::string CreateToken(const std::string& name, Role role) = 0;
  virtual std::optional<Principal> Authenticate(const std::string& token) = 0;
  virtual int RevokeTokens(const std::string& name) = 0;

  // ---- campaigns (researchers). `owner` is Principal::name.
  virtual api::SubmitReply SubmitCampaign(const std::string& owner,
                                          const common::ExpandedCampaign& campaign,
                                          bool force) = 0;
  virtual api::Campaign GetCampaign(int64_t id) = 0;           // kNotFound
  virtual api::ListCampaignsReply ListCampaigns(const api::ListCampaignsRequest& request) = 0;
  virtual std::vector<api::Experiment> ListExperiments(int64_t campaign_id) = 0;
  virtual api::ListRunsReply ListRuns(const api::ListRunsRequest& request,
                                      const std::string& owner_filter) = 0;
  virtual api::Run GetRun(int64_t run_id) = 0;                 // kNotFound
  virtual std::string CampaignOwner(int64_t campaign_id) = 0;  // kNotFound
  virtual std::string RunOwner(int64_t run_id) = 0;            // kNotFound
  virtual int CancelCampaign(int64_t campaign_id) = 0;
  virtual int CancelRun(int64_t run_id) = 0;
  virtual int RetryCampaign(int64_t campaign_id, bool include_cancelled) = 0;
  // Runs of the campaign changed since `since` (all when since is empty),
  // and whether none is blocked, queued, leased or running.
  virtual std::vector<api::Run> RunsOfCampaign(int64_t campaign_id) = 0;
  virtual bool CampaignDone(int64_t campaign_id) = 0;
  virtual api::ResultsReply Results(int64_t campaign_id) = 0;
  virtual api::GetMetricsReply GetMetrics(const api::GetMetricsRequest& request) = 0;

  // ---- workers.
  virtual int64_t RegisterWorker(const std::string& name, const api::Capabilities& caps) = 0;
  // The head of the queue for the fair-share policy (server/policy).
  virtual QueueSnapshot SnapshotQueue(int per_owner) = 0;
  // One try, no waiting: claims a run for this worker (the `preferred` ids in
  // order first, then the rest of the queue by priority and age), or adds the
  // worker to a forming gang. Returns the assignment once the worker holds a
  // rank of a fully formed gang (W=1: at once).
  virtual std::optional<api::Assignment> TryLease(int64_t worker_id, const std::string& host,
                                                  int offer_port,
                                                  const std::vector<int64_t>& preferred) = 0;
  // TryLease for several workers in one transaction (one round trip, one
  // commit): results in the order of `asks`; an unregistered worker's entry
  // is `registered = false`.
  struct LeaseAsk {
    int64_t worker_id = 0;
    std::string host;
    int offer_port = 0;
  };
  struct LeaseAnswer {
    bool registered = true;
    std::optional<api::Assignment> assignment;
  };
  virtual std::vector<LeaseAnswer> TryLeaseBatch(const std::vector<LeaseAsk>& asks,
                                                 const std::vector<int64_t>& preferred) = 0;
  // Every write of an attempt carries its token; a stale token is refused
  // with kAborted ("lease lost"), except Heartbeat, which says so in its reply.
  virtual api::HeartbeatReply Heartbeat(int64_t run_id, const std::string& token,
                                        double progress) = 0;
  virtual int ReportMetrics(int64_t run_id, const std::string& token,
                            const std::vector<api::MetricPoint>& points) = 0;
  virtual void ReportCheckpoint(int64_t run_id, const std::string& token, int64_t step,
                                const std::string& path, const std::string& sha256) = 0;
  virtual void Finish(const api::FinishRequest& request) = 0;
  // Expires leases without a heartbeat for lease_seconds and drops forming-gang
  // slots of workers that stopped polling. Called every second by the scheduler.
  virtual ExpireReport ExpireLeases() = 0;

  // ---- gauges for Prometheus.
  virtual std::vector<std::pair<std::string, int64_t>> CountRunsByState() = 0;
  virtual int64_t WorkersSeenWithin(double seconds) = 0;
};

}  // namespace dfkd::server

#endif  // DFKD_SERVER_STORE_STORE_H_
