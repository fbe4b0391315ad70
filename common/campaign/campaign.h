// A campaign: the one file a researcher writes to get a paper table.
//
//   {
//     "version": 1,
//     "name": "fmnist-demo",
//     "priority": 0,                       // higher leases first (default 0)
//     "seeds": [0, 1],                     // one run per seed per experiment
//     "max_attempts": 3,                   // per run (default 3)
//     "teachers": {                        // train_teacher job specs, by name
//       "wrn16_2": { ...job spec, kind train_teacher... }
//     },
//     "scratch": { ...job spec... },       // optional train_student_scratch row
//     "base": {                            // a distill job spec ...
//       ...,
//       "distill": {"teacher": {"run": "wrn16_2", ...}, ...}  // ... whose teacher
//     },                                   //   is one of "teachers" (no weights path)
//     "axes": {                            // grid: every combination is an experiment
//       "distill.method": ["noise", "dafl"],
//       "kdci.enabled": [false, true]
//     },
//     "variants": {                        // named ablations: one change each
//       "no_prior": {"kdci.ablation": "no_prior"}
//     }
//   }
//
// Expansion (all on the server, so a CLI that exits loses nothing):
//   experiments = product(axes) x ({"" (the base)} + variants), in a stable order;
//   runs        = experiments x seeds, plus one run per teacher (its own seed,
//                 shared by the whole campaign) and per seed of "scratch".
// An axis or variant key is a dotted path into the job spec ("kdci.enabled",
// "distill.dafl.lr_g", "distill.teacher.run"); every expanded job spec is parsed
// with common/spec, so an error names the campaign path and the spec path:
//   "axes.distill.method[1]: distill.method: must be one of noise, dafl, deepinv, fast".
// Baselines: an experiment with kdci.enabled=true, or a variant, is compared to
// the base-variant experiment with the same axis values and kdci.enabled=false.
#ifndef DFKD_COMMON_CAMPAIGN_CAMPAIGN_H_
#define DFKD_COMMON_CAMPAIGN_CAMPAIGN_H_

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/spec/job_spec.h"

namespace dfkd::common {

inline constexpr int kCampaignSpecVersion = 1;

struct CampaignLimits {
  int64_t max_runs = 20000;        // runs one campaign may expand into
  int64_t max_experiments = 5000;
  int64_t max_seeds = 100;
};

struct ExpandedExperiment {
  std::string name;        // "dafl/kdci", "dafl/kdci/no_prior", "teacher:wrn16_2", "scratch"
  std::string kind;        // train_teacher | train_student_scratch | distill
  std::string method;      // distill.method; "teacher" / "scratch" for those rows
  bool kdci = false;
  std::string variant;     // "" = base
  nlohmann::json axes;     // {"distill.method": "dafl", "kdci.enabled": true}
  int baseline = -1;       // index into experiments of the compared cell, -1 = none
};

struct ExpandedRun {
  int experiment = -1;       // index into experiments
  int64_t seed = 0;
  std::string kind;
  nlohmann::json spec;       // full job spec (defaults filled), seed set;
                             // for distill runs distill.teacher.weights is ""
                             // and is filled by the scheduler at lease time
  int depends_on = -1;       // index into runs (its teacher), -1 = none
  int world_size = 1;
  // Canonical identity: CanonicalHash of the spec (teacher weights replaced by
  // the teacher run's identity) + seed + code version. Equal identity = same result.
  std::string identity;
};

struct ExpandedCampaign {
  std::string name;
  int priority = 0;
  int max_attempts = 3;
  nlohmann::json spec;       // the campaign as submitted
  std::vector<ExpandedExperiment> experiments;
  std::vector<ExpandedRun> runs;   // teachers come before their dependants
};

struct CampaignParseResult {
  std::optional<ExpandedCampaign> campaign;   // set iff errors is empty
  std::vector<SpecError> errors;              // every error, with its field path
  bool ok() const { return errors.empty(); }
  std::string ErrorText() const;
};

// Validates the whole campaign and expands it. Never throws. `code_version`
// goes into every run's identity so a new engine does not reuse old results.
CampaignParseResult ExpandCampaign(const nlohmann::json& json,
                                   const std::string& code_version,
                                   const CampaignLimits& limits = {});

// Sets a dotted path ("distill.dafl.lr_g") in a JSON object, creating objects
// on the way. Used for axes and variants.
void SetDottedPath(nlohmann::json& object, const std::string& dotted,
                   const nlohmann::json& value);

}  // namespace dfkd::common

#endif  // DFKD_COMMON_CAMPAIGN_CAMPAIGN_H_
