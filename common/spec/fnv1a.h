// FNV-1a 64 of a string as 16 hex digits: the one content hash of dfkd's
// identities (job spec hash, campaign run identity, local-cluster paths).
// Not cryptographic; stable across platforms and versions.
#ifndef DFKD_COMMON_SPEC_FNV1A_H_
#define DFKD_COMMON_SPEC_FNV1A_H_

#include <cstdint>
#include <cstdio>
#include <string>

namespace dfkd::common {

inline std::string Fnv1a64Hex(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace dfkd::common

#endif  // DFKD_COMMON_SPEC_FNV1A_H_
