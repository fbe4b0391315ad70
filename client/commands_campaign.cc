// dfkd submit / ls / ls runs / cancel / retry.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "client/client_config.h"
#include "client/commands.h"
#include "client/process.h"
#include "client/proto_json.h"
#include "client/scheduler_client.h"
#include "client/text_table.h"
#include "common/campaign/campaign.h"

namespace dfkd::client {
namespace {

// The code version only goes into run identities, which offline validation
// does not need; the scheduler uses its own.
constexpr char kOfflineCodeVersion[] = "client";

std::string ReadInput(const std::string& file) {
  if (file == "-") {
    std::ostringstream text;
    text << std::cin.rdbuf();
    return text.str();
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    throw CliError(kExitUsage, file + ": no such file");
  }
  return ReadFileText(file);
}

int64_t Count(const api::Campaign& c, const char* state) {
  auto it = c.runs_by_state().find(state);
  return it == c.runs_by_state().end() ? 0 : it->second;
}

std::string ShortTime(const std::string& rfc3339) {
  std::string t = rfc3339.substr(0, 19);
  std::replace(t.begin(), t.end(), 'T', ' ');
  return t.empty() ? "-" : t;
}

int PageSize(int limit, size_t have) {
  if (limit <= 0) return 1000;
  return std::clamp(limit - static_cast<int>(have), 1, 1000);
}

int Submit(const GlobalOptions& global, const std::string& file, bool wait, bool force,
           bool dry_run, double poll) {
  const std::string text = ReadInput(file);
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw CliError(kExitUsage, file + ": not valid JSON: " + e.what());
  }
  const common::CampaignParseResult parsed = common::ExpandCampaign(json, kOfflineCodeVersion);
  if (!parsed.ok()) {
    if (global.json()) {
      nlohmann::json errors = nlohmann::json::array();
      for (const common::SpecError& e : parsed.errors) {
        errors.push_back({{"path", e.path}, {"message", e.message}});
      }
      std::cout << nlohmann::json{{"valid", false}, {"file", file}, {"errors", errors}}.dump(2)
                << "\n";
    }
    std::cerr << "dfkd: " << file << ": invalid campaign (" << parsed.errors.size()
              << (parsed.errors.size() == 1 ? " error" : " errors") << "):\n";
    for (const common::SpecError& e : parsed.errors) std::cerr << "  " << e.ToString() << "\n";
    return kExitUsage;
  }

  SchedulerClient client(ResolveConnection(global));
  api::SubmitRequest request;
  request.set_campaign_json(text);
  request.set_validate_only(dry_run);
  request.set_force(force);
  api::SubmitReply reply;
  client.Invoke("Submit", [&](grpc::ClientContext* c) {
    return client.stub().Submit(c, request, &reply);
  });
  const std::string name = parsed.campaign->name;
  if (global.json()) {
    std::cout << nlohmann::json{{"campaign_id", reply.campaign_id()},
                                {"name", name},
                                {"experiments", reply.experiments()},
                                {"runs", reply.runs()},
                                {"reused_runs", reply.reused_runs()},
                                {"dry_run", dry_run}}
                     .dump()
              << std::endl;
  } else if (dry_run) {
    std::cout << "campaign \"" << name << "\" is valid: " << reply.experiments()
              << " experiments, " << reply.runs() << " runs (nothing stored)\n";
  } else {
    std::cout << "submitted campaign " << reply.campaign_id() << " \"" << name
              << "\": " << reply.experiments() << " experiments, " << reply.runs() << " runs";
    if (reply.reused_runs() > 0) std::cout << " (" << reply.reused_runs() << " reused)";
    std::cout << "\n";
    if (!wait) {
      std::cout << "follow it with: dfkd watch " << reply.campaign_id()
                << "; table: dfkd results " << reply.campaign_id() << "\n";
    }
    std::cout.flush();
  }
  if (wait && !dry_run) return WatchCampaign(client, reply.campaign_id(), global, poll);
  return kExitOk;
}

int ListCampaigns(const GlobalOptions& global, const std::string& state, const std::string& owner,
                  int limit) {
  SchedulerClient client(ResolveConnection(global));
  std::vector<api::Campaign> campaigns;
  std::string token;
  do {
    api::ListCampaignsRequest request;
    request.mutable_page()->set_page_size(PageSize(limit, campaigns.size()));
    request.mutable_page()->set_page_token(token);
    request.set_state(state);
    request.set_owner(owner);
    api::ListCampaignsReply reply;
    client.Invoke("ListCampaigns", [&](grpc::ClientContext* c) {
      return client.stub().ListCampaigns(c, request, &reply);
    });
    for (const api::Campaign& c : reply.campaigns()) {
      if (limit > 0 && static_cast<int>(campaigns.size()) >= limit) break;
      campaigns.push_back(c);
    }
    token = reply.next_page_token();
  } while (!token.empty() && (limit <= 0 || static_cast<int>(campaigns.size()) < limit));

  if (global.json()) {
    nlohmann::json out = nlohmann::json::array();
    for (const api::Campaign& c : campaigns) out.push_back(CampaignToJson(c));
    std::cout << out.dump(2) << "\n";
    return kExitOk;
  }
  if (campaigns.empty()) {
    std::cout << "no campaigns\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"ID", "NAME", "OWNER", "STATE", "DONE", "RUNNING", "WAITING", "FAILED", "CREATED"}};
  for (const api::Campaign& c : campaigns) {
    int64_t total = 0;
    for (const auto& entry : c.runs_by_state()) total += entry.second;
    rows.push_back({std::to_string(c.id()), c.name(), c.owner(), c.state(),
                    std::to_string(Count(c, "succeeded")) + "/" + std::to_string(total),
                    std::to_string(Count(c, "running") + Count(c, "leased")),
                    std::to_string(Count(c, "queued") + Count(c, "blocked")),
                    std::to_string(Count(c, "failed")), ShortTime(c.created_at())});
  }
  std::cout << RenderColumns(rows, {Align::kRight, Align::kLeft, Align::kLeft, Align::kLeft,
                                    Align::kRight, Align::kRight, Align::kRight, Align::kRight});
  return kExitOk;
}

int ListRuns(const GlobalOptions& global, int64_t campaign, int64_t experiment,
             const std::string& state_name, int limit) {
  api::RunState state = api::RUN_STATE_UNSPECIFIED;
  if (!state_name.empty()) {
    std::optional<api::RunState> parsed = ParseRunState(state_name);
    if (!parsed) {
      throw CliError(kExitUsage, "--state " + state_name + ": must be one of blocked, queued, "
                                 "leased, running, succeeded, failed, cancelled");
    }
    state = *parsed;
  }
  SchedulerClient client(ResolveConnection(global));
  std::vector<api::Run> runs;
  std::string token;
  do {
    api::ListRunsRequest request;
    request.mutable_page()->set_page_size(PageSize(limit, runs.size()));
    request.mutable_page()->set_page_token(token);
    request.set_campaign_id(campaign);
    request.set_experiment_id(experiment);
    request.set_state(state);
    api::ListRunsReply reply;
    client.Invoke("ListRuns", [&](grpc::ClientContext* c) {
      return client.stub().ListRuns(c, request, &reply);
    });
    for (const api::Run& r : reply.runs()) {
      if (limit > 0 && static_cast<int>(runs.size()) >= limit) break;
      runs.push_back(r);
    }
    token = reply.next_page_token();
  } while (!token.empty() && (limit <= 0 || static_cast<int>(runs.size()) < limit));

  // Experiment names, for the campaigns these runs belong to (a few at most).
  std::map<int64_t, std::string> names;
  std::set<int64_t> campaigns;
  for (const api::Run& r : runs) campaigns.insert(r.campaign_id());
  if (campaigns.size() <= 20) {
    for (int64_t id : campaigns) {
      api::ListExperimentsRequest request;
      request.set_campaign_id(id);
      api::ListExperimentsReply reply;
      try {
        client.Invoke("ListExperiments", [&](grpc::ClientContext* c) {
          return client.stub().ListExperiments(c, request, &reply);
        });
      } catch (const CliError&) {
        continue;   // names are a nicety
      }
      for (const api::Experiment& e : reply.experiments()) names[e.id()] = e.name();
    }
  }
  auto name_of = [&](const api::Run& r) {
    auto it = names.find(r.experiment_id());
    return it != names.end() ? it->second
                             : (r.experiment_id() ? std::to_string(r.experiment_id()) : r.kind());
  };

  if (global.json()) {
    nlohmann::json out = nlohmann::json::array();
    for (const api::Run& r : runs) {
      nlohmann::json j = RunToJson(r);
      j["experiment"] = name_of(r);
      out.push_back(std::move(j));
    }
    std::cout << out.dump(2) << "\n";
    return kExitOk;
  }
  if (runs.empty()) {
    std::cout << "no runs\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {{"ID", "CAMPAIGN", "EXPERIMENT", "KIND", "SEED",
                                                 "STATE", "ATTEMPT", "PROGRESS", "ACC", "ERROR"}};
  for (const api::Run& r : runs) {
    rows.push_back({std::to_string(r.id()), std::to_string(r.campaign_id()), name_of(r), r.kind(),
                    std::to_string(r.seed()), RunStateName(r.state()),
                    std::to_string(r.attempt()) + "/" + std::to_string(r.max_attempts()),
                    std::to_string(static_cast<int>(r.progress() * 100 + 1e-9)) + "%",
                    r.latest_accuracy() >= 0 ? FormatFixed(r.latest_accuracy(), 2) : "-",
                    FirstLine(r.last_error(), 60)});
  }
  std::cout << RenderColumns(rows, {Align::kRight, Align::kRight, Align::kLeft, Align::kLeft,
                                    Align::kRight, Align::kLeft, Align::kRight, Align::kRight,
                                    Align::kRight});
  return kExitOk;
}

}  // namespace

void AddCampaignCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* out) {
  // ---- submit
  struct SubmitOptions {
    std::string file;
    bool wait = false;
    bool force = false;
    bool dry_run = false;
    double poll = 0.5;
  };
  auto submit_options = std::make_shared<SubmitOptions>();
  CLI::App* submit = app.add_subcommand(
      "submit",
      "Validate a campaign file here (every error with its field path, exit 2), then submit it.\n"
      "The scheduler expands it into experiments x seeds; nothing is lost when dfkd exits.");
  submit->add_option("file", submit_options->file,
                     "campaign JSON (- = stdin); see configs/campaigns/README.md")
      ->required();
  submit->add_flag("--wait", submit_options->wait,
                   "then watch it until it ends (exit 4 when runs failed)");
  submit->add_flag("--force", submit_options->force,
                   "train again even where an identical finished run exists");
  submit->add_flag("--dry-run", submit_options->dry_run,
                   "let the scheduler validate and expand it, store nothing");
  submit->add_option("--poll", submit_options->poll, "--wait: seconds between updates")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  out->push_back({submit, [submit_options, &global] {
                    const SubmitOptions& o = *submit_options;
                    return Submit(global, o.file, o.wait, o.force, o.dry_run, o.poll);
                  }});

  // ---- ls, ls runs
  struct LsOptions {
    std::string state;
    std::string owner;
    int limit = 50;
  };
  auto ls_options = std::make_shared<LsOptions>();
  CLI::App* ls = app.add_subcommand("ls", "List campaigns, newest first (`ls runs`: runs)");
  ls->add_option("--state", ls_options->state, "only campaigns in this state")
      ->check(CLI::IsMember({"active", "finished", "cancelled"}));
  ls->add_option("--owner", ls_options->owner, "only campaigns of this owner");
  ls->add_option("-n,--limit", ls_options->limit, "at most this many (0 = all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  out->push_back({ls, [ls_options, &global] {
                    return ListCampaigns(global, ls_options->state, ls_options->owner,
                                         ls_options->limit);
                  }});

  struct RunsOptions {
    int64_t campaign = 0;
    int64_t experiment = 0;
    std::string state;
    int limit = 200;
  };
  auto runs_options = std::make_shared<RunsOptions>();
  CLI::App* runs = ls->add_subcommand("runs", "List runs");
  runs->add_option("--campaign", runs_options->campaign, "only runs of this campaign");
  runs->add_option("--experiment", runs_options->experiment, "only runs of this experiment");
  runs->add_option("--state", runs_options->state,
                   "blocked | queued | leased | running | succeeded | failed | cancelled");
  runs->add_option("-n,--limit", runs_options->limit, "at most this many (0 = all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  out->push_back({runs, [runs_options, &global] {
                    const RunsOptions& o = *runs_options;
                    return ListRuns(global, o.campaign, o.experiment, o.state, o.limit);
                  }});

  // ---- cancel
  struct CancelOptions {
    int64_t campaign = 0;
    int64_t run = 0;
  };
  auto cancel_options = std::make_shared<CancelOptions>();
  CLI::App* cancel = app.add_subcommand(
      "cancel", "Cancel a campaign's unfinished runs, or one run (--run); workers stop them");
  cancel->add_option("campaign", cancel_options->campaign, "campaign id");
  cancel->add_option("--run", cancel_options->run, "cancel this run only");
  out->push_back({cancel, [cancel_options, &global] {
                    const CancelOptions& o = *cancel_options;
                    if ((o.campaign != 0) == (o.run != 0)) {
                      throw CliError(kExitUsage,
                                     "cancel: give a campaign id or --run RUN (exactly one)");
                    }
                    SchedulerClient client(ResolveConnection(global));
                    api::CancelRequest request;
                    request.set_campaign_id(o.campaign);
                    request.set_run_id(o.run);
                    api::CancelReply reply;
                    client.Invoke("Cancel", [&](grpc::ClientContext* c) {
                      return client.stub().Cancel(c, request, &reply);
                    });
                    if (global.json()) {
                      std::cout << nlohmann::json{{"cancelled_runs", reply.cancelled_runs()}}.dump()
                                << "\n";
                    } else {
                      std::cout << "cancelled " << reply.cancelled_runs() << " run(s)"
                                << (o.run ? " (run " + std::to_string(o.run) + ")"
                                          : " of campaign " + std::to_string(o.campaign))
                                << "\n";
                    }
                    return kExitOk;
                  }});

  // ---- retry
  struct RetryOptions {
    int64_t campaign = 0;
    bool failed = true;
    bool cancelled = false;
  };
  auto retry_options = std::make_shared<RetryOptions>();
  CLI::App* retry = app.add_subcommand(
      "retry", "Re-queue a campaign's failed runs (and with --cancelled its cancelled ones)");
  retry->add_option("campaign", retry_options->campaign, "campaign id")->required();
  retry->add_flag("--failed", retry_options->failed, "re-queue the failed runs (the default)");
  retry->add_flag("--cancelled", retry_options->cancelled, "also re-queue the cancelled runs");
  out->push_back({retry, [retry_options, &global] {
                    SchedulerClient client(ResolveConnection(global));
                    api::RetryRequest request;
                    request.set_campaign_id(retry_options->campaign);
                    request.set_include_cancelled(retry_options->cancelled);
                    api::RetryReply reply;
                    client.Invoke("Retry", [&](grpc::ClientContext* c) {
                      return client.stub().Retry(c, request, &reply);
                    });
                    if (global.json()) {
                      std::cout << nlohmann::json{{"requeued_runs", reply.requeued_runs()}}.dump()
                                << "\n";
                    } else {
                      std::cout << "re-queued " << reply.requeued_runs() << " run(s) of campaign "
                                << retry_options->campaign << "\n";
                    }
                    return kExitOk;
                  }});
}

}  // namespace dfkd::client
