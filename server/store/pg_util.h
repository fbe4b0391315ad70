// Helpers shared by the PostgreSQL store's source files: one transaction per
// call with retry on deadlock, the one pqxx-exception -> StoreError
// conversion, array literals for `unnest($1::bigint[])` parameters (libpqxx
// 6 has no container -> array conversion), and row -> api message readers.
#ifndef DFKD_SERVER_STORE_PG_UTIL_H_
#define DFKD_SERVER_STORE_PG_UTIL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <pqxx/pqxx>

#include "server/store/connection_pool.h"
#include "server/store/store.h"

namespace dfkd::server::pg {

// SQLSTATE raised by the runs trigger for an illegal state transition.
inline constexpr const char* kIllegalTransitionState = "DF001";

// Non-terminal run states, as an SQL list: "('blocked', 'queued', ...)".
inline constexpr const char* kLiveStatesSql = "('blocked', 'queued', 'leased', 'running')";

// Must be called inside a catch block: rethrows the current exception as a
// StoreError (StoreError itself passes through unchanged). `what` names the
// store operation and starts the message.
[[noreturn]] void RethrowAsStoreError(const std::string& what);

// Runs `fn(pqxx::work&)` in one transaction on a pooled connection and
// commits; returns what fn returns. A deadlock or serialization failure
// rolls back and runs fn again (fn must only build its result from the
// database, never mutate outside state); a connection found broken at BEGIN
// is replaced once. Every other error becomes a StoreError.
template <typename F>
auto RunTxn(ConnectionPool& pool, const std::string& what, F&& fn) {
  using R = decltype(fn(std::declval<pqxx::work&>()));
  constexpr int kMaxTries = 5;
  for (int tries = 1;; ++tries) {
    try {
      ConnectionPool::Lease connection = pool.Acquire();
      try {
        std::optional<pqxx::work> txn;
        try {
          txn.emplace(connection.get());
        } catch (const pqxx::broken_connection&) {
          connection.MarkBroken();
          if (tries < 2) continue;
          throw;
        }
        if constexpr (std::is_void_v<R>) {
          fn(*txn);
          txn->commit();
          return;
        } else {
          R result = fn(*txn);
          txn->commit();
          return result;
        }
      } catch (const pqxx::broken_connection&) {
        connection.MarkBroken();
        throw;
      }
    } catch (const pqxx::transaction_rollback&) {
      if (tries < kMaxTries) continue;
      RethrowAsStoreError(what);
    } catch (...) {
      RethrowAsStoreError(what);
    }
  }
}

// ---- array literals for $n::type[] parameters.
std::string IntArray(const std::vector<int64_t>& values);
// NULL elements where the optional is empty.
std::string IntArray(const std::vector<std::optional<int64_t>>& values);
std::string BoolArray(const std::vector<bool>& values);
std::string DoubleArray(const std::vector<double>& values);
std::string TextArray(const std::vector<std::string>& values);
std::string TextArray(const std::vector<std::optional<std::string>>& values);

// ---- run states.
const char* StateName(api::RunState state);          // "queued"; "" for UNSPECIFIED
api::RunState StateFromName(const std::string& name);

// `column AT TIME ZONE 'UTC'` formatted as RFC 3339 ("2024-05-01T12:00:00Z").
std::string Rfc3339(const std::string& column);

// Select lists matching the readers below. `r` is runs, `c` campaigns.
std::string RunColumns(bool with_spec);
std::string CampaignColumns();
// Shown campaign state: an active campaign without live runs is "finished".
std::string CampaignStateSql();
api::Run ReadRun(const pqxx::row& row, bool with_spec);
api::Campaign ReadCampaign(const pqxx::row& row);

// Page token (last id, decimal; "" = start) and page size (0 = 100, <= 1000).
int64_t ParsePageToken(const std::string& token);
int PageSize(int requested);

// Seconds to wait before retry number `attempt` + 1 (attempt >= 1).
double RetryBackoff(const StoreOptions& options, int attempt);

}  // namespace dfkd::server::pg

#endif  // DFKD_SERVER_STORE_PG_UTIL_H_
