#include "client/cli_common.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

namespace dfkd::client {

std::string RunStateName(api::RunState state) {
  std::string name = api::RunState_Name(state);
  const std::string prefix = "RUN_STATE_";
  if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  if (name.empty()) name = "state_" + std::to_string(static_cast<int>(state));
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return name;
}

std::optional<api::RunState> ParseRunState(const std::string& name) {
  std::string upper = name;
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  if (upper.rfind("RUN_STATE_", 0) != 0) upper = "RUN_STATE_" + upper;
  api::RunState state = api::RUN_STATE_UNSPECIFIED;
  if (!api::RunState_Parse(upper, &state) || state == api::RUN_STATE_UNSPECIFIED) {
    return std::nullopt;
  }
  return state;
}

bool IsTerminalState(api::RunState state) {
  return state == api::RUN_STATE_SUCCEEDED || state == api::RUN_STATE_FAILED ||
         state == api::RUN_STATE_CANCELLED;
}

char RunStateLetter(api::RunState state) {
  switch (state) {
    case api::RUN_STATE_BLOCKED: return 'B';
    case api::RUN_STATE_QUEUED: return 'Q';
    case api::RUN_STATE_LEASED: return 'L';
    case api::RUN_STATE_RUNNING: return 'R';
    case api::RUN_STATE_SUCCEEDED: return 'S';
    case api::RUN_STATE_FAILED: return 'F';
    case api::RUN_STATE_CANCELLED: return 'C';
    default: return '?';
  }
}

std::string FormatDuration(double seconds) {
  if (!(seconds > 0)) seconds = 0;   // also NaN
  if (seconds > 1e9) seconds = 1e9;
  const long long s = std::llround(seconds);
  char buf[64];
  if (s < 60) {
    snprintf(buf, sizeof buf, "%llds", s);
  } else if (s < 3600) {
    snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  } else if (s < 86400) {
    snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  } else {
    snprintf(buf, sizeof buf, "%lldd%02lldh", s / 86400, (s % 86400) / 3600);
  }
  return buf;
}

std::string FormatFixed(double value, int decimals) {
  char buf[64];
  snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

std::string FirstLine(const std::string& text, size_t max_chars) {
  std::string line = text.substr(0, text.find('\n'));
  if (line.size() > max_chars) {
    line = line.substr(0, max_chars > 3 ? max_chars - 3 : 0) + "...";
  }
  return line;
}

bool StdoutIsTerminal() { return isatty(STDOUT_FILENO) == 1; }

int TerminalColumns() {
  struct winsize ws {};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 0;
}

int TerminalRows() {
  struct winsize ws {};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0) return ws.ws_row;
  return 0;
}

}  // namespace dfkd::client
