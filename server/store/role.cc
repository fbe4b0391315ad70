// Role names as stored in tokens.role and printed by the CLI.
#include "server/store/store.h"

namespace dfkd::server {

const char* RoleName(Role role) {
  switch (role) {
    case Role::kResearcher: return "researcher";
    case Role::kWorker: return "worker";
    case Role::kAdmin: return "admin";
  }
  return "researcher";
}

std::optional<Role> ParseRole(const std::string& name) {
  if (name == "researcher") return Role::kResearcher;
  if (name == "worker") return Role::kWorker;
  if (name == "admin") return Role::kAdmin;
  return std::nullopt;
}

}  // namespace dfkd::server
