// Follows dfkd-train's events file (JSON lines, appended; see README.md) as
// it grows: each call returns the complete lines added since the last one. A
// line still being written (no newline yet) is held back until it is whole.
#ifndef DFKD_WORKER_DAEMON_EVENTS_TAIL_H_
#define DFKD_WORKER_DAEMON_EVENTS_TAIL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace dfkd::worker::daemon {

class EventsTail {
 public:
  explicit EventsTail(std::string path) : path_(std::move(path)) {}

  // The complete lines appended since the previous call, without their '\n'
  // (a trailing '\r' is removed too). A file that does not exist yet gives no
  // lines. A file that was replaced (another inode) or truncated is read
  // again from its start.
  std::vector<std::string> ReadNewLines();

  const std::string& path() const { return path_; }
  // Bytes read so far, the held-back partial line included.
  uint64_t offset() const { return offset_; }

 private:
  std::string path_;
  uint64_t offset_ = 0;
  uint64_t inode_ = 0;  // of the file read last (0 = none yet)
  std::string partial_;
};

// One events line as a JSON object with a string "event" member; nullopt for
// anything else (blank lines, garbage, arrays, objects without "event").
std::optional<nlohmann::json> ParseEventLine(const std::string& line);

// A numeric member of an event, if present and a number.
std::optional<double> EventNumber(const nlohmann::json& event, const char* name);

}  // namespace dfkd::worker::daemon

#endif  // DFKD_WORKER_DAEMON_EVENTS_TAIL_H_
