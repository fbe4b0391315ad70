// Internals of ExpandCampaign shared by campaign.cc (the campaign's own fields,
// teachers, scratch, limits, the driver), campaign_expand.cc (the distill grid:
// experiments, error attribution, baselines, runs) and dotted_path.cc. Not
// part of the library's interface.
#ifndef DFKD_COMMON_CAMPAIGN_CAMPAIGN_INTERNAL_H_
#define DFKD_COMMON_CAMPAIGN_CAMPAIGN_INTERNAL_H_

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/campaign/campaign.h"
#include "common/spec/job_spec.h"

namespace dfkd::common::campaign_internal {

// Campaign seeds share the job spec's range ([0, 2^40]).
inline constexpr int64_t kMaxSeed = int64_t{1} << 40;
// Expansion stops reporting after this many errors (a broken base in a grid of
// thousands would otherwise say the same thing thousands of times).
inline constexpr size_t kMaxErrors = 200;

struct CampaignAxis {
  std::string key;                    // dotted path into the job spec
  std::vector<nlohmann::json> values;
  std::vector<std::string> labels;    // each value as it appears in experiment names
};

struct CampaignVariant {
  std::string name;
  std::vector<std::pair<std::string, nlohmann::json>> changes;   // dotted path -> value
};

struct CampaignTeacher {
  std::string name;
  nlohmann::json raw;                 // as written
  std::optional<JobSpec> spec;        // unset when it did not parse
};

// The campaign's fields, checked. Parts with errors are left out (an axis that
// is not an array is not expanded) so the rest can still be checked.
struct CampaignInput {
  std::string name;
  int priority = 0;
  int max_attempts = 3;
  std::vector<int64_t> seeds;                // the valid ones
  std::vector<CampaignTeacher> teachers;     // sorted by name
  bool has_scratch = false;
  std::optional<JobSpec> scratch;            // parsed, seed 0
  bool expand = false;       // base is a distill spec object and limits hold
  nlohmann::json base;
  std::vector<CampaignAxis> axes;            // sorted by key
  std::vector<CampaignVariant> variants;     // sorted by name
};

// Collects errors, dropping exact repeats and stopping at kMaxErrors (with a
// last error saying so).
class ErrorList {
 public:
  explicit ErrorList(std::vector<SpecError>* errors) : errors_(errors) {}
  void Add(std::string path, std::string message);
  bool empty() const { return errors_->empty(); }

 private:
  std::vector<SpecError>* errors_;
  std::set<std::string> seen_;   // ToString() of every error added
  bool full_ = false;
};

// Reads everything but the distill grid: version, name, priority, seeds,
// max_attempts, teachers, scratch, base (kind only), axes, variants, limits.
CampaignInput ReadCampaign(const nlohmann::json& json, const CampaignLimits& limits,
                           ErrorList* errors);

// Expands base x axes x variants into distill experiments and (seeds) runs,
// appended to `out`. `teacher_runs[i]` / `teacher_identities[i]` belong to
// in.teachers[i] (-1 / "" when that teacher did not parse).
void ExpandDistillGrid(const CampaignInput& in, const std::string& code_version,
                       const std::vector<int>& teacher_runs,
                       const std::vector<std::string>& teacher_identities,
                       ExpandedCampaign* out, ErrorList* errors);

// A run's identity: 16 hex digits of FNV-1a 64 over
//   {"code_version": <code_version>, "spec": CanonicalHash(spec')}
// (nlohmann's dump, keys sorted), where spec' is `spec` with
// distill.teacher.weights replaced by "run:" + teacher_identity when the run
// trains from a campaign teacher (teacher_identity non-empty). The seed is part
// of the spec; the name is not (CanonicalHash leaves it out), so renaming a
// campaign or an experiment keeps identities, while a new teacher spec, seed or
// code version gives new ones.
std::string RunIdentity(const JobSpec& spec, const std::string& teacher_identity,
                        const std::string& code_version);

// "a.b_c.d": non-empty segments of [A-Za-z0-9_] joined by '.'.
bool IsDottedPath(const std::string& path);
// A campaign name for teachers and variants: non-empty, [a-z0-9_-].
bool IsCampaignName(const std::string& name);
// `path` is `prefix` or lies under it ("a.b.c" and "a.b[2]" lie under "a.b").
bool PathIsUnder(const std::string& path, const std::string& prefix);
// `path` lies under `other` or `other` under `path`.
bool PathsOverlap(const std::string& path, const std::string& other);
// "base" + "model.depth" -> "base.model.depth"; a spec's "<root>" -> "base".
std::string JoinPath(const std::string& prefix, const std::string& path);

}  // namespace dfkd::common::campaign_internal

#endif  // DFKD_COMMON_CAMPAIGN_CAMPAIGN_INTERNAL_H_
