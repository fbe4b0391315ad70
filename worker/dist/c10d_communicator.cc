#include "worker/dist/c10d_communicator.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace dfkd::worker {
namespace {

class GlooCommunicator final : public Communicator {
 public:
  GlooCommunicator(c10::intrusive_ptr<c10d::Store> store,
                   c10::intrusive_ptr<c10d::ProcessGroupGloo> pg, int64_t rank, int64_t size)
      : store_(std::move(store)), pg_(std::move(pg)), rank_(rank), size_(size) {}
  int64_t rank() const override { return rank_; }
  int64_t size() const override { return size_; }
  void AllReduceSum(std::vector<torch::Tensor>& tensors) override {
    for (auto& t : tensors) {
      std::vector<torch::Tensor> one{t};
      Wait(pg_->allreduce(one), "all-reduce");
    }
  }
  std::unique_ptr<PendingCollective> AllReduceSumAsync(
      std::vector<torch::Tensor>& tensors) override {
    // One collective per tensor: Gloo sums a vector of inputs together.
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (auto& t : tensors) {
      std::vector<torch::Tensor> one{t};
      works.push_back(pg_->allreduce(one));
    }
    return std::make_unique<GlooPending>(std::move(works), this);
  }
  void Broadcast(std::vector<torch::Tensor>& tensors, int64_t root) override {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    for (auto& t : tensors) {
      std::vector<torch::Tensor> one{t};
      Wait(pg_->broadcast(one, o), "broadcast");
    }
  }
  void Barrier() override { Wait(pg_->barrier(), "barrier"); }

 private:
  class GlooPending final : public PendingCollective {
   public:
    GlooPending(std::vector<c10::intrusive_ptr<c10d::Work>> works, GlooCommunicator* owner)
        : works_(std::move(works)), owner_(owner) {}
    void Wait() override {
      for (const auto& w : works_) owner_->Wait(w, "all-reduce");
    }

   private:
    std::vector<c10::intrusive_ptr<c10d::Work>> works_;
    GlooCommunicator* owner_;
  };

  void Wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
    try {
      work->wait();
    } catch (const std::exception& e) {
      throw std::runtime_error("rank " + std::to_string(rank_) + " of " +
                               std::to_string(size_) + ": " + what +
                               " failed (a peer rank died or timed out): " + e.what());
    }
  }
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
  int64_t rank_, size_;
};

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  long long x = std::strtoll(v, &end, 10);
  if (*end != '\0') {
    throw std::invalid_argument(std::string(name) + "='" + v + "' is not an integer");
  }
  return x;
}

}  // namespace

RendezvousOptions RendezvousFromEnv() {
  RendezvousOptions o;
  if (const char* a = std::getenv("MASTER_ADDR")) o.master_addr = a;
  o.port = static_cast<int>(EnvInt("MASTER_PORT", o.port));
  o.rank = EnvInt("RANK", 0);
  o.world_size = EnvInt("WORLD_SIZE", 1);
  o.timeout = std::chrono::seconds(EnvInt("DFKD_DIST_TIMEOUT_S", 60));
  if (const char* a = std::getenv("DFKD_GLOO_ADDR")) o.local_addr = a;
  if (o.world_size < 1) throw std::invalid_argument("WORLD_SIZE must be >= 1");
  if (o.rank < 0 || o.rank >= o.world_size) {
    throw std::invalid_argument("RANK must be in [0, WORLD_SIZE)");
  }
  return o;
}

std::unique_ptr<Communicator> MakeGlooCommunicator(const RendezvousOptions& r) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(r.port);
  so.isServer = r.rank == 0;
  so.numWorkers = static_cast<int>(r.world_size);
  so.timeout = r.timeout;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(r.master_addr, so);
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(r.rank) + ": rendezvous at " +
                             r.master_addr + ":" + std::to_string(r.port) +
                             " failed: " + e.what());
  }
  auto opts = c10d::ProcessGroupGloo::Options::create(r.timeout);
  const bool loopback = r.master_addr == "localhost" || r.master_addr.rfind("127.", 0) == 0;
  const std::string local = !r.local_addr.empty() ? r.local_addr : loopback ? "127.0.0.1" : "";
  opts->devices.push_back(local.empty()
                              ? c10d::ProcessGroupGloo::createDefaultDevice()
                              : c10d::ProcessGroupGloo::createDeviceForHostname(local));
  auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, static_cast<int>(r.rank),
                                                        static_cast<int>(r.world_size), opts);
  return std::make_unique<GlooCommunicator>(store, pg, r.rank, r.world_size);
}

int FindFreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  int port = -1;
  if (fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  if (fd >= 0) close(fd);
  if (port < 0) throw std::runtime_error("no free TCP port on 127.0.0.1");
  return port;
}

}  // namespace dfkd::worker
