// Process and file helpers for `dfkd up` / `down` / `status` (POSIX, Linux
// /proc). Nothing here knows about dfkd's daemons.
#ifndef DFKD_CLIENT_PROCESS_H_
#define DFKD_CLIENT_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

namespace dfkd::client {

// The folder of the running executable (readlink /proc/self/exe); "" if unknown.
std::string SelfDir();
// The first executable `name` on PATH; "" when there is none.
std::string FindOnPath(const std::string& name);
// An executable: the path in env var `env_override` when set, else `name` next
// to the running `dfkd`, else on PATH. "" when not found.
std::string FindExecutable(const std::string& name, const char* env_override);

struct CommandResult {
  int exit_code = -1;   // 128 + signal when killed; 127 when it could not start
  std::string out;      // stdout
  std::string err;      // stderr
};
// Runs argv (argv[0] looked up on PATH) in / with stdin from /dev/null and
// waits (pass absolute paths).
// Output goes through unlinked temporary files, not pipes, so a daemon that
// the command leaves behind (pg_ctl start) cannot keep us waiting.
// Throws std::runtime_error when it cannot fork.
CommandResult RunCommand(const std::vector<std::string>& argv);

// Starts argv[0] (a path) detached: its own session (setsid), stdin
// /dev/null, stdout and stderr to `log_path` (truncated), no other open file,
// default signal handling, in `working_dir` ("" = /). Returns the pid; throws
// std::runtime_error.
int SpawnDetached(const std::vector<std::string>& argv, const std::string& log_path,
                  const std::string& working_dir);

// True while `pid` exists and is not a zombie.
bool ProcessAlive(int pid);
// The basename of the process's argv[0] ("" when it is gone).
std::string ProcessName(int pid);
// For a child of this process: true once it has exited (and reaps it);
// `code` gets the exit code, 128 + signal, or -1 when unknown.
bool ChildExited(int pid, int* code);

// A TCP port of 127.0.0.1 that is free right now. Throws std::runtime_error.
int FreeTcpPort();
// True when a TCP connection to host:port (IPv4 numeric host) opens within
// `timeout_ms`.
bool TcpPortOpen(const std::string& host, int port, int timeout_ms);

// The file's contents; "" when it cannot be read.
std::string ReadFileText(const std::string& path);
// The last `lines` lines of `text`.
std::string TailLines(const std::string& text, size_t lines);
// Writes a temporary file with `mode` and renames it over `path`. Throws
// std::runtime_error.
void WriteFileAtomic(const std::string& path, const std::string& content, mode_t mode);
// `text` in single quotes for /bin/sh.
std::string ShellQuote(const std::string& text);

}  // namespace dfkd::client

#endif  // DFKD_CLIENT_PROCESS_H_
