// The C++ data-parallel step (BroadcastModule + AverageGradients over c10d
// Gloo) checked against PyTorch's own DistributedDataParallel: the same
// BatchNorm-free net, initial weights, data, per-rank halves and SGD, once as
// two C++ ranks (this binary re-executes itself as each rank,
// DFKD_DIST_CHILD=1, as in dist_test.cc) and once as two Python ranks
// (tests/worker/ddp_oracle.py under Debian's python3-torch). The final
// parameters must agree to a relative 1e-5.
//
// Everything crosses between the sides as raw little-endian files in a temp
// folder: init.bin (float32, named_parameters() order), x.bin (float32),
// y.bin (int64), meta.json; cpp.bin and python.bin are the results. On a
// failure, each side's log (rank<r>.log, python.log) is printed.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/testing/temp_dir.h"
#include "worker/dist/c10d_communicator.h"
#include "worker/dist/communicator.h"

extern char** environ;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the .bin files are raw host bytes");

namespace dfkd::worker {
namespace {

constexpr int64_t kWorld = 2;
constexpr int64_t kSteps = 6;
constexpr int64_t kGlobalBatch = 16;
constexpr int64_t kLocalBatch = kGlobalBatch / kWorld;
constexpr int64_t kChannels = 8;
constexpr int64_t kClasses = 4;
constexpr int64_t kSide = 8;
constexpr double kLr = 0.1;
constexpr double kMomentum = 0.9;
// conv.weight alone, then conv.bias + fc.weight, then fc.bias: three
// collectives, one of them over two tensors.
constexpr int64_t kBucketBytes = 64;

// conv(1 -> 8, 3x3) -> relu -> global average pool -> fc(8 -> 4); the Python
// side has the same parameter names in the same order.
struct NetImpl : torch::nn::Module {
  NetImpl()
      : conv(register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, kChannels, 3)))),
        fc(register_module("fc", torch::nn::Linear(kChannels, kClasses))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    return fc(torch::adaptive_avg_pool2d(torch::relu(conv(x)), {1, 1}).flatten(1));
  }
  torch::nn::Conv2d conv;
  torch::nn::Linear fc;
};
TORCH_MODULE(Net);

struct Data {
  torch::Tensor x;  // [kSteps * kGlobalBatch, 1, kSide, kSide] float32
  torch::Tensor y;  // [kSteps * kGlobalBatch] int64 in [0, kClasses)
};

void WriteRaw(const std::string& path, const torch::Tensor& t) {
  const torch::Tensor c = t.contiguous();
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  if (!out) throw std::runtime_error("cannot write " + path);
}

torch::Tensor ReadRaw(const std::string& path, torch::ScalarType type) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const int64_t n = static_cast<int64_t>(bytes.size());
  const int64_t item = static_cast<int64_t>(c10::elementSize(type));
  if (n % item != 0) throw std::runtime_error(path + ": size is not a whole number of items");
  torch::Tensor t = torch::empty({n / item}, torch::TensorOptions(type));
  std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

torch::Tensor FlatParams(torch::nn::Module& m) {
  std::vector<torch::Tensor> parts;
  for (const torch::Tensor& p : m.parameters()) parts.push_back(p.detach().reshape({-1}));
  return torch::cat(parts);
}

void LoadFlat(torch::nn::Module& m, const torch::Tensor& flat) {
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (torch::Tensor& p : m.parameters()) {
    TORCH_CHECK(offset + p.numel() <= flat.numel(), "init.bin is too short");
    p.copy_(flat.narrow(0, offset, p.numel()).view(p.sizes()));
    offset += p.numel();
  }
  TORCH_CHECK(offset == flat.numel(), "init.bin has ", flat.numel(), " floats, the net ", offset);
}

Data ReadData(const std::string& dir) {
  Data d;
  d.x = ReadRaw(dir + "/x.bin", torch::kFloat32).view({kSteps * kGlobalBatch, 1, kSide, kSide});
  d.y = ReadRaw(dir + "/y.bin", torch::kInt64);
  TORCH_CHECK(d.y.numel() == kSteps * kGlobalBatch, "y.bin has ", d.y.numel(), " labels");
  return d;
}

using GradSync = std::function<void(const std::vector<torch::Tensor>&)>;

// kSteps of SGD, each on rows [offset, offset + rows) of that step's global
// batch, with loss = loss_scale * mean cross-entropy; `sync` runs between
// backward and the optimizer step.
void Train(Net& net, const Data& d, int64_t offset, int64_t rows, double loss_scale,
           const GradSync& sync) {
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(kLr).momentum(kMomentum));
  for (int64_t step = 0; step < kSteps; ++step) {
    const int64_t begin = step * kGlobalBatch + offset;
    opt.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(
        net->forward(d.x.narrow(0, begin, rows)), d.y.narrow(0, begin, rows));
    (loss * loss_scale).backward();
    sync(net->parameters());
    opt.step();
  }
}

// One C++ rank. Rank 0 starts from init.bin, the others from their own random
// init, which BroadcastModule must overwrite. Writes the final parameters:
// rank 0 to cpp.bin, rank r > 0 to cpp_rank<r>.bin.
int ChildMain() {
  at::set_num_threads(1);
  const char* out = std::getenv("DFKD_OUT");
  if (out == nullptr) {
    std::cerr << "CHILD ERROR: DFKD_OUT is unset\n";
    return 4;
  }
  const std::string dir = out;
  try {
    RendezvousOptions rdv = RendezvousFromEnv();
    rdv.timeout = std::chrono::seconds(20);
    std::unique_ptr<Communicator> comm = MakeGlooCommunicator(rdv);
    const int64_t rank = comm->rank();
    torch::manual_seed(100 + rank);
    Net net;
    const torch::Tensor init = ReadRaw(dir + "/init.bin", torch::kFloat32);
    if (rank == 0) {
      LoadFlat(*net, init);
    }
    BroadcastModule(*comm, *net);
    if (!torch::equal(FlatParams(*net), init)) {
      std::cerr << "CHILD ERROR: rank " << rank
                << ": parameters differ from init.bin after BroadcastModule\n";
      return 6;
    }
    const Data data = ReadData(dir);
    Train(net, data, rank * kLocalBatch, kLocalBatch, 1.0,
          [&](const std::vector<torch::Tensor>& params) {
            AverageGradients(*comm, params, kBucketBytes);
          });
    const std::string name = rank == 0 ? "/cpp.bin" : "/cpp_rank" + std::to_string(rank) + ".bin";
    WriteRaw(dir + name, FlatParams(*net));
  } catch (const std::exception& e) {
    std::cerr << "CHILD ERROR: " << e.what() << "\n";
    return 5;
  }
  return 0;
}

// Starts `argv` with this environment plus `extra_env` ("KEY=value"), its
// stdout and stderr into `log`. Everything is built before fork, so the child
// only calls async-signal-safe functions (the parent runs LibTorch threads).
pid_t Spawn(std::vector<std::string> argv, const std::vector<std::string>& extra_env,
            const std::string& log) {
  std::vector<std::string> env = extra_env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    const bool overridden = std::any_of(extra_env.begin(), extra_env.end(),
                                        [&](const std::string& x) { return x.rfind(key + "=", 0) == 0; });
    if (!overridden) {
      env.push_back(kv);
    }
  }
  std::vector<char*> envp, args;
  for (std::string& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  for (std::string& s : argv) args.push_back(s.data());
  args.push_back(nullptr);
  const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot open " + log);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  close(fd);
  if (pid < 0) throw std::runtime_error("fork failed");
  return pid;
}

// The exit code; 128 + the signal when killed.
int WaitExit(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string ShowLog(const std::string& path) {
  return "\n----- " + path + " -----\n" + Slurp(path);
}

// The parent's half of the set-up: init.bin, x.bin, y.bin and meta.json.
Data WriteInputs(const testing::TempDir& dir) {
  torch::manual_seed(3);
  Net net;
  WriteRaw(dir.File("init.bin"), FlatParams(*net));
  torch::manual_seed(5);
  Data d;
  d.x = torch::randn({kSteps * kGlobalBatch, 1, kSide, kSide});
  d.y = torch::randint(0, kClasses, {kSteps * kGlobalBatch}, torch::kInt64);
  WriteRaw(dir.File("x.bin"), d.x);
  WriteRaw(dir.File("y.bin"), d.y);
  std::ostringstream names, shapes;
  const char* sep = "";
  for (const auto& kv : net->named_parameters()) {
    names << sep << '"' << kv.key() << '"';
    shapes << sep << '[';
    sep = ", ";
    for (int64_t i = 0; i < kv.value().dim(); ++i) {
      shapes << (i > 0 ? ", " : "") << kv.value().size(i);
    }
    shapes << ']';
  }
  std::ofstream meta(dir.File("meta.json"));
  meta << std::setprecision(17) << "{\"world_size\": " << kWorld << ", \"steps\": " << kSteps
       << ", \"global_batch\": " << kGlobalBatch << ", \"input_shape\": [1, " << kSide << ", "
       << kSide << "], \"channels\": " << kChannels << ", \"num_classes\": " << kClasses
       << ", \"lr\": " << kLr << ", \"momentum\": " << kMomentum << ", \"param_names\": ["
       << names.str() << "], \"param_shapes\": [" << shapes.str() << "]}\n";
  if (!meta) throw std::runtime_error("cannot write meta.json");
  return d;
}

// Starts the kWorld C++ ranks on a free loopback port and waits for them.
std::vector<int> RunCppRanks(const testing::TempDir& dir) {
  const int port = FindFreePort();
  std::vector<pid_t> pids;
  for (int64_t r = 0; r < kWorld; ++r) {
    pids.push_back(Spawn({"/proc/self/exe"},
                         {"DFKD_DIST_CHILD=1", "RANK=" + std::to_string(r),
                          "WORLD_SIZE=" + std::to_string(kWorld), "MASTER_ADDR=127.0.0.1",
                          "MASTER_PORT=" + std::to_string(port), "DFKD_OUT=" + dir.path()},
                         dir.File("rank" + std::to_string(r) + ".log")));
  }
  std::vector<int> codes;
  for (pid_t p : pids) codes.push_back(WaitExit(p));
  return codes;
}

// The same training in this process, as a single rank, from init.bin.
torch::Tensor TrainLocally(const torch::Tensor& init, const Data& d, int64_t rows,
                           double loss_scale) {
  Net net;
  LoadFlat(*net, init);
  Train(net, d, 0, rows, loss_scale, [](const std::vector<torch::Tensor>&) {});
  return FlatParams(*net);
}

double MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// "conv.weight: 1.2e-07, ..." for a failure message.
std::string PerParameterDiff(const torch::Tensor& a, const torch::Tensor& b) {
  Net net;
  std::ostringstream s;
  int64_t offset = 0;
  for (const auto& kv : net->named_parameters()) {
    const int64_t n = kv.value().numel();
    s << kv.key() << ": " << MaxAbsDiff(a.narrow(0, offset, n), b.narrow(0, offset, n)) << "; ";
    offset += n;
  }
  return s.str();
}

TEST(DdpOracleTest, GradientAveragingAgreesWithPytorchDistributedDataParallel) {
  const char* source = std::getenv("DFKD_SOURCE_DIR");
  ASSERT_NE(source, nullptr)
      << "run via ctest: DFKD_SOURCE_DIR must name the source tree (for tests/worker/ddp_oracle.py)";
  const std::string script = std::string(source) + "/tests/worker/ddp_oracle.py";
  ASSERT_TRUE(std::filesystem::exists(script)) << "missing " << script;
  const char* python_env = std::getenv("DFKD_ORACLE_PYTHON");
  const std::string python = python_env != nullptr ? python_env : "/usr/bin/python3";
  ASSERT_EQ(access(python.c_str(), X_OK), 0)
      << python << " is not executable: the oracle needs a Python with torch (Debian's "
      << "python3-torch at /usr/bin/python3, or set DFKD_ORACLE_PYTHON)";

  testing::TempDir dir;
  const Data data = WriteInputs(dir);
  const torch::Tensor init = ReadRaw(dir.File("init.bin"), torch::kFloat32);

  const std::vector<int> codes = RunCppRanks(dir);
  ASSERT_EQ(codes, (std::vector<int>{0, 0}))
      << "a C++ rank failed; their logs:" << ShowLog(dir.File("rank0.log"))
      << ShowLog(dir.File("rank1.log"));

  const int oracle_code = WaitExit(Spawn({python, script, dir.path()}, {}, dir.File("python.log")));
  ASSERT_EQ(oracle_code, 0) << "the Python DDP oracle (" << python << " " << script
                            << ") failed; its log:" << ShowLog(dir.File("python.log"));

  const torch::Tensor cpp = ReadRaw(dir.File("cpp.bin"), torch::kFloat32);
  const torch::Tensor cpp1 = ReadRaw(dir.File("cpp_rank1.bin"), torch::kFloat32);
  const torch::Tensor oracle = ReadRaw(dir.File("python.bin"), torch::kFloat32);
  ASSERT_EQ(cpp.numel(), init.numel());
  ASSERT_EQ(cpp1.numel(), init.numel());
  ASSERT_EQ(oracle.numel(), init.numel()) << "python.bin has another layout than init.bin";
  EXPECT_TRUE(torch::equal(cpp, cpp1)) << "the two C++ ranks ended with different parameters";

  const double tolerance = 1e-5 * std::max(1.0, oracle.abs().max().item<double>());
  EXPECT_LE(MaxAbsDiff(cpp, oracle), tolerance)
      << "C++ vs PyTorch DDP, max abs difference per parameter: " << PerParameterDiff(cpp, oracle)
      << ShowLog(dir.File("rank0.log")) << ShowLog(dir.File("python.log"));

  // Training moved the parameters (the comparison is not between two inits),
  // and the tolerance tells averaging apart from the likely mistakes: summed
  // gradients (= 2x the full-batch mean) and no exchange (rank 0's half only).
  EXPECT_GT(MaxAbsDiff(oracle, init), 1e-3);
  EXPECT_GT(MaxAbsDiff(oracle, TrainLocally(init, data, kGlobalBatch, kWorld)), 100 * tolerance);
  EXPECT_GT(MaxAbsDiff(oracle, TrainLocally(init, data, kLocalBatch, 1.0)), 100 * tolerance);
}

}  // namespace
}  // namespace dfkd::worker

int main(int argc, char** argv) {
  if (std::getenv("DFKD_DIST_CHILD") != nullptr) return dfkd::worker::ChildMain();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
