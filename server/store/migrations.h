// The schema migrations, embedded into the binary at build time from
// migrations/NNNN_name.sql (see server/CMakeLists.txt), sorted by version.
#ifndef DFKD_SERVER_STORE_MIGRATIONS_H_
#define DFKD_SERVER_STORE_MIGRATIONS_H_

#include <string>
#include <vector>

namespace dfkd::server {

struct Migration {
  int version = 0;        // NNNN
  std::string name;       // file name without extension
  std::string sql;
};

const std::vector<Migration>& EmbeddedMigrations();

}  // namespace dfkd::server

#endif  // DFKD_SERVER_STORE_MIGRATIONS_H_
