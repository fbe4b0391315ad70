// Applies the embedded schema migrations at start-up.
//
// One transaction: pg_advisory_xact_lock (so concurrent dfkd-schedulers on
// one database apply each migration once), CREATE TABLE IF NOT EXISTS
// schema_migrations, read the applied version, refuse a database newer than
// this binary, apply the missing migrations in order, record them, commit.
#ifndef DFKD_SERVER_STORE_MIGRATOR_H_
#define DFKD_SERVER_STORE_MIGRATOR_H_

#include <vector>

#include <pqxx/pqxx>

#include "server/store/migrations.h"

namespace dfkd::server {

// Brings the database to the highest version in `migrations` (sorted by
// version) and returns it. Throws StoreError(kFailedPrecondition) when the
// database is at a newer version than `migrations` knows; pqxx exceptions
// pass through (the caller converts them).
int Migrate(pqxx::connection& connection, const std::vector<Migration>& migrations);

// Highest version in `migrations` (0 when empty).
int HighestVersion(const std::vector<Migration>& migrations);

}  // namespace dfkd::server

#endif  // DFKD_SERVER_STORE_MIGRATOR_H_
