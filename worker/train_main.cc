// dfkd-train: runs one job spec with the engine alone (no server, no
// database). Flags -> RunControl -> RunJob; see worker/README.md.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>

#include "common/spec/job_spec.h"
#include "worker/engine/job_runner.h"
#include "worker/dist/c10d_communicator.h"
#include "worker/engine/device.h"
#include "worker/engine/runtime.h"

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitBadSpec = 2;
constexpr int kExitStopped = 3;
constexpr int kExitDataError = 4;

std::atomic<int> g_forward_signal{0};
void OnLauncherSignal(int sig) { g_forward_signal.store(sig); }

// torchrun-like: starts `nproc` copies of this binary (same arguments minus
// --nproc) as ranks 0..nproc-1 on this machine, rendezvous on a free port of
// 127.0.0.1, splits the cores between them unless --threads was given,
// forwards SIGINT/SIGTERM, and stops the others as soon as one rank fails.
int Launch(int nproc, int argc, char** argv, bool threads_given) {
  const int port = dfkd::worker::FindFreePort();
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--nproc") {
      ++i;
      continue;
    }
    if (a.rfind("--nproc=", 0) == 0) continue;
    args.push_back(a);
  }
  if (!threads_given) {
    unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    args.push_back("--threads");
    args.push_back(std::to_string(std::max(1u, cores / static_cast<unsigned>(nproc))));
  }
  std::signal(SIGINT, OnLauncherSignal);
  std::signal(SIGTERM, OnLauncherSignal);
  std::vector<pid_t> pids;
  for (int r = 0; r < nproc; ++r) {
    pid_t pid = fork();
    if (pid == 0) {
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      std::vector<char*> cargv{argv[0]};
      for (auto& a : args) cargv.push_back(a.data());
      cargv.push_back(nullptr);
      execv("/proc/self/exe", cargv.data());
      _exit(127);
    }
    pids.push_back(pid);
  }
  int result = kExitOk;
  size_t alive = pids.size();
  bool forwarded = false;
  while (alive > 0) {
    int status = 0;
    pid_t done = waitpid(-1, &status, 0);
    if (done < 0) {
      if (errno == EINTR) {
        if (g_forward_signal.load() != 0 && !forwarded) {
          for (pid_t p : pids) kill(p, g_forward_signal.load());
          forwarded = true;
        }
        continue;
      }
      break;
    }
    --alive;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code != kExitOk && result == kExitOk) {
      result = code;
      if (code != kExitStopped) {
        std::cerr << "dfkd-train: a rank exited with code " << code
                  << "; stopping the others\n";
        for (pid_t p : pids) kill(p, SIGKILL);
      }
    }
  }
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "dfkd-train: run one dfkd job spec (train_teacher, train_student_scratch,\n"
      "distill with or without KDCI) on this machine, with no scheduler or database.\n\n"
      "Writes OUT/checkpoint.pt (resume point), OUT/model.pt (final weights),\n"
      "OUT/metrics.jsonl (one line per evaluation) and OUT/result.json.\n"
      "Running the same command again resumes from the checkpoint; Ctrl-C or\n"
      "SIGTERM writes a checkpoint and exits with code 3.\n\n"
      "Exit codes: 0 finished, 1 training failed, 2 bad spec or flags,\n"
      "3 stopped (resumable), 4 data file missing or corrupt.",
      "dfkd-train"};
  std::string spec_path, out_dir;
  int64_t threads = -1, max_steps = -1;
  bool fresh = false, validate_only = false, quiet = false, print_spec = false;
  int nproc = 1;
  app.add_option("spec", spec_path, "job spec JSON file (see configs/)")->required();
  app.add_option("-o,--out", out_dir,
                 "output folder (default: runs/<spec file name>)");
  app.add_option("-t,--threads", threads,
                 "LibTorch threads (default: runtime.threads of the spec, 0 = one per core)");
  app.add_option("--max-steps", max_steps,
                 "override train.max_steps (stop after this many steps)");
  app.add_flag("--fresh", fresh, "ignore an existing checkpoint in OUT and start over");
  app.add_flag("--validate", validate_only, "check the spec and exit");
  app.add_flag("--print-spec", print_spec,
               "print the spec with every default filled in and exit");
  app.add_flag("-q,--quiet", quiet, "no progress output");
  std::string events_path;
  app.add_option("--events", events_path,
                 "append machine-readable progress, evaluations and checkpoints to this\n"
                 "file as JSON lines (used by dfkd-worker)");
  app.add_option("--nproc", nproc,
                 "start this many local ranks (data-parallel, Gloo); across machines set\n"
                 "MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE instead, as with torchrun")
      ->check(CLI::Range(1, 1024));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitBadSpec;
  }

  dfkd::common::SpecParseResult parsed = dfkd::common::LoadJobSpecFile(spec_path);
  if (!parsed.ok()) {
    std::cerr << "dfkd-train: invalid spec " << spec_path << ":\n" << parsed.ErrorText();
    return kExitBadSpec;
  }
  dfkd::common::JobSpec spec = *parsed.spec;
  if (max_steps >= 0) spec.train.max_steps = max_steps;
  if (print_spec) {
    std::cout << dfkd::common::ToJson(spec).dump(2) << "\n";
    return kExitOk;
  }
  if (validate_only) {
    std::cout << spec_path << ": ok (spec " << dfkd::common::CanonicalHash(spec) << ")\n";
    return kExitOk;
  }
  // --nproc wins; otherwise a spec with dist.world_size > 1 started by hand
  // (no RANK in the environment) launches its ranks here.
  const bool in_group = std::getenv("RANK") != nullptr;
  if (app.count("--nproc") == 0 && !in_group && spec.dist.world_size > 1) {
    nproc = static_cast<int>(spec.dist.world_size);
  }
  // A device that is not here is a bad spec (exit 2), found before any rank
  // starts: with N local ranks on cuda, rank N-1 needs GPU N-1.
  // In a rank (or alone) this is the device it trains on.
  torch::Device device(torch::kCPU);
  try {
    const int64_t local_rank =
        nproc > 1 && !in_group ? nproc - 1 : dfkd::worker::LocalRankFromEnv();
    device = dfkd::worker::ResolveDevice(spec.runtime.device, local_rank);
    if (spec.dist.backend == "nccl" && !dfkd::worker::NcclCompiledIn()) {
      throw std::invalid_argument(
          "dist.backend: nccl is not available in this build (configure with "
          "-DDFKD_ENABLE_CUDA=ON against a CUDA LibTorch; tests/gpu/run.sh does)");
    }
  } catch (const std::invalid_argument& e) {
    std::cerr << "dfkd-train: " << e.what() << "\n";
    return kExitBadSpec;
  }
  if (nproc > 1 && !in_group) return Launch(nproc, argc, argv, threads >= 0);
  if (out_dir.empty()) {
    out_dir = (std::filesystem::path("runs") /
               std::filesystem::path(spec_path).stem()).string();
  }

  int64_t n = dfkd::worker::ConfigureRuntime(threads >= 0 ? threads : spec.runtime.threads);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  if (!quiet && std::getenv("RANK") == nullptr) {
    std::cerr << "dfkd-train: " << dfkd::common::JobKindName(spec.kind) << " "
              << spec.model.arch << " on " << spec.data.dataset << ", " << n
              << " threads, output " << out_dir << "\n";
  }

  std::unique_ptr<dfkd::worker::Communicator> comm;
  bool root = true;
  try {
    dfkd::worker::RendezvousOptions rdv = dfkd::worker::RendezvousFromEnv();
    if (std::getenv("DFKD_DIST_TIMEOUT_S") == nullptr) {
      rdv.timeout = std::chrono::seconds(spec.dist.timeout_seconds);
    }
    // The group's size is the spec's unless a launcher (--nproc, a gang)
    // said otherwise; record what actually ran.
    spec.dist.world_size = rdv.world_size;
    if (rdv.world_size > 1) {
      comm = dfkd::worker::MakeCommunicator(rdv, spec.dist.backend, device);
      root = comm->is_root();
    }
  } catch (const std::exception& e) {
    std::cerr << "dfkd-train: distributed setup failed: " << e.what() << "\n";
    return kExitFailed;
  }

  dfkd::worker::RunControl control;
  control.stop = &g_stop;
  control.fresh = fresh;
  control.quiet = quiet;
  control.events_path = events_path;
  dfkd::worker::JobStatus status = dfkd::worker::RunJob(spec, out_dir, control, comm.get());
  if (!root && status.code == dfkd::worker::JobCode::kOk) return kExitOk;
  switch (status.code) {
    case dfkd::worker::JobCode::kOk:
      std::cout << "test top-1 " << status.result["test_top1"].get<double>() << "% (best "
                << status.result["best_test_top1"].get<double>() << "%)";
      if (status.result.contains("test_top1_compensated")) {
        std::cout << ", compensated " << status.result["test_top1_compensated"].get<double>()
                  << "%";
      }
      if (status.result.contains("teacher_test_top1")) {
        std::cout << ", teacher " << status.result["teacher_test_top1"].get<double>() << "%";
      }
      std::cout << " in " << status.result["train_seconds"].get<double>() << " s; result "
                << out_dir << "/result.json\n";
      return kExitOk;
    case dfkd::worker::JobCode::kStopped:
      std::cerr << "dfkd-train: " << status.message << "; run the same command to resume\n";
      return kExitStopped;
    case dfkd::worker::JobCode::kDataError:
      std::cerr << "dfkd-train: data error: " << status.message << "\n";
      return kExitDataError;
    case dfkd::worker::JobCode::kFailed:
      break;
  }
  std::cerr << "dfkd-train: failed: " << status.message << "\n";
  return kExitFailed;
}
