#include "client/local_cluster.h"

#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <thread>

#include "client/cli_common.h"
#include "client/process.h"
#include "client/text_table.h"
#include "common/spec/fnv1a.h"

namespace dfkd::client {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr double kSchedulerStopSeconds = 20;
constexpr double kPrometheusStopSeconds = 20;
constexpr size_t kLogTailLines = 20;

[[noreturn]] void Fail(const std::string& message) { throw CliError(kExitSchedulerError, message); }

bool IsRoot() { return geteuid() == 0; }

std::string NowRfc3339() {
  const std::time_t now = std::time(nullptr);
  std::tm tm {};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string Basename(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string Trim(const std::string& text) {
  const size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return "";
  const size_t end = text.find_last_not_of(" \t\r\n");
  return text.substr(begin, end - begin + 1);
}

std::string UserName() {
  const char* user = std::getenv("USER");
  if (user && *user) return user;
  if (const passwd* pw = getpwuid(geteuid())) return pw->pw_name;
  return "researcher";
}

void Sleep(double seconds) {
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// ---------------------------------------------------------------- PostgreSQL

struct PostgresUser {
  uid_t uid = 0;
  gid_t gid = 0;
};

std::optional<PostgresUser> LookupPostgresUser() {
  const passwd* pw = getpwnam("postgres");
  if (!pw) return std::nullopt;
  return PostgresUser{pw->pw_uid, pw->pw_gid};
}

// As root, PostgreSQL tools run as user postgres (initdb refuses root).
std::vector<std::string> AsOwner(const std::vector<std::string>& argv) {
  if (!IsRoot()) return argv;
  std::vector<std::string> out = {"runuser", "-u", "postgres", "--"};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

// $PGBIN, else the newest /usr/lib/postgresql/*/bin, else initdb's folder on PATH.
std::string PgBin() {
  const char* env = std::getenv("PGBIN");
  if (env && *env && access((std::string(env) + "/initdb").c_str(), X_OK) == 0) return env;
  std::string best;
  int best_version = -1;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const std::string bin = entry.path().string() + "/bin";
    if (access((bin + "/initdb").c_str(), X_OK) != 0) continue;
    const int version = std::atoi(entry.path().filename().string().c_str());
    if (version > best_version) {
      best_version = version;
      best = bin;
    }
  }
  if (!best.empty()) return best;
  const std::string initdb = FindOnPath("initdb");
  if (!initdb.empty()) return initdb.substr(0, initdb.rfind('/'));
  Fail("no PostgreSQL server found (install the postgresql package, e.g. with "
       "scripts/install-deps.sh, or set PGBIN to the folder holding initdb and pg_ctl)");
}

// Whether user postgres may traverse every folder down to `dir`.
bool PostgresCanReach(const fs::path& dir, const PostgresUser& pg) {
  fs::path walked;
  for (const fs::path& part : dir) {
    walked /= part;
    struct stat st {};
    if (stat(walked.c_str(), &st) != 0) return false;
    mode_t bit = S_IXOTH;
    if (st.st_uid == pg.uid) {
      bit = S_IXUSR;
    } else if (st.st_gid == pg.gid) {
      bit = S_IXGRP;
    }
    if (!(st.st_mode & bit)) return false;
  }
  return true;
}

// DATA/pg, or what it links to; as root, a folder user postgres can reach.
std::string ResolvePgDir(const std::string& data_dir, std::ostream& log) {
  const fs::path link = fs::path(data_dir) / "pg";
  std::error_code ec;
  if (fs::is_symlink(link, ec)) {
    fs::path target = fs::read_symlink(link, ec);
    if (!ec) return (target.is_absolute() ? target : fs::path(data_dir) / target).string();
  }
  if (!IsRoot() || fs::exists(link / "data" / "PG_VERSION", ec)) return link.string();
  const std::optional<PostgresUser> pg = LookupPostgresUser();
  if (!pg) {
    Fail("running as root, dfkd up runs PostgreSQL as user postgres, which does not exist "
         "(install the postgresql package)");
  }
  if (PostgresCanReach(data_dir, *pg)) return link.string();
  const fs::path fallback = fs::path("/var/lib/dfkd") / ("pg-" + common::Fnv1a64Hex(data_dir));
  fs::create_directories(fallback, ec);
  if (ec) Fail("cannot create " + fallback.string() + ": " + ec.message());
  fs::permissions("/var/lib/dfkd", fs::perms(0755), ec);
  if (!fs::exists(link, ec)) fs::create_directory_symlink(fallback, link, ec);
  log << "postgres: user postgres cannot reach " << data_dir << "; the database lives in "
      << fallback.string() << (fs::is_symlink(link, ec) ? " (DATA/pg links to it)" : "") << "\n";
  return fallback.string();
}

bool PostgresRunning(const std::string& bin, const std::string& pg_dir) {
  return RunCommand(AsOwner({bin + "/pg_ctl", "-D", pg_dir + "/data", "status"})).exit_code == 0;
}

// Creates (first use) and starts the cluster, creates database dfkd. Returns
// true when the cluster was created now (so older tokens are void).
bool StartPostgres(ClusterState* state, std::ostream& log) {
  const std::string bin = PgBin();
  const std::string dir = ResolvePgDir(state->data_dir, log);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) Fail("cannot create " + dir + ": " + ec.message());
  if (IsRoot()) {
    const std::optional<PostgresUser> pg = LookupPostgresUser();
    if (!pg) Fail("running as root needs user postgres (install the postgresql package)");
    if (chown(dir.c_str(), pg->uid, pg->gid) != 0) Fail("cannot chown " + dir + " to postgres");
  }
  const std::string data = dir + "/data";
  bool fresh = false;
  if (!fs::exists(data + "/PG_VERSION", ec)) {
    const CommandResult r = RunCommand(AsOwner({bin + "/initdb", "-D", data, "-U", "postgres",
                                                "-A", "trust", "--no-sync", "-E", "UTF8"}));
    if (r.exit_code != 0) Fail("initdb failed:\n" + TailLines(r.out + r.err, kLogTailLines));
    log << "postgres: created a new cluster in " << data << "\n";
    fresh = true;
  }
  const std::string port_file = dir + "/port";
  int port = std::atoi(ReadFileText(port_file).c_str());
  if (port > 0 && PostgresRunning(bin, dir)) {
    log << "postgres: already running on 127.0.0.1:" << port << "\n";
  } else {
    // The socket folder is DATA/pg unless its path is too long for a socket
    // name (108 bytes); then TCP only.
    const std::string socket_dir = dir.size() + 20 < 108 ? dir : "";
    const std::string server_log = dir + "/server.log";
    for (int attempt = 1;; ++attempt) {
      port = FreeTcpPort();
      const std::string options = "-p " + std::to_string(port) + " -k " + ShellQuote(socket_dir) +
                                  " -c listen_addresses=127.0.0.1 -c synchronous_commit=off"
                                  " -c max_connections=200";
      const CommandResult r = RunCommand(AsOwner({bin + "/pg_ctl", "-D", data, "-l", server_log,
                                                  "-w", "-t", "60", "-o", options, "start"}));
      if (r.exit_code == 0) break;
      if (attempt >= 5) {
        Fail("PostgreSQL did not start (pg_ctl: " + Trim(r.out + r.err) + "); last lines of " +
             server_log + ":\n" + TailLines(ReadFileText(server_log), kLogTailLines));
      }
    }
    WriteFileAtomic(port_file, std::to_string(port) + "\n", 0644);
    log << "postgres: started on 127.0.0.1:" << port << " (log " << server_log << ")\n";
  }
  const CommandResult created = RunCommand({bin + "/createdb", "-h", "127.0.0.1", "-p",
                                            std::to_string(port), "-U", "postgres", "dfkd"});
  if (created.exit_code != 0 && created.err.find("already exists") == std::string::npos) {
    Fail("createdb dfkd failed: " + Trim(created.out + created.err));
  }
  state->pg_dir = dir;
  state->pg_port = port;
  state->db_url = "postgresql://postgres@127.0.0.1:" + std::to_string(port) + "/dfkd";
  return fresh;
}

void StopPostgres(const std::string& pg_dir, std::ostream& log) {
  std::error_code ec;
  if (pg_dir.empty() || !fs::exists(pg_dir + "/data/PG_VERSION", ec)) return;
  std::string bin;
  try {
    bin = PgBin();
  } catch (const CliError& e) {
    log << "postgres: " << e.what() << "\n";
    return;
  }
  if (!PostgresRunning(bin, pg_dir)) {
    log << "postgres: not running\n";
    return;
  }
  const CommandResult r = RunCommand(
      AsOwner({bin + "/pg_ctl", "-D", pg_dir + "/data", "-m", "fast", "-w", "-t", "60", "stop"}));
  if (r.exit_code == 0) {
    log << "postgres: stopped (pg_ctl stop -m fast)\n";
  } else {
    log << "postgres: pg_ctl stop failed: " << Trim(r.out + r.err) << "\n";
  }
}

// ---------------------------------------------------------------- daemons

void SaveState(const ClusterState& state) {
  WriteFileAtomic(ClusterFilePath(state.data_dir), ClusterStateToJson(state).dump(2) + "\n",
                  0644);
}

void RotateLog(const std::string& path) {
  std::error_code ec;
  if (fs::exists(path, ec)) fs::rename(path, path + ".1", ec);
}

// The first whole line of the daemon's log holding `needle`.
// Fails with the log's tail when the child exits or `timeout` passes (then
// the child is stopped).
std::string WaitForLine(const DaemonInfo& daemon, const std::string& needle, double timeout) {
  const Clock::time_point start = Clock::now();
  for (;;) {
    const std::string text = ReadFileText(daemon.log);
    const size_t at = text.find(needle);
    const size_t end = at == std::string::npos ? std::string::npos : text.find('\n', at);
    if (end != std::string::npos) {   // a whole line
      const size_t newline = text.rfind('\n', at);
      const size_t begin = newline == std::string::npos ? 0 : newline + 1;
      return text.substr(begin, end - begin);
    }
    int code = -1;
    if (ChildExited(daemon.pid, &code)) {
      Fail(daemon.name + " exited (code " + std::to_string(code) + ") before it was ready; last "
           "lines of " + daemon.log + ":\n" + TailLines(text, kLogTailLines));
    }
    if (SecondsSince(start) > timeout) {
      kill(daemon.pid, SIGTERM);
      Fail(daemon.name + " did not report \"" + needle + "\" within " +
           std::to_string(static_cast<int>(timeout)) + " s; stopped it. Last lines of " +
           daemon.log + ":\n" + TailLines(text, kLogTailLines));
    }
    Sleep(0.1);
  }
}

// The integer after `needle` in `line`; 0 when absent.
int64_t NumberAfter(const std::string& line, const std::string& needle) {
  const size_t at = line.find(needle);
  if (at == std::string::npos) return 0;
  return std::strtoll(line.c_str() + at + needle.size(), nullptr, 10);
}

// Starts a daemon in the data folder with its output to DATA/logs/<log_name>.
DaemonInfo Spawn(const std::string& data_dir, const std::string& name,
                 const std::vector<std::string>& argv, const std::string& log_name) {
  const std::string log_path = data_dir + "/logs/" + log_name;
  RotateLog(log_path);
  DaemonInfo d;
  d.name = name;
  d.exe = Basename(argv.at(0));
  d.log = log_path;
  d.pid = SpawnDetached(argv, log_path, data_dir);
  return d;
}

// A recorded daemon that is still the program we started.
bool DaemonAlive(const DaemonInfo& d) {
  return d.pid > 0 && ProcessAlive(d.pid) && (d.exe.empty() || ProcessName(d.pid) == d.exe);
}

bool Gone(int pid) {
  int code = 0;
  return ChildExited(pid, &code) || !ProcessAlive(pid);
}

// SIGTERM to every live daemon, a bounded wait, then SIGKILL for the rest.
void StopDaemons(const std::vector<DaemonInfo>& daemons, double timeout, std::ostream& log) {
  std::vector<const DaemonInfo*> waiting;
  for (const DaemonInfo& d : daemons) {
    if (d.pid <= 0) continue;
    if (!ProcessAlive(d.pid)) {
      log << d.name << ": not running\n";
      continue;
    }
    if (!d.exe.empty() && ProcessName(d.pid) != d.exe) {
      log << d.name << ": pid " << d.pid << " is now another program (" << ProcessName(d.pid)
          << "); left alone\n";
      continue;
    }
    kill(d.pid, SIGTERM);
    log << d.name << " (pid " << d.pid << "): SIGTERM\n";
    waiting.push_back(&d);
  }
  const Clock::time_point start = Clock::now();
  while (!waiting.empty()) {
    for (auto it = waiting.begin(); it != waiting.end();) {
      if (Gone((*it)->pid)) {
        log << (*it)->name << ": stopped after " << FormatFixed(SecondsSince(start), 1) << " s\n";
        it = waiting.erase(it);
      } else {
        ++it;
      }
    }
    if (waiting.empty()) break;
    if (SecondsSince(start) > timeout) {
      for (const DaemonInfo* d : waiting) {
        kill(d->pid, SIGKILL);
        log << d->name << " (pid " << d->pid << "): still running after "
            << static_cast<int>(timeout) << " s; SIGKILL\n";
      }
      Sleep(0.2);
      for (const DaemonInfo* d : waiting) Gone(d->pid);
      break;
    }
    Sleep(0.1);
  }
}

// Workers first (they checkpoint and hand their runs back), then the
// scheduler, Prometheus, PostgreSQL.
void StopCluster(const ClusterState& state, double worker_timeout, std::ostream& log) {
  StopDaemons(state.workers, worker_timeout, log);
  StopDaemons({state.scheduler}, kSchedulerStopSeconds, log);
  StopDaemons({state.prometheus}, kPrometheusStopSeconds, log);
  std::string pg_dir = state.pg_dir;
  if (pg_dir.empty()) {
    std::error_code ec;
    const fs::path link = fs::path(state.data_dir) / "pg";
    const fs::path target = fs::is_symlink(link, ec) ? fs::read_symlink(link, ec) : link;
    pg_dir = (target.is_absolute() ? target : fs::path(state.data_dir) / target).string();
  }
  StopPostgres(pg_dir, log);
}

void EnsureTokens(const ClusterState& state, const std::string& scheduler_bin, bool fresh_db,
                  std::ostream& log) {
  const fs::path dir = fs::path(state.data_dir) / "tokens";
  std::error_code ec;
  fs::create_directories(dir, ec);
  fs::permissions(dir, fs::perms::owner_all, ec);
  const std::vector<std::pair<std::string, std::string>> roles = {
      {"admin", "admin"}, {"researcher", UserName()}, {"worker", "local-workers"}};
  std::string created;
  for (const auto& [role, name] : roles) {
    const std::string path = TokenFilePath(state.data_dir, role);
    if (fresh_db) fs::remove(path, ec);
    if (fs::exists(path, ec)) continue;
    const CommandResult r = RunCommand({scheduler_bin, "--db", state.db_url, "token", "create",
                                        "--name", name, "--role", role});
    const std::string token = Trim(TailLines(r.out, 1));
    if (r.exit_code != 0 || token.empty()) {
      Fail("dfkd-scheduler token create --role " + role + " failed:\n" +
           TailLines(r.out + r.err, kLogTailLines));
    }
    WriteFileAtomic(path, token + "\n", 0600);
    created += (created.empty() ? "" : ", ") + role;
  }
  if (!created.empty()) log << "tokens: created " << created << " in " << dir.string() << "\n";
}

void StartScheduler(ClusterState* state, const std::string& bin, double timeout,
                    double lease_seconds, std::ostream& log) {
  const std::string data = state->data_dir;
  std::ostringstream lease;
  lease << lease_seconds;
  state->scheduler = Spawn(data, "scheduler",
                           {bin, "--db", state->db_url, "--listen", "127.0.0.1:0",
                            "--metrics-listen", "127.0.0.1:0", "--artifact-root",
                            data + "/artifacts", "--lease-seconds", lease.str()},
                           "scheduler.log");
  SaveState(*state);
  const std::string line = WaitForLine(state->scheduler, "listening on port ", timeout);
  state->scheduler.port = static_cast<int>(NumberAfter(line, "listening on port "));
  state->scheduler.metrics_port = static_cast<int>(NumberAfter(line, "metrics on port "));
  if (state->scheduler.port <= 0) Fail("cannot read the scheduler's port from: " + line);
  state->scheduler_addr = "127.0.0.1:" + std::to_string(state->scheduler.port);
  SaveState(*state);
  log << "scheduler: pid " << state->scheduler.pid << ", listening on " << state->scheduler_addr
      << ", metrics on port " << state->scheduler.metrics_port << " (log "
      << state->scheduler.log << ")\n";
}

void StartWorkers(ClusterState* state, const std::string& bin, int count, int threads,
                  double timeout, std::ostream& log) {
  const std::string data = state->data_dir;
  for (int i = 1; i <= count; ++i) {
    state->workers.push_back(Spawn(data, "worker-" + std::to_string(i),
                                   {bin, "--scheduler", state->scheduler_addr, "--token-file",
                                    TokenFilePath(data, "worker"), "--name",
                                    "local-" + std::to_string(i), "--threads",
                                    std::to_string(threads), "--metrics-listen", "127.0.0.1:0"},
                                   "worker-" + std::to_string(i) + ".log"));
    SaveState(*state);
  }
  for (DaemonInfo& w : state->workers) {
    const std::string line = WaitForLine(w, "registered as worker ", timeout);
    w.worker_id = NumberAfter(line, "registered as worker ");
    w.metrics_port = static_cast<int>(NumberAfter(line, "metrics on port "));
    log << w.name << ": pid " << w.pid << ", worker id " << w.worker_id << ", " << threads
        << " threads, metrics on port " << w.metrics_port << " (log " << w.log << ")\n";
  }
  SaveState(*state);
}

std::string FindPrometheus() {
  if (access("/usr/bin/prometheus", X_OK) == 0) return "/usr/bin/prometheus";
  return FindOnPath("prometheus");
}

void StartPrometheus(ClusterState* state, const std::string& bin, double timeout,
                     std::ostream& log) {
  const std::string data = state->data_dir;
  std::string yml =
      "# Written by `dfkd up --prometheus`; rewritten at every start.\n"
      "global:\n"
      "  scrape_interval: 2s\n"
      "  evaluation_interval: 2s\n"
      "scrape_configs:\n"
      "  - job_name: dfkd-scheduler\n"
      "    static_configs:\n"
      "      - targets: ['127.0.0.1:" + std::to_string(state->scheduler.metrics_port) + "']\n";
  std::string targets;
  for (const DaemonInfo& w : state->workers) {
    if (w.metrics_port <= 0) continue;
    targets += (targets.empty() ? "" : ", ") + std::string("'127.0.0.1:") +
               std::to_string(w.metrics_port) + "'";
  }
  if (!targets.empty()) {
    yml += "  - job_name: dfkd-worker\n"
           "    static_configs:\n"
           "      - targets: [" + targets + "]\n";
  }
  const std::string config = data + "/prometheus.yml";
  WriteFileAtomic(config, yml, 0644);
  const int port = FreeTcpPort();
  state->prometheus = Spawn(data, "prometheus",
                            {bin, "--config.file=" + config,
                             "--storage.tsdb.path=" + data + "/prometheus",
                             "--web.listen-address=127.0.0.1:" + std::to_string(port)},
                            "prometheus.log");
  state->prometheus.port = port;
  SaveState(*state);
  WaitForLine(state->prometheus, "Server is ready to receive web requests", timeout);
  state->prometheus_url = "http://127.0.0.1:" + std::to_string(port);
  SaveState(*state);
  log << "prometheus: pid " << state->prometheus.pid << ", " << state->prometheus_url
      << " scraping the scheduler and " << state->workers.size() << " worker(s) every 2 s (config "
      << config << ")\n";
}

nlohmann::json DaemonToJson(const DaemonInfo& d) {
  return {{"name", d.name}, {"exe", d.exe}, {"pid", d.pid}, {"port", d.port},
          {"metrics_port", d.metrics_port}, {"worker_id", d.worker_id}, {"log", d.log}};
}

DaemonInfo DaemonFromJson(const nlohmann::json& j) {
  DaemonInfo d;
  if (!j.is_object()) return d;
  d.name = j.value("name", "");
  d.exe = j.value("exe", "");
  d.pid = j.value("pid", 0);
  d.port = j.value("port", 0);
  d.metrics_port = j.value("metrics_port", 0);
  d.worker_id = j.value("worker_id", int64_t{0});
  d.log = j.value("log", "");
  return d;
}

}  // namespace

nlohmann::json ClusterStateToJson(const ClusterState& state) {
  nlohmann::json workers = nlohmann::json::array();
  for (const DaemonInfo& w : state.workers) workers.push_back(DaemonToJson(w));
  return {{"version", 1},
          {"data_dir", state.data_dir},
          {"started_at", state.started_at},
          {"db_url", state.db_url},
          {"pg_dir", state.pg_dir},
          {"pg_port", state.pg_port},
          {"scheduler_addr", state.scheduler_addr},
          {"scheduler", DaemonToJson(state.scheduler)},
          {"workers", workers},
          {"prometheus", DaemonToJson(state.prometheus)},
          {"prometheus_url", state.prometheus_url}};
}

ClusterState ClusterStateFromJson(const nlohmann::json& json) {
  ClusterState s;
  if (!json.is_object()) return s;
  s.data_dir = json.value("data_dir", "");
  s.started_at = json.value("started_at", "");
  s.db_url = json.value("db_url", "");
  s.pg_dir = json.value("pg_dir", "");
  s.pg_port = json.value("pg_port", 0);
  s.scheduler_addr = json.value("scheduler_addr", "");
  if (json.contains("scheduler")) s.scheduler = DaemonFromJson(json["scheduler"]);
  if (json.contains("workers") && json["workers"].is_array()) {
    for (const auto& w : json["workers"]) s.workers.push_back(DaemonFromJson(w));
  }
  if (json.contains("prometheus")) s.prometheus = DaemonFromJson(json["prometheus"]);
  s.prometheus_url = json.value("prometheus_url", "");
  return s;
}

std::string ResolveDataDir(const std::string& flag) {
  auto absolute = [](const std::string& p) { return fs::absolute(p).lexically_normal().string(); };
  if (!flag.empty()) return absolute(flag);
  const char* home_override = std::getenv("DFKD_HOME");
  if (home_override && *home_override) return absolute(home_override);
  const char* xdg = std::getenv("XDG_DATA_HOME");
  if (xdg && *xdg == '/') return absolute(std::string(xdg) + "/dfkd");
  const char* home = std::getenv("HOME");
  std::string home_dir = home && *home ? home : "";
  if (home_dir.empty()) {
    if (const passwd* pw = getpwuid(geteuid())) home_dir = pw->pw_dir;
  }
  if (home_dir.empty()) {
    throw CliError(kExitUsage, "cannot find a home folder for the local cluster; pass "
                               "--data-dir or set DFKD_HOME");
  }
  return absolute(home_dir + "/.local/share/dfkd");
}

std::string ClusterFilePath(const std::string& data_dir) { return data_dir + "/cluster.json"; }

std::string TokenFilePath(const std::string& data_dir, const std::string& role) {
  return data_dir + "/tokens/" + role;
}

std::optional<ClusterState> ReadClusterState(const std::string& data_dir) {
  const std::string path = ClusterFilePath(data_dir);
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  const nlohmann::json json = nlohmann::json::parse(ReadFileText(path), nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    throw CliError(kExitSchedulerError, path + " is not valid JSON; `dfkd down` stops what it "
                                               "can find and removes it");
  }
  ClusterState state = ClusterStateFromJson(json);
  state.data_dir = data_dir;
  return state;
}

bool ClusterAlive(const ClusterState& state) {
  if (!TcpPortOpen("127.0.0.1", state.pg_port, 500)) return false;
  if (!DaemonAlive(state.scheduler)) return false;
  for (const DaemonInfo& w : state.workers) {
    if (!DaemonAlive(w)) return false;
  }
  return state.prometheus.pid == 0 || DaemonAlive(state.prometheus);
}

int ClusterUp(const ClusterOptions& options, std::ostream& log) {
  const std::string& data = options.data_dir;
  // Every binary first: fail before anything starts.
  const std::string scheduler_bin = FindExecutable("dfkd-scheduler", "DFKD_SCHEDULER_BIN");
  if (scheduler_bin.empty()) {
    Fail("cannot find dfkd-scheduler next to dfkd (" + SelfDir() +
         ") or on PATH; build it or set DFKD_SCHEDULER_BIN");
  }
  std::string worker_bin;
  if (options.workers > 0) {
    worker_bin = FindExecutable("dfkd-worker", "DFKD_WORKER_BIN");
    if (worker_bin.empty()) {
      Fail("cannot find dfkd-worker next to dfkd (" + SelfDir() +
           ") or on PATH; build it, set DFKD_WORKER_BIN, or pass --workers 0");
    }
  }
  std::string prometheus_bin;
  if (options.prometheus) {
    prometheus_bin = FindPrometheus();
    if (prometheus_bin.empty()) {
      Fail("--prometheus: no prometheus binary in /usr/bin or on PATH (apt-get install "
           "prometheus)");
    }
  }

  std::error_code ec;
  if (std::optional<ClusterState> existing = ReadClusterState(data)) {
    if (ClusterAlive(*existing)) {
      log << "dfkd up: a local cluster already runs in " << data
          << " (`dfkd down` stops it)\n";
      if (options.prometheus && existing->prometheus.pid == 0) {
        log << "note: it runs without Prometheus; `dfkd down` then `dfkd up --prometheus`\n";
      }
      if (static_cast<int>(existing->workers.size()) != options.workers) {
        log << "note: it runs " << existing->workers.size() << " worker(s), not "
            << options.workers << "; `dfkd down` first to change that\n";
      }
      ClusterStatus(data, false, log);
      return kExitOk;
    }
    log << "dfkd up: the cluster recorded in " << ClusterFilePath(data)
        << " is partly stopped; stopping the rest first\n";
    StopCluster(*existing, options.stop_timeout_seconds, log);
    fs::remove(ClusterFilePath(data), ec);
  }

  for (const char* sub : {"", "/logs", "/artifacts"}) {
    fs::create_directories(data + sub, ec);
    if (ec) Fail("cannot create " + data + sub + ": " + ec.message());
  }
  ClusterState state;
  state.data_dir = data;
  state.started_at = NowRfc3339();
  try {
    const bool fresh = StartPostgres(&state, log);
    SaveState(state);
    EnsureTokens(state, scheduler_bin, fresh, log);
    StartScheduler(&state, scheduler_bin, options.start_timeout_seconds, options.lease_seconds,
                   log);
    if (options.workers > 0) {
      int threads = options.threads;
      if (threads <= 0) {
        const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
        threads = std::max(1, cores / options.workers);
      }
      StartWorkers(&state, worker_bin, options.workers, threads, options.start_timeout_seconds,
                   log);
    }
    if (options.prometheus) {
      StartPrometheus(&state, prometheus_bin, options.start_timeout_seconds, log);
    }
  } catch (...) {
    log << "dfkd up: failed; stopping what it started\n";
    try {
      StopCluster(state, options.stop_timeout_seconds, log);
    } catch (const std::exception& e) {
      log << "dfkd up: while stopping: " << e.what() << "\n";
    }
    fs::remove(ClusterFilePath(data), ec);
    throw;
  }
  log << "ready: the dfkd CLI uses this cluster by default (scheduler " << state.scheduler_addr
      << ", researcher token in " << TokenFilePath(data, "researcher") << ")\n"
      << "try: dfkd submit configs/campaigns/fmnist_demo.json --wait\n";
  return kExitOk;
}

int ClusterDown(const ClusterOptions& options, std::ostream& log) {
  const std::string& data = options.data_dir;
  std::optional<ClusterState> state;
  try {
    state = ReadClusterState(data);
  } catch (const CliError& e) {
    log << e.what() << "\n";
  }
  if (!state) {
    log << "dfkd down: no cluster.json in " << data << "; stopping PostgreSQL if it runs\n";
    state = ClusterState{};
    state->data_dir = data;
  }
  StopCluster(*state, options.stop_timeout_seconds, log);
  std::error_code ec;
  fs::remove(ClusterFilePath(data), ec);
  log << "dfkd down: done; campaigns and results stay in " << data
      << " (`dfkd up` starts it again)\n";
  return kExitOk;
}

int ClusterStatus(const std::string& data_dir, bool json, std::ostream& out) {
  const std::optional<ClusterState> state = ReadClusterState(data_dir);
  if (!state) {
    if (json) {
      out << nlohmann::json{{"data_dir", data_dir}, {"running", false}}.dump(2) << "\n";
    } else {
      out << "no local cluster runs in " << data_dir << " (`dfkd up` starts one)\n";
    }
    return kExitUnreachable;
  }
  const bool pg_up = TcpPortOpen("127.0.0.1", state->pg_port, 500);
  const bool alive = pg_up && ClusterAlive(*state);
  if (json) {
    nlohmann::json j = ClusterStateToJson(*state);
    j["running"] = alive;
    j["postgres_running"] = pg_up;
    j["scheduler"]["alive"] = DaemonAlive(state->scheduler);
    for (size_t i = 0; i < state->workers.size(); ++i) {
      j["workers"][i]["alive"] = DaemonAlive(state->workers[i]);
    }
    j["prometheus"]["alive"] = DaemonAlive(state->prometheus);
    out << j.dump(2) << "\n";
    return alive ? kExitOk : kExitUnreachable;
  }
  auto word = [](bool up) { return std::string(up ? "running" : "stopped"); };
  auto pid = [](int p) { return p > 0 ? std::to_string(p) : std::string("-"); };
  auto port = [](int p) { return p > 0 ? std::to_string(p) : std::string("-"); };
  std::vector<std::vector<std::string>> rows = {
      {"component", "state", "pid", "address", "metrics", "log"},
      {"postgres", word(pg_up), "-", "127.0.0.1:" + std::to_string(state->pg_port), "-",
       state->pg_dir + "/server.log"},
      {"scheduler", word(DaemonAlive(state->scheduler)), pid(state->scheduler.pid),
       state->scheduler_addr.empty() ? "-" : state->scheduler_addr,
       port(state->scheduler.metrics_port), state->scheduler.log}};
  for (const DaemonInfo& w : state->workers) {
    rows.push_back({w.name, word(DaemonAlive(w)), pid(w.pid),
                    w.worker_id > 0 ? "worker " + std::to_string(w.worker_id) : "-",
                    port(w.metrics_port), w.log});
  }
  if (state->prometheus.pid > 0) {
    rows.push_back({"prometheus", word(DaemonAlive(state->prometheus)),
                    pid(state->prometheus.pid),
                    state->prometheus_url.empty() ? "-" : state->prometheus_url, "-",
                    state->prometheus.log});
  }
  out << "local cluster in " << data_dir << " (started " << state->started_at << ")\n"
      << RenderColumns(rows, {}) << "database " << state->db_url << "\n";
  if (!alive) out << "some parts are stopped: `dfkd down` then `dfkd up` restarts them\n";
  return alive ? kExitOk : kExitUnreachable;
}

}  // namespace dfkd::client
