// The `dfkd` subcommands. Each Add*Commands registers its subcommands on the
// app and appends what to run when one of them was given; main() runs the
// deepest parsed one and turns CliError into its exit code.
#ifndef DFKD_CLIENT_COMMANDS_H_
#define DFKD_CLIENT_COMMANDS_H_

#include <cstdint>
#include <functional>
#include <vector>

#include <CLI/CLI.hpp>

#include "client/cli_common.h"

namespace dfkd::client {

class SchedulerClient;

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;   // returns the exit code; may throw CliError
};

// up, down, status
void AddClusterCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* out);
// submit, ls (campaigns, runs), cancel, retry
void AddCampaignCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* out);
// watch
void AddWatchCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* out);
// results, logs
void AddResultsCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* out);
// pool: the unlabeled image pool of MosaicKD / DFND, built here (no scheduler)
void AddPoolCommands(CLI::App& app, const GlobalOptions& global, std::vector<Command>* out);

// Follows campaign `campaign_id` until it ends: a grid on a terminal, lines
// otherwise, JSON lines with --output json. Returns kExitOk, or
// kExitRunsFailed when runs failed.
int WatchCampaign(SchedulerClient& client, int64_t campaign_id, const GlobalOptions& global,
                  double poll_seconds);

}  // namespace dfkd::client

#endif  // DFKD_CLIENT_COMMANDS_H_
