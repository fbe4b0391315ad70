// ExpandCampaign: the campaign's own fields, its teachers and scratch rows, the
// limits, and the driver. The distill grid is in campaign_expand.cc.
#include "common/campaign/campaign.h"

#include <exception>
#include <limits>
#include <map>
#include <set>
#include <utility>

#include "common/campaign/campaign_internal.h"

namespace dfkd::common {
namespace campaign_internal {
namespace {

using nlohmann::json;

constexpr int64_t kSaturated = std::numeric_limits<int64_t>::max();

int64_t SatMul(int64_t a, int64_t b) {
  if (a <= 0 || b <= 0) return 0;
  if (a > kSaturated / b) return kSaturated;
  return a * b;
}

int64_t SatAdd(int64_t a, int64_t b) { return a > kSaturated - b ? kSaturated : a + b; }

std::string CountText(int64_t n) {
  return n == kSaturated ? "more than " + std::to_string(kSaturated - 1) : std::to_string(n);
}

// An integer JSON value as int64 (a huge unsigned one saturates), or nothing.
std::optional<int64_t> AsInt64(const json& v) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    return u > static_cast<uint64_t>(kSaturated) ? kSaturated : static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  return std::nullopt;
}

// How an axis value appears in experiment names: kdci.enabled's booleans as
// "kdci" / "base", strings without quotes, anything else as its JSON text.
std::string AxisLabel(const std::string& key, const json& value) {
  if (key == "kdci.enabled" && value.is_boolean()) return value.get<bool>() ? "kdci" : "base";
  if (value.is_string() && !value.get<std::string>().empty()) return value.get<std::string>();
  return value.dump();
}

class CampaignReader {
 public:
  CampaignReader(const json& j, const CampaignLimits& limits, ErrorList* errors)
      : j_(j), limits_(limits), errors_(errors) {}

  CampaignInput Read() {
    if (!j_.is_object()) {
      errors_->Add("<root>", "must be an object (a campaign)");
      return std::move(in_);
    }
    ReadVersion();
    ReadName();
    ReadInt("priority", -1000000, 1000000, &in_.priority);
    ReadInt("max_attempts", 1, 100, &in_.max_attempts);
    ReadSeeds();
    ReadTeachers();
    ReadScratch();
    const bool base_ok = ReadBase();
    ReadAxes();
    ReadVariants();
    static const std::set<std::string> kKnown = {
        "version", "name", "priority", "max_attempts", "seeds", "teachers",
        "scratch", "base", "axes", "variants"};
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      if (!kKnown.count(it.key())) errors_->Add(it.key(), "unknown field");
    }
    const bool within_limits = CheckLimits();
    in_.expand = base_ok && within_limits;
    return std::move(in_);
  }

 private:
  const json* Get(const std::string& key) const {
    return j_.contains(key) ? &j_.at(key) : nullptr;
  }

  void ReadVersion() {
    const std::string expected = std::to_string(kCampaignSpecVersion);
    const json* v = Get("version");
    if (!v) {
      errors_->Add("version", "required (this build reads campaign version " + expected + ")");
      return;
    }
    const std::optional<int64_t> x = AsInt64(*v);
    if (!x || *x != kCampaignSpecVersion) {
      errors_->Add("version", "must be " + expected + " (this build reads campaign version " +
                                  expected + ")");
    }
  }

  void ReadName() {
    const json* v = Get("name");
    if (!v) return errors_->Add("name", "required");
    if (!v->is_string() || v->get<std::string>().empty()) {
      return errors_->Add("name", "must be a non-empty string");
    }
    in_.name = v->get<std::string>();
  }

  void ReadInt(const std::string& key, int64_t min, int64_t max, int* out) {
    const json* v = Get(key);
    if (!v) return;
    const std::optional<int64_t> x = AsInt64(*v);
    if (!x || *x < min || *x > max) {
      return errors_->Add(key, "must be an integer in [" + std::to_string(min) + ", " +
                                   std::to_string(max) + "]");
    }
    *out = static_cast<int>(*x);
  }

  void ReadSeeds() {
    const char* kWhat = "a non-empty array of distinct non-negative integers";
    const json* v = Get("seeds");
    if (!v) return errors_->Add("seeds", std::string("required: ") + kWhat);
    if (!v->is_array() || v->empty()) {
      return errors_->Add("seeds", std::string("must be ") + kWhat);
    }
    std::map<int64_t, size_t> first;
    for (size_t i = 0; i < v->size(); ++i) {
      const std::string path = "seeds[" + std::to_string(i) + "]";
      const std::optional<int64_t> x = AsInt64((*v)[i]);
      if (!x || *x < 0) {
        errors_->Add(path, "must be a non-negative integer");
      } else if (*x > kMaxSeed) {
        errors_->Add(path, "must be at most " + std::to_string(kMaxSeed));
      } else if (first.count(*x)) {
        errors_->Add(path, "duplicate of seeds[" + std::to_string(first[*x]) + "]");
      } else {
        first[*x] = i;
        in_.seeds.push_back(*x);
      }
    }
  }

  // A teacher or scratch spec: an object of the given kind, parsed by
  // ParseJobSpec with its errors under `path`.
  void ParseSection(const json& value, const std::string& path, const std::string& kind,
                    bool zero_seed, std::optional<JobSpec>* out) {
    if (!value.is_object()) {
      return errors_->Add(path, "must be a " + kind + " job spec (an object)");
    }
    const json* k = value.contains("kind") ? &value.at("kind") : nullptr;
    if (!k || !k->is_string() || k->get<std::string>() != kind) {
      return errors_->Add(path + ".kind", "must be " + kind);
    }
    json copy = value;
    if (zero_seed) copy["seed"] = 0;   // the campaign's seeds replace it
    SpecParseResult r = ParseJobSpec(copy);
    for (const SpecError& e : r.errors) errors_->Add(JoinPath(path, e.path), e.message);
    *out = std::move(r.spec);
  }

  void ReadTeachers() {
    const json* v = Get("teachers");
    if (!v) return;
    if (!v->is_object()) {
      return errors_->Add("teachers", "must be an object: teacher name -> train_teacher job spec");
    }
    for (auto it = v->begin(); it != v->end(); ++it) {
      const std::string path = "teachers." + it.key();
      CampaignTeacher teacher{it.key(), it.value(), std::nullopt};
      if (!IsCampaignName(it.key())) {
        errors_->Add(path, "a teacher name is non-empty and uses only a-z, 0-9, _ and -");
      }
      // The teacher keeps its own seed: one run serves every campaign seed.
      ParseSection(it.value(), path, "train_teacher", /*zero_seed=*/false, &teacher.spec);
      in_.teachers.push_back(std::move(teacher));
    }
  }

  void ReadScratch() {
    const json* v = Get("scratch");
    if (!v) return;
    in_.has_scratch = true;
    ParseSection(*v, "scratch", "train_student_scratch", /*zero_seed=*/true, &in_.scratch);
  }

  bool ReadBase() {
    const json* v = Get("base");
    if (!v) {
      errors_->Add("base", "required: a distill job spec");
      return false;
    }
    if (!v->is_object()) {
      errors_->Add("base", "must be a distill job spec (an object)");
      return false;
    }
    const json* k = v->contains("kind") ? &v->at("kind") : nullptr;
    if (!k || !k->is_string() || k->get<std::string>() != "distill") {
      errors_->Add("base.kind", "must be distill (teachers and scratch have their own sections)");
      return false;
    }
    in_.base = *v;
    return true;
  }

  // An axis or variant key: a dotted path the campaign lets the grid change.
  bool CheckChangeKey(const std::string& key, const std::string& path) {
    if (!IsDottedPath(key)) {
      errors_->Add(path, "must be a dotted field path of the job spec, such as \"distill.method\"");
      return false;
    }
    if (PathIsUnder(key, "seed")) {
      errors_->Add(path, "the seed comes from the campaign's \"seeds\"");
      return false;
    }
    if (PathIsUnder(key, "kind")) {
      errors_->Add(path, "the kind cannot change: the grid is of distill runs");
      return false;
    }
    if (PathIsUnder(key, "name")) {
      errors_->Add(path, "run names are set by the campaign (campaign, experiment, seed)");
      return false;
    }
    return true;
  }

  void ReadAxes() {
    const json* v = Get("axes");
    if (!v) return;
    if (!v->is_object()) {
      return errors_->Add("axes", "must be an object: dotted field path -> array of values");
    }
    for (auto it = v->begin(); it != v->end(); ++it) {
      const std::string path = "axes." + it.key();
      const bool key_ok = CheckChangeKey(it.key(), path);
      const json& values = it.value();
      if (!values.is_array() || values.empty()) {
        errors_->Add(path, "must be a non-empty array of values");
        continue;
      }
      if (!key_ok) continue;
      CampaignAxis axis;
      axis.key = it.key();
      std::map<std::string, size_t> first;   // label -> index in the file
      for (size_t i = 0; i < values.size(); ++i) {
        const std::string label = AxisLabel(axis.key, values[i]);
        auto [it_first, inserted] = first.emplace(label, i);
        if (!inserted) {
          errors_->Add(path + "[" + std::to_string(i) + "]",
                       "duplicate of " + path + "[" + std::to_string(it_first->second) +
                           "] (\"" + label + "\" in experiment names)");
          continue;
        }
        axis.values.push_back(values[i]);
        axis.labels.push_back(label);
      }
      in_.axes.push_back(std::move(axis));
    }
  }

  void ReadVariants() {
    const json* v = Get("variants");
    if (!v) return;
    if (!v->is_object()) {
      return errors_->Add("variants",
                          "must be an object: variant name -> {dotted field path: value}");
    }
    for (auto it = v->begin(); it != v->end(); ++it) {
      const std::string path = "variants." + it.key();
      bool ok = true;
      if (!IsCampaignName(it.key())) {
        errors_->Add(path, "a variant name is non-empty and uses only a-z, 0-9, _ and -");
        ok = false;
      } else if (it.key() == "base") {
        errors_->Add(path, "\"base\" names the unchanged experiment; choose another name");
        ok = false;
      }
      const json& body = it.value();
      if (!body.is_object() || body.empty()) {
        errors_->Add(path, "must be a non-empty object: dotted field path -> value");
        continue;
      }
      CampaignVariant variant;
      variant.name = it.key();
      for (auto c = body.begin(); c != body.end(); ++c) {
        if (!CheckChangeKey(c.key(), path + "." + c.key())) {
          ok = false;
          continue;
        }
        variant.changes.emplace_back(c.key(), c.value());
      }
      if (ok) in_.variants.push_back(std::move(variant));
    }
  }

  // Counts before anything is built, so an oversize grid is refused at once.
  bool CheckLimits() {
    int64_t experiments = 1;
    for (const CampaignAxis& a : in_.axes) {
      experiments = SatMul(experiments, static_cast<int64_t>(a.values.size()));
    }
    experiments = SatMul(experiments, 1 + static_cast<int64_t>(in_.variants.size()));
    const json* seeds = Get("seeds");
    const int64_t n_seeds =
        seeds && seeds->is_array() ? static_cast<int64_t>(seeds->size()) : 0;
    bool ok = true;
    if (experiments > limits_.max_experiments) {
      errors_->Add("axes", "the grid has " + CountText(experiments) +
                               " experiments (the product of the axis lengths x (1 + "
                               "variants)); the limit is " +
                               std::to_string(limits_.max_experiments));
      ok = false;
    }
    if (n_seeds > limits_.max_seeds) {
      errors_->Add("seeds", std::to_string(n_seeds) + " seeds; the limit is " +
                                std::to_string(limits_.max_seeds));
      ok = false;
    }
    const int64_t runs = SatAdd(
        SatMul(experiments, n_seeds),
        static_cast<int64_t>(in_.teachers.size()) + (in_.has_scratch ? n_seeds : 0));
    if (runs > limits_.max_runs) {
      errors_->Add("<campaign>", "expands into " + CountText(runs) +
                                     " runs (experiments x seeds + teachers + scratch); "
                                     "the limit is " +
                                     std::to_string(limits_.max_runs));
      ok = false;
    }
    return ok;
  }

  const json& j_;
  const CampaignLimits& limits_;
  ErrorList* errors_;
  CampaignInput in_;
};

std::string RunName(const std::string& campaign, const std::string& experiment, int64_t seed) {
  return campaign + " " + experiment + " seed " + std::to_string(seed);
}

}  // namespace

CampaignInput ReadCampaign(const json& j, const CampaignLimits& limits, ErrorList* errors) {
  return CampaignReader(j, limits, errors).Read();
}

namespace {

// Builds everything; the caller keeps it only when no error was found.
void Expand(const json& campaign_json, const std::string& code_version,
            const CampaignLimits& limits, ErrorList* errors, ExpandedCampaign* c) {
  CampaignInput in = ReadCampaign(campaign_json, limits, errors);
  c->name = in.name;
  c->priority = in.priority;
  c->max_attempts = in.max_attempts;
  c->spec = campaign_json;

  // Teachers: one run each, with its own seed.
  std::vector<int> teacher_runs(in.teachers.size(), -1);
  std::vector<std::string> teacher_identities(in.teachers.size());
  for (size_t i = 0; i < in.teachers.size(); ++i) {
    const CampaignTeacher& t = in.teachers[i];
    ExpandedExperiment e;
    e.name = "teacher:" + t.name;
    e.kind = JobKindName(JobKind::kTrainTeacher);
    e.method = "teacher";
    e.axes = json::object();
    c->experiments.push_back(e);
    if (!t.spec) continue;
    JobSpec s = *t.spec;
    s.name = RunName(in.name, e.name, s.seed);
    ExpandedRun r;
    r.experiment = static_cast<int>(c->experiments.size()) - 1;
    r.seed = s.seed;
    r.kind = e.kind;
    r.spec = ToJson(s);
    r.world_size = static_cast<int>(s.dist.world_size);
    r.identity = RunIdentity(s, "", code_version);
    teacher_runs[i] = static_cast<int>(c->runs.size());
    teacher_identities[i] = r.identity;
    c->runs.push_back(std::move(r));
  }

  // Scratch: one run per campaign seed.
  if (in.has_scratch) {
    ExpandedExperiment e;
    e.name = "scratch";
    e.kind = JobKindName(JobKind::kTrainStudentScratch);
    e.method = "scratch";
    e.axes = json::object();
    c->experiments.push_back(e);
    if (in.scratch) {
      for (int64_t seed : in.seeds) {
        JobSpec s = *in.scratch;
        s.seed = seed;
        s.name = RunName(in.name, e.name, seed);
        ExpandedRun r;
        r.experiment = static_cast<int>(c->experiments.size()) - 1;
        r.seed = seed;
        r.kind = e.kind;
        r.spec = ToJson(s);
        r.world_size = static_cast<int>(s.dist.world_size);
        r.identity = RunIdentity(s, "", code_version);
        c->runs.push_back(std::move(r));
      }
    }
  }

  if (in.expand) {
    ExpandDistillGrid(in, code_version, teacher_runs, teacher_identities, c, errors);
  }
}

}  // namespace
}  // namespace campaign_internal

std::string CampaignParseResult::ErrorText() const {
  std::string s;
  for (const SpecError& e : errors) s += e.ToString() + "\n";
  return s;
}

CampaignParseResult ExpandCampaign(const nlohmann::json& json, const std::string& code_version,
                                   const CampaignLimits& limits) {
  CampaignParseResult result;
  try {
    campaign_internal::ErrorList errors(&result.errors);
    ExpandedCampaign campaign;
    campaign_internal::Expand(json, code_version, limits, &errors, &campaign);
    if (result.errors.empty()) result.campaign = std::move(campaign);
  } catch (const std::exception& e) {
    // nlohmann throws on, for instance, strings that are not UTF-8 when dumped.
    result.campaign.reset();
    result.errors.push_back({"<campaign>", std::string("cannot be expanded: ") + e.what()});
  }
  return result;
}

}  // namespace dfkd::common
