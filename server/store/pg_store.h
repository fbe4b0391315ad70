// The PostgreSQL implementation of Store (see store.h for the contract and
// README.md in this folder for how a lease flows through the tables).
//
// Source files: pg_store.cc (open, tokens, campaigns, cancel/retry),
// pg_store_reads.cc (read-only queries), pg_store_lease.cc (workers: lease,
// heartbeat, metrics, checkpoints, finish, expiry).
//
// Locking rule that keeps the store deadlock-free: a transaction that writes
// an attempt first locks its run row (SELECT ... FOR NO KEY UPDATE), then
// touches attempts; the expiry sweep locks runs with SKIP LOCKED.
#ifndef DFKD_SERVER_STORE_PG_STORE_H_
#define DFKD_SERVER_STORE_PG_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "server/store/connection_pool.h"
#include "server/store/store.h"

namespace dfkd::server {

class PgStore : public Store {
 public:
  // Connects and migrates; throws StoreError.
  explicit PgStore(const StoreOptions& options);

  int SchemaVersion() override;

  std::string CreateToken(const std::string& name, Role role) override;
  std::optional<Principal> Authenticate(const std::string& token) override;
  int RevokeTokens(const std::string& name) override;

  api::SubmitReply SubmitCampaign(const std::string& owner,
                                  const common::ExpandedCampaign& campaign, bool force) override;
  api::Campaign GetCampaign(int64_t id) override;
  api::ListCampaignsReply ListCampaigns(const api::ListCampaignsRequest& request) override;
  std::vector<api::Experiment> ListExperiments(int64_t campaign_id) override;
  api::ListRunsReply ListRuns(const api::ListRunsRequest& request,
                              const std::string& owner_filter) override;
  api::Run GetRun(int64_t run_id) override;
  std::string CampaignOwner(int64_t campaign_id) override;
  std::string RunOwner(int64_t run_id) override;
  int CancelCampaign(int64_t campaign_id) override;
  int CancelRun(int64_t run_id) override;
  int RetryCampaign(int64_t campaign_id, bool include_cancelled) override;
  std::vector<api::Run> RunsOfCampaign(int64_t campaign_id) override;
  bool CampaignDone(int64_t campaign_id) override;
  api::ResultsReply Results(int64_t campaign_id) override;
  api::GetMetricsReply GetMetrics(const api::GetMetricsRequest& request) override;

  int64_t RegisterWorker(const std::string& name, const api::Capabilities& caps) override;
  QueueSnapshot SnapshotQueue(int per_owner) override;
  std::optional<api::Assignment> TryLease(int64_t worker_id, const std::string& host,
                                          int offer_port,
                                          const std::vector<int64_t>& preferred) override;
  std::vector<LeaseAnswer> TryLeaseBatch(const std::vector<LeaseAsk>& asks,
                                         const std::vector<int64_t>& preferred) override;
  api::HeartbeatReply Heartbeat(int64_t run_id, const std::string& token,
                                double progress) override;
  int ReportMetrics(int64_t run_id, const std::string& token,
                    const std::vector<api::MetricPoint>& points) override;
  void ReportCheckpoint(int64_t run_id, const std::string& token, int64_t step,
                        const std::string& path, const std::string& sha256) override;
  void Finish(const api::FinishRequest& request) override;
  ExpireReport ExpireLeases() override;

  std::vector<std::pair<std::string, int64_t>> CountRunsByState() override;
  int64_t WorkersSeenWithin(double seconds) override;

  // ---- shared by the source files (public only so free helpers can use them).

  // A run row locked FOR NO KEY UPDATE, joined with the attempt holding
  // `token` (attempt fields are empty when no attempt of the run has it).
  struct TokenCheck {
    bool run_found = false;
    std::string state;       // the run's state
    int run_attempt = 0;     // runs.attempt
    int max_attempts = 0;
    int world_size = 1;
    int64_t campaign_id = 0;
    bool has_attempt = false;
    int attempt = 0;         // the token's attempt
    int rank = 0;
    int64_t worker_id = 0;
    bool ended = false;      // the token's attempt row has ended
    // The token's row is live and belongs to the run's current attempt of a
    // leased/running run.
    bool live() const {
      return has_attempt && !ended && attempt == run_attempt &&
             (state == "leased" || state == "running");
    }
  };
  static TokenCheck LockRunForToken(pqxx::work& txn, int64_t run_id, const std::string& token);

  // Fails (recursively) the blocked runs that depend on `run_ids`, with
  // last_error "dependency run N <suffix>". Returns how many failed.
  static int FailDependants(pqxx::work& txn, const std::vector<int64_t>& run_ids,
                            const std::string& suffix);

  // Ends every live rank row of (run, attempt) with `outcome`.
  static void EndAttempt(pqxx::work& txn, int64_t run_id, int attempt, const std::string& outcome);

  // After a failed or expired attempt: back to the queue with backoff while
  // attempts remain (returns true), else failed with `error` (dependants too).
  bool RequeueOrFail(pqxx::work& txn, int64_t run_id, int attempt, int max_attempts,
                     const std::string& error);

 private:
  // Throws kNotFound "campaign N not found".
  static void CheckCampaignExists(pqxx::work& txn, int64_t campaign_id);

  StoreOptions options_;
  ConnectionPool pool_;
};

}  // namespace dfkd::server

#endif  // DFKD_SERVER_STORE_PG_STORE_H_
