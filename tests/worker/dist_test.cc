// Data-parallel training over c10d Gloo, with real processes: this binary
// re-executes itself as each rank (DFKD_DIST_CHILD=1), so no LibTorch state
// crosses a fork.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/testing/rank_launcher.h"
#include "tests/testing/temp_dir.h"
#include "worker/dist/c10d_communicator.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/supervised_source.h"
#include "worker/engine/trainer.h"
#include "worker/models/model_zoo.h"

namespace dfkd::worker {
namespace {

common::JobSpec Spec() {
  common::JobSpec s;
  s.seed = 7;
  s.model.arch = "wrn";
  s.train.epochs = 2;
  s.train.batch_size = 16;  // global: 8 per rank at world size 2
  s.train.eval_batch_size = 32;
  s.train.checkpoint_every_steps = 1000;
  s.train.optim.lr = 0.05;
  return s;
}

JobData Data() {
  torch::manual_seed(11);
  JobData d;
  torch::Tensor labels = torch::arange(64).remainder(4);
  torch::Tensor images = (torch::rand({64, 1, 8, 8}) * 60 +
                          labels.view({64, 1, 1, 1}).to(torch::kFloat32) * 40)
                             .to(torch::kUInt8);
  d.train = std::make_unique<TensorDataset>(images, labels, 4);
  d.test = std::make_unique<TensorDataset>(images.narrow(0, 0, 16), labels.narrow(0, 0, 16), 4);
  d.norm = {{0.3f}, {0.3f}};
  d.num_classes = 4;
  d.image_shape = {1, 8, 8};
  return d;
}

// A BatchNorm-free classifier: with no per-rank batch statistics, a 2-rank
// step over the halves of a batch equals a 1-rank step over the whole batch.
class PlainNetImpl : public ClassifierImpl {
 public:
  PlainNetImpl()
      : conv(register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 8, 3)))),
        fc(register_module("fc", torch::nn::Linear(8, 4))) {}
  ClassifierOutput ForwardWithTaps(const torch::Tensor& x, const TapRequest&) override {
    ClassifierOutput out;
    out.features = torch::adaptive_avg_pool2d(torch::relu(conv(x)), {1, 1}).flatten(1);
    out.logits = fc(out.features);
    return out;
  }
  torch::Tensor Classify(const torch::Tensor& f) override { return fc(f); }
  int64_t feature_dim() const override { return 8; }
  int64_t num_classes() const override { return 4; }
  torch::nn::Conv2d conv;
  torch::nn::Linear fc;
};
TORCH_MODULE(PlainNet);

Classifier MakeModel(const common::JobSpec& spec, const JobData& data) {
  if (std::getenv("DFKD_PLAIN_MODEL") != nullptr) return PlainNet().ptr();
  return MakeClassifier(ModelConfigFor(spec.model, data));
}

// Forwards to the real source; rank `die_rank` exits abruptly at `die_step`.
class DyingSource final : public StepSource {
 public:
  DyingSource(StepSource& inner, int64_t rank, int64_t die_rank, int64_t die_step)
      : inner_(inner), rank_(rank), die_rank_(die_rank), die_step_(die_step) {}
  int64_t steps_per_epoch() const override { return inner_.steps_per_epoch(); }
  void Start(int64_t step) override { inner_.Start(step); }
  StepResult Step(int64_t step) override {
    if (rank_ == die_rank_ && step == die_step_) _exit(9);
    return inner_.Step(step);
  }

 private:
  StepSource& inner_;
  int64_t rank_, die_rank_, die_step_;
};

// One rank: trains, then writes its final weights to $DFKD_OUT/rank<r>.pt.
int ChildMain() {
  at::set_num_threads(1);
  RendezvousOptions rdv = RendezvousFromEnv();
  rdv.timeout = std::chrono::seconds(20);
  std::unique_ptr<Communicator> comm = MakeGlooCommunicator(rdv);
  common::JobSpec spec = Spec();
  JobData data = Data();
  torch::manual_seed(100 + comm->rank());  // different inits: rank 0's must win
  if (std::getenv("DFKD_PLAIN_MODEL") != nullptr) spec.data.augment = false;
  if (std::getenv("DFKD_NO_OVERLAP") != nullptr) spec.dist.overlap = false;
  spec.dist.bucket_mb = 1;  // several buckets, so the overlap has work to order
  Classifier model = MakeModel(spec, data);
  SupervisedSource source(spec, model, data, *comm);
  const char* die = std::getenv("DFKD_DIE_AT_STEP");
  DyingSource dying(source, comm->rank(), 1, die ? std::atoi(die) : -1);
  const std::string out = std::getenv("DFKD_OUT");
  RunControl quiet;
  quiet.quiet = true;
  try {
    Trainer(spec, model, data, *comm, dying, out + "/run").Run(quiet);
  } catch (const std::exception& e) {
    std::cerr << "CHILD ERROR: " << e.what() << "\n";
    return 5;
  }
  SaveWeights(out + "/rank" + std::to_string(comm->rank()) + ".pt", *model);
  return 0;
}

std::vector<int> RunRanks(const std::string& out, int world, const std::string& die_at,
                          std::vector<std::string>* logs, bool plain_model = false) {
  std::vector<std::pair<std::string, std::string>> env;
  if (!die_at.empty()) env.emplace_back("DFKD_DIE_AT_STEP", die_at);
  if (plain_model) env.emplace_back("DFKD_PLAIN_MODEL", "1");
  for (int r = 0; r < world; ++r) logs->push_back(testing::RankLog(out, r));
  return testing::LaunchRankProcesses(out, world, env);
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The classifiers of Spec() saved in two weight files are equal, bit for bit.
void ExpectSameWeights(const std::string& file_a, const std::string& file_b) {
  JobData data = Data();
  common::JobSpec spec = Spec();
  Classifier a = MakeClassifier(ModelConfigFor(spec.model, data));
  Classifier b = MakeClassifier(ModelConfigFor(spec.model, data));
  LoadWeights(file_a, *a);
  LoadWeights(file_b, *b);
  auto pb = b->named_parameters();
  for (const auto& kv : a->named_parameters()) {
    EXPECT_TRUE(torch::equal(kv.value(), pb[kv.key()])) << kv.key();
  }
}

TEST(GlooDistTest, TwoRanksEndWithBitIdenticalParameters) {
  testing::TempDir dir;
  std::vector<std::string> logs;
  std::vector<int> codes = RunRanks(dir.path(), 2, "", &logs);
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << Slurp(logs[0]) << Slurp(logs[1]);
  ExpectSameWeights(dir.File("rank0.pt"), dir.File("rank1.pt"));
  // Trained, and started from rank 0's weights, not rank 1's.
  JobData data = Data();
  common::JobSpec spec = Spec();
  Classifier b = MakeClassifier(ModelConfigFor(spec.model, data));
  LoadWeights(dir.File("rank1.pt"), *b);
  torch::manual_seed(101);
  Classifier rank1_init = MakeClassifier(ModelConfigFor(spec.model, data));
  EXPECT_FALSE(torch::equal(rank1_init->parameters()[0], b->parameters()[0]));
  EXPECT_TRUE(std::filesystem::exists(dir.File("run/result.json")));  // rank 0 wrote it
}

TEST(GlooDistTest, TwoRanksEqualOneRankWithTheSameGlobalBatch) {
  testing::TempDir one, two;
  std::vector<std::string> logs;
  ASSERT_EQ(RunRanks(one.path(), 1, "", &logs, true), (std::vector<int>{0})) << Slurp(logs[0]);
  ASSERT_EQ(RunRanks(two.path(), 2, "", &logs, true), (std::vector<int>{0, 0}))
      << Slurp(logs[1]) << Slurp(logs[2]);
  PlainNet a, b;
  LoadWeights(one.File("rank0.pt"), *a);
  LoadWeights(two.File("rank0.pt"), *b);
  auto pb = b->named_parameters();
  for (const auto& kv : a->named_parameters()) {
    const torch::Tensor& x = kv.value();
    const torch::Tensor& y = pb[kv.key()];
    const double rel = (x - y).abs().max().item<double>() / x.abs().max().item<double>();
    EXPECT_LT(rel, 1e-5) << kv.key();
  }
  // And training moved the weights (the comparison is not between two inits).
  torch::manual_seed(100);
  PlainNet init;
  EXPECT_GT((init->fc->weight - a->fc->weight).abs().max().item<double>(), 1e-3);
}

// Buckets all-reduced while backward runs (the default) give exactly the
// parameters of averaging after backward: with two ranks every element is
// a + b either way.
TEST(GlooDistTest, OverlappedAveragingEqualsAveragingAfterBackward) {
  testing::TempDir overlapped, after;
  std::vector<std::string> logs;
  ASSERT_EQ(RunRanks(overlapped.path(), 2, "", &logs), (std::vector<int>{0, 0}))
      << Slurp(logs[0]);
  setenv("DFKD_NO_OVERLAP", "1", 1);
  std::vector<int> codes = RunRanks(after.path(), 2, "", &logs);
  unsetenv("DFKD_NO_OVERLAP");
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << Slurp(logs[2]);
  ExpectSameWeights(overlapped.File("rank0.pt"), after.File("rank0.pt"));
}

TEST(GlooDistTest, ADeadRankFailsTheOthersWithAClearError) {
  testing::TempDir dir;
  std::vector<std::string> logs;
  auto t0 = std::chrono::steady_clock::now();
  std::vector<int> codes = RunRanks(dir.path(), 2, "3", &logs);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(codes[1], 9);  // the rank that died
  EXPECT_EQ(codes[0], 5) << Slurp(logs[0]);
  std::string log = Slurp(logs[0]);
  EXPECT_NE(log.find("rank 0 of 2"), std::string::npos) << log;
  EXPECT_NE(log.find("failed (a peer rank died or timed out)"), std::string::npos) << log;
  EXPECT_LT(seconds, 20.0 + 10.0);  // within the 20 s collective timeout
}

}  // namespace
}  // namespace dfkd::worker

int main(int argc, char** argv) {
  if (std::getenv("DFKD_DIST_CHILD") != nullptr) return dfkd::worker::ChildMain();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
