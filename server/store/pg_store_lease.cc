// PgStore: the worker side. Leasing (single runs and gangs), heartbeats,
// metrics, checkpoints, finishing and lease expiry. See README.md for the
// statements in order.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <utility>

#include <nlohmann/json.hpp>

#include "server/store/pg_store.h"
#include "server/store/pg_util.h"
#include "server/store/token_hash.h"

namespace dfkd::server {
namespace {

using Code = StoreError::Code;

[[noreturn]] void LeaseLost(int64_t run_id, const PgStore::TokenCheck& check) {
  std::string message = "lease lost: run " + std::to_string(run_id);
  if (!check.run_found) {
    message += " does not exist";
  } else if (!check.has_attempt) {
    message += ": the token belongs to no attempt of this run";
  } else {
    message += " is " + check.state + " at attempt " + std::to_string(check.run_attempt) +
               "; this token's attempt " + std::to_string(check.attempt) +
               (check.ended ? " has ended" : " is not live");
  }
  throw StoreError(Code::kAborted, message);
}

std::string Seconds(double seconds) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), seconds >= 10 ? "%.0f" : "%.1f", seconds);
  return buffer;
}

}  // namespace

PgStore::TokenCheck PgStore::LockRunForToken(pqxx::work& txn, int64_t run_id,
                                             const std::string& token) {
  TokenCheck check;
  const pqxx::result rows = txn.exec_params(
      "SELECT r.state, r.attempt AS run_attempt, r.max_attempts, r.world_size, r.campaign_id, "
      "       a.attempt, a.rank, a.worker_id, a.ended_at IS NOT NULL AS ended "
      "FROM runs r LEFT JOIN attempts a ON a.run_id = r.id AND a.token = $2 "
      "WHERE r.id = $1 FOR NO KEY UPDATE OF r",
      run_id, token);
  if (rows.empty()) return check;
  const pqxx::row row = rows[0];
  check.run_found = true;
  check.state = row["state"].as<std::string>();
  check.run_attempt = row["run_attempt"].as<int>();
  check.max_attempts = row["max_attempts"].as<int>();
  check.world_size = row["world_size"].as<int>();
  check.campaign_id = row["campaign_id"].as<int64_t>();
  if (!row["attempt"].is_null()) {
    check.has_attempt = true;
    check.attempt = row["attempt"].as<int>();
    check.rank = row["rank"].as<int>();
    check.worker_id = row["worker_id"].as<int64_t>();
    check.ended = row["ended"].as<bool>();
  }
  return check;
}

int64_t PgStore::RegisterWorker(const std::string& name, const api::Capabilities& caps) {
  if (name.empty()) throw StoreError(Code::kInvalidArgument, "worker name is empty");
  const nlohmann::json capabilities = {{"devices", caps.devices()},
                                       {"threads", caps.threads()},
                                       {"libtorch_version", caps.libtorch_version()},
                                       {"cuda_version", caps.cuda_version()},
                                       {"hostname", caps.hostname()}};
  const std::string json =
      capabilities.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return pg::RunTxn(pool_, "register worker", [&](pqxx::work& txn) {
    return txn
        .exec_params1(
            "INSERT INTO workers (name, capabilities) VALUES ($1, $2::jsonb) "
            "ON CONFLICT (name) DO UPDATE SET capabilities = EXCLUDED.capabilities, "
            "  last_seen = now() "
            "RETURNING id",
            name, json)[0]
        .as<int64_t>();
  });
}

namespace {

// The assignment in a dfkd_lease() row: the run's spec with the teacher's
// weights filled in (distill runs), where to resume and where to write.
api::Assignment AssignmentFromRow(const pqxx::row& row, const StoreOptions& options) {
  const int64_t run_id = row["run_id"].as<int64_t>();
  std::string spec = row["spec"].as<std::string>();
  if (row["has_teacher"].as<bool>()) {
    nlohmann::json json = nlohmann::json::parse(spec);
    if (json.is_object()) {
      json["distill"]["teacher"]["weights"] = row["teacher"].as<std::string>();
      spec = json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
  }
  std::string root = options.artifact_root;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  api::Assignment assignment;
  assignment.set_run_id(run_id);
  assignment.set_attempt(row["attempt"].as<int>());
  assignment.set_attempt_token(row["token"].as<std::string>());
  assignment.set_rank(row["rank"].as<int>());
  assignment.set_world_size(row["world_size"].as<int>());
  assignment.set_master_addr(row["master_addr"].as<std::string>());
  assignment.set_master_port(row["master_port"].as<int>());
  assignment.set_spec_json(spec);
  assignment.set_resume_checkpoint(row["latest_checkpoint"].as<std::string>());
  assignment.set_output_dir(root + "/runs/" + std::to_string(run_id));
  return assignment;
}

}  // namespace

// One round trip: dfkd_lease() (migrations/0003_gang_convergence.sql) does
// the three steps in PL/pgSQL:
// 1. a worker holding a slot of a forming gang stays in it (nullopt), or
//    moves to a forming gang closer to completion;
// 2. a worker whose gang formed since its last call gets its rank;
// 3. otherwise claim one queued run (preferred ids first, then priority, id)
//    FOR NO KEY UPDATE SKIP LOCKED: W=1 is leased at once; W>1 adds a slot
//    and, with the W-th slot, turns all slots into W attempt rows.
std::optional<api::Assignment> PgStore::TryLease(int64_t worker_id, const std::string& host,
                                                 int offer_port,
                                                 const std::vector<int64_t>& preferred) {
  const std::vector<LeaseAnswer> answers =
      TryLeaseBatch({LeaseAsk{worker_id, host, offer_port}}, preferred);
  if (answers.empty() || !answers[0].registered) {
    throw StoreError(Code::kNotFound, "worker " + std::to_string(worker_id) + " is not registered");
  }
  return answers[0].assignment;
}

// dfkd_lease_batch() runs dfkd_lease() for each ask in one transaction.
std::vector<Store::LeaseAnswer> PgStore::TryLeaseBatch(const std::vector<LeaseAsk>& asks,
                                                       const std::vector<int64_t>& preferred) {
  return pg::RunTxn(pool_, "lease", [&](pqxx::work& txn) {
    std::vector<int64_t> workers, ports;
    std::vector<std::string> hosts;
    for (const LeaseAsk& ask : asks) {
      workers.push_back(ask.worker_id);
      hosts.push_back(ask.host);
      ports.push_back(ask.offer_port);
    }
    const pqxx::result rows = txn.exec_params(
        "SELECT * FROM dfkd_lease_batch($1::bigint[], $2::text[], $3::int[], $4::bigint[])",
        pg::IntArray(workers), pg::TextArray(hosts), pg::IntArray(ports),
        pg::IntArray(preferred));
    std::vector<LeaseAnswer> answers(asks.size());
    // Rows come in ask order, at most one per ask; match them by worker id.
    size_t next = 0;
    for (const auto& row : rows) {
      const int64_t worker = row["worker_id"].as<int64_t>();
      while (next < asks.size() && asks[next].worker_id != worker) ++next;
      if (next == asks.size()) break;
      LeaseAnswer& answer = answers[next++];
      answer.registered = row["registered"].as<bool>();
      if (answer.registered && !row["run_id"].is_null()) {
        answer.assignment = AssignmentFromRow(row, options_);
      }
    }
    return answers;
  });
}

api::HeartbeatReply PgStore::Heartbeat(int64_t run_id, const std::string& token,
                                       double progress) {
  return pg::RunTxn(pool_, "heartbeat", [&](pqxx::work& txn) {
    api::HeartbeatReply reply;
    const TokenCheck check = LockRunForToken(txn, run_id, token);
    const bool current = check.has_attempt && !check.ended && check.attempt == check.run_attempt;
    if (current && (check.live() || check.state == "cancelled")) {
      txn.exec_params(
          "UPDATE attempts SET heartbeat_at = now() "
          "WHERE run_id = $1 AND attempt = $2 AND rank = $3",
          run_id, check.attempt, check.rank);
      txn.exec_params("UPDATE workers SET last_seen = now() WHERE id = $1", check.worker_id);
    }
    if (check.live()) {
      // Rank 0 speaks for the run's progress; any rank's beat means it runs.
      const bool report = check.rank == 0 && std::isfinite(progress);
      if (check.state == "leased" || report) {
        txn.exec_params(
            "UPDATE runs SET state = 'running', "
            "  progress = CASE WHEN $2::boolean THEN $3::float8 ELSE progress END "
            "WHERE id = $1",
            run_id, report, report ? std::clamp(progress, 0.0, 1.0) : 0.0);
      }
    } else if (current && check.state == "cancelled") {
      reply.set_cancel(true);
    } else {
      reply.set_lease_lost(true);
    }
    return reply;
  });
}

int PgStore::ReportMetrics(int64_t run_id, const std::string& token,
                           const std::vector<api::MetricPoint>& points) {
  return pg::RunTxn(pool_, "report metrics", [&](pqxx::work& txn) {
    const TokenCheck check = LockRunForToken(txn, run_id, token);
    if (!check.live()) LeaseLost(run_id, check);
    if (points.empty()) return 0;
    std::vector<int64_t> steps;
    std::vector<std::string> names;
    std::vector<double> values;
    // The latest "progress" and "test_top1" points update the run.
    const api::MetricPoint* progress = nullptr;
    const api::MetricPoint* top1 = nullptr;
    for (const api::MetricPoint& point : points) {
      steps.push_back(point.step());
      names.push_back(point.name());
      values.push_back(point.value());
      if (!std::isfinite(point.value())) continue;
      if (point.name() == "progress" && (!progress || point.step() >= progress->step())) {
        progress = &point;
      }
      if (point.name() == "test_top1" && (!top1 || point.step() >= top1->step())) top1 = &point;
    }
    txn.exec_params(
        "INSERT INTO metrics (run_id, attempt, step, name, value) "
        "SELECT $1, $2, t.step, t.name, t.value "
        "FROM unnest($3::bigint[], $4::text[], $5::float8[]) AS t(step, name, value)",
        run_id, check.attempt, pg::IntArray(steps), pg::TextArray(names),
        pg::DoubleArray(values));
    if (progress != nullptr || top1 != nullptr) {
      txn.exec_params(
          "UPDATE runs SET "
          "  progress = CASE WHEN $2::boolean THEN $3::float8 ELSE progress END, "
          "  latest_accuracy = CASE WHEN $4::boolean THEN $5::float8 ELSE latest_accuracy END "
          "WHERE id = $1",
          run_id, progress != nullptr,
          progress != nullptr ? std::clamp(progress->value(), 0.0, 1.0) : 0.0, top1 != nullptr,
          top1 != nullptr ? top1->value() : 0.0);
    }
    return static_cast<int>(points.size());
  });
}

// Every rank's checkpoint is recorded; rank 0's is where the next attempt
// resumes (runs.latest_checkpoint).
void PgStore::ReportCheckpoint(int64_t run_id, const std::string& token, int64_t step,
                               const std::string& path, const std::string& sha256) {
  pg::RunTxn(pool_, "report checkpoint", [&](pqxx::work& txn) {
    const TokenCheck check = LockRunForToken(txn, run_id, token);
    if (!check.live()) LeaseLost(run_id, check);
    txn.exec_params(
        "INSERT INTO checkpoints (run_id, attempt, step, path, sha256) "
        "VALUES ($1, $2, $3, $4, $5)",
        run_id, check.attempt, step, path, sha256);
    if (check.rank == 0) {
      txn.exec_params("UPDATE runs SET latest_checkpoint = $2 WHERE id = $1", run_id, path);
    }
  });
}

// Success from rank 0 ends the run (and releases its dependants); success
// from another rank ends that rank only. Failure from any rank ends the
// attempt and retries or fails the run. On a cancelled run the current
// attempt just ends; a late rank of a run that already succeeded is a no-op.
void PgStore::Finish(const api::FinishRequest& request) {
  bool has_top1 = false;
  double top1 = 0;
  if (request.success() && !request.result_json().empty()) {
    const nlohmann::json result = nlohmann::json::parse(request.result_json(), nullptr, false);
    if (result.is_discarded()) {
      throw StoreError(Code::kInvalidArgument, "finish: result_json is not valid JSON");
    }
    if (result.is_object() && result.contains("test_top1") && result["test_top1"].is_number()) {
      has_top1 = true;
      top1 = result["test_top1"].get<double>();
    }
  }
  const int64_t run_id = request.run_id();
  pg::RunTxn(pool_, "finish", [&](pqxx::work& txn) {
    const TokenCheck check = LockRunForToken(txn, run_id, request.attempt_token());
    const bool current = check.has_attempt && check.attempt == check.run_attempt;
    if (current && check.state == "cancelled") {
      EndAttempt(txn, run_id, check.attempt, "cancelled");
      return;
    }
    if (current && check.state == "succeeded") {
      EndAttempt(txn, run_id, check.attempt, "succeeded");
      return;
    }
    if (!check.live()) LeaseLost(run_id, check);

    if (request.success()) {
      if (check.rank != 0) {
        txn.exec_params(
            "UPDATE attempts SET ended_at = now(), outcome = 'succeeded' "
            "WHERE run_id = $1 AND attempt = $2 AND rank = $3",
            run_id, check.attempt, check.rank);
        return;
      }
      if (check.state == "leased") {   // finished before its first heartbeat
        txn.exec_params("UPDATE runs SET state = 'running' WHERE id = $1", run_id);
      }
      txn.exec_params(
          "UPDATE runs SET state = 'succeeded', result = NULLIF($2::text, '')::jsonb, "
          "  artifact = $3, progress = 1, "
          "  latest_accuracy = CASE WHEN $4::boolean THEN $5::float8 ELSE latest_accuracy END "
          "WHERE id = $1",
          run_id, request.result_json(), request.artifact(), has_top1, top1);
      EndAttempt(txn, run_id, check.attempt, "succeeded");
      txn.exec_params(
          "UPDATE runs SET state = 'queued', not_before = now() "
          "WHERE depends_on = $1 AND state = 'blocked'",
          run_id);
      return;
    }

    if (request.handed_back()) {
      // The worker stopped on purpose after a checkpoint: back to the queue
      // at once, and this attempt does not count against max_attempts.
      EndAttempt(txn, run_id, check.attempt, "handed_back");
      txn.exec_params(
          "UPDATE runs SET state = 'queued', not_before = now(), "
          "  max_attempts = max_attempts + 1 WHERE id = $1",
          run_id);
      return;
    }
    EndAttempt(txn, run_id, check.attempt, "failed");
    std::string error = request.error().empty() ? "unknown error" : request.error();
    if (check.world_size > 1) error = "rank " + std::to_string(check.rank) + ": " + error;
    RequeueOrFail(txn, run_id, check.attempt, request.retryable() ? check.max_attempts : 0,
                  error);
  });
}

// Attempts of leased/running runs whose newest heartbeat (or lease time) is
// older than lease_seconds end whole (all ranks, outcome 'expired'); the run
// is retried with backoff or fails. Stale attempts of cancelled runs just
// end. Forming-gang slots not polled for lease_seconds are dropped. Runs
// locked by another transaction are skipped (SKIP LOCKED): the next sweep
// gets them.
ExpireReport PgStore::ExpireLeases() {
  return pg::RunTxn(pool_, "expire leases", [&](pqxx::work& txn) {
    ExpireReport report;
    const pqxx::result stale = txn.exec_params(
        "SELECT r.id, r.state, r.attempt, r.max_attempts, a.worker_id, "
        "       coalesce(w.name, a.worker_id::text) AS worker, "
        "       extract(epoch FROM now() - coalesce(a.heartbeat_at, a.leased_at))::float8 "
        "         AS silent "
        "FROM runs r "
        "JOIN attempts a ON a.run_id = r.id AND a.attempt = r.attempt AND a.ended_at IS NULL "
        "LEFT JOIN workers w ON w.id = a.worker_id "
        "WHERE r.state IN ('leased', 'running', 'cancelled') "
        "  AND coalesce(a.heartbeat_at, a.leased_at) < now() - make_interval(secs => $1) "
        "ORDER BY r.id, a.rank "
        "FOR NO KEY UPDATE OF r SKIP LOCKED",
        options_.lease_seconds);
    int64_t previous = 0;
    for (const auto& row : stale) {
      const int64_t run_id = row["id"].as<int64_t>();
      if (run_id == previous) continue;   // the first stale rank speaks for the run
      previous = run_id;
      const int attempt = row["attempt"].as<int>();
      if (row["state"].as<std::string>() == "cancelled") {
        EndAttempt(txn, run_id, attempt, "cancelled");
        continue;
      }
      EndAttempt(txn, run_id, attempt, "expired");
      ++report.expired;
      const std::string error = "lease expired: no heartbeat from worker " +
                                row["worker"].as<std::string>() + " for " +
                                Seconds(row["silent"].as<double>()) + " s";
      if (RequeueOrFail(txn, run_id, attempt, row["max_attempts"].as<int>(), error)) {
        ++report.requeued;
      } else {
        ++report.failed;
      }
    }
    report.gang_slots_dropped = static_cast<int>(
        txn.exec_params(
               "DELETE FROM gang_slots g USING ("
               "  SELECT run_id, rank FROM gang_slots "
               "  WHERE seen_at < now() - make_interval(secs => $1) "
               "  FOR UPDATE SKIP LOCKED) s "
               "WHERE g.run_id = s.run_id AND g.rank = s.rank",
               options_.lease_seconds)
            .affected_rows());
    return report;
  });
}

}  // namespace dfkd::server
