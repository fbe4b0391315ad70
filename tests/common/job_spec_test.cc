#include "common/spec/job_spec.h"

#include <gtest/gtest.h>

namespace dfkd::common {
namespace {

using nlohmann::json;

json Minimal() {
  return json::parse(R"({"version": 1, "kind": "train_teacher",
                         "model": {"arch": "wrn", "depth": 40, "widen_factor": 2}})");
}

std::vector<std::string> Paths(const SpecParseResult& r) {
  std::vector<std::string> p;
  for (const auto& e : r.errors) p.push_back(e.ToString());
  return p;
}

TEST(JobSpecTest, MinimalSpecFillsDefaults) {
  SpecParseResult r = ParseJobSpec(Minimal());
  ASSERT_TRUE(r.ok()) << r.ErrorText();
  EXPECT_EQ(r.spec->kind, JobKind::kTrainTeacher);
  EXPECT_EQ(r.spec->model.depth, 40);
  EXPECT_EQ(r.spec->data.dataset, "fashion_mnist");
  EXPECT_EQ(r.spec->train.optim.schedule, "cosine");
}

TEST(JobSpecTest, BadDepthNamesTheField) {
  json j = Minimal();
  j["model"]["depth"] = 28;
  SpecParseResult r = ParseJobSpec(j);
  ASSERT_FALSE(r.ok());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].ToString(), "model.depth: must be one of 16, 40 for arch wrn");
}

TEST(JobSpecTest, ReportsEveryErrorWithItsPath) {
  json j = Minimal();
  j["train"] = {{"batch_size", 0}, {"optim", {{"lr", "fast"}, {"schedule", "step"}}}};
  j["data"] = {{"datset", "cifar10"}};
  j.erase("version");
  SpecParseResult r = ParseJobSpec(j);
  auto p = Paths(r);
  EXPECT_EQ(r.errors.size(), 5u) << r.ErrorText();
  auto has = [&](const std::string& s) {
    return std::find(p.begin(), p.end(), s) != p.end();
  };
  EXPECT_TRUE(has("version: required (this build reads version 1)")) << r.ErrorText();
  EXPECT_TRUE(has("train.batch_size: must be in [1, 65536]")) << r.ErrorText();
  EXPECT_TRUE(has("train.optim.lr: must be a number")) << r.ErrorText();
  EXPECT_TRUE(has("train.optim.schedule: must be one of cosine, multistep, constant"))
      << r.ErrorText();
  EXPECT_TRUE(has("data.datset: unknown field")) << r.ErrorText();
}

TEST(JobSpecTest, NewerVersionIsRefused) {
  json j = Minimal();
  j["version"] = 2;
  SpecParseResult r = ParseJobSpec(j);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.errors[0].path, "version");
}

TEST(JobSpecTest, CifarNeedsRootAndMultistepNeedsMilestones) {
  json j = Minimal();
  j["data"] = {{"dataset", "cifar10"}};
  j["train"] = {{"optim", {{"schedule", "multistep"}}}};
  auto p = Paths(ParseJobSpec(j));
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].rfind("data.root: required for cifar10", 0), 0u) << p[0];
  EXPECT_EQ(p[1], "train.optim.milestones: required for schedule multistep");
}

TEST(JobSpecTest, RoundTripAndCanonicalHash) {
  SpecParseResult a = ParseJobSpec(Minimal());
  ASSERT_TRUE(a.ok());
  json full = ToJson(*a.spec);
  SpecParseResult b = ParseJobSpec(full);
  ASSERT_TRUE(b.ok()) << b.ErrorText();
  EXPECT_EQ(ToJson(*b.spec), full);
  // Omitted defaults and key order do not change the hash; a value does.
  EXPECT_EQ(CanonicalHash(*a.spec), CanonicalHash(*b.spec));
  json renamed = Minimal();
  renamed["name"] = "other display name";
  EXPECT_EQ(CanonicalHash(*ParseJobSpec(renamed).spec), CanonicalHash(*a.spec));
  json other = Minimal();
  other["seed"] = 1;
  EXPECT_NE(CanonicalHash(*ParseJobSpec(other).spec), CanonicalHash(*a.spec));
}

TEST(JobSpecTest, NonObjectSectionsAndBrokenFiles) {
  json j = Minimal();
  j["train"] = 3;
  auto p = Paths(ParseJobSpec(j));
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0], "train: must be an object");
  SpecParseResult missing = LoadJobSpecFile("/nonexistent/spec.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.errors[0].ToString(), "/nonexistent/spec.json: cannot open file");
}

json Distill() {
  return json::parse(R"({"version": 1, "kind": "distill",
      "model": {"arch": "wrn", "depth": 16},
      "distill": {"teacher": {"weights": "t/model.pt",
                              "model": {"arch": "wrn", "depth": 40, "widen_factor": 2}}},
      "kdci": {"enabled": true}})");
}

TEST(JobSpecTest, DistillWithKdciDefaults) {
  SpecParseResult r = ParseJobSpec(Distill());
  ASSERT_TRUE(r.ok()) << r.ErrorText();
  EXPECT_EQ(r.spec->kind, JobKind::kDistill);
  EXPECT_EQ(r.spec->distill.method, "noise");
  EXPECT_DOUBLE_EQ(r.spec->distill.temperature, 20.0);
  EXPECT_TRUE(r.spec->kdci.enabled);
  EXPECT_EQ(r.spec->kdci.num_prototypes, 8);  // the paper's N for generator methods
  EXPECT_EQ(r.spec->kdci.ablation, "none");
  SpecParseResult again = ParseJobSpec(ToJson(*r.spec));
  ASSERT_TRUE(again.ok()) << again.ErrorText();
  EXPECT_EQ(CanonicalHash(*again.spec), CanonicalHash(*r.spec));
  json off = Distill();
  off["kdci"]["enabled"] = false;
  EXPECT_NE(CanonicalHash(*ParseJobSpec(off).spec), CanonicalHash(*r.spec));
}

TEST(JobSpecTest, KdStepsDefaultToTheMethodsReferenceValue) {
  json j = Distill();
  EXPECT_EQ(ParseJobSpec(j).spec->distill.kd_steps, 400);   // noise
  j["distill"]["method"] = "dafl";
  EXPECT_EQ(ParseJobSpec(j).spec->distill.kd_steps, 5);
  j["distill"]["method"] = "deepinv";
  EXPECT_EQ(ParseJobSpec(j).spec->distill.kd_steps, 400);
  j["distill"]["kd_steps"] = 7;
  EXPECT_EQ(ParseJobSpec(j).spec->distill.kd_steps, 7);     // explicit wins
}

TEST(JobSpecTest, FastDefaultsAreTheReferenceValuesAndErrorsNameTheField) {
  json j = Distill();
  j["distill"]["method"] = "fast";
  SpecParseResult r = ParseJobSpec(j);
  ASSERT_TRUE(r.ok()) << r.ErrorText();
  const FastSpec& f = r.spec->distill.fast;
  EXPECT_EQ(f.nz, 256);
  EXPECT_EQ(f.g_steps, 10);  // Fast-10, KDCI's Fast row
  EXPECT_DOUBLE_EQ(f.lr_g, 2e-3);
  EXPECT_DOUBLE_EQ(f.lr_z, 0.01);
  EXPECT_DOUBLE_EQ(f.bn_weight, 10.0);
  EXPECT_DOUBLE_EQ(f.oh_weight, 0.4);
  EXPECT_DOUBLE_EQ(f.adv_weight, 1.1);
  EXPECT_DOUBLE_EQ(f.bn_momentum, 0.9);
  EXPECT_EQ(f.warmup, 20);
  EXPECT_EQ(f.meta, "fomaml");
  EXPECT_TRUE(f.reset_l0);
  EXPECT_EQ(f.reset_l0_after, 120);
  EXPECT_EQ(f.pool_max_images, 56320);
  EXPECT_EQ(r.spec->distill.kd_steps, 400);    // ep_steps = kd_steps = 400
  EXPECT_EQ(r.spec->kdci.num_prototypes, 8);   // a generator method
  json back = ToJson(*r.spec);
  EXPECT_EQ(back["distill"]["fast"]["meta"], "fomaml");
  SpecParseResult again = ParseJobSpec(back);
  ASSERT_TRUE(again.ok()) << again.ErrorText();
  EXPECT_EQ(CanonicalHash(*again.spec), CanonicalHash(*r.spec));

  j["distill"]["fast"] = {{"g_steps", 0}, {"warmup", 5}, {"meta", "maml"}};
  auto p = Paths(ParseJobSpec(j));
  ASSERT_EQ(p.size(), 2u) << ::testing::PrintToString(p);
  EXPECT_EQ(p[0], "distill.fast.g_steps: must be in [1, 1048576]");
  EXPECT_EQ(p[1], "distill.fast.meta: must be one of fomaml, reptile");
}

TEST(JobSpecTest, PoolMethodsNeedAPoolAndTheirDefaultsAreTheReferenceValues) {
  json j = Distill();
  j["distill"]["method"] = "dfnd";
  auto p = Paths(ParseJobSpec(j));
  ASSERT_EQ(p.size(), 1u) << ::testing::PrintToString(p);
  EXPECT_EQ(p[0], "distill.pool.path: required for method dfnd (an unlabeled pool file; "
                  "build one with `dfkd pool`)");
  j["distill"]["pool"] = {{"path", "wild.pool"}, {"normalize", "imagenet"}};
  SpecParseResult r = ParseJobSpec(j);
  ASSERT_TRUE(r.ok()) << r.ErrorText();
  EXPECT_DOUBLE_EQ(r.spec->distill.dfnd.teacher_accuracy, 0.9523);
  EXPECT_DOUBLE_EQ(r.spec->distill.temperature, 4.0);  // DFND's kdloss
  EXPECT_EQ(r.spec->kdci.num_prototypes, 128);  // a pool method
  EXPECT_EQ(r.spec->distill.kd_steps, 400);
  json back = ToJson(*r.spec);
  EXPECT_EQ(back["distill"]["pool"]["normalize"], "imagenet");
  // Only the active method's options are part of the canonical JSON.
  EXPECT_TRUE(back["distill"].contains("dfnd"));
  EXPECT_FALSE(back["distill"].contains("fast"));
  EXPECT_FALSE(back["distill"].contains("mosaickd"));

  j["distill"]["method"] = "mosaickd";
  r = ParseJobSpec(j);
  ASSERT_TRUE(r.ok()) << r.ErrorText();
  EXPECT_EQ(r.spec->distill.kd_steps, 5);  // 5 student steps per G/D iteration
  EXPECT_DOUBLE_EQ(r.spec->distill.temperature, 1.0);
  EXPECT_DOUBLE_EQ(r.spec->distill.mosaickd.balance_weight, 10.0);

  // A method without a pool does not carry one in its canonical JSON, so a
  // stray pool block never splits result reuse.
  json noise = Distill();
  json with_pool = noise;
  with_pool["distill"]["pool"] = {{"path", "x.pool"}};
  EXPECT_EQ(CanonicalHash(*ParseJobSpec(noise).spec),
            CanonicalHash(*ParseJobSpec(with_pool).spec));
}

TEST(JobSpecTest, CmiAndClassBankErrorsNameTheField) {
  json j = Distill();
  j["distill"]["method"] = "cmi";
  SpecParseResult r = ParseJobSpec(j);
  ASSERT_TRUE(r.ok()) << r.ErrorText();
  EXPECT_EQ(r.spec->distill.cmi.g_steps, 200);
  EXPECT_DOUBLE_EQ(r.spec->distill.cmi.cr_temperature, 0.2);
  EXPECT_EQ(r.spec->kdci.num_prototypes, 32);
  j["distill"]["cmi"] = {{"bank_size", 16}, {"n_neg", 32}};
  j["distill"]["class_bank"] = {{"unit", "gan"}, {"class_begin", 5}, {"class_end", 3}};
  auto p = Paths(ParseJobSpec(j));
  ASSERT_EQ(p.size(), 3u) << ::testing::PrintToString(p);
  EXPECT_EQ(p[0], "distill.cmi.n_neg: must be <= bank_size");
  EXPECT_EQ(p[1], "distill.class_bank.unit: must be one of generator, inversion");
  EXPECT_EQ(p[2], "distill.class_bank.class_end: must be > class_begin (or 0 = every class)");
}

TEST(JobSpecTest, KdciErrorsNameTheField) {
  json j = Distill();
  j["kdci"]["num_prototypes"] = 0;
  j["kdci"]["ablation"] = "other_z";
  j["kdci"]["pca"] = "fixed";
  j["distill"]["teacher"].erase("weights");
  auto p = Paths(ParseJobSpec(j));
  auto has = [&](const std::string& s) { return std::find(p.begin(), p.end(), s) != p.end(); };
  EXPECT_TRUE(has("kdci.num_prototypes: must be >= 1"));
  EXPECT_TRUE(has("kdci.ablation: other_z and feature_source \"other\" go together "
                  "(Table 5's other Z)"));
  EXPECT_TRUE(has("kdci.other_teacher: required for feature_source \"other\""));
  EXPECT_TRUE(has("kdci.pca_dim: must be >= 1 for pca \"fixed\""));
  EXPECT_TRUE(has("distill.teacher.weights: required (model.pt of a train_teacher run)"));
  EXPECT_EQ(p.size(), 5u) << ::testing::PrintToString(p);
}

TEST(JobSpecTest, KdciOnlyForDistill) {
  json j = Minimal();
  j["kdci"] = {{"enabled", true}};
  auto p = Paths(ParseJobSpec(j));
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0], "kdci: only for kind distill");
  json d = Distill();
  d.erase("distill");
  p = Paths(ParseJobSpec(d));
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0], "distill: required for kind distill");
}

}  // namespace
}  // namespace dfkd::common
