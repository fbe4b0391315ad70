// dfkd-worker: leases runs from dfkd-scheduler and trains each as a
// supervised dfkd-train child. `dfkd-worker --help` for usage.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>

#include "worker/daemon/log.h"
#include "worker/daemon/worker_daemon.h"

namespace {

std::string Trim(const std::string& text) {
  const char* space = " \t\r\n";
  size_t begin = text.find_first_not_of(space);
  if (begin == std::string::npos) return "";
  size_t end = text.find_last_not_of(space);
  return text.substr(begin, end - begin + 1);
}

}  // namespace

int main(int argc, char** argv) {
  using dfkd::worker::daemon::LogLine;
  using dfkd::worker::daemon::WorkerDaemon;
  using dfkd::worker::daemon::WorkerOptions;
  std::signal(SIGPIPE, SIG_IGN);  // a closed stdout pipe must not kill the daemon

  CLI::App app{
      "dfkd-worker: leases runs from dfkd-scheduler and trains each one as a\n"
      "supervised dfkd-train child process (one run at a time). The child's output\n"
      "goes to OUT/rank<R>.log; its progress, evaluations and checkpoints are\n"
      "reported to the scheduler and served as Prometheus metrics.\n\n"
      "The scheduler may be restarted at any time: calls are retried until it is\n"
      "back. SIGTERM or Ctrl-C: stop leasing, let the run in progress write a\n"
      "checkpoint, hand it back to the scheduler (another worker resumes it) and\n"
      "exit 0. A worker killed with SIGKILL takes its child down too; the\n"
      "scheduler then retries the run once its lease expires.\n\n"
      "Exit codes: 0 stopped by a signal, 1 error (refused by the scheduler,\n"
      "metrics address in use), 2 bad flags.",
      "dfkd-worker"};
  WorkerOptions options;
  std::string token_file;
  app.add_option("--scheduler", options.scheduler, "dfkd-scheduler address host:port")
      ->envname("DFKD_ADDR");
  app.add_option("--token", options.token, "bearer token with the worker role")
      ->envname("DFKD_TOKEN");
  app.add_option("--token-file", token_file,
                 "read the token from this file instead (wins over --token)")
      ->check(CLI::ExistingFile);
  app.add_option("--name", options.name,
                 "worker name, unique per process (default: <hostname>:<pid>)");
  app.add_option("--threads", options.threads,
                 "LibTorch threads of each dfkd-train child (0 = one per core)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--metrics-listen", options.metrics_listen,
                 "serve Prometheus /metrics on host:port (port 0 = any free; default: off)");
  app.add_option("--dfkd-train", options.dfkd_train,
                 "the dfkd-train binary (default: dfkd-train next to this binary)");
  app.add_option("--host", options.host,
                 "this machine's address as other workers reach it (rendezvous of\n"
                 "multi-worker runs)")
      ->capture_default_str();
  app.add_option("--tls-ca", options.tls_ca,
                 "PEM root certificate: talk TLS to the scheduler (default: plain text)")
      ->check(CLI::ExistingFile);
  app.add_option("--lease-wait", options.lease_wait_seconds,
                 "seconds one lease request waits for work before asking again")
      ->check(CLI::Range(0.0, 60.0))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  if (options.scheduler.empty()) {
    std::cerr << "dfkd-worker: --scheduler: required (or set DFKD_ADDR)\n";
    return 2;
  }
  if (!token_file.empty()) {
    std::ifstream in(token_file);
    std::ostringstream text;
    text << in.rdbuf();
    options.token = Trim(text.str());
  }
  if (options.token.empty()) {
    std::cerr << "dfkd-worker: --token or --token-file: required (or set DFKD_TOKEN)\n";
    return 2;
  }
  if (options.dfkd_train.empty()) {
    options.dfkd_train = dfkd::worker::daemon::DefaultDfkdTrainPath();
  }
  if (options.dfkd_train.find('/') != std::string::npos &&
      access(options.dfkd_train.c_str(), X_OK) != 0) {
    std::cerr << "dfkd-worker: " << options.dfkd_train
              << ": not an executable dfkd-train (use --dfkd-train)\n";
    return 2;
  }

  // Block SIGINT/SIGTERM before any thread exists, so every thread inherits
  // the mask; one thread waits for them (children get an empty mask back).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<WorkerDaemon> worker;
  try {
    worker = std::make_unique<WorkerDaemon>(options);
  } catch (const std::exception& e) {
    std::cerr << "dfkd-worker: " << e.what() << "\n";
    return 1;
  }
  std::atomic<bool> exiting{false};
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (!exiting.load()) {
      LogLine(std::string("signal ") + strsignal(sig) +
              ": stopping; the run in progress is checkpointed and handed back");
    }
    worker->RequestStop();
  });

  int rc = 0;
  try {
    if (worker->Start()) {
      std::cout << "dfkd-worker " << worker->name() << " registered as worker "
                << worker->worker_id();
      if (worker->metrics_port() > 0) std::cout << ", metrics on port " << worker->metrics_port();
      std::cout << std::endl;
      worker->Run();
    }
  } catch (const std::exception& e) {
    LogLine(e.what());
    rc = 1;
  }
  // Wake the waiter if no signal came (a signal it already took leaves this
  // one pending, blocked, and discarded at exit).
  exiting.store(true);
  kill(getpid(), SIGTERM);
  waiter.join();
  if (rc == 0) LogLine("worker " + worker->name() + " stopped");
  return rc;
}
