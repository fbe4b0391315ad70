// Everything dfkd-worker is told on its command line (see main.cc), plus the
// few tuning knobs tests may shorten.
#ifndef DFKD_WORKER_DAEMON_WORKER_OPTIONS_H_
#define DFKD_WORKER_DAEMON_WORKER_OPTIONS_H_

#include <string>

namespace dfkd::worker::daemon {

struct WorkerOptions {
  std::string scheduler;            // host:port of dfkd-scheduler
  std::string token;                // bearer token with the worker (or admin) role
  std::string name;                 // unique per worker process; "" = DefaultWorkerName()
  int threads = 0;                  // --threads for dfkd-train (0 = one per core)
  std::string dfkd_train;           // path of dfkd-train; "" = DefaultDfkdTrainPath()
  std::string metrics_listen;       // Prometheus host:port ("" = none; port 0 = any free)
  double lease_wait_seconds = 10;   // long-poll bound of each Lease call
  std::string host = "127.0.0.1";   // this machine's address for a gang's rendezvous
  std::string tls_ca;               // PEM root certificate: TLS to the scheduler ("" = plain)

  // Tuning (flags do not expose these; tests may shorten them).
  double rpc_timeout_seconds = 10;  // deadline of one call (a Lease adds its wait)
  double stop_grace_seconds = 120;  // SIGTERM -> exit before SIGKILL (checkpoint time)
};

// "<hostname>:<pid>".
std::string DefaultWorkerName();

// The machine's host name ("localhost" if it cannot be read).
std::string HostName();

// dfkd-train in the folder of this binary (via /proc/self/exe); "dfkd-train"
// (searched on PATH) when that cannot be resolved.
std::string DefaultDfkdTrainPath();

}  // namespace dfkd::worker::daemon

#endif  // DFKD_WORKER_DAEMON_WORKER_OPTIONS_H_
