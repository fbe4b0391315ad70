// dfkd watch: the live grid (terminal), plain lines (pipes, logs) or JSON
// lines (--output json) from the Watch stream; see watch_view.h.
#include <chrono>
#include <ctime>
#include <iostream>
#include <memory>
#include <thread>

#include <nlohmann/json.hpp>

#include "client/client_config.h"
#include "client/commands.h"
#include "client/proto_json.h"
#include "client/scheduler_client.h"
#include "client/watch_view.h"

namespace dfkd::client {
namespace {

constexpr int kMaxReconnects = 60;   // about a minute of a restarting scheduler
constexpr size_t kMaxFailedInSummary = 10;

std::string ClockTime() {
  const std::time_t now = std::time(nullptr);
  std::tm tm {};
  localtime_r(&now, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

}  // namespace

int WatchCampaign(SchedulerClient& client, int64_t campaign_id, const GlobalOptions& global,
                  double poll_seconds) {
  api::GetCampaignRequest campaign_request;
  campaign_request.set_campaign_id(campaign_id);
  api::Campaign campaign;
  client.Invoke("GetCampaign", [&](grpc::ClientContext* c) {
    return client.stub().GetCampaign(c, campaign_request, &campaign);
  });
  api::ListExperimentsRequest experiments_request;
  experiments_request.set_campaign_id(campaign_id);
  api::ListExperimentsReply experiments;
  client.Invoke("ListExperiments", [&](grpc::ClientContext* c) {
    return client.stub().ListExperiments(c, experiments_request, &experiments);
  });

  WatchModel model;
  model.SetCampaign(campaign_id, campaign.name());
  const std::vector<api::Experiment> experiment_list(experiments.experiments().begin(),
                                                     experiments.experiments().end());
  model.SetExperiments(experiment_list);

  const bool json = global.json();
  const bool grid = !json && StdoutIsTerminal();
  TerminalPainter painter(std::cout);
  const auto start = std::chrono::steady_clock::now();
  auto now = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };

  bool received_any = false;
  bool first_snapshot = true;
  int reconnects = 0;
  while (!model.done()) {
    std::unique_ptr<grpc::ClientContext> context = client.Context(0);
    api::WatchRequest request;
    request.set_campaign_id(campaign_id);
    request.set_poll_seconds(poll_seconds);
    std::unique_ptr<grpc::ClientReader<api::WatchEvent>> reader =
        client.stub().Watch(context.get(), request);
    api::WatchEvent event;
    while (reader->Read(&event)) {
      received_any = true;
      reconnects = 0;
      const double t = now();
      const std::vector<int64_t> changed = model.Apply(event, t);
      if (grid) {
        painter.Draw(FitToHeight(RenderGrid(model, t, TerminalColumns()), TerminalRows()));
      } else if (json) {
        for (int64_t id : changed) {
          if (const TrackedRun* run = model.Find(id)) {
            nlohmann::json line = RunToJson(run->run);
            line.erase("spec");   // large and unchanged; `dfkd ls runs --output json` has it
            line["experiment"] = model.RowName(run->run.experiment_id(), run->run.kind());
            std::cout << nlohmann::json{{"run", line}}.dump() << "\n";
          }
        }
        std::cout.flush();
      } else {
        if (first_snapshot && event.snapshot()) {
          std::cout << "[" << ClockTime() << "] campaign " << campaign_id << " \""
                    << campaign.name() << "\": " << StateSummary(model) << "\n";
        }
        for (int64_t id : changed) {
          const TrackedRun* run = model.Find(id);
          if (!run) continue;
          // The first snapshot names only runs that have started or ended.
          const api::RunState s = run->run.state();
          if (first_snapshot && event.snapshot() &&
              (s == api::RUN_STATE_BLOCKED || s == api::RUN_STATE_QUEUED)) {
            continue;
          }
          std::cout << "[" << ClockTime() << "] " << RenderRunLine(model, *run, t) << "\n";
        }
        std::cout.flush();
      }
      if (event.snapshot()) first_snapshot = false;
      if (model.done()) break;
    }
    if (model.done()) {
      context->TryCancel();
      static_cast<void>(reader->Finish());
      break;
    }
    const grpc::Status status = reader->Finish();
    // The stream ended early: the scheduler is restarting (kill and restart is
    // allowed at any time) or went away. Reconnect; the next snapshot catches up.
    if (!received_any || (!status.ok() && status.error_code() != grpc::StatusCode::UNAVAILABLE &&
                          status.error_code() != grpc::StatusCode::CANCELLED)) {
      client.Check(status.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                              "the watch stream ended before any event")
                               : status,
                   "Watch");
    }
    if (++reconnects > kMaxReconnects) {
      throw CliError(kExitUnreachable, "lost the scheduler at " + client.connection().addr +
                                           " while watching campaign " +
                                           std::to_string(campaign_id) + ": " +
                                           status.error_message());
    }
    if (!grid) {
      std::cerr << "dfkd: watch: stream ended (" << status.error_message()
                << "); reconnecting\n";
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }

  const int failed = model.Count(api::RUN_STATE_FAILED);
  if (json) {
    nlohmann::json by_state = nlohmann::json::object();
    for (api::RunState s : {api::RUN_STATE_SUCCEEDED, api::RUN_STATE_FAILED,
                            api::RUN_STATE_CANCELLED}) {
      by_state[RunStateName(s)] = model.Count(s);
    }
    std::cout << nlohmann::json{{"campaign_id", campaign_id},
                                {"done", true},
                                {"runs", model.runs().size()},
                                {"runs_by_state", by_state},
                                {"exit_code", failed > 0 ? kExitRunsFailed : kExitOk}}
                     .dump()
              << std::endl;
  } else {
    std::cout << RenderFinalSummary(model, kMaxFailedInSummary);
    if (failed > 0) {
      std::cout << "retry the failed runs with: dfkd retry " << campaign_id << "\n";
    } else {
      std::cout << "table: dfkd results " << campaign_id << "\n";
    }
    std::cout.flush();
  }
  return failed > 0 ? kExitRunsFailed : kExitOk;
}

void AddWatchCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* out) {
  struct WatchOptions {
    int64_t campaign = 0;
    double poll = 0.5;
  };
  auto options = std::make_shared<WatchOptions>();
  CLI::App* watch = app.add_subcommand(
      "watch",
      "Follow a campaign until it ends: a live grid of experiments x seeds (state, progress\n"
      "bar, accuracy, ETA) on a terminal, one line per change otherwise, JSON lines with\n"
      "--output json. Exit 4 when it ended with failed runs.");
  watch->add_option("campaign", options->campaign, "campaign id")->required();
  watch->add_option("--poll", options->poll, "seconds between the scheduler's updates")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  out->push_back({watch, [options, &global] {
                    SchedulerClient client(ResolveConnection(global));
                    return WatchCampaign(client, options->campaign, global, options->poll);
                  }});
}

}  // namespace dfkd::client
