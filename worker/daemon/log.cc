#include "worker/daemon/log.h"

#include <unistd.h>

#include <cerrno>

namespace dfkd::worker::daemon {

void LogLine(const std::string& message) {
  std::string line = "dfkd-worker: " + message + "\n";
  const char* data = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, data, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // stderr closed: nothing useful left to do
    data += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace dfkd::worker::daemon
