#include "client/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace dfkd::client {
namespace {

std::string ErrnoText(const std::string& what) { return what + ": " + std::strerror(errno); }

std::vector<char*> ArgvPointers(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  return args;
}

std::string ReadAll(int fd) {
  std::string out;
  if (lseek(fd, 0, SEEK_SET) < 0) return out;
  char buf[8192];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

int TempFile() {
  const char* dir = std::getenv("TMPDIR");
  std::string tmpl = std::string(dir && *dir ? dir : "/tmp") + "/dfkd-cmd.XXXXXX";
  const int fd = mkostemp(tmpl.data(), O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(ErrnoText("cannot create a temporary file in " + tmpl));
  unlink(tmpl.c_str());
  return fd;
}

bool IsExecutableFile(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

}  // namespace

std::string SelfDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  std::string path(buf, static_cast<size_t>(n));
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

std::string FindOnPath(const std::string& name) {
  if (name.find('/') != std::string::npos) return IsExecutableFile(name) ? name : "";
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) dir = ".";
    const std::string candidate = dir + "/" + name;
    if (IsExecutableFile(candidate)) return candidate;
  }
  return "";
}

std::string FindExecutable(const std::string& name, const char* env_override) {
  if (env_override) {
    const char* value = std::getenv(env_override);
    if (value && *value) return IsExecutableFile(value) ? value : "";
  }
  const std::string self = SelfDir();
  if (!self.empty() && IsExecutableFile(self + "/" + name)) return self + "/" + name;
  return FindOnPath(name);
}

CommandResult RunCommand(const std::vector<std::string>& argv) {
  if (argv.empty()) throw std::runtime_error("RunCommand: empty command");
  const int out_fd = TempFile();
  const int err_fd = TempFile();
  const int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::vector<char*> args = ArgvPointers(argv);
  const pid_t pid = fork();
  if (pid == 0) {
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    // Tools run as another user (runuser -u postgres) may not be allowed into
    // our folder, and PostgreSQL's tools fail when they cannot read it.
    if (chdir("/") != 0) {
      // keep the current folder
    }
    execvp(args[0], args.data());
    _exit(127);
  }
  if (devnull >= 0) close(devnull);
  CommandResult result;
  if (pid < 0) {
    close(out_fd);
    close(err_fd);
    throw std::runtime_error(ErrnoText("cannot start " + argv[0]));
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      status = -1;
      break;
    }
  }
  if (status == -1) {
    result.exit_code = -1;
  } else if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.exit_code = 128 + WTERMSIG(status);
  }
  result.out = ReadAll(out_fd);
  result.err = ReadAll(err_fd);
  close(out_fd);
  close(err_fd);
  if (result.exit_code == 127 && result.err.empty()) {
    result.err = "cannot run " + argv[0] + " (not found or not executable)\n";
  }
  return result;
}

int SpawnDetached(const std::vector<std::string>& argv, const std::string& log_path,
                  const std::string& working_dir) {
  if (argv.empty()) throw std::runtime_error("SpawnDetached: empty command");
  const char* cwd = working_dir.empty() ? "/" : working_dir.c_str();
  const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error(ErrnoText("cannot open " + log_path));
  const int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::vector<char*> args = ArgvPointers(argv);
  long max_fd = sysconf(_SC_OPEN_MAX);
  if (max_fd < 0 || max_fd > 65536) max_fd = 65536;
  const pid_t pid = fork();
  if (pid == 0) {
    setsid();
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    for (int fd = 3; fd < max_fd; ++fd) close(fd);
    if (chdir(cwd) != 0) _exit(126);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    execv(args[0], args.data());
    _exit(127);
  }
  close(log_fd);
  if (devnull >= 0) close(devnull);
  if (pid < 0) throw std::runtime_error(ErrnoText("cannot start " + argv[0]));
  return pid;
}

bool ProcessAlive(int pid) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0 && errno != EPERM) return false;
  const std::string stat = ReadFileText("/proc/" + std::to_string(pid) + "/stat");
  const size_t paren = stat.rfind(')');
  if (paren != std::string::npos && paren + 2 < stat.size()) {
    const char state = stat[paren + 2];
    if (state == 'Z' || state == 'X') return false;
  }
  return true;
}

std::string ProcessName(int pid) {
  if (pid <= 0) return "";
  std::string cmdline = ReadFileText("/proc/" + std::to_string(pid) + "/cmdline");
  std::string argv0 = cmdline.substr(0, cmdline.find('\0'));
  if (argv0.empty()) {
    argv0 = ReadFileText("/proc/" + std::to_string(pid) + "/comm");
    while (!argv0.empty() && (argv0.back() == '\n' || argv0.back() == ' ')) argv0.pop_back();
  }
  const size_t slash = argv0.rfind('/');
  return slash == std::string::npos ? argv0 : argv0.substr(slash + 1);
}

bool ChildExited(int pid, int* code) {
  int status = 0;
  const pid_t r = waitpid(pid, &status, WNOHANG);
  if (r == 0) return false;
  if (r < 0) {
    if (errno == ECHILD) {
      if (code) *code = -1;
      return !ProcessAlive(pid);
    }
    return false;
  }
  if (code) {
    *code = WIFEXITED(status) ? WEXITSTATUS(status)
                              : (WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1);
  }
  return true;
}

int FreeTcpPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(ErrnoText("socket"));
  sockaddr_in addr {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string error = ErrnoText("cannot find a free port on 127.0.0.1");
    close(fd);
    throw std::runtime_error(error);
  }
  close(fd);
  return ntohs(addr.sin_port);
}

bool TcpPortOpen(const std::string& host, int port, int timeout_ms) {
  sockaddr_in addr {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (port <= 0 || port > 65535 || inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return false;
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  bool open = false;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    open = true;
  } else if (errno == EINPROGRESS) {
    pollfd p {};
    p.fd = fd;
    p.events = POLLOUT;
    if (poll(&p, 1, timeout_ms) == 1) {
      int error = 0;
      socklen_t len = sizeof error;
      open = getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error == 0;
    }
  }
  close(fd);
  return open;
}

std::string ReadFileText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string TailLines(const std::string& text, size_t lines) {
  if (text.empty() || lines == 0) return "";
  size_t end = text.size();
  if (text.back() == '\n') --end;
  size_t pos = end;
  size_t seen = 0;
  while (pos > 0) {
    if (text[pos - 1] == '\n' && ++seen == lines) break;
    --pos;
  }
  return text.substr(pos);
}

void WriteFileAtomic(const std::string& path, const std::string& content, mode_t mode) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) throw std::runtime_error(ErrnoText("cannot write " + tmp));
  fchmod(fd, mode);
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string error = ErrnoText("cannot write " + tmp);
      close(fd);
      unlink(tmp.c_str());
      throw std::runtime_error(error);
    }
    done += static_cast<size_t>(n);
  }
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string error = ErrnoText("cannot rename " + tmp + " to " + path);
    unlink(tmp.c_str());
    throw std::runtime_error(error);
  }
}

std::string ShellQuote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

}  // namespace dfkd::client
