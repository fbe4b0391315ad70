// The class-sharded bank across real ranks (c10d Gloo on loopback; this
// binary re-executes itself as each rank): each rank owns a contiguous share
// of the classes and only their generators, the student stays identical on
// every rank, each rank checkpoints its own shard, and a run resumed with the
// same world size continues exactly as an uninterrupted one. A resume with
// another world size is refused (a missing shard is named by LoadShard).

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "tests/testing/rank_launcher.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_task.h"
#include "worker/dist/c10d_communicator.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/distill_source.h"
#include "worker/engine/method_factory.h"
#include "worker/engine/trainer.h"
#include "worker/methods/class_bank_method.h"
#include "worker/models/model_zoo.h"

namespace dfkd::worker {
namespace {

constexpr int64_t kClasses = 4;

common::JobSpec Spec() {
  common::JobSpec s;
  s.kind = common::JobKind::kDistill;
  s.seed = 2;
  s.train.epochs = 2;
  s.train.batch_size = 8;  // global: 4 per rank at world size 2
  s.train.checkpoint_every_steps = 1000;
  s.distill.method = "class_bank";
  s.distill.steps_per_epoch = 5;
  s.distill.kd_steps = 3;
  common::ClassBankSpec& b = s.distill.class_bank;
  b.nz = 8;
  b.ngf = 4;
  b.g_steps = 2;
  b.images_per_class = 4;
  return s;
}

Classifier Teacher() {
  torch::manual_seed(1);
  Classifier t = MakeClassifier({"wrn", 16, 1, 1.0, 0.0, kClasses, 1, 8});
  t->eval();
  for (auto& p : t->parameters()) p.set_requires_grad(false);
  return t;
}

// One rank: distils with the spec's class bank, sharded by MakeMethod, and
// writes what it holds to $DFKD_OUT/rank<r>.{json,pt}.
int ChildMain() {
  at::set_num_threads(1);
  RendezvousOptions rdv = RendezvousFromEnv();
  rdv.timeout = std::chrono::seconds(20);
  std::unique_ptr<Communicator> comm = MakeGlooCommunicator(rdv);
  const std::string out = std::getenv("DFKD_OUT");
  const int64_t stop_at = std::atoll(std::getenv("DFKD_STOP_AT"));
  try {
    common::JobSpec spec = Spec();
    JobData data = testing::TinyDistillTask(12);
    Classifier teacher = Teacher();
    torch::manual_seed(9 + comm->rank());  // different inits: rank 0's student must win
    Classifier student = MakeClassifier({"wrn", 16, 1, 1.0, 0.0, kClasses, 1, 8});
    torch::manual_seed(5);  // the bank's initial generators, as the job runner seeds them
    MethodDeps deps{teacher, student, data.image_shape, data.num_classes, data.norm, 2};
    DistillSource source(spec, teacher, student,
                         MakeMethod(spec, deps, nullptr, comm->rank(), comm->size()), *comm);
    RunControl control;
    control.quiet = true;
    control.stop_at_step = stop_at;
    RunOutcome outcome = Trainer(spec, student, data, *comm, source, out + "/run").Run(control);
    auto& bank = dynamic_cast<ClassBankMethod&>(source.method()).bank();
    const BankMemory memory = bank.Memory();
    std::vector<torch::Tensor> state;
    for (const auto& p : student->parameters()) state.push_back(p.detach().clone());
    for (int64_t cls : bank.owned()) {
      state.push_back(bank.generator_units()->parameters(cls).clone());
      state.push_back(bank.pool(cls).images().clone());
    }
    const std::string r = std::to_string(comm->rank());
    torch::save(state, out + "/rank" + r + ".pt");
    std::ofstream(out + "/rank" + r + ".json")
        << nlohmann::json{{"finished", outcome.finished},
                          {"begin", bank.range().begin},
                          {"end", bank.range().end},
                          {"parameter_bytes", memory.parameter_bytes},
                          {"parameters_per_class", memory.parameters_per_class},
                          {"student_parameters",
                           static_cast<int64_t>(student->parameters().size())}}
               .dump();
  } catch (const std::exception& e) {
    std::cerr << "CHILD ERROR: " << e.what() << "\n";
    return 5;
  }
  return 0;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Starts `world` ranks writing to `out`; returns their exit codes.
std::vector<int> LaunchRanks(const std::string& out, int world, int64_t stop_at) {
  std::filesystem::create_directories(out);
  return testing::LaunchRankProcesses(out, world, {{"DFKD_STOP_AT", std::to_string(stop_at)}});
}

nlohmann::json Facts(const std::string& out, int rank) {
  return nlohmann::json::parse(Slurp(out + "/rank" + std::to_string(rank) + ".json"));
}

std::vector<torch::Tensor> State(const std::string& out, int rank) {
  std::vector<torch::Tensor> state;
  torch::load(state, out + "/rank" + std::to_string(rank) + ".pt");
  return state;
}

bool Same(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b, size_t n) {
  if (a.size() < n || b.size() < n) return false;
  for (size_t i = 0; i < n; ++i) {
    if (!torch::equal(a[i], b[i])) return false;
  }
  return true;
}

TEST(ShardedBankTest, EachRankOwnsItsShareAndAResumeContinuesIdentically) {
  testing::TempDir dir;
  const std::string whole = dir.File("whole"), split = dir.File("split");

  std::vector<int> codes = LaunchRanks(whole, 2, -1);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << Slurp(whole + "/log0.txt")
                                              << Slurp(whole + "/log1.txt");
  const nlohmann::json f0 = Facts(whole, 0), f1 = Facts(whole, 1);
  EXPECT_TRUE(f0["finished"].get<bool>());
  // Contiguous halves of the 4 classes, and only their generators.
  EXPECT_EQ(f0["begin"], 0);
  EXPECT_EQ(f0["end"], 2);
  EXPECT_EQ(f1["begin"], 2);
  EXPECT_EQ(f1["end"], 4);
  const int64_t per_class = f0["parameters_per_class"].get<int64_t>() * 4;
  EXPECT_EQ(f0["parameter_bytes"].get<int64_t>(), 2 * per_class);
  EXPECT_EQ(f1["parameter_bytes"].get<int64_t>(), 2 * per_class);
  const std::vector<torch::Tensor> w0 = State(whole, 0), w1 = State(whole, 1);
  const size_t student_tensors = f0["student_parameters"].get<size_t>();
  // The student is identical on both ranks; the banks differ (other classes).
  EXPECT_TRUE(Same(w0, w1, student_tensors));
  ASSERT_EQ(w0.size(), student_tensors + 4);
  EXPECT_FALSE(torch::equal(w0[student_tensors], w1[student_tensors]));

  // Stop after step 4 (mid-round 1), then resume with the same world size.
  codes = LaunchRanks(split, 2, 4);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << Slurp(split + "/log0.txt");
  EXPECT_FALSE(Facts(split, 0)["finished"].get<bool>());
  const std::string ckpt = split + "/run/checkpoint.pt";
  EXPECT_TRUE(std::filesystem::exists(ShardPath(ckpt, 0, 4)));
  EXPECT_TRUE(std::filesystem::exists(ShardPath(ckpt, 1, 4)));
  codes = LaunchRanks(split, 2, -1);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << Slurp(split + "/log0.txt")
                                              << Slurp(split + "/log1.txt");
  EXPECT_TRUE(Facts(split, 1)["finished"].get<bool>());
  for (int r = 0; r < 2; ++r) {
    const std::vector<torch::Tensor> a = State(whole, r), b = State(split, r);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_TRUE(Same(a, b, a.size())) << "rank " << r;
  }
  // Only the final step's shards are kept.
  EXPECT_FALSE(std::filesystem::exists(ShardPath(ckpt, 0, 4)));
  EXPECT_TRUE(std::filesystem::exists(ShardPath(ckpt, 0, 10)));
}

TEST(ShardedBankTest, AResumeWithAnotherWorldSizeIsRefused) {
  testing::TempDir dir;
  const std::string out = dir.File("run");
  ASSERT_EQ(LaunchRanks(out, 2, 4), (std::vector<int>{0, 0})) << Slurp(out + "/log0.txt");
  // One rank: the method state is in the two shards, not in the checkpoint.
  std::vector<int> codes = LaunchRanks(out, 1, -1);
  EXPECT_EQ(codes[0], 5);
  const std::string log = Slurp(out + "/log0.txt");
  EXPECT_NE(log.find(out + "/run/checkpoint.pt was written by a multi-rank run"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("resume it with the same world size"), std::string::npos) << log;
}

}  // namespace
}  // namespace dfkd::worker

int main(int argc, char** argv) {
  if (std::getenv("DFKD_DIST_CHILD") != nullptr) return dfkd::worker::ChildMain();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
