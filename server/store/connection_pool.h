// A fixed-size pool of libpqxx connections shared by the store's threads.
// Connections are opened lazily (at most `size`), handed out one per
// transaction through an RAII Lease and dropped (reopened on demand) when a
// caller marks one broken.
#ifndef DFKD_SERVER_STORE_CONNECTION_POOL_H_
#define DFKD_SERVER_STORE_CONNECTION_POOL_H_

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <pqxx/pqxx>

namespace dfkd::server {

class ConnectionPool {
 public:
  // Opens no connection yet; the first Acquire() does. `size` >= 1.
  ConnectionPool(std::string url, int size);
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // One connection for the lifetime of the lease; returned to the pool (or
  // dropped, if marked broken) by the destructor.
  class Lease {
   public:
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();
    pqxx::connection& get() { return *connection_; }
    // The connection failed: close it instead of returning it.
    void MarkBroken() { broken_ = true; }

   private:
    friend class ConnectionPool;
    Lease(ConnectionPool* pool, std::unique_ptr<pqxx::connection> connection)
        : pool_(pool), connection_(std::move(connection)) {}
    ConnectionPool* pool_;
    std::unique_ptr<pqxx::connection> connection_;
    bool broken_ = false;
  };

  // Blocks while all connections are in use. Throws pqxx::broken_connection
  // when a new connection cannot be opened.
  Lease Acquire();

 private:
  void Release(std::unique_ptr<pqxx::connection> connection, bool broken);

  const std::string url_;
  const int size_;
  std::mutex mu_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;
  int open_ = 0;   // connections idle or leased (or being opened)
};

}  // namespace dfkd::server

#endif  // DFKD_SERVER_STORE_CONNECTION_POOL_H_
