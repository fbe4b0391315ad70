// dfkd-scheduler: the control plane. `dfkd-scheduler --help` for usage.
#include <csignal>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>

#include "server/api/scheduler_server.h"
#include "server/version.h"

namespace {

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value && *value ? value : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a closed stdout pipe must not kill the scheduler
  using dfkd::server::SchedulerOptions;
  CLI::App app{"dfkd-scheduler: the dfkd control plane (gRPC API over a PostgreSQL store).\n"
               "Every piece of state is in PostgreSQL: kill and restart it at any time."};
  app.require_subcommand(0, 1);
  SchedulerOptions options;
  options.code_version = dfkd::server::kCodeVersion;
  std::string db = EnvOr("DFKD_DATABASE_URL", "");
  app.add_option("--db", db, "PostgreSQL URL (env DFKD_DATABASE_URL)");

  auto* serve = app.add_subcommand("serve", "Serve the API (the default)");
  for (CLI::App* a : {&app, serve}) {
    a->add_option("--listen", options.listen, "gRPC address host:port (port 0 = any free)")
        ->capture_default_str();
    a->add_option("--metrics-listen", options.metrics_listen,
                  "Prometheus /metrics address host:port (empty = none)");
    a->add_option("--artifact-root", options.store.artifact_root,
                  "Folder (shared by all workers) for checkpoints and models")
        ->capture_default_str();
    a->add_option("--lease-seconds", options.store.lease_seconds,
                  "A lease without a heartbeat for this long expires")
        ->capture_default_str();
    a->add_option("--tls-cert", options.tls_cert, "PEM certificate (with --tls-key: TLS)");
    a->add_option("--tls-key", options.tls_key, "PEM private key");
    a->add_option("--max-runs", options.limits.max_runs, "Runs one campaign may expand into")
        ->capture_default_str();
  }
  auto* migrate = app.add_subcommand("migrate", "Apply pending schema migrations and exit");
  auto* token = app.add_subcommand("token", "Manage bearer tokens");
  token->require_subcommand(1);
  auto* create = token->add_subcommand("create", "Create a token; prints it once");
  std::string token_name = "admin", role_name = "researcher";
  create->add_option("--name", token_name, "Owner name (campaigns submitted with it)")
      ->capture_default_str();
  create->add_option("--role", role_name, "researcher | worker | admin")
      ->check(CLI::IsMember({"researcher", "worker", "admin"}))
      ->capture_default_str();
  auto* revoke = token->add_subcommand("revoke", "Revoke every token of --name");
  revoke->add_option("--name", token_name, "Owner name")->required();
  app.add_flag_callback("--version", [] {
    std::cout << "dfkd-scheduler " << dfkd::server::kCodeVersion << "\n";
    std::exit(0);
  }, "Print the code version and exit");
  CLI11_PARSE(app, argc, argv);

  if (db.empty()) {
    std::cerr << "dfkd-scheduler: --db: required (or set DFKD_DATABASE_URL)\n";
    return 2;
  }
  options.store.url = db;
  try {
    if (migrate->parsed()) {
      auto store = dfkd::server::Store::Open(options.store);
      std::cout << "schema at version " << store->SchemaVersion() << "\n";
      return 0;
    }
    if (create->parsed()) {
      auto store = dfkd::server::Store::Open(options.store);
      std::cout << store->CreateToken(token_name, *dfkd::server::ParseRole(role_name)) << "\n";
      return 0;
    }
    if (revoke->parsed()) {
      auto store = dfkd::server::Store::Open(options.store);
      std::cout << "revoked " << store->RevokeTokens(token_name) << " token(s)\n";
      return 0;
    }
    // Block SIGINT/SIGTERM here so every thread inherits the mask; one thread
    // waits for them and shuts the server down.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    dfkd::server::SchedulerServer server(options);
    server.Start();
    std::cout << "dfkd-scheduler " << dfkd::server::kCodeVersion << " listening on port "
              << server.port();
    if (server.metrics_port() > 0) std::cout << ", metrics on port " << server.metrics_port();
    std::cout << std::endl;
    std::thread waiter([&] {
      int sig = 0;
      sigwait(&signals, &sig);
      std::cerr << "dfkd-scheduler: signal " << sig << ", shutting down\n";
      server.Shutdown();
    });
    server.Wait();
    waiter.detach();
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "dfkd-scheduler: " << e.what() << "\n";
    return 1;
  }
}
