// The distill grid: base x axes x variants -> experiments, each checked with
// ParseJobSpec; errors attributed to the campaign path that caused them;
// baselines; one run per experiment and seed; run identities.
//
// Order. nlohmann::json keeps object keys sorted, so axes expand in sorted key
// order (deterministic whatever the file's order): the first axis varies
// slowest, the last fastest, and each cell is followed by its variants in
// sorted name order.
//
// Attribution. Every expanded spec is parsed; an error (in job spec paths) is
// charged to
//   1. "variants.<name>" when the cell has a variant and the error's field is
//      one the variant changes (or lies above/below it), or the error is absent
//      from the same cell without the variant;
//   2. "axes.<key>[i]" when the error's field overlaps the axis key, or, failing
//      that, when the error is absent from the base alone but present in the
//      base with only that axis value applied;
//   3. otherwise the base, as "base.<field>".
// Axis and variant errors keep the spec path in the message
// ("axes.distill.method[1]: distill.method: must be one of ..."); the same
// error from many cells is reported once.
#include <cstdio>
#include <map>
#include <set>
#include <utility>

#include "common/campaign/campaign.h"
#include "common/campaign/campaign_internal.h"
#include "common/spec/fnv1a.h"

namespace dfkd::common::campaign_internal {
namespace {

using nlohmann::json;

std::set<std::string> ErrorTexts(const std::vector<SpecError>& errors) {
  std::set<std::string> texts;
  for (const SpecError& e : errors) texts.insert(e.ToString());
  return texts;
}

// One expanded job spec, parsed the way the campaign will run it.
struct ParsedSpec {
  std::optional<JobSpec> spec;      // set iff errors is empty (and the teacher is usable)
  std::vector<SpecError> errors;    // job spec paths
  int teacher = -1;                 // index into in.teachers; -1 = external weights
};

// One experiment of the grid.
struct Cell {
  std::vector<size_t> combo;        // index of each axis's value
  int variant = -1;                 // index into in.variants; -1 = base
  std::string name;
  json axes;
  ParsedSpec parsed;
};

class GridExpander {
 public:
  explicit GridExpander(const CampaignInput& in) : in_(in) {}

  // Resolves distill.teacher.run, sets the validation seed and parses.
  ParsedSpec Parse(json j) const {
    ParsedSpec out;
    j["seed"] = 0;   // each run's seed is set after parsing; the range is checked in "seeds"
    bool drop_teacher_model_errors = false;
    json* teacher = nullptr;
    if (j.contains("distill") && j["distill"].is_object() && j["distill"].contains("teacher") &&
        j["distill"]["teacher"].is_object()) {
      teacher = &j["distill"]["teacher"];
    }
    if (teacher && teacher->contains("run")) {
      const json& run = teacher->at("run");
      if (!run.is_string()) {
        out.errors.push_back(
            {"distill.teacher.run", "must be a string: the name of one of \"teachers\""});
      } else {
        const std::string name = run.get<std::string>();
        for (size_t i = 0; i < in_.teachers.size(); ++i) {
          if (in_.teachers[i].name == name) out.teacher = static_cast<int>(i);
        }
        if (out.teacher < 0) {
          out.errors.push_back({"distill.teacher.run", "unknown teacher \"" + name + "\"; " +
                                                           TeacherList()});
        }
      }
      if (teacher->contains("weights")) {
        const json& w = teacher->at("weights");
        if (!w.is_string() || !w.get<std::string>().empty()) {
          out.errors.push_back({"distill.teacher.weights",
                                "must not be set together with run (the scheduler fills it "
                                "in when the teacher run has finished)"});
        }
      }
      const bool has_model = teacher->contains("model");
      teacher->erase("run");
      (*teacher)["weights"] = "";
      const CampaignTeacher* t = out.teacher >= 0 ? &in_.teachers[out.teacher] : nullptr;
      if (!has_model) {
        if (t && t->spec) {
          (*teacher)["model"] = ToJson(*t->spec)["model"];
        } else {
          // The teacher's own errors (or the unknown name) say what is wrong.
          drop_teacher_model_errors = true;
        }
      }
      if (!teacher->contains("num_classes")) (*teacher)["num_classes"] = 0;
    } else if (teacher) {
      const json* w = teacher->contains("weights") ? &teacher->at("weights") : nullptr;
      if (!w || (w->is_string() && w->get<std::string>().empty())) {
        out.errors.push_back({"distill.teacher.run",
                              "required: the name of one of \"teachers\" (or set "
                              "distill.teacher.weights to the model.pt of a finished run)"});
        (*teacher)["weights"] = "";   // said once, not again by ParseJobSpec
        // With a run the model comes from the teacher: do not ask for it too.
        drop_teacher_model_errors = !teacher->contains("model");
      }
    }
    SpecParseResult r = ParseJobSpec(j);
    for (SpecError& e : r.errors) {
      if (drop_teacher_model_errors && PathIsUnder(e.path, "distill.teacher.model")) continue;
      out.errors.push_back(std::move(e));
    }
    if (out.errors.empty() && !drop_teacher_model_errors) out.spec = std::move(r.spec);
    return out;
  }

  // Errors of the base alone.
  const std::set<std::string>& BaseErrors() {
    if (!base_errors_) base_errors_ = ErrorTexts(Parse(in_.base).errors);
    return *base_errors_;
  }

  // Errors of the base with only value `value` of axis `axis` applied.
  const std::set<std::string>& AxisErrors(size_t axis, size_t value) {
    auto key = std::make_pair(axis, value);
    auto it = axis_errors_.find(key);
    if (it == axis_errors_.end()) {
      json j = in_.base;
      SetDottedPath(j, in_.axes[axis].key, in_.axes[axis].values[value]);
      it = axis_errors_.emplace(key, ErrorTexts(Parse(std::move(j)).errors)).first;
    }
    return it->second;
  }

 private:
  std::string TeacherList() const {
    if (in_.teachers.empty()) return "the campaign lists no teachers";
    std::string s = "teachers are: ";
    for (size_t i = 0; i < in_.teachers.size(); ++i) {
      s += (i ? ", " : "") + in_.teachers[i].name;
    }
    return s;
  }

  const CampaignInput& in_;
  std::optional<std::set<std::string>> base_errors_;
  std::map<std::pair<size_t, size_t>, std::set<std::string>> axis_errors_;
};

// Reports a cell's errors under the campaign path that caused them (see the
// file comment). `without_variant`: the errors of the same cell without its
// variant.
void Report(const CampaignInput& in, const Cell& cell,
            const std::set<std::string>& without_variant, GridExpander* grid,
            ErrorList* errors) {
  for (const SpecError& e : cell.parsed.errors) {
    const std::string text = e.ToString();
    if (cell.variant >= 0) {
      const CampaignVariant& v = in.variants[cell.variant];
      bool changed = false;
      for (const auto& change : v.changes) changed = changed || PathsOverlap(e.path, change.first);
      if (changed || !without_variant.count(text)) {
        errors->Add("variants." + v.name, text);
        continue;
      }
    }
    int axis = -1;
    for (size_t k = 0; k < in.axes.size() && axis < 0; ++k) {
      if (PathsOverlap(e.path, in.axes[k].key)) axis = static_cast<int>(k);
    }
    if (axis < 0 && !in.axes.empty() && !grid->BaseErrors().count(text)) {
      for (size_t k = 0; k < in.axes.size() && axis < 0; ++k) {
        if (grid->AxisErrors(k, cell.combo[k]).count(text)) axis = static_cast<int>(k);
      }
    }
    if (axis >= 0) {
      errors->Add("axes." + in.axes[axis].key + "[" + std::to_string(cell.combo[axis]) + "]",
                  text);
    } else {
      errors->Add(JoinPath("base", e.path), e.message);
    }
  }
}

}  // namespace

std::string RunIdentity(const JobSpec& spec, const std::string& teacher_identity,
                        const std::string& code_version) {
  JobSpec s = spec;
  if (!teacher_identity.empty()) s.distill.teacher.weights = "run:" + teacher_identity;
  const json j = {{"code_version", code_version}, {"spec", CanonicalHash(s)}};
  return Fnv1a64Hex(j.dump());
}

void ExpandDistillGrid(const CampaignInput& in, const std::string& code_version,
                       const std::vector<int>& teacher_runs,
                       const std::vector<std::string>& teacher_identities,
                       ExpandedCampaign* out, ErrorList* errors) {
  GridExpander grid(in);
  std::vector<Cell> cells;
  const size_t n_axes = in.axes.size();
  std::vector<size_t> combo(n_axes, 0);
  // Odometer over the axes, the last axis fastest.
  auto advance = [&]() {
    for (size_t k = n_axes; k-- > 0;) {
      if (++combo[k] < in.axes[k].values.size()) return true;
      combo[k] = 0;
    }
    return false;
  };
  do {
    json spec = in.base;
    json axes = json::object();
    std::string name;
    for (size_t k = 0; k < n_axes; ++k) {
      const CampaignAxis& a = in.axes[k];
      SetDottedPath(spec, a.key, a.values[combo[k]]);
      axes[a.key] = a.values[combo[k]];
      name += (k ? "/" : "") + a.labels[combo[k]];
    }
    Cell base_cell{combo, -1, n_axes ? name : "base", axes, grid.Parse(spec)};
    Report(in, base_cell, {}, &grid, errors);
    const std::set<std::string> without_variant = ErrorTexts(base_cell.parsed.errors);
    cells.push_back(std::move(base_cell));
    for (size_t v = 0; v < in.variants.size(); ++v) {
      const CampaignVariant& variant = in.variants[v];
      json changed = spec;
      for (const auto& change : variant.changes) {
        SetDottedPath(changed, change.first, change.second);
      }
      Cell cell{combo, static_cast<int>(v), n_axes ? name + "/" + variant.name : variant.name,
                axes, grid.Parse(std::move(changed))};
      Report(in, cell, without_variant, &grid, errors);
      cells.push_back(std::move(cell));
    }
  } while (advance());

  // Experiment names key the results table: they must differ.
  std::set<std::string> names;
  for (const ExpandedExperiment& e : out->experiments) names.insert(e.name);
  for (const Cell& cell : cells) {
    if (!names.insert(cell.name).second) {
      errors->Add("<campaign>", "two experiments are named \"" + cell.name +
                                    "\"; rename a variant or make the axis values differ");
    }
  }
  if (!errors->empty()) return;

  // Experiments, and the base cell of each axis combination.
  const int first = static_cast<int>(out->experiments.size());
  std::map<std::vector<size_t>, int> base_cells;
  for (size_t i = 0; i < cells.size(); ++i) {
    const Cell& cell = cells[i];
    ExpandedExperiment e;
    e.name = cell.name;
    e.kind = JobKindName(JobKind::kDistill);
    if (cell.parsed.spec) {
      e.method = cell.parsed.spec->distill.method;
      e.kdci = cell.parsed.spec->kdci.enabled;
    }
    e.variant = cell.variant >= 0 ? in.variants[cell.variant].name : "";
    e.axes = cell.axes;
    if (cell.variant < 0) base_cells[cell.combo] = first + static_cast<int>(i);
    out->experiments.push_back(std::move(e));
  }

  // Baselines: the base cell with the same axis values and kdci.enabled=false
  // (when kdci.enabled is an axis; otherwise the base cell itself).
  int kdci_axis = -1;
  size_t kdci_off = 0;
  bool has_kdci_off = false;
  for (size_t k = 0; k < n_axes; ++k) {
    if (in.axes[k].key != "kdci.enabled") continue;
    kdci_axis = static_cast<int>(k);
    for (size_t i = 0; i < in.axes[k].values.size(); ++i) {
      const json& v = in.axes[k].values[i];
      if (v.is_boolean() && !v.get<bool>()) {
        kdci_off = i;
        has_kdci_off = true;
      }
    }
  }
  for (size_t i = 0; i < cells.size(); ++i) {
    ExpandedExperiment& e = out->experiments[first + i];
    if (!e.kdci && cells[i].variant < 0) continue;
    std::vector<size_t> target = cells[i].combo;
    if (kdci_axis >= 0) {
      if (!has_kdci_off) continue;
      target[kdci_axis] = kdci_off;
    }
    auto it = base_cells.find(target);
    if (it != base_cells.end() && it->second != first + static_cast<int>(i)) {
      e.baseline = it->second;
    }
  }

  // Runs: experiment-major, seed-minor.
  for (size_t i = 0; i < cells.size(); ++i) {
    const Cell& cell = cells[i];
    if (!cell.parsed.spec) continue;   // not reached: such a cell has errors
    const int teacher = cell.parsed.teacher;
    for (int64_t seed : in.seeds) {
      JobSpec s = *cell.parsed.spec;
      s.seed = seed;
      s.name = in.name + " " + cell.name + " seed " + std::to_string(seed);
      ExpandedRun r;
      r.experiment = first + static_cast<int>(i);
      r.seed = seed;
      r.kind = JobKindName(JobKind::kDistill);
      r.spec = ToJson(s);
      r.depends_on = teacher >= 0 ? teacher_runs[teacher] : -1;
      r.world_size = static_cast<int>(s.dist.world_size);
      r.identity = RunIdentity(s, teacher >= 0 ? teacher_identities[teacher] : "", code_version);
      out->runs.push_back(std::move(r));
    }
  }
}

}  // namespace dfkd::common::campaign_internal
