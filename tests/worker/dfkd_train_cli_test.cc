// dfkd-train as a user meets it: a bad spec is refused before any work with
// the field at fault, an instant spec runs to a result, a rerun resumes.
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/testing/temp_dir.h"

namespace {

struct ExecResult {
  int code;
  std::string output;
};

ExecResult Exec(const std::string& cmd) {
  ExecResult r{-1, ""};
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string Binary() { return std::string(getenv("DFKD_BINARY_DIR")) + "/bin/dfkd-train"; }
std::string Source(const std::string& rel) {
  return std::string(getenv("DFKD_SOURCE_DIR")) + "/" + rel;
}

bool HaveFashionMnist() {
  return std::filesystem::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz");
}

TEST(DfkdTrainCliTest, BadSpecIsRejectedWithFieldPath) {
  dfkd::testing::TempDir dir;
  std::ofstream(dir.File("bad.json"))
      << R"({"version": 1, "kind": "train_teacher", "model": {"arch": "wrn", "depth": 28},
            "train": {"batch_size": -3}})";
  ExecResult r = Exec(Binary() + " " + dir.File("bad.json") + " -o " + dir.File("out"));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("model.depth: must be one of 16, 40"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("train.batch_size: must be in [1, 65536]"), std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.File("out")));  // no work started
}

TEST(DfkdTrainCliTest, HelpTellsExitCodes) {
  ExecResult r = Exec(Binary() + " --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.output.find("3 stopped (resumable)"), std::string::npos) << r.output;
}

TEST(DfkdTrainCliTest, MissingDataFileIsNamed) {
  dfkd::testing::TempDir dir;
  std::ofstream(dir.File("s.json"))
      << R"({"version": 1, "kind": "train_teacher", "model": {"arch": "wrn"},
            "data": {"dataset": "fashion_mnist", "root": ")" << dir.File("nowhere") << R"("}})";
  ExecResult r = Exec(Binary() + " -q " + dir.File("s.json") + " -o " + dir.File("out"));
  EXPECT_EQ(r.code, 4) << r.output;
  EXPECT_NE(r.output.find(dir.File("nowhere")), std::string::npos) << r.output;
}

TEST(DfkdTrainCliTest, InstantSpecRunsThenResumesAsDone) {
  ASSERT_TRUE(HaveFashionMnist()) << "dataset-fashion-mnist is not installed";
  dfkd::testing::TempDir dir;
  std::string spec = Source("tests/configs/instant/teacher_fashion_mnist.json");
  ExecResult first = Exec(Binary() + " " + spec + " -o " + dir.File("out") +
                          " --max-steps 3 --events " + dir.File("events.jsonl"));
  ASSERT_EQ(first.code, 0) << first.output;
  // The events a supervising dfkd-worker follows: progress every step here
  // (1% of 3 steps rounds up to 1), the final evaluation, checkpoints.
  std::map<std::string, int> events;
  int64_t last_progress_step = 0;
  std::ifstream event_file(dir.File("events.jsonl"));
  for (std::string line; std::getline(event_file, line);) {
    nlohmann::json e = nlohmann::json::parse(line);
    ++events[e["event"].get<std::string>()];
    if (e["event"] == "progress") {
      EXPECT_EQ(e["total"], 3);
      last_progress_step = e["step"];
    }
    if (e["event"] == "checkpoint") {
      EXPECT_EQ(e["path"], dir.File("out") + "/checkpoint.pt");
    }
    if (e["event"] == "eval") {
      EXPECT_TRUE(e.contains("test_top1"));
    }
  }
  EXPECT_EQ(events["progress"], 3);
  EXPECT_EQ(last_progress_step, 3);
  EXPECT_GE(events["eval"], 1);
  EXPECT_GE(events["checkpoint"], 2);  // every 3 steps (checkpoint_every_steps) + final
  EXPECT_NE(first.output.find("test top-1"), std::string::npos) << first.output;
  // Plain progress lines when not a terminal.
  EXPECT_NE(first.output.find("100.0% 3/3"), std::string::npos) << first.output;
  std::ifstream in(dir.File("out/result.json"));
  nlohmann::json result = nlohmann::json::parse(in);
  EXPECT_EQ(result["steps"], 3);
  EXPECT_EQ(result["model"], "wrn-16-1");
  EXPECT_EQ(result["test_samples"], 256);
  // The same command again finds the finished checkpoint and does no work.
  ExecResult again = Exec(Binary() + " " + spec + " -o " + dir.File("out") + " --max-steps 3");
  ASSERT_EQ(again.code, 0) << again.output;
  EXPECT_NE(again.output.find("at step 3/3"), std::string::npos) << again.output;
  // Another budget is another experiment: its checkpoint is not reused.
  ExecResult other = Exec(Binary() + " -q " + spec + " -o " + dir.File("out"));
  EXPECT_EQ(other.code, 1) << other.output;
  EXPECT_NE(other.output.find("belongs to spec"), std::string::npos) << other.output;
}

// Starts dfkd-train with stdout+stderr on a pipe, reads until a line
// containing `wait_for` appears, sends `sig`, and returns the exit code and
// everything printed. Event-driven: no sleeps.
ExecResult RunUntilThenSignal(const std::vector<std::string>& args,
                              const std::string& wait_for, int sig) {
  int fds[2];
  if (pipe(fds) != 0) return {-1, "pipe failed"};
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  ExecResult r{-1, ""};
  bool signalled = false;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) {
    r.output.append(buf, n);
    if (!signalled && r.output.find(wait_for) != std::string::npos) {
      kill(pid, sig);
      signalled = true;
    }
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(DfkdTrainCliTest, SigtermCheckpointsAndTheSameCommandResumes) {
  ASSERT_TRUE(HaveFashionMnist()) << "dataset-fashion-mnist is not installed";
  dfkd::testing::TempDir dir;
  // 16 steps an epoch, 100 epochs: far longer than the test lets it run.
  std::ofstream(dir.File("long.json"))
      << R"({"version": 1, "kind": "train_teacher", "model": {"arch": "wrn"},
            "data": {"dataset": "fashion_mnist", "train_limit": 512, "test_limit": 64},
            "train": {"epochs": 100, "batch_size": 32, "checkpoint_every_steps": 100000}})";
  std::vector<std::string> cmd = {Binary(), dir.File("long.json"), "-o", dir.File("out")};
  ExecResult first = RunUntilThenSignal(cmd, "/1600", SIGTERM);
  ASSERT_EQ(first.code, 3) << first.output;
  EXPECT_NE(first.output.find("run the same command to resume"), std::string::npos)
      << first.output;
  EXPECT_TRUE(std::filesystem::exists(dir.File("out/checkpoint.pt")));
  EXPECT_FALSE(std::filesystem::exists(dir.File("out/result.json")));
  ExecResult second = RunUntilThenSignal(cmd, "resumed from", SIGINT);
  ASSERT_EQ(second.code, 3) << second.output;
  EXPECT_NE(second.output.find("resumed from " + dir.File("out/checkpoint.pt") + " at step"),
            std::string::npos)
      << second.output;
  EXPECT_EQ(second.output.find("at step 0/"), std::string::npos) << second.output;
}

TEST(DfkdTrainCliTest, DistillWithKdciFromATeacherRun) {
  ASSERT_TRUE(HaveFashionMnist()) << "dataset-fashion-mnist is not installed";
  dfkd::testing::TempDir dir;
  ExecResult teacher = Exec(Binary() + " -q " +
                            Source("tests/configs/instant/teacher_fashion_mnist.json") +
                            " -o " + dir.File("teacher"));
  ASSERT_EQ(teacher.code, 0) << teacher.output;
  std::ofstream(dir.File("kd.json"))
      << R"({"version": 1, "kind": "distill", "seed": 1,
            "data": {"dataset": "fashion_mnist", "test_limit": 200},
            "model": {"arch": "wrn", "depth": 16},
            "train": {"epochs": 1, "batch_size": 32, "optim": {"lr": 0.05}},
            "distill": {"teacher": {"weights": ")" << dir.File("teacher/model.pt") << R"(",
                                    "model": {"arch": "wrn", "depth": 16}},
                        "steps_per_epoch": 4, "kd_steps": 2, "synthesis_batch_size": 64},
            "kdci": {"enabled": true, "num_prototypes": 4}})";
  ExecResult kd = Exec(Binary() + " " + dir.File("kd.json") + " -o " + dir.File("kd"));
  ASSERT_EQ(kd.code, 0) << kd.output;
  EXPECT_NE(kd.output.find("compensated"), std::string::npos) << kd.output;
  std::ifstream in(dir.File("kd/result.json"));
  nlohmann::json r = nlohmann::json::parse(in);
  EXPECT_EQ(r["kind"], "distill");
  EXPECT_EQ(r["steps"], 4);
  EXPECT_EQ(r["method"]["kdci"]["dictionary_builds"], 2);  // one per synthesis round
  EXPECT_EQ(r["method"]["kdci"]["num_prototypes"], 4);
  EXPECT_TRUE(r.contains("teacher_test_top1"));
  EXPECT_TRUE(r.contains("test_top1_compensated"));
  // A teacher file that does not fit the declared architecture is named.
  std::ofstream(dir.File("bad.json"))
      << R"({"version": 1, "kind": "distill", "model": {"arch": "wrn"},
            "distill": {"teacher": {"weights": ")" << dir.File("teacher/model.pt") << R"(",
                                    "model": {"arch": "vgg", "depth": 11}}}})";
  ExecResult bad = Exec(Binary() + " -q " + dir.File("bad.json") + " -o " + dir.File("bad"));
  EXPECT_EQ(bad.code, 1) << bad.output;
  EXPECT_NE(bad.output.find("distill.teacher.weights: cannot load"), std::string::npos)
      << bad.output;
}

// Every method's instant config (tests/configs/instant/distill_*.json) runs
// from the command line with and without KDCI; the pool methods read a pool
// that `dfkd pool` builds from visp-images-data.
TEST(DfkdTrainCliTest, EveryMethodsInstantConfigRunsWithAndWithoutKdci) {
  ASSERT_TRUE(HaveFashionMnist()) << "dataset-fashion-mnist is not installed";
  dfkd::testing::TempDir dir;
  ExecResult teacher = Exec(Binary() + " -q " +
                            Source("tests/configs/instant/teacher_fashion_mnist.json") +
                            " -o " + dir.File("teacher"));
  ASSERT_EQ(teacher.code, 0) << teacher.output;
  ExecResult pool = Exec(std::string(getenv("DFKD_BINARY_DIR")) + "/bin/dfkd pool --shape 1x28x28" +
                         " --count 2000 --out " + dir.File("wild.pool"));
  ASSERT_EQ(pool.code, 0) << pool.output;
  for (const std::string method : {"noise", "dafl", "deepinv", "fast", "cmi", "class_bank",
                                   "mosaickd", "dfnd"}) {
    std::ifstream in(Source("tests/configs/instant/distill_" + method + ".json"));
    nlohmann::json spec = nlohmann::json::parse(in);
    spec["distill"]["teacher"]["weights"] = dir.File("teacher/model.pt");
    if (spec["distill"].contains("pool")) spec["distill"]["pool"]["path"] = dir.File("wild.pool");
    for (bool kdci : {false, true}) {
      const std::string name = method + (kdci ? "_kdci" : "");
      spec["kdci"]["enabled"] = kdci;
      std::ofstream(dir.File(name + ".json")) << spec.dump();
      ExecResult r = Exec(Binary() + " -q " + dir.File(name + ".json") + " -o " + dir.File(name));
      ASSERT_EQ(r.code, 0) << name << ":\n" << r.output;
      std::ifstream rin(dir.File(name + "/result.json"));
      nlohmann::json result = nlohmann::json::parse(rin);
      EXPECT_EQ(result["steps"], 4) << name;
      EXPECT_GE(result["test_top1"].get<double>(), 0.0) << name;
      EXPECT_EQ(result.contains("test_top1_compensated"), kdci) << name;
    }
  }
}

// A spec with dist.world_size 2 launches its own two ranks; the class bank
// then owns each rank's half of the classes.
TEST(DfkdTrainCliTest, DistWorldSizeInTheSpecLaunchesTheRanks) {
  ASSERT_TRUE(HaveFashionMnist()) << "dataset-fashion-mnist is not installed";
  dfkd::testing::TempDir dir;
  ExecResult teacher = Exec(Binary() + " -q " +
                            Source("tests/configs/instant/teacher_fashion_mnist.json") +
                            " -o " + dir.File("teacher"));
  ASSERT_EQ(teacher.code, 0) << teacher.output;
  std::ifstream in(Source("tests/configs/instant/distill_class_bank.json"));
  nlohmann::json spec = nlohmann::json::parse(in);
  spec["distill"]["teacher"]["weights"] = dir.File("teacher/model.pt");
  spec["dist"] = {{"world_size", 2}};
  std::ofstream(dir.File("bank.json")) << spec.dump();
  ExecResult r = Exec(Binary() + " -q " + dir.File("bank.json") + " -o " + dir.File("out"));
  ASSERT_EQ(r.code, 0) << r.output;
  std::ifstream rin(dir.File("out/result.json"));
  nlohmann::json result = nlohmann::json::parse(rin);
  EXPECT_EQ(result["world_size"], 2);
  EXPECT_EQ(result["method"]["class_begin"], 0);  // rank 0 writes the result
  EXPECT_EQ(result["method"]["class_end"], 5);
  EXPECT_TRUE(std::filesystem::exists(dir.File("out/checkpoint.pt.rank1.step4")));

  spec["dist"] = {{"world_size", 2}, {"backend", "nccl"}};
  std::ofstream(dir.File("nccl.json")) << spec.dump();
  r = Exec(Binary() + " -q " + dir.File("nccl.json") + " -o " + dir.File("nccl"));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("dist.backend: nccl needs runtime.device \"cuda\""), std::string::npos)
      << r.output;
  // Without a GPU (a CPU LibTorch here) a CUDA spec is refused before any
  // rank starts, not run on the CPU.
  spec["runtime"] = {{"device", "cuda"}};
  spec["dist"] = {{"world_size", 2}, {"backend", "gloo"}};
  std::ofstream(dir.File("cuda.json")) << spec.dump();
  r = Exec(Binary() + " -q " + dir.File("cuda.json") + " -o " + dir.File("cuda"));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("runtime.device: cuda, but this engine was built against a CPU "
                          "LibTorch"),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.File("cuda"))) << "no rank may have started";
}

TEST(DfkdTrainCliTest, NprocTwoTrainsDataParallel) {
  ASSERT_TRUE(HaveFashionMnist()) << "dataset-fashion-mnist is not installed";
  dfkd::testing::TempDir dir;
  ExecResult r = Exec(Binary() + " -q " +
                      Source("tests/configs/instant/teacher_fashion_mnist.json") + " -o " +
                      dir.File("out") + " --nproc 2");
  ASSERT_EQ(r.code, 0) << r.output;
  std::ifstream in(dir.File("out/result.json"));
  nlohmann::json result = nlohmann::json::parse(in);
  EXPECT_EQ(result["world_size"], 2);
  EXPECT_EQ(result["steps"], 6);
  EXPECT_GT(result["grad_sync_seconds"].get<double>(), 0.0);
}

}  // namespace
