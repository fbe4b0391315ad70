#include "worker/daemon/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace dfkd::worker::daemon {
namespace {

std::string ErrnoText(int err) { return std::strerror(err); }

// argv[0] as an executable path: as given when it has a '/', else searched on
// PATH (here, before fork: execvp is not async-signal-safe).
std::string ResolveProgram(const std::string& program) {
  if (program.empty()) throw std::runtime_error("child process: empty program name");
  if (program.find('/') != std::string::npos) {
    if (::access(program.c_str(), X_OK) != 0) {
      throw std::runtime_error(program + ": cannot execute: " + ErrnoText(errno));
    }
    return program;
  }
  const char* path_env = std::getenv("PATH");
  std::string path = path_env && *path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  throw std::runtime_error(program + ": not found on PATH");
}

// Writes a whole buffer; async-signal-safe (used in the forked child).
void WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data += n;
    size -= static_cast<size_t>(n);
  }
}

// Async-signal-safe: "<prefix>errno <n>\n" on fd 2, then _exit(127).
[[noreturn]] void ChildFail(const std::string& prefix, int err) {
  char digits[16];
  int len = 0;
  unsigned value = err < 0 ? 0u : static_cast<unsigned>(err);
  do {
    digits[len++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value > 0 && len < 15);
  char text[24] = "errno ";
  int pos = 6;
  while (len > 0) text[pos++] = digits[--len];
  text[pos++] = '\n';
  WriteAll(STDERR_FILENO, prefix.data(), prefix.size());
  WriteAll(STDERR_FILENO, text, static_cast<size_t>(pos));
  _exit(127);
}

int OpenPidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  long fd = ::syscall(SYS_pidfd_open, pid, 0);  // close-on-exec is always set
  return fd < 0 ? -1 : static_cast<int>(fd);
#else
  (void)pid;
  return -1;
#endif
}

}  // namespace

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 255;
}

std::unique_ptr<ChildProcess> ChildProcess::Start(const ChildSpec& spec) {
  if (spec.argv.empty()) throw std::runtime_error("child process: empty argv");
  // Everything the child needs is prepared here: between fork and exec only
  // async-signal-safe calls are allowed (this process has gRPC threads).
  const std::string program = ResolveProgram(spec.argv[0]);
  std::vector<std::string> args = spec.argv;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry = *e;
    std::string key = entry.substr(0, entry.find('='));
    bool overridden = false;
    for (const auto& kv : spec.env) overridden = overridden || kv.first == key;
    if (!overridden) env_strings.push_back(std::move(entry));
  }
  for (const auto& kv : spec.env) env_strings.push_back(kv.first + "=" + kv.second);
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  int log_fd = -1;
  if (!spec.log_file.empty()) {
    log_fd = ::open(spec.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      throw std::runtime_error(spec.log_file + ": cannot open log: " + ErrnoText(errno));
    }
  }
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const std::string exec_error = "dfkd-worker: cannot execute " + program + ": ";
  const std::string chdir_error = "dfkd-worker: cannot enter " + spec.working_dir + ": ";
  const char* working_dir = spec.working_dir.empty() ? nullptr : spec.working_dir.c_str();
  sigset_t empty_mask;
  sigemptyset(&empty_mask);
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  const pid_t parent = ::getpid();

  const pid_t pid = ::fork();
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) _exit(128 + SIGKILL);  // the daemon died before prctl
    for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD}) {
      ::sigaction(sig, &default_action, nullptr);
    }
    ::sigprocmask(SIG_SETMASK, &empty_mask, nullptr);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    if (log_fd >= 0) {
      ::dup2(log_fd, STDOUT_FILENO);
      ::dup2(log_fd, STDERR_FILENO);
    }
#ifdef SYS_close_range
    ::syscall(SYS_close_range, 3u, ~0u, 0u);  // ENOSYS on old kernels: harmless
#endif
    if (working_dir != nullptr && ::chdir(working_dir) != 0) ChildFail(chdir_error, errno);
    ::execve(program.c_str(), argv.data(), envp.data());
    ChildFail(exec_error, errno);
  }
  const int fork_errno = errno;
  if (log_fd >= 0) ::close(log_fd);
  if (null_fd >= 0) ::close(null_fd);
  if (pid < 0) throw std::runtime_error("fork: " + ErrnoText(fork_errno));
  ::setpgid(pid, pid);  // also here, so Terminate right after Start reaches the group
  return std::unique_ptr<ChildProcess>(new ChildProcess(pid, OpenPidfd(pid)));
}

ChildProcess::~ChildProcess() {
  if (!Poll()) {
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (pidfd_ >= 0) ::close(pidfd_);
}

bool ChildProcess::Terminate(int sig) {
  std::lock_guard<std::mutex> lock(mu_);
  if (exit_code_) return false;
  if (::kill(-pid_, sig) != 0) ::kill(pid_, sig);
  return true;
}

std::optional<int> ChildProcess::Poll() {
  std::lock_guard<std::mutex> lock(mu_);
  if (exit_code_) return exit_code_;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exit_code_ = DecodeWaitStatus(status);
  } else if (r < 0 && errno == ECHILD) {
    exit_code_ = 255;  // reaped elsewhere (SIGCHLD ignored?): the code is lost
  }
  return exit_code_;
}

std::optional<int> ChildProcess::WaitFor(std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline = Clock::now() + timeout;
  while (true) {
    if (std::optional<int> code = Poll()) return code;
    const Clock::time_point now = Clock::now();
    if (now >= deadline) return std::nullopt;
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
    if (pidfd_ >= 0) {
      struct pollfd p {};
      p.fd = pidfd_;
      p.events = POLLIN;
      int wait_ms = static_cast<int>(std::min<long long>(left.count(), INT_MAX));
      int r = ::poll(&p, 1, wait_ms);
      if (r > 0 || (r < 0 && errno != EINTR)) {
        // Exited (Poll reaps it next), or poll failed: never spin.
        if (!Poll()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    } else {
      std::this_thread::sleep_for(std::min(left, std::chrono::milliseconds(10)));
    }
  }
}

int ChildProcess::Wait() {
  while (true) {
    if (std::optional<int> code = WaitFor(std::chrono::hours(1))) return *code;
  }
}

}  // namespace dfkd::worker::daemon
