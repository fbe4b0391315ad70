// PgStore: read-only queries (campaigns, experiments, runs, results,
// metrics, queue snapshot, gauges). Each is one short transaction.
#include <map>
#include <utility>

#include "server/policy/summary.h"
#include "server/store/pg_store.h"
#include "server/store/pg_util.h"

namespace dfkd::server {
namespace {

using Code = StoreError::Code;

// runs_by_state for each campaign in `campaigns` (keyed by id).
void FillRunsByState(pqxx::work& txn, std::map<int64_t, api::Campaign*>& campaigns) {
  if (campaigns.empty()) return;
  std::vector<int64_t> ids;
  for (const auto& entry : campaigns) ids.push_back(entry.first);
  const pqxx::result rows = txn.exec_params(
      "SELECT campaign_id, state, count(*) AS n FROM runs "
      "WHERE campaign_id = ANY($1::bigint[]) GROUP BY campaign_id, state",
      pg::IntArray(ids));
  for (const auto& row : rows) {
    api::Campaign* campaign = campaigns.at(row["campaign_id"].as<int64_t>());
    (*campaign->mutable_runs_by_state())[row["state"].as<std::string>()] = row["n"].as<int64_t>();
  }
}

}  // namespace

api::Campaign PgStore::GetCampaign(int64_t id) {
  return pg::RunTxn(pool_, "get campaign", [&](pqxx::work& txn) {
    const pqxx::result rows = txn.exec_params(
        "SELECT " + pg::CampaignColumns() + " FROM campaigns c WHERE c.id = $1", id);
    if (rows.empty()) {
      throw StoreError(Code::kNotFound, "campaign " + std::to_string(id) + " not found");
    }
    api::Campaign campaign = pg::ReadCampaign(rows[0]);
    std::map<int64_t, api::Campaign*> by_id{{id, &campaign}};
    FillRunsByState(txn, by_id);
    return campaign;
  });
}

api::ListCampaignsReply PgStore::ListCampaigns(const api::ListCampaignsRequest& request) {
  const int64_t after = pg::ParsePageToken(request.page().page_token());
  const int page_size = pg::PageSize(request.page().page_size());
  return pg::RunTxn(pool_, "list campaigns", [&](pqxx::work& txn) {
    const pqxx::result rows = txn.exec_params(
        "SELECT " + pg::CampaignColumns() + " FROM campaigns c "
        "WHERE ($1::text = '' OR c.owner = $1::text) AND c.id > $2 "
        "  AND ($3::text = '' OR " + pg::CampaignStateSql() + " = $3::text) "
        "ORDER BY c.id LIMIT $4",
        request.owner(), after, request.state(), page_size + 1);
    api::ListCampaignsReply reply;
    std::map<int64_t, api::Campaign*> by_id;
    for (size_t i = 0; i < rows.size() && static_cast<int>(i) < page_size; ++i) {
      api::Campaign* campaign = reply.add_campaigns();
      *campaign = pg::ReadCampaign(rows[i]);
      by_id[campaign->id()] = campaign;
    }
    FillRunsByState(txn, by_id);
    if (static_cast<int>(rows.size()) > page_size) {
      reply.set_next_page_token(std::to_string(reply.campaigns(page_size - 1).id()));
    }
    return reply;
  });
}

std::vector<api::Experiment> PgStore::ListExperiments(int64_t campaign_id) {
  return pg::RunTxn(pool_, "list experiments", [&](pqxx::work& txn) {
    CheckCampaignExists(txn, campaign_id);
    std::vector<api::Experiment> experiments;
    for (const auto& row : txn.exec_params(
             "SELECT id, campaign_id, name, method, kdci, variant, "
             "       coalesce(baseline_experiment_id, 0) AS baseline, axes::text AS axes "
             "FROM experiments WHERE campaign_id = $1 ORDER BY idx",
             campaign_id)) {
      api::Experiment e;
      e.set_id(row["id"].as<int64_t>());
      e.set_campaign_id(row["campaign_id"].as<int64_t>());
      e.set_name(row["name"].as<std::string>());
      e.set_method(row["method"].as<std::string>());
      e.set_kdci(row["kdci"].as<bool>());
      e.set_variant(row["variant"].as<std::string>());
      e.set_baseline_experiment_id(row["baseline"].as<int64_t>());
      e.set_axes_json(row["axes"].as<std::string>());
      experiments.push_back(std::move(e));
    }
    return experiments;
  });
}

api::ListRunsReply PgStore::ListRuns(const api::ListRunsRequest& request,
                                     const std::string& owner_filter) {
  const int64_t after = pg::ParsePageToken(request.page().page_token());
  const int page_size = pg::PageSize(request.page().page_size());
  const std::string state = pg::StateName(request.state());
  return pg::RunTxn(pool_, "list runs", [&](pqxx::work& txn) {
    const pqxx::result rows = txn.exec_params(
        "SELECT " + pg::RunColumns(true) + " FROM runs r "
        "WHERE ($1::bigint = 0 OR r.campaign_id = $1::bigint) "
        "  AND ($2::bigint = 0 OR r.experiment_id = $2::bigint) "
        "  AND ($3::text = '' OR r.state = $3::text) "
        "  AND ($4::text = '' OR r.owner = $4::text) "
        "  AND r.id > $5 ORDER BY r.id LIMIT $6",
        request.campaign_id(), request.experiment_id(), state, owner_filter, after,
        page_size + 1);
    api::ListRunsReply reply;
    for (size_t i = 0; i < rows.size() && static_cast<int>(i) < page_size; ++i) {
      *reply.add_runs() = pg::ReadRun(rows[i], true);
    }
    if (static_cast<int>(rows.size()) > page_size) {
      reply.set_next_page_token(std::to_string(reply.runs(page_size - 1).id()));
    }
    return reply;
  });
}

api::Run PgStore::GetRun(int64_t run_id) {
  return pg::RunTxn(pool_, "get run", [&](pqxx::work& txn) {
    const pqxx::result rows =
        txn.exec_params("SELECT " + pg::RunColumns(true) + " FROM runs r WHERE r.id = $1", run_id);
    if (rows.empty()) {
      throw StoreError(Code::kNotFound, "run " + std::to_string(run_id) + " not found");
    }
    return pg::ReadRun(rows[0], true);
  });
}

std::string PgStore::CampaignOwner(int64_t campaign_id) {
  return pg::RunTxn(pool_, "campaign owner", [&](pqxx::work& txn) {
    const pqxx::result rows =
        txn.exec_params("SELECT owner FROM campaigns WHERE id = $1", campaign_id);
    if (rows.empty()) {
      throw StoreError(Code::kNotFound, "campaign " + std::to_string(campaign_id) + " not found");
    }
    return rows[0][0].as<std::string>();
  });
}

std::string PgStore::RunOwner(int64_t run_id) {
  return pg::RunTxn(pool_, "run owner", [&](pqxx::work& txn) {
    const pqxx::result rows = txn.exec_params("SELECT owner FROM runs WHERE id = $1", run_id);
    if (rows.empty()) {
      throw StoreError(Code::kNotFound, "run " + std::to_string(run_id) + " not found");
    }
    return rows[0][0].as<std::string>();
  });
}

// Without spec_json: Watch polls this for every run of a campaign.
std::vector<api::Run> PgStore::RunsOfCampaign(int64_t campaign_id) {
  return pg::RunTxn(pool_, "runs of campaign", [&](pqxx::work& txn) {
    CheckCampaignExists(txn, campaign_id);
    std::vector<api::Run> runs;
    for (const auto& row : txn.exec_params("SELECT " + pg::RunColumns(false) +
                                               " FROM runs r WHERE r.campaign_id = $1 "
                                               "ORDER BY r.id",
                                           campaign_id)) {
      runs.push_back(pg::ReadRun(row, false));
    }
    return runs;
  });
}

bool PgStore::CampaignDone(int64_t campaign_id) {
  return pg::RunTxn(pool_, "campaign done", [&](pqxx::work& txn) {
    CheckCampaignExists(txn, campaign_id);
    return txn
        .exec_params1("SELECT NOT EXISTS (SELECT 1 FROM runs WHERE campaign_id = $1 AND state IN " +
                          std::string(pg::kLiveStatesSql) + ")",
                      campaign_id)[0]
        .as<bool>();
  });
}

// One cell per experiment: test_top1 of the succeeded runs' result.json,
// summarised; delta against the baseline cell when both have results.
api::ResultsReply PgStore::Results(int64_t campaign_id) {
  return pg::RunTxn(pool_, "results", [&](pqxx::work& txn) {
    const pqxx::result campaign =
        txn.exec_params("SELECT name FROM campaigns WHERE id = $1", campaign_id);
    if (campaign.empty()) {
      throw StoreError(Code::kNotFound, "campaign " + std::to_string(campaign_id) + " not found");
    }
    api::ResultsReply reply;
    reply.set_campaign_id(campaign_id);
    reply.set_campaign_name(campaign[0][0].as<std::string>());

    std::map<int64_t, std::vector<double>> values;
    std::map<int64_t, int> runs;
    for (const auto& row : txn.exec_params(
             "SELECT experiment_id, "
             "  CASE WHEN state = 'succeeded' AND jsonb_typeof(result -> 'test_top1') = 'number' "
             "       THEN (result ->> 'test_top1')::float8 END AS top1 "
             "FROM runs WHERE campaign_id = $1 AND experiment_id IS NOT NULL ORDER BY id",
             campaign_id)) {
      const int64_t experiment = row["experiment_id"].as<int64_t>();
      ++runs[experiment];
      if (!row["top1"].is_null()) values[experiment].push_back(row["top1"].as<double>());
    }

    std::map<int64_t, Summary> summaries;
    for (const auto& row : txn.exec_params(
             "SELECT id, name, method, kdci, variant, axes::text AS axes, kind, "
             "       coalesce(baseline_experiment_id, 0) AS baseline "
             "FROM experiments WHERE campaign_id = $1 ORDER BY idx",
             campaign_id)) {
      const int64_t id = row["id"].as<int64_t>();
      const Summary summary = Summarize(values[id]);
      summaries[id] = summary;
      api::ResultCell* cell = reply.add_cells();
      cell->set_experiment_id(id);
      cell->set_name(row["name"].as<std::string>());
      cell->set_method(row["method"].as<std::string>());
      cell->set_kdci(row["kdci"].as<bool>());
      cell->set_variant(row["variant"].as<std::string>());
      cell->set_axes_json(row["axes"].as<std::string>());
      cell->set_kind(row["kind"].as<std::string>());
      cell->set_mean(summary.mean);
      cell->set_std(summary.std);
      cell->set_n(summary.n);
      cell->set_runs(runs[id]);
      cell->set_baseline_experiment_id(row["baseline"].as<int64_t>());
    }
    for (api::ResultCell& cell : *reply.mutable_cells()) {
      auto baseline = summaries.find(cell.baseline_experiment_id());
      if (cell.baseline_experiment_id() == 0 || baseline == summaries.end()) continue;
      cell.set_baseline_mean(baseline->second.mean);
      if (baseline->second.n > 0 && cell.n() > 0) {
        cell.set_delta(cell.mean() - baseline->second.mean);
      }
    }
    return reply;
  });
}

// after_step 0 means "from the start" (step 0 included); otherwise only
// points with step > after_step. Ordered by step, then name.
api::GetMetricsReply PgStore::GetMetrics(const api::GetMetricsRequest& request) {
  return pg::RunTxn(pool_, "get metrics", [&](pqxx::work& txn) {
    if (txn.exec_params("SELECT 1 FROM runs WHERE id = $1", request.run_id()).empty()) {
      throw StoreError(Code::kNotFound, "run " + std::to_string(request.run_id()) + " not found");
    }
    api::GetMetricsReply reply;
    for (const auto& row : txn.exec_params(
             "SELECT name, step, value, attempt FROM metrics "
             "WHERE run_id = $1 AND ($2::text = '' OR name = $2::text) "
             "  AND ($3::bigint = 0 OR step > $3::bigint) "
             "ORDER BY step, name, at",
             request.run_id(), request.name(), request.after_step())) {
      api::MetricPoint* point = reply.add_points();
      point->set_name(row["name"].as<std::string>());
      point->set_step(row["step"].as<int64_t>());
      point->set_value(row["value"].as<double>());
      point->set_attempt(row["attempt"].as<int>());
    }
    return reply;
  });
}

// The first `per_owner` leasable queued runs of each owner (priority, then
// age), and the ranks each owner has leased or running.
// Owners with queued work come from a skip scan of runs_queued_by_owner (one
// index probe per owner, not a scan of the queue). With one owner, fair share
// has nothing to decide and the lease's own priority order is the answer, so
// the snapshot stays empty and costs one probe.
QueueSnapshot PgStore::SnapshotQueue(int per_owner) {
  return pg::RunTxn(pool_, "snapshot queue", [&](pqxx::work& txn) {
    QueueSnapshot snapshot;
    const pqxx::result owners = txn.exec(
        "WITH RECURSIVE o(owner) AS ("
        "  (SELECT owner FROM runs WHERE state = 'queued' ORDER BY owner LIMIT 1) "
        "  UNION ALL "
        "  SELECT (SELECT r.owner FROM runs r WHERE r.state = 'queued' AND r.owner > o.owner "
        "          ORDER BY r.owner LIMIT 1) FROM o WHERE o.owner IS NOT NULL) "
        "SELECT owner FROM o WHERE owner IS NOT NULL LIMIT 2");
    if (owners.size() < 2) return snapshot;
    for (const auto& row : txn.exec_params(
             "WITH RECURSIVE o(owner) AS ("
             "  (SELECT owner FROM runs WHERE state = 'queued' ORDER BY owner LIMIT 1) "
             "  UNION ALL "
             "  SELECT (SELECT r.owner FROM runs r WHERE r.state = 'queued' AND r.owner > o.owner "
             "          ORDER BY r.owner LIMIT 1) FROM o WHERE o.owner IS NOT NULL) "
             "SELECT q.id, q.owner, q.priority, q.world_size FROM o, LATERAL ("
             "  SELECT id, owner, priority, world_size FROM runs r "
             "  WHERE r.state = 'queued' AND r.owner = o.owner AND r.not_before <= now() "
             "  ORDER BY r.priority DESC, r.id LIMIT $1) q "
             "WHERE o.owner IS NOT NULL ORDER BY q.owner, q.priority DESC, q.id",
             per_owner)) {
      QueuedRun run;
      run.run_id = row["id"].as<int64_t>();
      run.owner = row["owner"].as<std::string>();
      run.priority = row["priority"].as<int>();
      run.order = run.run_id;
      run.world_size = row["world_size"].as<int>();
      snapshot.queued.push_back(std::move(run));
    }
    for (const auto& row : txn.exec(
             "SELECT owner, sum(world_size)::int AS ranks FROM runs "
             "WHERE state IN ('leased', 'running') GROUP BY owner ORDER BY owner")) {
      snapshot.running_by_owner.emplace_back(row["owner"].as<std::string>(),
                                             row["ranks"].as<int>());
    }
    return snapshot;
  });
}

std::vector<std::pair<std::string, int64_t>> PgStore::CountRunsByState() {
  return pg::RunTxn(pool_, "count runs by state", [&](pqxx::work& txn) {
    std::vector<std::pair<std::string, int64_t>> counts;
    for (const auto& row : txn.exec(
             "SELECT s.name, count(r.id) AS n FROM run_states s "
             "LEFT JOIN runs r ON r.state = s.name GROUP BY s.name ORDER BY s.name")) {
      counts.emplace_back(row["name"].as<std::string>(), row["n"].as<int64_t>());
    }
    return counts;
  });
}

int64_t PgStore::WorkersSeenWithin(double seconds) {
  return pg::RunTxn(pool_, "workers seen", [&](pqxx::work& txn) {
    return txn
        .exec_params1(
            "SELECT count(*) FROM workers WHERE last_seen >= now() - make_interval(secs => $1)",
            seconds)[0]
        .as<int64_t>();
  });
}

}  // namespace dfkd::server
