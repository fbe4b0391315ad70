// Leasing through the gRPC API: N queued runs drained by C concurrent
// clients, each Lease one round trip (wait 0). Prints one JSON line per figure:
//   submit: seconds to submit one campaign of --campaign-runs runs
//   lease:  leases/s, p50/p99 latency (ms) over --runs leases
// bench/lease_bench.sh runs it against a fresh PostgreSQL together with
// pgbench's raw SKIP LOCKED dequeue on the same server.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "dfkd/api/v1/scheduler.grpc.pb.h"
#include "server/api/scheduler_server.h"

namespace api = ::dfkd::api::v1;
using Clock = std::chrono::steady_clock;

namespace {

// A campaign of `runs` distill runs with an external teacher (no dependency),
// spread over a temperature axis x seeds.
nlohmann::json BenchCampaign(int runs, int index) {
  int seeds = 100;
  std::vector<double> temperatures;
  for (int i = 0; i < runs / seeds; ++i) temperatures.push_back(1.0 + i * 0.01);
  std::vector<int> seed_list;
  for (int s = 0; s < seeds; ++s) seed_list.push_back(s);
  nlohmann::json base = {
      {"version", 1},
      {"kind", "distill"},
      {"model", {{"arch", "wrn"}, {"depth", 16}, {"widen_factor", 1}}},
      {"distill",
       {{"teacher", {{"weights", "/artifacts/teacher.pt"},
                     {"model", {{"arch", "wrn"}, {"depth", 16}, {"widen_factor", 2}}}}}}}};
  return {{"version", 1},          {"name", "bench-" + std::to_string(index)},
          {"seeds", seed_list},    {"base", base},
          {"axes", {{"distill.temperature", temperatures}}}};
}

std::unique_ptr<grpc::ClientContext> As(const std::string& token) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->AddMetadata("authorization", "Bearer " + token);
  return context;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dfkd-bench-lease: gRPC lease throughput against a real PostgreSQL"};
  std::string db;
  int runs = 100000, clients = 32, campaign_runs = 10000;
  app.add_option("--db", db, "PostgreSQL URL of an empty database")->required();
  app.add_option("--runs", runs, "Queued runs to drain")->capture_default_str();
  app.add_option("--clients", clients, "Concurrent leasing clients")->capture_default_str();
  app.add_option("--campaign-runs", campaign_runs, "Runs per submitted campaign")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  dfkd::server::SchedulerOptions options;
  options.listen = "127.0.0.1:0";
  options.store.url = db;
  options.store.pool_size = clients + 4;
  options.store.lease_seconds = 3600;
  options.limits.max_runs = std::max(campaign_runs, 20000);
  options.code_version = "bench";
  options.housekeeping_seconds = 3600;
  dfkd::server::SchedulerServer server(options);
  server.Start();
  std::string researcher, worker;
  {
    auto store = dfkd::server::Store::Open(options.store);
    researcher = store->CreateToken("bench", dfkd::server::Role::kResearcher);
    worker = store->CreateToken("bench-worker", dfkd::server::Role::kWorker);
  }
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server.port()),
                                     grpc::InsecureChannelCredentials());
  auto campaigns = api::Campaigns::NewStub(channel);

  // Submit: the first campaign is timed on its own.
  for (int submitted = 0, index = 0; submitted < runs; submitted += campaign_runs, ++index) {
    api::SubmitRequest req;
    req.set_campaign_json(BenchCampaign(campaign_runs, index).dump());
    req.set_force(true);
    api::SubmitReply reply;
    auto start = Clock::now();
    auto status = campaigns->Submit(As(researcher).get(), req, &reply);
    double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (!status.ok()) {
      std::cerr << "submit failed: " << status.error_message() << "\n";
      return 1;
    }
    if (index == 0) {
      std::cout << nlohmann::json{{"bench", "submit"}, {"runs", reply.runs()},
                                  {"seconds", seconds}}.dump() << std::endl;
    }
  }

  // Drain with `clients` threads, each its own channel and worker id.
  std::atomic<bool> empty{false};
  std::vector<std::vector<double>> latencies(clients);
  std::vector<std::thread> threads;
  auto start = Clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      grpc::ChannelArguments args;
      args.SetInt("bench_channel", c);  // distinct channels, distinct connections
      auto own = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(server.port()),
                                           grpc::InsecureChannelCredentials(), args);
      auto workers = api::Workers::NewStub(own);
      api::RegisterRequest reg;
      reg.set_name("bench-" + std::to_string(c));
      api::RegisterReply registered;
      if (!workers->Register(As(worker).get(), reg, &registered).ok()) return;
      while (!empty) {
        api::LeaseRequest req;
        req.set_worker_id(registered.worker_id());
        api::LeaseReply reply;
        auto t0 = Clock::now();
        auto status = workers->Lease(As(worker).get(), req, &reply);
        double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        if (!status.ok() || !reply.has_assignment()) {
          empty = true;
          break;
        }
        latencies[c].push_back(ms);
      }
    });
  }
  for (auto& t : threads) t.join();
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    return all.empty() ? 0.0 : all[std::min(all.size() - 1, static_cast<size_t>(p * all.size()))];
  };
  std::cout << nlohmann::json{{"bench", "lease"}, {"leases", all.size()}, {"clients", clients},
                              {"seconds", seconds},
                              {"leases_per_second", all.size() / seconds},
                              {"p50_ms", pct(0.50)}, {"p99_ms", pct(0.99)}}.dump()
            << std::endl;
  server.Shutdown();
  return all.size() == static_cast<size_t>(runs) ? 0 : 1;
}
