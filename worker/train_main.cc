// dfkd-train: runs one job spec with the engine alone (no server, no
// database). Flags -> RunControl -> RunJob; see worker/README.md.
#include <csignal>
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>

#include "common/spec/job_spec.h"
#include "worker/engine/job_runner.h"
#include "worker/engine/runtime.h"

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitBadSpec = 2;
constexpr int kExitStopped = 3;
constexpr int kExitDataError = 4;

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
  if (out_dir.empty()) {
    out_dir = (std::filesystem::path("runs") /
               std::filesystem::path(spec_path).stem()).string();
  }

  int64_t n = dfkd::worker::ConfigureRuntime(threads >= 0 ? threads : spec.runtime.threads);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  if (!quiet) {
    std::cerr << "dfkd-train: " << dfkd::common::JobKindName(spec.kind) << " "
              << spec.model.arch << " on " << spec.data.dataset << ", " << n
              << " threads, output " << out_dir << "\n";
  }

  dfkd::worker::RunControl control;
  control.stop = &g_stop;
  control.fresh = fresh;
  control.quiet = quiet;
  dfkd::worker::JobStatus status = dfkd::worker::RunJob(spec, out_dir, control);
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
