#include "common/campaign/campaign.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace dfkd::common {
namespace {

using nlohmann::json;

constexpr const char* kCode = "code-v1";

// configs/fashion_mnist/teacher.json
json Teacher() {
  return json::parse(R"({
    "version": 1, "kind": "train_teacher", "name": "fmnist teacher wrn-16-2", "seed": 0,
    "data": {"dataset": "fashion_mnist", "augment": true},
    "model": {"arch": "wrn", "depth": 16, "widen_factor": 2},
    "train": {"epochs": 6, "batch_size": 128, "checkpoint_every_steps": 500,
              "optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005,
                        "schedule": "cosine"}}})");
}

// configs/fashion_mnist/distill_dafl.json, its teacher a campaign teacher.
json Base() {
  return json::parse(R"({
    "version": 1, "kind": "distill",
    "data": {"dataset": "fashion_mnist"},
    "model": {"arch": "wrn", "depth": 16, "widen_factor": 1},
    "train": {"epochs": 4, "batch_size": 256,
              "optim": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0001,
                        "schedule": "cosine"}},
    "distill": {"teacher": {"run": "wrn16_2"}, "method": "dafl", "temperature": 20,
                "steps_per_epoch": 100, "kd_steps": 5, "synthesis_batch_size": 256},
    "kdci": {"enabled": false}})");
}

// configs/fashion_mnist/scratch_student.json
json Scratch() {
  return json::parse(R"({
    "version": 1, "kind": "train_student_scratch", "name": "fmnist scratch wrn-16-1",
    "data": {"dataset": "fashion_mnist", "augment": true},
    "model": {"arch": "wrn", "depth": 16, "widen_factor": 1},
    "train": {"epochs": 5, "batch_size": 128}})");
}

// 2 methods x kdci off/on x 2 seeds, one teacher.
json Grid() {
  return {{"version", 1},
          {"name", "grid"},
          {"seeds", {0, 1}},
          {"teachers", {{"wrn16_2", Teacher()}}},
          {"base", Base()},
          {"axes", {{"distill.method", {"noise", "dafl"}}, {"kdci.enabled", {false, true}}}}};
}

std::vector<std::string> Errors(const CampaignParseResult& r) {
  std::vector<std::string> p;
  for (const auto& e : r.errors) p.push_back(e.ToString());
  return p;
}

bool Has(const CampaignParseResult& r, const std::string& error) {
  auto p = Errors(r);
  return std::find(p.begin(), p.end(), error) != p.end();
}

std::vector<std::string> Names(const ExpandedCampaign& c) {
  std::vector<std::string> names;
  for (const auto& e : c.experiments) names.push_back(e.name);
  return names;
}

std::vector<std::string> Identities(const ExpandedCampaign& c) {
  std::vector<std::string> ids;
  for (const auto& r : c.runs) ids.push_back(r.identity);
  return ids;
}

TEST(CampaignTest, GridWithOneTeacher) {
  CampaignParseResult r = ExpandCampaign(Grid(), kCode);
  ASSERT_TRUE(r.ok()) << r.ErrorText();
  ASSERT_TRUE(r.campaign.has_value());
  const ExpandedCampaign& c = *r.campaign;
  EXPECT_EQ(c.name, "grid");
  EXPECT_EQ(c.priority, 0);
  EXPECT_EQ(c.max_attempts, 3);
  EXPECT_EQ(c.spec, Grid());
  EXPECT_EQ(Names(c), (std::vector<std::string>{"teacher:wrn16_2", "noise/base", "noise/kdci",
                                                 "dafl/base", "dafl/kdci"}));
  EXPECT_EQ(c.experiments[0].kind, "train_teacher");
  EXPECT_EQ(c.experiments[0].method, "teacher");
  EXPECT_EQ(c.experiments[0].baseline, -1);
  const std::vector<std::string> methods = {"noise", "noise", "dafl", "dafl"};
  const std::vector<bool> kdci = {false, true, false, true};
  const std::vector<int> baselines = {-1, 1, -1, 3};
  for (int i = 1; i <= 4; ++i) {
    const ExpandedExperiment& e = c.experiments[i];
    EXPECT_EQ(e.kind, "distill") << e.name;
    EXPECT_EQ(e.method, methods[i - 1]) << e.name;
    EXPECT_EQ(e.kdci, kdci[i - 1]) << e.name;
    EXPECT_EQ(e.variant, "") << e.name;
    EXPECT_EQ(e.baseline, baselines[i - 1]) << e.name;
    EXPECT_EQ(e.axes, (json{{"distill.method", methods[i - 1]},
                            {"kdci.enabled", static_cast<bool>(kdci[i - 1])}}))
        << e.name;
  }

  ASSERT_EQ(c.runs.size(), 9u);   // 1 teacher + 4 experiments x 2 seeds
  const ExpandedRun& teacher = c.runs[0];
  EXPECT_EQ(teacher.experiment, 0);
  EXPECT_EQ(teacher.kind, "train_teacher");
  EXPECT_EQ(teacher.depends_on, -1);
  EXPECT_EQ(teacher.world_size, 1);
  EXPECT_EQ(teacher.spec["model"]["widen_factor"], 2);
  EXPECT_EQ(teacher.spec["train"]["epochs"], 6);
  for (size_t i = 1; i < c.runs.size(); ++i) {
    const ExpandedRun& run = c.runs[i];
    SCOPED_TRACE(i);
    EXPECT_EQ(run.experiment, 1 + static_cast<int>(i - 1) / 2);
    EXPECT_EQ(run.seed, static_cast<int64_t>((i - 1) % 2));
    EXPECT_EQ(run.kind, "distill");
    EXPECT_EQ(run.depends_on, 0);
    EXPECT_EQ(run.world_size, 1);
    EXPECT_EQ(run.spec["seed"], run.seed);
    const json& t = run.spec["distill"]["teacher"];
    EXPECT_EQ(t["weights"], "");
    EXPECT_FALSE(t.contains("run"));
    EXPECT_EQ(t["model"], teacher.spec["model"]);   // copied from the teacher's spec
    EXPECT_EQ(t["num_classes"], 0);
    EXPECT_EQ(run.spec["distill"]["method"], methods[run.experiment - 1]);
    EXPECT_EQ(run.spec["kdci"]["enabled"], static_cast<bool>(kdci[run.experiment - 1]));
    EXPECT_EQ(run.spec["train"]["epochs"], 4);
    SpecParseResult again = ParseJobSpec(run.spec);
    EXPECT_TRUE(again.ok()) << again.ErrorText();
  }
  const auto ids = Identities(c);
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), ids.size());
  for (const auto& id : ids) EXPECT_EQ(id.size(), 16u) << id;
}

TEST(CampaignTest, AxesExpandInSortedKeyOrderWithValueLabels) {
  json j = Grid();
  j["axes"] = json::parse(R"({"kdci.enabled": [true], "distill.temperature": [4, 20.5]})");
  CampaignParseResult r = ExpandCampaign(j, kCode);
  ASSERT_TRUE(r.ok()) << r.ErrorText();
  EXPECT_EQ(Names(*r.campaign),
            (std::vector<std::string>{"teacher:wrn16_2", "4/kdci", "20.5/kdci"}));
  // kdci.enabled is an axis without false: no baseline.
  EXPECT_EQ(r.campaign->experiments[1].baseline, -1);
  EXPECT_EQ(r.campaign->runs[1].spec["distill"]["temperature"], 4.0);
}

TEST(CampaignTest, VariantsAreComparedWithTheBaseCell) {
  json j = Grid();
  j["seeds"] = json::array({7});
  j["axes"] = {{"kdci.enabled", {false, true}}};
  j["variants"] = {{"no_prior", {{"kdci.ablation", "no_prior"}}},
                   {"few_protos", {{"kdci.num_prototypes", 4}, {"distill.dafl.lr_g", 0.01}}}};
  CampaignParseResult r = ExpandCampaign(j, kCode);
  ASSERT_TRUE(r.ok()) << r.ErrorText();
  const ExpandedCampaign& c = *r.campaign;
  EXPECT_EQ(Names(c),
            (std::vector<std::string>{"teacher:wrn16_2", "base", "base/few_protos",
                                      "base/no_prior", "kdci", "kdci/few_protos",
                                      "kdci/no_prior"}));
  const std::vector<int> baselines = {-1, -1, 1, 1, 1, 1, 1};
  const std::vector<std::string> variants = {"", "", "few_protos", "no_prior",
                                             "", "few_protos", "no_prior"};
  for (size_t i = 0; i < c.experiments.size(); ++i) {
    EXPECT_EQ(c.experiments[i].baseline, baselines[i]) << c.experiments[i].name;
    EXPECT_EQ(c.experiments[i].variant, variants[i]) << c.experiments[i].name;
  }
  ASSERT_EQ(c.runs.size(), 7u);
  const json& no_prior = c.runs[6].spec;
  EXPECT_EQ(c.runs[6].seed, 7);
  EXPECT_EQ(no_prior["kdci"]["enabled"], true);
  EXPECT_EQ(no_prior["kdci"]["ablation"], "no_prior");
  const json& few = c.runs[5].spec;
  EXPECT_EQ(few["kdci"]["num_prototypes"], 4);
  EXPECT_EQ(few["distill"]["dafl"]["lr_g"], 0.01);
  EXPECT_EQ(few["kdci"]["ablation"], "none");
}

TEST(CampaignTest, NoAxesKdciInBaseHasNoBaselineButItsVariantsDo) {
  json j = Grid();
  j.erase("axes");
  j["base"]["kdci"]["enabled"] = true;
  j["variants"] = {{"no_prior", {{"kdci.ablation", "no_prior"}}}};
  CampaignParseResult r = ExpandCampaign(j, kCode);
  ASSERT_TRUE(r.ok()) << r.ErrorText();
  const ExpandedCampaign& c = *r.campaign;
  EXPECT_EQ(Names(c), (std::vector<std::string>{"teacher:wrn16_2", "base", "no_prior"}));
  EXPECT_TRUE(c.experiments[1].kdci);
  EXPECT_EQ(c.experiments[1].baseline, -1);
  EXPECT_EQ(c.experiments[2].baseline, 1);
  EXPECT_EQ(c.runs.size(), 5u);
}

TEST(CampaignTest, ScratchRowsAndAnExternalTeacher) {
  json base = Base();
  base["distill"]["teacher"] = {{"weights", "/models/teacher/model.pt"},
                                {"model", {{"arch", "wrn"}, {"depth", 40}, {"widen_factor", 2}}}};
  json j = {{"version", 1}, {"name", "ext"}, {"seeds", {3, 4}}, {"priority", 5},
            {"max_attempts", 2}, {"scratch", Scratch()}, {"base", base}};
  CampaignParseResult r = ExpandCampaign(j, kCode);
  ASSERT_TRUE(r.ok()) << r.ErrorText();
  const ExpandedCampaign& c = *r.campaign;
  EXPECT_EQ(c.priority, 5);
  EXPECT_EQ(c.max_attempts, 2);
  EXPECT_EQ(Names(c), (std::vector<std::string>{"scratch", "base"}));
  EXPECT_EQ(c.experiments[0].kind, "train_student_scratch");
  EXPECT_EQ(c.experiments[0].method, "scratch");
  EXPECT_EQ(c.experiments[1].method, "dafl");
  ASSERT_EQ(c.runs.size(), 4u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(c.runs[i].experiment, 0);
    EXPECT_EQ(c.runs[i].kind, "train_student_scratch");
    EXPECT_EQ(c.runs[i].seed, 3 + i);
    EXPECT_EQ(c.runs[i].spec["seed"], 3 + i);
    EXPECT_EQ(c.runs[i].spec["train"]["epochs"], 5);
  }
  for (int i = 2; i < 4; ++i) {
    EXPECT_EQ(c.runs[i].experiment, 1);
    EXPECT_EQ(c.runs[i].depends_on, -1);   // a teacher outside the campaign
    EXPECT_EQ(c.runs[i].spec["distill"]["teacher"]["weights"], "/models/teacher/model.pt");
    EXPECT_EQ(c.runs[i].spec["distill"]["teacher"]["model"]["depth"], 40);
  }
}

TEST(CampaignTest, EveryErrorIsCollectedWithItsPath) {
  json j = Grid();
  j["seeds"] = {0, 1, -2};
  j["axes"]["distill.method"] = {"noise", "dfal"};
  j["variants"] = {{"no_prior", {{"kdci.ablation", "no_prir"}}}};
  CampaignParseResult r = ExpandCampaign(j, kCode);
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(r.campaign.has_value());
  EXPECT_EQ(r.errors.size(), 3u) << r.ErrorText();
  EXPECT_TRUE(Has(r, "seeds[2]: must be a non-negative integer")) << r.ErrorText();
  EXPECT_TRUE(Has(r, "axes.distill.method[1]: distill.method: must be one of noise, dafl, "
                     "deepinv, fast, cmi, class_bank, mosaickd, dfnd"))
      << r.ErrorText();
  EXPECT_TRUE(Has(r, "variants.no_prior: kdci.ablation: must be one of none, random_lambda, "
                     "random_z, no_prior, other_z"))
      << r.ErrorText();
  EXPECT_EQ(r.ErrorText().find("seeds[2]: must be a non-negative integer\n"), 0u)
      << r.ErrorText();
}

TEST(CampaignTest, TeacherErrors) {
  json unknown = Grid();
  unknown["base"]["distill"]["teacher"]["run"] = "x";
  CampaignParseResult r = ExpandCampaign(unknown, kCode);
  EXPECT_EQ(Errors(r),
            (std::vector<std::string>{
                "base.distill.teacher.run: unknown teacher \"x\"; teachers are: wrn16_2"}));

  json wrong_kind = Grid();
  wrong_kind["teachers"]["wrn16_2"]["kind"] = "distill";
  r = ExpandCampaign(wrong_kind, kCode);
  EXPECT_EQ(Errors(r),
            (std::vector<std::string>{"teachers.wrn16_2.kind: must be train_teacher"}));

  // A broken teacher is reported once, under teachers, not again per experiment.
  json bad_teacher = Grid();
  bad_teacher["teachers"]["wrn16_2"]["model"]["depth"] = 28;
  r = ExpandCampaign(bad_teacher, kCode);
  EXPECT_EQ(Errors(r), (std::vector<std::string>{"teachers.wrn16_2.model.depth: must be one "
                                                 "of 16, 40 for arch wrn"}));

  json no_teacher = Grid();
  no_teacher["base"]["distill"]["teacher"] = json::object();
  r = ExpandCampaign(no_teacher, kCode);
  ASSERT_EQ(r.errors.size(), 1u) << r.ErrorText();
  EXPECT_EQ(r.errors[0].path, "base.distill.teacher.run");
  EXPECT_EQ(r.errors[0].message.rfind("required", 0), 0u) << r.ErrorText();

  json both = Grid();
  both["base"]["distill"]["teacher"]["weights"] = "t.pt";
  r = ExpandCampaign(both, kCode);
  ASSERT_EQ(r.errors.size(), 1u) << r.ErrorText();
  EXPECT_EQ(r.errors[0].path, "base.distill.teacher.weights");

  // The teacher can be an axis: an unknown one is that axis value's error.
  json axis = Grid();
  axis["teachers"]["wrn40_2"] = Teacher();
  axis["teachers"]["wrn40_2"]["model"]["depth"] = 40;
  axis["axes"] = {{"distill.teacher.run", {"wrn16_2", "wrn40_2", "wrn99"}}};
  r = ExpandCampaign(axis, kCode);
  EXPECT_EQ(Errors(r), (std::vector<std::string>{
                           "axes.distill.teacher.run[2]: distill.teacher.run: unknown teacher "
                           "\"wrn99\"; teachers are: wrn16_2, wrn40_2"}));
  axis["axes"]["distill.teacher.run"] = {"wrn16_2", "wrn40_2"};
  r = ExpandCampaign(axis, kCode);
  ASSERT_TRUE(r.ok()) << r.ErrorText();
  ASSERT_EQ(r.campaign->runs.size(), 6u);   // 2 teachers + 2 experiments x 2 seeds
  EXPECT_EQ(r.campaign->runs[2].depends_on, 0);
  EXPECT_EQ(r.campaign->runs[4].depends_on, 1);
  EXPECT_EQ(r.campaign->runs[4].spec["distill"]["teacher"]["model"]["depth"], 40);
}

TEST(CampaignTest, CampaignFieldErrors) {
  CampaignParseResult r = ExpandCampaign(json::array(), kCode);
  EXPECT_EQ(Errors(r), (std::vector<std::string>{"<root>: must be an object (a campaign)"}));

  json j = Grid();
  j.erase("version");
  j.erase("name");
  j.erase("seeds");
  j["seed"] = 1;
  j["priority"] = "high";
  r = ExpandCampaign(j, kCode);
  EXPECT_EQ(r.errors.size(), 5u) << r.ErrorText();
  EXPECT_TRUE(Has(r, "version: required (this build reads campaign version 1)"));
  EXPECT_TRUE(Has(r, "name: required"));
  EXPECT_TRUE(Has(r, "seeds: required: a non-empty array of distinct non-negative integers"));
  EXPECT_TRUE(Has(r, "seed: unknown field"));
  EXPECT_TRUE(Has(r, "priority: must be an integer in [-1000000, 1000000]"));

  j = Grid();
  j["version"] = 2;
  j["name"] = "";
  j["seeds"] = json::array();
  r = ExpandCampaign(j, kCode);
  EXPECT_EQ(r.errors.size(), 3u) << r.ErrorText();
  EXPECT_TRUE(Has(r, "version: must be 1 (this build reads campaign version 1)"));
  EXPECT_TRUE(Has(r, "name: must be a non-empty string"));
  EXPECT_TRUE(Has(r, "seeds: must be a non-empty array of distinct non-negative integers"));

  j = Grid();
  j["seeds"] = {0, 1.5, 0};
  r = ExpandCampaign(j, kCode);
  EXPECT_EQ(Errors(r), (std::vector<std::string>{"seeds[1]: must be a non-negative integer",
                                                 "seeds[2]: duplicate of seeds[0]"}));
}

TEST(CampaignTest, BaseAxesVariantsAndScratchErrors) {
  json j = Grid();
  j["base"]["model"]["depth"] = 28;
  CampaignParseResult r = ExpandCampaign(j, kCode);
  EXPECT_EQ(Errors(r),
            (std::vector<std::string>{"base.model.depth: must be one of 16, 40 for arch wrn"}));

  j = Grid();
  j["base"]["kind"] = "train_teacher";
  r = ExpandCampaign(j, kCode);
  EXPECT_EQ(Errors(r), (std::vector<std::string>{"base.kind: must be distill (teachers and "
                                                 "scratch have their own sections)"}));

  j = Grid();
  j.erase("base");
  j["scratch"] = Scratch();
  j["scratch"]["kind"] = "train_teacher";
  r = ExpandCampaign(j, kCode);
  EXPECT_EQ(r.errors.size(), 2u) << r.ErrorText();
  EXPECT_TRUE(Has(r, "base: required: a distill job spec"));
  EXPECT_TRUE(Has(r, "scratch.kind: must be train_student_scratch"));

  j = Grid();
  j["scratch"] = Scratch();
  j["scratch"]["train"]["epochs"] = 0;
  r = ExpandCampaign(j, kCode);
  EXPECT_EQ(Errors(r),
            (std::vector<std::string>{"scratch.train.epochs: must be in [1, 100000]"}));

  j = Grid();
  j["axes"] = {{"kdci.enabled", true},
               {"seed", {1, 2}},
               {"distill..method", {"dafl"}},
               {"distill.method", {"dafl", "dafl"}},
               {"distill.temprature", {1, 2}}};
  j["variants"] = {{"No Prior", {{"kdci.ablation", "no_prior"}}},
                   {"base", {{"kdci.ablation", "no_prior"}}},
                   {"empty", json::object()}};
  r = ExpandCampaign(j, kCode);
  EXPECT_TRUE(Has(r, "axes.kdci.enabled: must be a non-empty array of values")) << r.ErrorText();
  EXPECT_TRUE(Has(r, "axes.seed: the seed comes from the campaign's \"seeds\"")) << r.ErrorText();
  EXPECT_TRUE(Has(r, "axes.distill..method: must be a dotted field path of the job spec, such "
                     "as \"distill.method\""))
      << r.ErrorText();
  EXPECT_TRUE(Has(r, "axes.distill.method[1]: duplicate of axes.distill.method[0] (\"dafl\" in "
                     "experiment names)"))
      << r.ErrorText();
  EXPECT_TRUE(Has(r, "axes.distill.temprature[0]: distill.temprature: unknown field"))
      << r.ErrorText();
  EXPECT_TRUE(Has(r, "axes.distill.temprature[1]: distill.temprature: unknown field"))
      << r.ErrorText();
  EXPECT_TRUE(Has(r, "variants.No Prior: a variant name is non-empty and uses only a-z, 0-9, _ "
                     "and -"))
      << r.ErrorText();
  EXPECT_TRUE(Has(r, "variants.base: \"base\" names the unchanged experiment; choose another "
                     "name"))
      << r.ErrorText();
  EXPECT_TRUE(Has(r, "variants.empty: must be a non-empty object: dotted field path -> value"))
      << r.ErrorText();
  EXPECT_EQ(r.errors.size(), 9u) << r.ErrorText();
}

TEST(CampaignTest, ExperimentNamesMustDiffer) {
  json j = Grid();
  j.erase("axes");
  j["scratch"] = Scratch();
  j["variants"] = {{"scratch", {{"kdci.enabled", true}}}};
  CampaignParseResult r = ExpandCampaign(j, kCode);
  EXPECT_EQ(Errors(r), (std::vector<std::string>{
                           "<campaign>: two experiments are named \"scratch\"; rename a variant "
                           "or make the axis values differ"}));
}

TEST(CampaignTest, LimitsRefuseAnOversizeGridBeforeBuildingIt) {
  json j = Grid();
  std::vector<int> thousand(1000);
  for (int i = 0; i < 1000; ++i) thousand[i] = i + 1;
  j["axes"] = {{"distill.kd_steps", thousand},
               {"distill.steps_per_epoch", thousand},
               {"train.batch_size", thousand}};
  CampaignParseResult r = ExpandCampaign(j, kCode);   // 1e9 experiments: refused at once
  EXPECT_FALSE(r.campaign.has_value());
  EXPECT_EQ(Errors(r), (std::vector<std::string>{
                           "axes: the grid has 1000000000 experiments (the product of the axis "
                           "lengths x (1 + variants)); the limit is 5000",
                           "<campaign>: expands into 2000000001 runs (experiments x seeds + "
                           "teachers + scratch); the limit is 20000"}));

  // Products past int64 saturate.
  for (int k = 0; k < 7; ++k) j["axes"]["distill.x" + std::to_string(k)] = thousand;
  r = ExpandCampaign(j, kCode);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.errors[0].path, "axes");
  EXPECT_NE(r.errors[0].message.find("more than 9223372036854775806"), std::string::npos)
      << r.ErrorText();

  CampaignLimits small;
  small.max_runs = 8;
  small.max_seeds = 1;
  r = ExpandCampaign(Grid(), kCode, small);
  EXPECT_EQ(Errors(r), (std::vector<std::string>{
                           "seeds: 2 seeds; the limit is 1",
                           "<campaign>: expands into 9 runs (experiments x seeds + teachers + "
                           "scratch); the limit is 8"}));
  small = CampaignLimits();
  small.max_experiments = 3;
  r = ExpandCampaign(Grid(), kCode, small);
  ASSERT_EQ(r.errors.size(), 1u) << r.ErrorText();
  EXPECT_EQ(r.errors[0].path, "axes");
  small.max_experiments = 4;
  EXPECT_TRUE(ExpandCampaign(Grid(), kCode, small).ok());
}

TEST(CampaignTest, IdentityIsStableAndFollowsTeacherAndCode) {
  CampaignParseResult a = ExpandCampaign(Grid(), kCode);
  CampaignParseResult b = ExpandCampaign(Grid(), kCode);
  ASSERT_TRUE(a.ok() && b.ok()) << a.ErrorText();
  EXPECT_EQ(Identities(*a.campaign), Identities(*b.campaign));

  // A new engine reruns everything.
  CampaignParseResult other_code = ExpandCampaign(Grid(), "code-v2");
  ASSERT_TRUE(other_code.ok());
  for (size_t i = 0; i < a.campaign->runs.size(); ++i) {
    EXPECT_NE(other_code.campaign->runs[i].identity, a.campaign->runs[i].identity) << i;
  }

  // A new teacher spec: a new teacher, and new students of it.
  json j = Grid();
  j["teachers"]["wrn16_2"]["train"]["epochs"] = 7;
  CampaignParseResult other_teacher = ExpandCampaign(j, kCode);
  ASSERT_TRUE(other_teacher.ok());
  for (size_t i = 0; i < a.campaign->runs.size(); ++i) {
    EXPECT_NE(other_teacher.campaign->runs[i].identity, a.campaign->runs[i].identity) << i;
    // ... while the specs a worker gets differ only in the teacher's.
    if (i > 0) {
      EXPECT_EQ(other_teacher.campaign->runs[i].spec, a.campaign->runs[i].spec);
    }
  }

  // Names, key order and spelled-out defaults do not matter.
  json same = json::parse(R"({"axes": {"kdci.enabled": [false, true],
                                       "distill.method": ["noise", "dafl"]},
                              "seeds": [0, 1], "version": 1, "name": "renamed"})");
  same["teachers"]["wrn16_2"] = Teacher();
  same["teachers"]["wrn16_2"]["name"] = "another display name";
  same["teachers"]["wrn16_2"]["runtime"] = {{"device", "cpu"}};
  same["base"] = Base();
  same["base"]["name"] = "ignored";
  same["base"]["distill"]["noise_stddev"] = 1.0;
  same["base"]["distill"]["teacher"]["model"] = {{"arch", "wrn"}, {"depth", 16},
                                                 {"widen_factor", 2}};
  same["base"]["train"]["eval_batch_size"] = 500;
  CampaignParseResult c = ExpandCampaign(same, kCode);
  ASSERT_TRUE(c.ok()) << c.ErrorText();
  EXPECT_EQ(Identities(*c.campaign), Identities(*a.campaign));

  // One teacher serves every campaign that trains the same teacher.
  json other_grid = Grid();
  other_grid["axes"] = {{"distill.method", {"deepinv"}}};
  CampaignParseResult d = ExpandCampaign(other_grid, kCode);
  ASSERT_TRUE(d.ok()) << d.ErrorText();
  EXPECT_EQ(d.campaign->runs[0].identity, a.campaign->runs[0].identity);
}

TEST(CampaignTest, SetDottedPath) {
  json j = json::object();
  SetDottedPath(j, "distill.dafl.lr_g", 0.01);
  EXPECT_EQ(j, json::parse(R"({"distill": {"dafl": {"lr_g": 0.01}}})"));
  SetDottedPath(j, "distill.method", "dafl");
  SetDottedPath(j, "distill.dafl.nz", 64);
  EXPECT_EQ(j, json::parse(R"({"distill": {"method": "dafl", "dafl": {"lr_g": 0.01, "nz": 64}}})"));
  SetDottedPath(j, "distill.dafl", json::array({1}));   // replaces the whole object
  EXPECT_EQ(j["distill"]["dafl"], json::array({1}));
  json k = {{"kdci", 3}};
  SetDottedPath(k, "kdci.enabled", true);   // a non-object on the way becomes an object
  EXPECT_EQ(k, json::parse(R"({"kdci": {"enabled": true}})"));
  json scalar = 5;
  SetDottedPath(scalar, "seed", 1);
  EXPECT_EQ(scalar, json::parse(R"({"seed": 1})"));
}

json LoadSource(const std::string& relative) {
  const char* root = std::getenv("DFKD_SOURCE_DIR");
  std::ifstream in(std::string(root ? root : ".") + "/" + relative);
  return json::parse(in, nullptr, /*allow_exceptions=*/false, /*ignore_comments=*/true);
}

TEST(CampaignTest, ShippedCampaignsExpand) {
  ASSERT_NE(std::getenv("DFKD_SOURCE_DIR"), nullptr) << "run via ctest (DFKD_SOURCE_DIR)";
  json demo = LoadSource("configs/campaigns/fmnist_demo.json");
  ASSERT_FALSE(demo.is_discarded());
  CampaignParseResult r = ExpandCampaign(demo, kCode);
  ASSERT_TRUE(r.ok()) << r.ErrorText();
  EXPECT_EQ(r.campaign->name, "fmnist-demo");
  EXPECT_EQ(Names(*r.campaign), (std::vector<std::string>{"teacher:wrn16_2", "noise/base",
                                                           "noise/kdci", "dafl/base",
                                                           "dafl/kdci"}));
  EXPECT_EQ(r.campaign->runs.size(), 9u);

  json instant = LoadSource("tests/configs/campaigns/instant_campaign.json");
  ASSERT_FALSE(instant.is_discarded());
  r = ExpandCampaign(instant, kCode);
  ASSERT_TRUE(r.ok()) << r.ErrorText();
  EXPECT_EQ(Names(*r.campaign), (std::vector<std::string>{"teacher:t", "base", "kdci"}));
  EXPECT_EQ(r.campaign->runs.size(), 5u);
  EXPECT_EQ(r.campaign->experiments[2].baseline, 1);
}

// Every campaign under configs/campaigns/ (scripts/make_campaigns.py writes
// the paper's) expands without an error, with the shapes the tables need.
TEST(CampaignTest, PaperCampaignsExpand) {
  ASSERT_NE(std::getenv("DFKD_SOURCE_DIR"), nullptr) << "run via ctest (DFKD_SOURCE_DIR)";
  for (const char* data : {"cifar10", "cifar100"}) {
    for (const char* pair : {"A", "B", "C", "D", "E"}) {
      const std::string file = std::string("configs/campaigns/table1/") + data + "_" + pair + ".json";
      json c = LoadSource(file);
      ASSERT_FALSE(c.is_discarded()) << file;
      CampaignParseResult r = ExpandCampaign(c, kCode);
      ASSERT_TRUE(r.ok()) << file << "\n" << r.ErrorText();
      // teacher + 3 scratch seeds + 6 methods x {base, kdci} x 3 seeds
      EXPECT_EQ(r.campaign->runs.size(), 1u + 3u + 36u) << file;
      for (const auto& e : r.campaign->experiments) {
        if (e.kind == "distill" && e.kdci) {
          ASSERT_GE(e.baseline, 0) << file << " " << e.name;
          EXPECT_FALSE(r.campaign->experiments[e.baseline].kdci);
          EXPECT_EQ(r.campaign->experiments[e.baseline].method, e.method);
        }
      }
    }
    for (const char* table : {"table4_", "table5_", "figure4_"}) {
      const std::string file = std::string("configs/campaigns/") + table + data + ".json";
      json c = LoadSource(file);
      ASSERT_FALSE(c.is_discarded()) << file;
      CampaignParseResult r = ExpandCampaign(c, kCode);
      ASSERT_TRUE(r.ok()) << file << "\n" << r.ErrorText();
    }
  }
}

}  // namespace
}  // namespace dfkd::common

namespace dfkd::common {
namespace {

// dist.world_size reaches the scheduler as the run's gang size, and differs
// in identity from a one-rank run of the same cell.
TEST(CampaignTest, DistWorldSizeBecomesTheGangSize) {
  json j = Grid();
  j["axes"] = {{"dist.world_size", {1, 2}}};
  CampaignParseResult r = ExpandCampaign(j, kCode);
  ASSERT_TRUE(r.ok()) << r.ErrorText();
  const ExpandedCampaign& c = *r.campaign;
  ASSERT_EQ(c.runs.size(), 5u);  // the teacher + 2 cells x 2 seeds
  EXPECT_EQ(c.runs[0].world_size, 1);  // the teacher
  EXPECT_EQ(c.runs[1].world_size, 1);
  EXPECT_EQ(c.runs[3].world_size, 2);
  EXPECT_EQ(c.runs[3].spec["dist"]["world_size"], 2);
  EXPECT_NE(c.runs[1].identity, c.runs[3].identity);

  json nccl = Grid();
  nccl["base"]["dist"] = {{"backend", "nccl"}};
  EXPECT_TRUE(Has(ExpandCampaign(nccl, kCode),
                  "base.dist.backend: nccl needs runtime.device \"cuda\""))
      << ::testing::PrintToString(Errors(ExpandCampaign(nccl, kCode)));
}

}  // namespace
}  // namespace dfkd::common
