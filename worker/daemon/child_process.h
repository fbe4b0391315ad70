// A supervised child process (dfkd-train, or /bin/sh in tests).
//
// The child runs in its own process group (Terminate signals the whole group,
// so a Ctrl-C at the daemon's terminal reaches it only through the daemon),
// with stdin from /dev/null and stdout + stderr appended to a log file. It gets
// PR_SET_PDEATHSIG = SIGKILL, so a daemon killed with SIGKILL takes its child
// down. Linux delivers that signal when the *thread* that forked exits: call
// Start from a thread that outlives the child (dfkd-worker's main loop does).
//
// The signal mask is emptied and SIGPIPE reset to its default in the child:
// dfkd-worker blocks SIGINT/SIGTERM for its sigwait thread and ignores
// SIGPIPE, and neither may leak into dfkd-train.
#ifndef DFKD_WORKER_DAEMON_CHILD_PROCESS_H_
#define DFKD_WORKER_DAEMON_CHILD_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace dfkd::worker::daemon {

struct ChildSpec {
  // argv[0] is the program: a path, or a name searched on PATH.
  std::vector<std::string> argv;
  // Added to (or replacing in) this process's environment.
  std::vector<std::pair<std::string, std::string>> env;
  // stdout and stderr are appended here (created 0644 if missing; its folder
  // must exist). "" = inherit this process's.
  std::string log_file;
  // "" = this process's working directory.
  std::string working_dir;
};

class ChildProcess {
 public:
  // Forks and executes. Throws std::runtime_error when the log cannot be
  // opened, the program is not found on PATH, or fork fails. An exec that
  // fails in the child writes the reason to the log and exits 127.
  static std::unique_ptr<ChildProcess> Start(const ChildSpec& spec);

  // A child still running is killed (SIGKILL to its group) and reaped.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }

  // Sends `sig` to the child's process group. False if the child has already
  // been reaped (nothing was sent). Thread-safe.
  bool Terminate(int sig);

  // Non-blocking: the exit code once the child has exited (128 + signal when
  // killed by a signal), nullopt while it runs. Thread-safe.
  std::optional<int> Poll();

  // Blocks until the child exits or `timeout` passes. Waits on a pidfd where
  // the kernel has them (Linux >= 5.3), else polls every 10 ms.
  std::optional<int> WaitFor(std::chrono::milliseconds timeout);

  // Blocks until the child exits; returns its exit code.
  int Wait();

 private:
  ChildProcess(pid_t pid, int pidfd) : pid_(pid), pidfd_(pidfd) {}

  const pid_t pid_;
  const int pidfd_;  // -1 without pidfd support
  std::mutex mu_;
  std::optional<int> exit_code_;  // set once reaped
};

// The exit code of a waitpid status: the exit status, or 128 + the signal.
int DecodeWaitStatus(int status);

}  // namespace dfkd::worker::daemon

#endif  // DFKD_WORKER_DAEMON_CHILD_PROCESS_H_
