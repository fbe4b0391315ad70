#include "worker/daemon/events_tail.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace dfkd::worker::daemon {

std::vector<std::string> EventsTail::ReadNewLines() {
  std::vector<std::string> lines;
  int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return lines;
  struct stat st {};
  if (::fstat(fd, &st) == 0) {
    const uint64_t inode = static_cast<uint64_t>(st.st_ino);
    if (static_cast<uint64_t>(st.st_size) < offset_ || (inode_ != 0 && inode != inode_)) {
      offset_ = 0;  // replaced or truncated: start over
      partial_.clear();
    }
    inode_ = inode;
  }
  std::string chunk(64 * 1024, '\0');
  while (true) {
    ssize_t n = ::pread(fd, chunk.data(), chunk.size(), static_cast<off_t>(offset_));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    offset_ += static_cast<uint64_t>(n);
    partial_.append(chunk.data(), static_cast<size_t>(n));
  }
  ::close(fd);

  size_t start = 0;
  while (true) {
    size_t newline = partial_.find('\n', start);
    if (newline == std::string::npos) break;
    size_t end = newline;
    if (end > start && partial_[end - 1] == '\r') --end;
    lines.emplace_back(partial_, start, end - start);
    start = newline + 1;
  }
  partial_.erase(0, start);
  return lines;
}

std::optional<nlohmann::json> ParseEventLine(const std::string& line) {
  nlohmann::json value = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!value.is_object()) return std::nullopt;
  auto event = value.find("event");
  if (event == value.end() || !event->is_string()) return std::nullopt;
  return value;
}

std::optional<double> EventNumber(const nlohmann::json& event, const char* name) {
  auto it = event.find(name);
  if (it == event.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

}  // namespace dfkd::worker::daemon
