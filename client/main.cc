// dfkd: the researchers' CLI. `dfkd --help` for usage; see client/README.md.
#include <iostream>
#include <vector>

#include <CLI/CLI.hpp>

#include "client/cli_common.h"
#include "client/commands.h"

int main(int argc, char** argv) {
  using namespace dfkd::client;
  CLI::App app{
      "dfkd: data-free knowledge distillation campaigns on a dfkd cluster.\n\n"
      "  dfkd up                      start a local cluster (PostgreSQL, scheduler, workers)\n"
      "  dfkd submit FILE --wait      submit a campaign and watch it\n"
      "  dfkd results ID              the paper's table for it\n"
      "  dfkd pool --dataset cifar10 --out FILE   the unlabeled image pool (MosaicKD, DFND)\n\n"
      "The scheduler is found through --addr/--token, DFKD_ADDR/DFKD_TOKEN, the config\n"
      "file ~/.config/dfkd/config.json {\"addr\", \"token\"}, else the local cluster.",
      "dfkd"};
  GlobalOptions global;
  app.add_option("--output", global.output, "text | json (every command; listings as JSON)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--addr", global.addr, "scheduler host:port (else DFKD_ADDR, config, local)");
  app.add_option("--token", global.token, "bearer token (else DFKD_TOKEN, config, local)");
  app.add_option("--tls-ca", global.tls_ca, "PEM roots: talk TLS to the scheduler (DFKD_TLS_CA)");
  app.add_option("--data-dir", global.data_dir,
                 "the local cluster's folder (else DFKD_HOME, XDG_DATA_HOME/dfkd, "
                 "~/.local/share/dfkd)");
  // Global flags are accepted after the subcommand too; subcommands inherit
  // this and the footer.
  app.fallthrough();
  app.footer(kExitCodesHelp);
  app.require_subcommand(1);

  std::vector<Command> commands;
  AddClusterCommands(app, global, &commands);
  AddCampaignCommands(app, global, &commands);
  AddWatchCommands(app, global, &commands);
  AddResultsCommands(app, global, &commands);
  AddPoolCommands(app, global, &commands);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }

  // The deepest parsed subcommand ("ls runs" rather than "ls") is registered last.
  const Command* chosen = nullptr;
  for (const Command& command : commands) {
    if (command.app->parsed()) chosen = &command;
  }
  if (!chosen) {
    std::cerr << app.help();
    return kExitUsage;
  }
  try {
    return chosen->run();
  } catch (const CliError& e) {
    std::cerr << "dfkd: " << e.what() << "\n";
    return e.exit_code();
  } catch (const std::exception& e) {
    std::cerr << "dfkd: " << e.what() << "\n";
    return kExitSchedulerError;
  }
}
