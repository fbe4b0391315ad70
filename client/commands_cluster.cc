// dfkd up / down / status: the local cluster (local_cluster.h).
#include <iostream>
#include <memory>

#include "client/commands.h"
#include "client/local_cluster.h"

namespace dfkd::client {

void AddClusterCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* out) {
  struct UpOptions {
    int workers = 2;
    int threads = 0;
    bool prometheus = false;
    double start_timeout = 30;
    double lease_seconds = 60;
  };
  auto up_options = std::make_shared<UpOptions>();
  CLI::App* up = app.add_subcommand(
      "up",
      "Start a local cluster: a private PostgreSQL under the data folder (created on first use,\n"
      "reused after), the scheduler, K workers and, with --prometheus, a Prometheus server\n"
      "scraping all of them. Does nothing but print the status when it already runs.");
  up->add_option("-w,--workers", up_options->workers, "dfkd-worker daemons to start")
      ->check(CLI::Range(0, 256))
      ->capture_default_str();
  up->add_option("--threads", up_options->threads,
                 "LibTorch threads per worker (0 = cores / workers)")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
  up->add_flag("--prometheus", up_options->prometheus,
               "also start /usr/bin/prometheus, scraping the scheduler and workers every 2 s");
  up->add_option("--start-timeout", up_options->start_timeout,
                 "seconds each daemon may take to report it is ready")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  up->add_option("--lease-seconds", up_options->lease_seconds,
                 "a run whose worker sends no heartbeat for this long is retried elsewhere")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  out->push_back({up, [up_options, &global] {
                    ClusterOptions options;
                    options.data_dir = ResolveDataDir(global.data_dir);
                    options.workers = up_options->workers;
                    options.threads = up_options->threads;
                    options.prometheus = up_options->prometheus;
                    options.start_timeout_seconds = up_options->start_timeout;
                    options.lease_seconds = up_options->lease_seconds;
                    std::ostream& log = global.json() ? std::cerr : std::cout;
                    const int rc = ClusterUp(options, log);
                    if (global.json()) ClusterStatus(options.data_dir, true, std::cout);
                    return rc;
                  }});

  auto down_timeout = std::make_shared<double>(60);
  CLI::App* down = app.add_subcommand(
      "down",
      "Stop the local cluster: SIGTERM to the workers (they checkpoint and hand their runs\n"
      "back), then the scheduler, Prometheus and PostgreSQL. Data stays for the next `up`.");
  down->add_option("--timeout", *down_timeout,
                   "seconds to wait for the workers before SIGKILL")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  out->push_back({down, [down_timeout, &global] {
                    ClusterOptions options;
                    options.data_dir = ResolveDataDir(global.data_dir);
                    options.stop_timeout_seconds = *down_timeout;
                    return ClusterDown(options, global.json() ? std::cerr : std::cout);
                  }});

  CLI::App* status = app.add_subcommand(
      "status", "Show the local cluster's parts, pids, ports and logs (exit 3 when not running)");
  out->push_back({status, [&global] {
                    return ClusterStatus(ResolveDataDir(global.data_dir), global.json(),
                                         std::cout);
                  }});
}

}  // namespace dfkd::client
