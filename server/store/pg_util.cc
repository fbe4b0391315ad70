#include "server/store/pg_util.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>

namespace dfkd::server::pg {
namespace {

// "ERROR:  message\nDETAIL: ...\n" -> "message; DETAIL: ..." on one line.
std::string CleanPgMessage(const std::string& raw) {
  std::string text = raw;
  for (const char* prefix : {"ERROR:  ", "FATAL:  "}) {
    if (text.rfind(prefix, 0) == 0) text.erase(0, std::char_traits<char>::length(prefix));
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

void AppendQuoted(std::string& out, const std::string& value) {
  out.push_back('"');
  for (char c : value) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
}

std::string FormatDouble(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  char buffer[40];
  std::snprintf(buffer, sizeof(buffer), "%.17g", value);
  return buffer;
}

}  // namespace

void RethrowAsStoreError(const std::string& what) {
  using Code = StoreError::Code;
  try {
    throw;
  } catch (const StoreError&) {
    throw;
  } catch (const pqxx::broken_connection& e) {
    throw StoreError(Code::kUnavailable,
                     what + ": database connection lost: " + CleanPgMessage(e.what()));
  } catch (const pqxx::in_doubt_error& e) {
    throw StoreError(Code::kUnavailable, what + ": commit outcome unknown (connection lost): " +
                                             CleanPgMessage(e.what()));
  } catch (const pqxx::sql_error& e) {
    if (e.sqlstate() == kIllegalTransitionState) {
      throw StoreError(Code::kFailedPrecondition, what + ": " + CleanPgMessage(e.what()));
    }
    throw StoreError(Code::kInternal, what + ": SQL error " + e.sqlstate() + ": " +
                                          CleanPgMessage(e.what()));
  } catch (const std::exception& e) {
    throw StoreError(Code::kInternal, what + ": " + CleanPgMessage(e.what()));
  } catch (...) {
    throw StoreError(Code::kInternal, what + ": unknown error");
  }
}

std::string IntArray(const std::vector<int64_t>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out.push_back(',');
    out += std::to_string(values[i]);
  }
  out.push_back('}');
  return out;
}

std::string IntArray(const std::vector<std::optional<int64_t>>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out.push_back(',');
    out += values[i] ? std::to_string(*values[i]) : std::string("NULL");
  }
  out.push_back('}');
  return out;
}

std::string BoolArray(const std::vector<bool>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out.push_back(',');
    out.push_back(values[i] ? 't' : 'f');
  }
  out.push_back('}');
  return out;
}

std::string DoubleArray(const std::vector<double>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out.push_back(',');
    out += FormatDouble(values[i]);
  }
  out.push_back('}');
  return out;
}

std::string TextArray(const std::vector<std::string>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out.push_back(',');
    AppendQuoted(out, values[i]);
  }
  out.push_back('}');
  return out;
}

std::string TextArray(const std::vector<std::optional<std::string>>& values) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out.push_back(',');
    if (values[i]) {
      AppendQuoted(out, *values[i]);
    } else {
      out += "NULL";
    }
  }
  out.push_back('}');
  return out;
}

const char* StateName(api::RunState state) {
  switch (state) {
    case api::RUN_STATE_BLOCKED: return "blocked";
    case api::RUN_STATE_QUEUED: return "queued";
    case api::RUN_STATE_LEASED: return "leased";
    case api::RUN_STATE_RUNNING: return "running";
    case api::RUN_STATE_SUCCEEDED: return "succeeded";
    case api::RUN_STATE_FAILED: return "failed";
    case api::RUN_STATE_CANCELLED: return "cancelled";
    default: return "";
  }
}

api::RunState StateFromName(const std::string& name) {
  if (name == "blocked") return api::RUN_STATE_BLOCKED;
  if (name == "queued") return api::RUN_STATE_QUEUED;
  if (name == "leased") return api::RUN_STATE_LEASED;
  if (name == "running") return api::RUN_STATE_RUNNING;
  if (name == "succeeded") return api::RUN_STATE_SUCCEEDED;
  if (name == "failed") return api::RUN_STATE_FAILED;
  if (name == "cancelled") return api::RUN_STATE_CANCELLED;
  return api::RUN_STATE_UNSPECIFIED;
}

std::string Rfc3339(const std::string& column) {
  return "to_char(" + column + " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";
}

std::string RunColumns(bool with_spec) {
  return "r.id, r.campaign_id, coalesce(r.experiment_id, 0) AS experiment_id, r.kind, r.seed, "
         "r.state, r.attempt, r.max_attempts, r.world_size, "
         "coalesce(r.depends_on, 0) AS depends_on, r.identity, "
         "coalesce(r.reused_from, 0) AS reused_from, r.last_error, "
         "coalesce(r.result::text, '') AS result, r.artifact, r.progress, r.latest_accuracy, " +
         std::string(with_spec ? "r.spec::text" : "''") + " AS spec, " +
         "coalesce((SELECT w.name FROM attempts a JOIN workers w ON w.id = a.worker_id "
         "          WHERE a.run_id = r.id AND a.attempt = r.attempt AND a.rank = 0), '') "
         "  AS worker, " +
         Rfc3339("r.created_at") + " AS created_at, " + Rfc3339("r.updated_at") + " AS updated_at";
}

api::Run ReadRun(const pqxx::row& row, bool with_spec) {
  api::Run run;
  run.set_id(row["id"].as<int64_t>());
  run.set_campaign_id(row["campaign_id"].as<int64_t>());
  run.set_experiment_id(row["experiment_id"].as<int64_t>());
  run.set_kind(row["kind"].as<std::string>());
  run.set_seed(row["seed"].as<int64_t>());
  run.set_state(StateFromName(row["state"].as<std::string>()));
  run.set_attempt(row["attempt"].as<int>());
  run.set_max_attempts(row["max_attempts"].as<int>());
  run.set_world_size(row["world_size"].as<int>());
  run.set_depends_on(row["depends_on"].as<int64_t>());
  run.set_config_hash(row["identity"].as<std::string>());
  run.set_reused_from(row["reused_from"].as<int64_t>());
  run.set_last_error(row["last_error"].as<std::string>());
  run.set_result_json(row["result"].as<std::string>());
  run.set_artifact(row["artifact"].as<std::string>());
  run.set_progress(row["progress"].as<double>());
  run.set_latest_accuracy(row["latest_accuracy"].as<double>());
  run.set_worker(row["worker"].as<std::string>());
  if (with_spec) run.set_spec_json(row["spec"].as<std::string>());
  run.set_created_at(row["created_at"].as<std::string>());
  run.set_updated_at(row["updated_at"].as<std::string>());
  return run;
}

std::string CampaignStateSql() {
  return "CASE WHEN c.state = 'active' AND NOT EXISTS (SELECT 1 FROM runs x WHERE "
         "x.campaign_id = c.id AND x.state IN " + std::string(kLiveStatesSql) +
         ") THEN 'finished' ELSE c.state END";
}

std::string CampaignColumns() {
  return "c.id, c.name, c.owner, c.priority, " + CampaignStateSql() + " AS state, "
         "c.spec::text AS spec, " + Rfc3339("c.created_at") + " AS created_at";
}

api::Campaign ReadCampaign(const pqxx::row& row) {
  api::Campaign campaign;
  campaign.set_id(row["id"].as<int64_t>());
  campaign.set_name(row["name"].as<std::string>());
  campaign.set_owner(row["owner"].as<std::string>());
  campaign.set_priority(row["priority"].as<int>());
  campaign.set_state(row["state"].as<std::string>());
  campaign.set_spec_json(row["spec"].as<std::string>());
  campaign.set_created_at(row["created_at"].as<std::string>());
  return campaign;
}

int64_t ParsePageToken(const std::string& token) {
  if (token.empty()) return 0;
  try {
    size_t used = 0;
    const long long value = std::stoll(token, &used);
    if (used == token.size() && value >= 0) return value;
  } catch (const std::exception&) {
  }
  throw StoreError(StoreError::Code::kInvalidArgument, "invalid page_token \"" + token + "\"");
}

int PageSize(int requested) {
  if (requested <= 0) return 100;
  return std::min(requested, 1000);
}

double RetryBackoff(const StoreOptions& options, int attempt) {
  const double exponent = std::max(0, attempt - 1);
  const double seconds = options.retry_backoff_seconds * std::pow(2.0, std::min(exponent, 60.0));
  return std::max(0.0, std::min(seconds, options.retry_backoff_max_seconds));
}

}  // namespace dfkd::server::pg
