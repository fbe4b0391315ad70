// Who is calling: bearer tokens from the `authorization` metadata, checked
// against the store (hashed) and cached for a few seconds so a lease storm
// does not cost a token lookup per call. Which role may call which RPC is one
// table (kRpcRoles in auth.cc), tested against every role.
#ifndef DFKD_SERVER_API_AUTH_H_
#define DFKD_SERVER_API_AUTH_H_

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "server/store/store.h"

namespace dfkd::server {

// The roles allowed to call a method ("Campaigns.Submit"); empty if unknown.
std::vector<Role> RolesFor(const std::string& method);

class Authenticator {
 public:
  explicit Authenticator(Store* store, std::chrono::seconds cache_ttl = std::chrono::seconds(10))
      : store_(store), ttl_(cache_ttl) {}

  // UNAUTHENTICATED without a valid token, PERMISSION_DENIED when the role
  // may not call `method`.
  grpc::Status Check(const grpc::ServerContext& context, const std::string& method,
                     Principal* principal);

 private:
  std::optional<Principal> Lookup(const std::string& token);

  struct Entry {
    std::optional<Principal> principal;
    std::chrono::steady_clock::time_point expires;
  };
  Store* store_;
  std::chrono::seconds ttl_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> cache_;
};

}  // namespace dfkd::server

#endif  // DFKD_SERVER_API_AUTH_H_
