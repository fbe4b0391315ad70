// A fresh PostgreSQL database per test, dropped when the object dies.
//
// Connects to DFKD_TEST_POSTGRES_URL (a throw-away server whose role may
// create databases, as scripts/pg-ephemeral.sh gives), creates
// dfkd_t_<random> and exposes its URL. Without the variable the constructor
// throws, so the test fails with the message (never skips): integration
// tests must run under `scripts/pg-ephemeral.sh run -- <test binary>`.
#ifndef DFKD_TESTS_TESTING_PG_DATABASE_H_
#define DFKD_TESTS_TESTING_PG_DATABASE_H_

#include <cstdint>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>

#include <pqxx/pqxx>

namespace dfkd::testing {

class PgDatabase {
 public:
  PgDatabase() : server_url_(ServerUrl()), name_(RandomName()) {
    pqxx::connection connection(server_url_);
    pqxx::nontransaction txn(connection);
    txn.exec("CREATE DATABASE " + txn.quote_name(name_));
    url_ = WithDatabase(server_url_, name_);
  }
  ~PgDatabase() {
    try {
      pqxx::connection connection(server_url_);
      pqxx::nontransaction txn(connection);
      txn.exec("DROP DATABASE IF EXISTS " + txn.quote_name(name_) + " WITH (FORCE)");
    } catch (...) {
      // The server may be gone already; the ephemeral cluster is deleted anyway.
    }
  }
  PgDatabase(const PgDatabase&) = delete;
  PgDatabase& operator=(const PgDatabase&) = delete;

  const std::string& url() const { return url_; }
  const std::string& name() const { return name_; }

  // The server URL from the environment; throws with instructions when unset.
  static std::string ServerUrl() {
    const char* url = std::getenv("DFKD_TEST_POSTGRES_URL");
    if (url == nullptr || *url == '\0') {
      throw std::runtime_error(
          "DFKD_TEST_POSTGRES_URL is not set: this test needs a real, throw-away PostgreSQL. "
          "Run it as `scripts/pg-ephemeral.sh run -- <test binary>` (ctest does this).");
    }
    return url;
  }

 private:
  static std::string RandomName() {
    std::random_device device;
    std::mt19937_64 generator((static_cast<uint64_t>(device()) << 32) ^ device());
    static const char kDigits[] = "0123456789abcdef";
    std::string name = "dfkd_t_";
    for (int i = 0; i < 12; ++i) name.push_back(kDigits[generator() % 16]);
    return name;
  }

  // postgresql://user@host:port/db?opts -> same URL naming `database`; a
  // key=value conninfo string gets " dbname=<database>" appended.
  static std::string WithDatabase(const std::string& url, const std::string& database) {
    const size_t scheme = url.find("://");
    if (scheme == std::string::npos) return url + " dbname=" + database;
    const size_t query = url.find('?', scheme + 3);
    const std::string base = url.substr(0, query);
    const std::string options = query == std::string::npos ? "" : url.substr(query);
    const size_t slash = base.find('/', scheme + 3);
    const std::string authority = slash == std::string::npos ? base : base.substr(0, slash);
    return authority + "/" + database + options;
  }

  std::string server_url_;
  std::string name_;
  std::string url_;
};

}  // namespace dfkd::testing

#endif  // DFKD_TESTS_TESTING_PG_DATABASE_H_
