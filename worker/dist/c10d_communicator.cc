#include "worker/dist/c10d_communicator.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

#include <optional>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef DFKD_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "worker/dist/torch_compat.h"

namespace dfkd::worker {
namespace {

using compat::C10dBackend;
using compat::C10dWork;

// Any c10d backend. With `staging` set (NCCL), tensors not on that device
// take part through a copy there, written back once the collective is done.
class C10dCommunicator final : public Communicator {
 public:
  C10dCommunicator(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<C10dBackend> pg,
                   int64_t rank, int64_t size, std::optional<torch::Device> staging)
      : store_(std::move(store)), pg_(std::move(pg)), rank_(rank), size_(size),
        staging_(staging) {}
  int64_t rank() const override { return rank_; }
  int64_t size() const override { return size_; }
  void AllReduceSum(std::vector<torch::Tensor>& tensors) override {
    AllReduceSumAsync(tensors)->Wait();
  }
  std::unique_ptr<PendingCollective> AllReduceSumAsync(
      std::vector<torch::Tensor>& tensors) override {
    // One collective per tensor: Gloo sums a vector of inputs together.
    auto pending = std::make_unique<Pending>(this);
    for (auto& t : tensors) {
      std::vector<torch::Tensor> one{Staged(t)};
      pending->Add(pg_->allreduce(one), t, one[0]);
    }
    return pending;
  }
  void Broadcast(std::vector<torch::Tensor>& tensors, int64_t root) override {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    for (auto& t : tensors) {
      std::vector<torch::Tensor> one{Staged(t)};
      Wait(pg_->broadcast(one, o), "broadcast");
      if (!one[0].is_same(t)) t.copy_(one[0]);
    }
  }
  void Barrier() override {
    if (staging_) {
      // NCCL's barrier guesses the GPU from the rank; a one-element
      // all-reduce on this rank's GPU says the same without guessing.
      std::vector<torch::Tensor> one{torch::zeros({1}, torch::TensorOptions(*staging_))};
      Wait(pg_->allreduce(one), "barrier");
      one[0].cpu();  // waits for the GPU too
      return;
    }
    Wait(pg_->barrier(), "barrier");
  }

 private:
  class Pending final : public PendingCollective {
   public:
    explicit Pending(C10dCommunicator* owner) : owner_(owner) {}
    void Add(c10::intrusive_ptr<C10dWork> work, torch::Tensor target, torch::Tensor staged) {
      works_.push_back(std::move(work));
      targets_.push_back(std::move(target));
      staged_.push_back(std::move(staged));
    }
    void Wait() override {
      for (size_t i = 0; i < works_.size(); ++i) {
        owner_->Wait(works_[i], "all-reduce");
        if (!staged_[i].is_same(targets_[i])) targets_[i].copy_(staged_[i]);
      }
    }

   private:
    C10dCommunicator* owner_;
    std::vector<c10::intrusive_ptr<C10dWork>> works_;
    std::vector<torch::Tensor> targets_, staged_;
  };

  torch::Tensor Staged(const torch::Tensor& t) const {
    if (!staging_ || t.device() == *staging_) return t;
    return t.to(*staging_);
  }

  void Wait(const c10::intrusive_ptr<C10dWork>& work, const char* what) {
    try {
      work->wait();
    } catch (const std::exception& e) {
      throw std::runtime_error("rank " + std::to_string(rank_) + " of " +
                               std::to_string(size_) + ": " + what +
                               " failed (a peer rank died or timed out): " + e.what());
    }
  }
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<C10dBackend> pg_;
  int64_t rank_, size_;
  std::optional<torch::Device> staging_;
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

namespace {

c10::intrusive_ptr<c10d::Store> Rendezvous(const RendezvousOptions& r) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(r.port);
  so.isServer = r.rank == 0;
  so.numWorkers = static_cast<int>(r.world_size);
  so.timeout = r.timeout;
  try {
    return c10::make_intrusive<c10d::TCPStore>(r.master_addr, so);
  } catch (const std::exception& e) {
    throw std::runtime_error("rank " + std::to_string(r.rank) + ": rendezvous at " +
                             r.master_addr + ":" + std::to_string(r.port) +
                             " failed: " + e.what());
  }
}

}  // namespace

std::unique_ptr<Communicator> MakeGlooCommunicator(const RendezvousOptions& r) {
  c10::intrusive_ptr<c10d::Store> store = Rendezvous(r);
  auto opts = c10d::ProcessGroupGloo::Options::create(r.timeout);
  const bool loopback = r.master_addr == "localhost" || r.master_addr.rfind("127.", 0) == 0;
  const std::string local = !r.local_addr.empty() ? r.local_addr : loopback ? "127.0.0.1" : "";
  opts->devices.push_back(local.empty()
                              ? c10d::ProcessGroupGloo::createDefaultDevice()
                              : c10d::ProcessGroupGloo::createDeviceForHostname(local));
  auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, static_cast<int>(r.rank),
                                                        static_cast<int>(r.world_size), opts);
  return std::make_unique<C10dCommunicator>(store, pg, r.rank, r.world_size, std::nullopt);
}

bool NcclCompiledIn() {
#ifdef DFKD_WITH_NCCL
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Communicator> MakeCommunicator(const RendezvousOptions& r,
                                               const std::string& backend,
                                               const torch::Device& device) {
  if (backend == "gloo") return MakeGlooCommunicator(r);
  if (backend != "nccl") {
    throw std::invalid_argument("dist.backend: '" + backend + "' is not one of gloo, nccl");
  }
  if (!device.is_cuda()) {
    throw std::invalid_argument("dist.backend: nccl needs runtime.device cuda");
  }
#ifdef DFKD_WITH_NCCL
  c10::intrusive_ptr<c10d::Store> store = Rendezvous(r);
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = r.timeout;
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, static_cast<int>(r.rank),
                                                        static_cast<int>(r.world_size), opts);
  return std::make_unique<C10dCommunicator>(store, pg, r.rank, r.world_size, device);
#else
  throw std::invalid_argument(
      "dist.backend: nccl is not available in this build (configure with "
      "-DDFKD_ENABLE_CUDA=ON against a CUDA LibTorch; tests/gpu/run.sh does)");
#endif
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
