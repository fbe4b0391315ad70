#include "server/store/migrator.h"

#include <string>

#include "server/store/store.h"

namespace dfkd::server {
namespace {

// Any constant shared by every dfkd-scheduler: "dfkd" in ASCII.
constexpr int64_t kMigrationLockKey = 0x64666b64;

}  // namespace

int HighestVersion(const std::vector<Migration>& migrations) {
  int highest = 0;
  for (const Migration& m : migrations) highest = m.version > highest ? m.version : highest;
  return highest;
}

int Migrate(pqxx::connection& connection, const std::vector<Migration>& migrations) {
  const int known = HighestVersion(migrations);
  pqxx::work txn(connection);
  txn.exec("SET LOCAL client_min_messages = warning");   // no "already exists" notices
  txn.exec_params("SELECT pg_advisory_xact_lock($1)", kMigrationLockKey);
  txn.exec(
      "CREATE TABLE IF NOT EXISTS schema_migrations ("
      "  version     integer PRIMARY KEY,"
      "  name        text NOT NULL,"
      "  applied_at  timestamptz NOT NULL DEFAULT now())");
  const int current = txn.exec1("SELECT coalesce(max(version), 0) FROM schema_migrations")[0]
                          .as<int>();
  if (current > known) {
    throw StoreError(StoreError::Code::kFailedPrecondition,
                     "database schema is at version " + std::to_string(current) +
                         " but this dfkd-scheduler knows only up to " + std::to_string(known) +
                         "; run a newer dfkd-scheduler");
  }
  for (const Migration& m : migrations) {
    if (m.version <= current) continue;
    txn.exec(m.sql, "migration " + m.name);
    txn.exec_params("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version,
                    m.name);
  }
  txn.commit();
  return known > current ? known : current;
}

}  // namespace dfkd::server
