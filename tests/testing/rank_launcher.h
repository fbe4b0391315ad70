// Multi-process tests: the test binary re-executes itself (/proc/self/exe)
// as each rank, so no LibTorch state crosses a fork. Children get
// DFKD_DIST_CHILD=1 (their main() dispatches on it), torchrun's variables
// for a free port on 127.0.0.1 and the caller's extra variables; each rank's
// stderr is appended to OUT/log<rank>.txt.
#ifndef DFKD_TESTS_TESTING_RANK_LAUNCHER_H_
#define DFKD_TESTS_TESTING_RANK_LAUNCHER_H_

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "worker/dist/c10d_communicator.h"

namespace dfkd::testing {

inline std::string RankLog(const std::string& out, int rank) {
  return out + "/log" + std::to_string(rank) + ".txt";
}

// Starts `world` ranks, waits for all, returns their exit codes (-1: killed
// by a signal).
inline std::vector<int> LaunchRankProcesses(
    const std::string& out, int world,
    const std::vector<std::pair<std::string, std::string>>& env) {
  const int port = worker::FindFreePort();
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    pid_t pid = fork();
    if (pid == 0) {
      setenv("DFKD_DIST_CHILD", "1", 1);
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      setenv("DFKD_OUT", out.c_str(), 1);
      for (const auto& [name, value] : env) setenv(name.c_str(), value.c_str(), 1);
      if (!freopen(RankLog(out, r).c_str(), "a", stderr)) _exit(126);
      execl("/proc/self/exe", "rank", static_cast<char*>(nullptr));
      _exit(127);
    }
    pids.push_back(pid);
  }
  std::vector<int> codes;
  for (pid_t p : pids) {
    int status = 0;
    waitpid(p, &status, 0);
    codes.push_back(WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  }
  return codes;
}

}  // namespace dfkd::testing

#endif  // DFKD_TESTS_TESTING_RANK_LAUNCHER_H_
