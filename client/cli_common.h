// Pieces every `dfkd` command shares: exit codes, the error that carries one,
// the global flags, run-state names and small text helpers.
#ifndef DFKD_CLIENT_CLI_COMMON_H_
#define DFKD_CLIENT_CLI_COMMON_H_

#include <optional>
#include <stdexcept>
#include <string>

#include "dfkd/api/v1/scheduler.pb.h"

namespace dfkd::client {

namespace api = ::dfkd::api::v1;

// Exit codes scripts can rely on (listed in the footer of every --help).
inline constexpr int kExitOk = 0;
inline constexpr int kExitSchedulerError = 1;   // the scheduler refused or failed a call
inline constexpr int kExitUsage = 2;            // bad flags, unreadable file, invalid campaign
inline constexpr int kExitUnreachable = 3;      // no scheduler known, or it cannot be reached
inline constexpr int kExitRunsFailed = 4;       // watch / submit --wait: runs failed

inline constexpr char kExitCodesHelp[] =
    "Exit codes: 0 ok; 1 error from the scheduler; 2 bad usage or invalid campaign\n"
    "(every field-path error is printed); 3 cannot reach the scheduler (or none is\n"
    "configured; `dfkd status` exits 3 when the local cluster is not running);\n"
    "4 `submit --wait` / `watch`: the campaign ended with failed runs.";

// An error that ends the command with `exit_code`; main() prints "dfkd: <what>".
class CliError : public std::runtime_error {
 public:
  CliError(int exit_code, const std::string& message)
      : std::runtime_error(message), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// Flags accepted by every command (before or after the subcommand's name).
struct GlobalOptions {
  std::string output = "text";   // text | json
  std::string addr;              // --addr (else DFKD_ADDR, config file, local cluster)
  std::string token;             // --token (else DFKD_TOKEN, ...)
  std::string tls_ca;            // --tls-ca: PEM roots; set = TLS
  std::string data_dir;          // --data-dir: the local cluster's folder
  bool json() const { return output == "json"; }
};

// "queued" for RUN_STATE_QUEUED; "unspecified" for 0.
std::string RunStateName(api::RunState state);
// Accepts "queued", "QUEUED" and "RUN_STATE_QUEUED"; nothing for anything else.
std::optional<api::RunState> ParseRunState(const std::string& name);
// succeeded, failed or cancelled.
bool IsTerminalState(api::RunState state);
// One capital letter per state, for grids: B Q L R S F C ("?" otherwise).
char RunStateLetter(api::RunState state);

// "45s", "3m05s", "2h10m", "3d04h"; negative values count as 0.
std::string FormatDuration(double seconds);
// printf("%.*f").
std::string FormatFixed(double value, int decimals);
// The first line of `text`, cut to `max_chars` characters (with "..." when cut).
std::string FirstLine(const std::string& text, size_t max_chars);

bool StdoutIsTerminal();
// Columns and rows of the terminal on stdout; 0 when unknown.
int TerminalColumns();
int TerminalRows();

}  // namespace dfkd::client

#endif  // DFKD_CLIENT_CLI_COMMON_H_
