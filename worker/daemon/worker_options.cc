#include "worker/daemon/worker_options.h"

#include <limits.h>
#include <unistd.h>

#include <filesystem>
#include <system_error>

namespace dfkd::worker::daemon {

std::string HostName() {
  char buffer[HOST_NAME_MAX + 1] = {};
  if (gethostname(buffer, sizeof buffer - 1) != 0 || buffer[0] == '\0') return "localhost";
  return buffer;
}

std::string DefaultWorkerName() {
  return HostName() + ":" + std::to_string(static_cast<long long>(getpid()));
}

std::string DefaultDfkdTrainPath() {
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec || self.empty()) return "dfkd-train";
  return (self.parent_path() / "dfkd-train").string();
}

}  // namespace dfkd::worker::daemon
