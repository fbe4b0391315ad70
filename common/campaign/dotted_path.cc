// Dotted field paths ("distill.dafl.lr_g"): setting them in a job spec's JSON
// and comparing them, for axes, variants and error attribution.
#include <utility>

#include "common/campaign/campaign.h"
#include "common/campaign/campaign_internal.h"

namespace dfkd::common {

// The path is split at every '.' (no escaping: job spec keys have no dots).
// Objects are created on the way; a segment that holds a non-object value is
// replaced by an object, and a non-object `object` becomes one.
void SetDottedPath(nlohmann::json& object, const std::string& dotted,
                   const nlohmann::json& value) {
  nlohmann::json* node = &object;
  size_t start = 0;
  while (true) {
    if (!node->is_object()) *node = nlohmann::json::object();
    const size_t dot = dotted.find('.', start);
    if (dot == std::string::npos) {
      (*node)[dotted.substr(start)] = value;
      return;
    }
    node = &(*node)[dotted.substr(start, dot - start)];
    start = dot + 1;
  }
}

namespace campaign_internal {

void ErrorList::Add(std::string path, std::string message) {
  if (full_) return;
  SpecError e{std::move(path), std::move(message)};
  if (!seen_.insert(e.ToString()).second) return;
  if (errors_->size() + 1 >= kMaxErrors) {
    errors_->push_back({"<campaign>", "too many errors; the first " +
                                          std::to_string(errors_->size()) +
                                          " are shown"});
    full_ = true;
    return;
  }
  errors_->push_back(std::move(e));
}

bool IsDottedPath(const std::string& path) {
  if (path.empty()) return false;
  bool segment_empty = true;
  for (char c : path) {
    if (c == '.') {
      if (segment_empty) return false;
      segment_empty = true;
      continue;
    }
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
    segment_empty = false;
  }
  return !segment_empty;
}

bool IsCampaignName(const std::string& name) {
  if (name.empty()) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool PathIsUnder(const std::string& path, const std::string& prefix) {
  if (path.size() < prefix.size() || path.compare(0, prefix.size(), prefix) != 0) return false;
  if (path.size() == prefix.size()) return true;
  const char next = path[prefix.size()];
  return next == '.' || next == '[';
}

bool PathsOverlap(const std::string& path, const std::string& other) {
  return PathIsUnder(path, other) || PathIsUnder(other, path);
}

std::string JoinPath(const std::string& prefix, const std::string& path) {
  if (path.empty() || path == "<root>") return prefix;
  return prefix + "." + path;
}

}  // namespace campaign_internal
}  // namespace dfkd::common
