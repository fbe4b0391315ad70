// `dfkd up` / `down` / `status`: a whole dfkd cluster on this machine, kept
// in one data folder (--data-dir, else $DFKD_HOME, else $XDG_DATA_HOME/dfkd,
// else ~/.local/share/dfkd):
//
//   DATA/pg/             PostgreSQL cluster (data/, port, server.log, socket);
//                        as root, when user postgres cannot reach DATA, a
//                        symlink to /var/lib/dfkd/pg-<hash of DATA>
//   DATA/artifacts/      the scheduler's --artifact-root
//   DATA/logs/           scheduler.log, worker-N.log, prometheus.log (the
//                        previous run's as *.log.1)
//   DATA/tokens/         admin, researcher, worker (mode 0600, created once)
//   DATA/prometheus.yml  DATA/prometheus/ (with --prometheus)
//   DATA/cluster.json    what runs: addresses, ports, pids, database URL
//
// The database (and so every campaign) survives `down`/`up`; the daemons are
// started detached (own session, output to their log) and found again
// through cluster.json.
#ifndef DFKD_CLIENT_LOCAL_CLUSTER_H_
#define DFKD_CLIENT_LOCAL_CLUSTER_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace dfkd::client {

struct DaemonInfo {
  std::string name;         // "scheduler", "worker-1", "prometheus"
  std::string exe;          // basename of its binary: checked before a pid is signalled
  int pid = 0;              // 0 = not started
  int port = 0;             // gRPC (scheduler), web (prometheus)
  int metrics_port = 0;     // /metrics (scheduler, workers)
  int64_t worker_id = 0;    // workers: id given by the scheduler
  std::string log;          // its log file
};

struct ClusterState {
  std::string data_dir;
  std::string pg_dir;       // the PostgreSQL folder actually used
  int pg_port = 0;
  std::string db_url;
  std::string scheduler_addr;   // "127.0.0.1:PORT"
  DaemonInfo scheduler;
  std::vector<DaemonInfo> workers;
  DaemonInfo prometheus;        // pid 0 = none
  std::string prometheus_url;   // "http://127.0.0.1:PORT" or ""
  std::string started_at;       // RFC 3339, UTC
};

nlohmann::json ClusterStateToJson(const ClusterState& state);
ClusterState ClusterStateFromJson(const nlohmann::json& json);   // missing fields: defaults

struct ClusterOptions {
  std::string data_dir;              // resolved (ResolveDataDir)
  int workers = 2;
  int threads = 0;                   // per worker; 0 = cores / workers
  bool prometheus = false;
  double start_timeout_seconds = 30; // for each daemon's first line
  double stop_timeout_seconds = 60;  // for workers to checkpoint and hand back runs
  double lease_seconds = 60;         // the scheduler's --lease-seconds
};

// --data-dir, else $DFKD_HOME, else $XDG_DATA_HOME/dfkd, else
// ~/.local/share/dfkd; absolute. Throws CliError when there is no home.
std::string ResolveDataDir(const std::string& flag);
std::string ClusterFilePath(const std::string& data_dir);
std::string TokenFilePath(const std::string& data_dir, const std::string& role);
// The recorded cluster; nothing when there is no cluster.json. Throws
// CliError when it cannot be read.
std::optional<ClusterState> ReadClusterState(const std::string& data_dir);
// True when PostgreSQL answers on its port and every daemon recorded
// (scheduler, workers, Prometheus if any) runs.
bool ClusterAlive(const ClusterState& state);

// Each prints one line per step to `log` and returns an exit code; failures
// throw CliError (a failed `up` first stops what it started).
int ClusterUp(const ClusterOptions& options, std::ostream& log);
int ClusterDown(const ClusterOptions& options, std::ostream& log);
// Text or JSON; 0 when everything recorded runs, 3 (kExitUnreachable) otherwise.
int ClusterStatus(const std::string& data_dir, bool json, std::ostream& out);

}  // namespace dfkd::client

#endif  // DFKD_CLIENT_LOCAL_CLUSTER_H_
