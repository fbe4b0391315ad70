// PgStore: opening, tokens, campaign submission, cancel and retry, and the
// run-state helpers shared with pg_store_lease.cc.
#include "server/store/pg_store.h"

#include <algorithm>
#include <map>
#include <utility>

#include <nlohmann/json.hpp>

#include "server/store/migrations.h"
#include "server/store/migrator.h"
#include "server/store/pg_util.h"
#include "server/store/token_hash.h"

namespace dfkd::server {
namespace {

using Code = StoreError::Code;
constexpr size_t kInsertChunk = 1000;   // rows per multi-row INSERT

std::string DumpJson(const nlohmann::json& json) {
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

[[noreturn]] void Invalid(const std::string& message) {
  throw StoreError(Code::kInvalidArgument, message);
}

// Indices must point where the campaign format says; the store trusts
// nothing else about an ExpandedCampaign.
void ValidateCampaign(const common::ExpandedCampaign& campaign) {
  const int experiments = static_cast<int>(campaign.experiments.size());
  if (campaign.max_attempts < 1) Invalid("campaign max_attempts must be at least 1");
  for (int i = 0; i < experiments; ++i) {
    const int baseline = campaign.experiments[i].baseline;
    if (baseline < -1 || baseline >= experiments || baseline == i) {
      Invalid("experiment " + std::to_string(i) + ": invalid baseline index " +
              std::to_string(baseline));
    }
  }
  for (size_t i = 0; i < campaign.runs.size(); ++i) {
    const common::ExpandedRun& run = campaign.runs[i];
    const std::string where = "run " + std::to_string(i) + ": ";
    if (run.experiment < -1 || run.experiment >= experiments) {
      Invalid(where + "invalid experiment index " + std::to_string(run.experiment));
    }
    if (run.depends_on < -1 || run.depends_on >= static_cast<int>(i)) {
      Invalid(where + "depends_on must name an earlier run, got " +
              std::to_string(run.depends_on));
    }
    if (run.world_size < 1) Invalid(where + "world_size must be at least 1");
    if (run.kind.empty()) Invalid(where + "kind is empty");
  }
}

// `count` fresh ids of `table`'s bigserial id column, ascending.
std::vector<int64_t> NextIds(pqxx::work& txn, const std::string& table, size_t count) {
  std::vector<int64_t> ids;
  if (count == 0) return ids;
  const pqxx::result rows = txn.exec_params(
      "SELECT nextval(pg_get_serial_sequence($1, 'id')) FROM generate_series(1, $2)", table,
      static_cast<int64_t>(count));
  for (const auto& row : rows) ids.push_back(row[0].as<int64_t>());
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::vector<int64_t> InsertExperiments(pqxx::work& txn, int64_t campaign_id,
                                       const std::vector<common::ExpandedExperiment>& list) {
  const std::vector<int64_t> ids = NextIds(txn, "experiments", list.size());
  if (list.empty()) return ids;
  std::vector<int64_t> idx;
  std::vector<std::string> names, kinds, methods, variants, axes;
  std::vector<bool> kdci;
  std::vector<std::optional<int64_t>> baselines;
  for (size_t i = 0; i < list.size(); ++i) {
    const common::ExpandedExperiment& e = list[i];
    idx.push_back(static_cast<int64_t>(i));
    names.push_back(e.name);
    kinds.push_back(e.kind);
    methods.push_back(e.method);
    variants.push_back(e.variant);
    axes.push_back(DumpJson(e.axes.is_null() ? nlohmann::json::object() : e.axes));
    kdci.push_back(e.kdci);
    baselines.push_back(e.baseline >= 0 ? std::optional<int64_t>(ids[e.baseline]) : std::nullopt);
  }
  txn.exec_params(
      "INSERT INTO experiments (id, campaign_id, idx, name, kind, method, kdci, variant, axes, "
      "                         baseline_experiment_id) "
      "SELECT t.id, $1, t.idx, t.name, t.kind, t.method, t.kdci, t.variant, t.axes, t.baseline "
      "FROM unnest($2::bigint[], $3::int[], $4::text[], $5::text[], $6::text[], $7::boolean[], "
      "            $8::text[], $9::jsonb[], $10::bigint[]) "
      "  AS t(id, idx, name, kind, method, kdci, variant, axes, baseline)",
      campaign_id, pg::IntArray(ids), pg::IntArray(idx), pg::TextArray(names),
      pg::TextArray(kinds), pg::TextArray(methods), pg::BoolArray(kdci), pg::TextArray(variants),
      pg::TextArray(axes), pg::IntArray(baselines));
  return ids;
}

// A finished run whose result a new identical run reuses.
struct ReusableResult {
  int64_t origin = 0;
  std::optional<std::string> result;
  std::string artifact;
};

// The columns of runs rows to insert, one vector per column.
struct RunRows {
  std::vector<int64_t> ids, seeds;
  std::vector<std::optional<int64_t>> experiments, depends_on, reused_from;
  std::vector<std::string> kinds, specs, identities, states, artifacts;
  std::vector<int64_t> world_sizes;
  std::vector<std::optional<std::string>> results;
  size_t size() const { return ids.size(); }
};

void InsertRunRows(pqxx::work& txn, int64_t campaign_id, const std::string& owner,
                   const common::ExpandedCampaign& campaign, const RunRows& all) {
  for (size_t begin = 0; begin < all.size(); begin += kInsertChunk) {
    const size_t end = std::min(all.size(), begin + kInsertChunk);
    auto slice = [&](const auto& column) {
      using Column = std::decay_t<decltype(column)>;
      return Column(column.begin() + begin, column.begin() + end);
    };
    txn.exec_params(
        "INSERT INTO runs (id, campaign_id, experiment_id, kind, seed, spec, identity, owner, "
        "                  priority, world_size, state, max_attempts, depends_on, reused_from, "
        "                  result, artifact, progress, latest_accuracy) "
        "SELECT t.id, $1, t.experiment_id, t.kind, t.seed, t.spec, t.identity, $2, $3, "
        "       t.world_size, t.state, $4, t.depends_on, t.reused_from, t.result, t.artifact, "
        "       CASE WHEN t.state = 'succeeded' THEN 1 ELSE 0 END, "
        "       CASE WHEN jsonb_typeof(t.result -> 'test_top1') = 'number' "
        "            THEN (t.result ->> 'test_top1')::float8 ELSE -1 END "
        "FROM unnest($5::bigint[], $6::bigint[], $7::text[], $8::bigint[], $9::jsonb[], "
        "            $10::text[], $11::int[], $12::text[], $13::bigint[], $14::bigint[], "
        "            $15::jsonb[], $16::text[]) "
        "  AS t(id, experiment_id, kind, seed, spec, identity, world_size, state, depends_on, "
        "       reused_from, result, artifact) "
        "ORDER BY t.id",
        campaign_id, owner, campaign.priority, campaign.max_attempts, pg::IntArray(slice(all.ids)),
        pg::IntArray(slice(all.experiments)), pg::TextArray(slice(all.kinds)),
        pg::IntArray(slice(all.seeds)), pg::TextArray(slice(all.specs)),
        pg::TextArray(slice(all.identities)), pg::IntArray(slice(all.world_sizes)),
        pg::TextArray(slice(all.states)), pg::IntArray(slice(all.depends_on)),
        pg::IntArray(slice(all.reused_from)), pg::TextArray(slice(all.results)),
        pg::TextArray(slice(all.artifacts)));
  }
}

}  // namespace

// ---------------------------------------------------------------- opening

std::unique_ptr<Store> Store::Open(const StoreOptions& options) {
  return std::make_unique<PgStore>(options);
}

int Store::KnownSchemaVersion() { return HighestVersion(EmbeddedMigrations()); }

PgStore::PgStore(const StoreOptions& options)
    : options_(options), pool_(options.url, options.pool_size) {
  try {
    ConnectionPool::Lease connection = pool_.Acquire();
    try {
      Migrate(connection.get(), EmbeddedMigrations());
    } catch (const pqxx::broken_connection&) {
      connection.MarkBroken();
      throw;
    }
  } catch (...) {
    pg::RethrowAsStoreError("open database");
  }
}

int PgStore::SchemaVersion() {
  return pg::RunTxn(pool_, "schema version", [](pqxx::work& txn) {
    return txn.exec1("SELECT coalesce(max(version), 0) FROM schema_migrations")[0].as<int>();
  });
}

// ---------------------------------------------------------------- tokens

std::string PgStore::CreateToken(const std::string& name, Role role) {
  if (name.empty()) Invalid("token name is empty");
  const std::string token = NewToken();
  pg::RunTxn(pool_, "create token", [&](pqxx::work& txn) {
    txn.exec_params("INSERT INTO tokens (name, role, sha256) VALUES ($1, $2, $3)", name,
                    std::string(RoleName(role)), Sha256Hex(token));
  });
  return token;
}

std::optional<Principal> PgStore::Authenticate(const std::string& token) {
  if (token.empty()) return std::nullopt;
  const std::string hash = Sha256Hex(token);
  return pg::RunTxn(pool_, "authenticate", [&](pqxx::work& txn) -> std::optional<Principal> {
    const pqxx::result rows = txn.exec_params(
        "SELECT id, name, role FROM tokens WHERE sha256 = $1 AND revoked_at IS NULL", hash);
    if (rows.empty()) return std::nullopt;
    const std::optional<Role> role = ParseRole(rows[0]["role"].as<std::string>());
    if (!role) return std::nullopt;
    Principal principal;
    principal.token_id = rows[0]["id"].as<int64_t>();
    principal.name = rows[0]["name"].as<std::string>();
    principal.role = *role;
    return principal;
  });
}

int PgStore::RevokeTokens(const std::string& name) {
  return pg::RunTxn(pool_, "revoke tokens", [&](pqxx::work& txn) {
    return static_cast<int>(
        txn.exec_params(
               "UPDATE tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL", name)
            .affected_rows());
  });
}

// ---------------------------------------------------------------- campaigns

// Result reuse (unless `force`): a run whose identity matches a succeeded run
// (any campaign) is inserted as 'succeeded' with reused_from, result and
// artifact copied. A train_teacher run whose identity matches a teacher that
// is still blocked/queued/leased/running (any campaign, or an earlier teacher
// of this submission) is not inserted at all: its dependants depend on that
// run instead. Both count as reused_runs. Other runs start 'queued', or
// 'blocked' while their dependency has not succeeded.
api::SubmitReply PgStore::SubmitCampaign(const std::string& owner,
                                         const common::ExpandedCampaign& campaign, bool force) {
  ValidateCampaign(campaign);
  return pg::RunTxn(pool_, "submit campaign", [&](pqxx::work& txn) {
    const int64_t campaign_id =
        txn.exec_params1(
               "INSERT INTO campaigns (name, owner, priority, max_attempts, spec) "
               "VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id",
               campaign.name, owner, campaign.priority, campaign.max_attempts,
               DumpJson(campaign.spec))[0]
            .as<int64_t>();
    const std::vector<int64_t> experiment_ids =
        InsertExperiments(txn, campaign_id, campaign.experiments);

    // Existing runs to reuse, by identity.
    std::map<std::string, ReusableResult> succeeded;
    std::map<std::string, int64_t> live_teachers;   // identity -> run id
    if (!force) {
      std::vector<std::string> identities, teacher_identities;
      for (const common::ExpandedRun& run : campaign.runs) {
        if (run.identity.empty()) continue;
        identities.push_back(run.identity);
        if (run.kind == "train_teacher") teacher_identities.push_back(run.identity);
      }
      const pqxx::result done = txn.exec_params(
          "SELECT identity, coalesce(reused_from, id) AS origin, result::text AS result, "
          "       artifact FROM runs "
          "WHERE identity = ANY($1::text[]) AND state = 'succeeded' ORDER BY id",
          pg::TextArray(identities));
      for (const auto& row : done) {
        ReusableResult reusable;
        reusable.origin = row["origin"].as<int64_t>();
        if (!row["result"].is_null()) reusable.result = row["result"].as<std::string>();
        reusable.artifact = row["artifact"].as<std::string>();
        succeeded.emplace(row["identity"].as<std::string>(), std::move(reusable));
      }
      // FOR SHARE: the teacher cannot finish (and release or fail its
      // dependants) before the dependants inserted here are committed.
      const pqxx::result live = txn.exec_params(
          "SELECT identity, id FROM runs "
          "WHERE identity = ANY($1::text[]) AND kind = 'train_teacher' AND state IN " +
              std::string(pg::kLiveStatesSql) + " ORDER BY id FOR SHARE",
          pg::TextArray(teacher_identities));
      for (const auto& row : live) {
        live_teachers.emplace(row["identity"].as<std::string>(), row["id"].as<int64_t>());
      }
    }

    const size_t n = campaign.runs.size();
    const std::vector<int64_t> new_ids = NextIds(txn, "runs", n);
    std::vector<int64_t> run_id(n, 0);
    std::vector<bool> done_state(n, false);   // the run (or its stand-in) has succeeded
    RunRows rows;
    int reused = 0;
    for (size_t i = 0; i < n; ++i) {
      const common::ExpandedRun& run = campaign.runs[i];
      const bool identity_known = !force && !run.identity.empty();
      auto hit = identity_known ? succeeded.find(run.identity) : succeeded.end();
      if (identity_known && hit == succeeded.end() && run.kind == "train_teacher") {
        auto teacher = live_teachers.find(run.identity);
        if (teacher != live_teachers.end()) {
          run_id[i] = teacher->second;   // not inserted: share the pending teacher
          ++reused;
          continue;
        }
      }
      run_id[i] = new_ids[i];
      std::string state;
      if (hit != succeeded.end()) {
        state = "succeeded";
        done_state[i] = true;
        ++reused;
      } else if (run.depends_on < 0 || done_state[run.depends_on]) {
        state = "queued";
      } else {
        state = "blocked";
      }
      if (identity_known && run.kind == "train_teacher" && hit == succeeded.end()) {
        live_teachers.emplace(run.identity, run_id[i]);   // later identical teachers share it
      }
      rows.ids.push_back(run_id[i]);
      rows.experiments.push_back(run.experiment >= 0
                                     ? std::optional<int64_t>(experiment_ids[run.experiment])
                                     : std::nullopt);
      rows.kinds.push_back(run.kind);
      rows.seeds.push_back(run.seed);
      rows.specs.push_back(DumpJson(run.spec.is_null() ? nlohmann::json::object() : run.spec));
      rows.identities.push_back(run.identity);
      rows.world_sizes.push_back(run.world_size);
      rows.states.push_back(state);
      rows.depends_on.push_back(run.depends_on >= 0
                                    ? std::optional<int64_t>(run_id[run.depends_on])
                                    : std::nullopt);
      if (hit != succeeded.end()) {
        rows.reused_from.push_back(hit->second.origin);
        rows.results.push_back(hit->second.result);
        rows.artifacts.push_back(hit->second.artifact);
      } else {
        rows.reused_from.push_back(std::nullopt);
        rows.results.push_back(std::nullopt);
        rows.artifacts.push_back("");
      }
    }
    InsertRunRows(txn, campaign_id, owner, campaign, rows);

    api::SubmitReply reply;
    reply.set_campaign_id(campaign_id);
    reply.set_experiments(static_cast<int>(campaign.experiments.size()));
    reply.set_runs(static_cast<int>(n));
    reply.set_reused_runs(reused);
    return reply;
  });
}

void PgStore::CheckCampaignExists(pqxx::work& txn, int64_t campaign_id) {
  if (txn.exec_params("SELECT 1 FROM campaigns WHERE id = $1", campaign_id).empty()) {
    throw StoreError(Code::kNotFound, "campaign " + std::to_string(campaign_id) + " not found");
  }
}

int PgStore::CancelCampaign(int64_t campaign_id) {
  return pg::RunTxn(pool_, "cancel campaign", [&](pqxx::work& txn) {
    CheckCampaignExists(txn, campaign_id);
    std::vector<int64_t> ids;
    for (const auto& row : txn.exec_params(
             "UPDATE runs SET state = 'cancelled' WHERE campaign_id = $1 AND state IN " +
                 std::string(pg::kLiveStatesSql) + " RETURNING id",
             campaign_id)) {
      ids.push_back(row[0].as<int64_t>());
    }
    if (!ids.empty()) {
      txn.exec_params("UPDATE campaigns SET state = 'cancelled' WHERE id = $1", campaign_id);
      txn.exec_params("DELETE FROM gang_slots WHERE run_id = ANY($1::bigint[])", pg::IntArray(ids));
      FailDependants(txn, ids, "was cancelled");
    }
    return static_cast<int>(ids.size());
  });
}

int PgStore::CancelRun(int64_t run_id) {
  return pg::RunTxn(pool_, "cancel run", [&](pqxx::work& txn) {
    if (txn.exec_params("SELECT 1 FROM runs WHERE id = $1", run_id).empty()) {
      throw StoreError(Code::kNotFound, "run " + std::to_string(run_id) + " not found");
    }
    const pqxx::result rows = txn.exec_params(
        "UPDATE runs SET state = 'cancelled' WHERE id = $1 AND state IN " +
            std::string(pg::kLiveStatesSql) + " RETURNING id",
        run_id);
    if (rows.empty()) return 0;
    txn.exec_params("DELETE FROM gang_slots WHERE run_id = $1", run_id);
    FailDependants(txn, {run_id}, "was cancelled");
    return 1;
  });
}

// Failed (and cancelled, if asked) runs go back to 'queued', or 'blocked'
// when their dependency has not succeeded; a run whose dependency failed or
// was cancelled outside this retry stays as it is. Each gets the campaign's
// max_attempts more attempts; last_error is kept.
int PgStore::RetryCampaign(int64_t campaign_id, bool include_cancelled) {
  const std::string states =
      include_cancelled ? pg::TextArray(std::vector<std::string>{"failed", "cancelled"})
                        : pg::TextArray(std::vector<std::string>{"failed"});
  return pg::RunTxn(pool_, "retry campaign", [&](pqxx::work& txn) {
    CheckCampaignExists(txn, campaign_id);
    std::vector<int64_t> ids;
    for (const auto& row : txn.exec_params(
             "UPDATE runs r SET "
             "  state = CASE WHEN r.depends_on IS NULL OR "
             "                    (SELECT d.state FROM runs d WHERE d.id = r.depends_on) = "
             "                    'succeeded' "
             "          THEN 'queued' ELSE 'blocked' END, "
             "  max_attempts = r.attempt + c.max_attempts, "
             "  not_before = now() "
             "FROM campaigns c "
             "WHERE c.id = r.campaign_id AND r.campaign_id = $1 AND r.state = ANY($2::text[]) "
             "  AND (r.depends_on IS NULL OR EXISTS ("
             "       SELECT 1 FROM runs d WHERE d.id = r.depends_on AND "
             "         (d.state NOT IN ('failed', 'cancelled') OR "
             "          (d.campaign_id = $1 AND d.state = ANY($2::text[]))))) "
             "RETURNING r.id",
             campaign_id, states)) {
      ids.push_back(row[0].as<int64_t>());
    }
    if (!ids.empty()) {
      // A cancelled run's last attempt may still be live (its worker never
      // called Finish): end it so the next lease can start rank 0 again.
      txn.exec_params(
          "UPDATE attempts SET ended_at = now(), outcome = 'cancelled' "
          "WHERE run_id = ANY($1::bigint[]) AND ended_at IS NULL",
          pg::IntArray(ids));
      txn.exec_params("UPDATE campaigns SET state = 'active' WHERE id = $1", campaign_id);
    }
    return static_cast<int>(ids.size());
  });
}

// ---------------------------------------------------------------- run-state helpers

int PgStore::FailDependants(pqxx::work& txn, const std::vector<int64_t>& run_ids,
                            const std::string& suffix) {
  if (run_ids.empty()) return 0;
  return static_cast<int>(
      txn.exec_params(
             "WITH RECURSIVE dep(id) AS ("
             "  SELECT r.id FROM runs r "
             "  WHERE r.depends_on = ANY($1::bigint[]) AND r.state = 'blocked' "
             "  UNION "
             "  SELECT r.id FROM runs r JOIN dep ON r.depends_on = dep.id "
             "  WHERE r.state = 'blocked') "
             "UPDATE runs r SET state = 'failed', "
             "  last_error = 'dependency run ' || r.depends_on || ' ' || $2 "
             "WHERE r.id IN (SELECT id FROM dep) AND r.state = 'blocked'",
             pg::IntArray(run_ids), suffix)
          .affected_rows());
}

void PgStore::EndAttempt(pqxx::work& txn, int64_t run_id, int attempt,
                         const std::string& outcome) {
  txn.exec_params(
      "UPDATE attempts SET ended_at = now(), outcome = $3 "
      "WHERE run_id = $1 AND attempt = $2 AND ended_at IS NULL",
      run_id, attempt, outcome);
}

bool PgStore::RequeueOrFail(pqxx::work& txn, int64_t run_id, int attempt, int max_attempts,
                            const std::string& error) {
  if (attempt < max_attempts) {
    txn.exec_params(
        "UPDATE runs SET state = 'queued', last_error = $3, "
        "  not_before = now() + make_interval(secs => $2) "
        "WHERE id = $1",
        run_id, pg::RetryBackoff(options_, attempt), error);
    return true;
  }
  txn.exec_params("UPDATE runs SET state = 'failed', last_error = $2 WHERE id = $1", run_id,
                  error);
  FailDependants(txn, {run_id}, "failed: " + error);
  return false;
}

}  // namespace dfkd::server
