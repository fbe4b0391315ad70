// dfkd results (the paper's table, results_table.h) and dfkd logs (a run's
// metric series, optionally followed).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <set>
#include <thread>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "client/client_config.h"
#include "client/commands.h"
#include "client/proto_json.h"
#include "client/results_table.h"
#include "client/scheduler_client.h"

namespace dfkd::client {
namespace {

std::string MetricValue(double value) {
  char buf[32];
  snprintf(buf, sizeof buf, "%.6g", value);
  return buf;
}

int Results(const GlobalOptions& global, int64_t campaign, const std::string& format_name) {
  const std::string name = format_name.empty() ? (global.json() ? "json" : "table") : format_name;
  const std::optional<ResultsFormat> format = ParseResultsFormat(name);
  if (!format) {
    throw CliError(kExitUsage, "--format " + name + ": must be table, markdown, csv or json");
  }
  SchedulerClient client(ResolveConnection(global));
  api::ResultsRequest request;
  request.set_campaign_id(campaign);
  api::ResultsReply reply;
  client.Invoke("Results", [&](grpc::ClientContext* c) {
    return client.stub().Results(c, request, &reply);
  });
  std::cout << RenderResults(reply, *format);
  return kExitOk;
}

// Fetches points of `run_id` not seen before. Each fetch asks from the last
// step seen minus one (another series may still add points at that step) and
// drops what it already printed.
class MetricFollower {
 public:
  MetricFollower(SchedulerClient& client, int64_t run_id, std::string name)
      : client_(client), run_id_(run_id), name_(std::move(name)) {}

  std::vector<api::MetricPoint> Next() {
    api::GetMetricsRequest request;
    request.set_run_id(run_id_);
    request.set_name(name_);
    request.set_after_step(std::max<int64_t>(0, last_step_ - 1));
    api::GetMetricsReply reply;
    client_.Invoke("GetMetrics", [&](grpc::ClientContext* c) {
      return client_.stub().GetMetrics(c, request, &reply);
    });
    std::vector<api::MetricPoint> fresh;
    for (const api::MetricPoint& p : reply.points()) {
      if (!seen_.insert(std::make_tuple(p.attempt(), p.name(), p.step())).second) continue;
      last_step_ = std::max(last_step_, p.step());
      fresh.push_back(p);
    }
    return fresh;
  }

 private:
  SchedulerClient& client_;
  int64_t run_id_;
  std::string name_;
  int64_t last_step_ = 0;
  std::set<std::tuple<int, std::string, int64_t>> seen_;
};

api::Run GetRun(SchedulerClient& client, int64_t run_id) {
  api::GetRunRequest request;
  request.set_run_id(run_id);
  api::Run run;
  client.Invoke("GetRun", [&](grpc::ClientContext* c) {
    return client.stub().GetRun(c, request, &run);
  });
  return run;
}

void PrintPoints(const std::vector<api::MetricPoint>& points, bool json_lines) {
  for (const api::MetricPoint& p : points) {
    if (json_lines) {
      std::cout << MetricPointToJson(p).dump() << "\n";
    } else {
      std::cout << p.step() << " " << p.name() << " " << MetricValue(p.value()) << "\n";
    }
  }
  std::cout.flush();
}

int Logs(const GlobalOptions& global, int64_t run_id, bool follow, const std::string& name,
         double interval) {
  SchedulerClient client(ResolveConnection(global));
  MetricFollower follower(client, run_id, name);
  if (!follow) {
    const std::vector<api::MetricPoint> points = follower.Next();
    if (global.json()) {
      nlohmann::json out = nlohmann::json::array();
      for (const api::MetricPoint& p : points) out.push_back(MetricPointToJson(p));
      std::cout << out.dump(2) << "\n";
    } else {
      PrintPoints(points, false);
    }
    if (points.empty()) {
      const api::Run run = GetRun(client, run_id);
      std::cerr << "dfkd: run " << run_id << " (" << RunStateName(run.state())
                << ") has no metrics" << (name.empty() ? "" : " named " + name) << " yet\n";
    }
    return kExitOk;
  }
  // -f: JSON lines with --output json.
  for (;;) {
    PrintPoints(follower.Next(), global.json());
    const api::Run run = GetRun(client, run_id);
    if (IsTerminalState(run.state())) {
      PrintPoints(follower.Next(), global.json());
      std::cerr << "dfkd: run " << run_id << " " << RunStateName(run.state());
      if (run.state() == api::RUN_STATE_FAILED && !run.last_error().empty()) {
        std::cerr << ": " << FirstLine(run.last_error(), 400);
      }
      std::cerr << "\n";
      return kExitOk;
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(interval));
  }
}

}  // namespace

void AddResultsCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* out) {
  struct ResultsOptions {
    int64_t campaign = 0;
    std::string format;
  };
  auto results_options = std::make_shared<ResultsOptions>();
  CLI::App* results = app.add_subcommand(
      "results",
      "The campaign as the paper's Table 1: rows methods (teacher and scratch on top,\n"
      "ablations below), columns baseline, +KDCI, their difference and n; final test top-1\n"
      "(%) as mean +- std over the succeeded seeds.");
  results->add_option("campaign", results_options->campaign, "campaign id")->required();
  results->add_option("--format", results_options->format,
                      "table | markdown | csv | json (default table; json with --output json)")
      ->check(CLI::IsMember({"table", "markdown", "md", "csv", "json"}));
  out->push_back({results, [results_options, &global] {
                    return Results(global, results_options->campaign, results_options->format);
                  }});

  struct LogsOptions {
    int64_t run = 0;
    bool follow = false;
    std::string name;
    double interval = 1;
  };
  auto logs_options = std::make_shared<LogsOptions>();
  CLI::App* logs = app.add_subcommand(
      "logs",
      "A run's metrics, one line \"step name value\" per point (JSON with --output json;\n"
      "JSON lines with -f). Run ids: `dfkd ls runs --campaign ID`.");
  logs->add_option("run", logs_options->run, "run id")->required();
  logs->add_flag("-f,--follow", logs_options->follow,
                 "keep printing new points until the run has ended");
  logs->add_option("--name", logs_options->name, "only this series (e.g. test_top1)");
  logs->add_option("--interval", logs_options->interval, "-f: seconds between polls")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  out->push_back({logs, [logs_options, &global] {
                    const LogsOptions& o = *logs_options;
                    return Logs(global, o.run, o.follow, o.name, o.interval);
                  }});
}

}  // namespace dfkd::client
