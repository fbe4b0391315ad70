// `dfkd watch`: what the Watch stream has said so far (WatchModel) and how it
// is drawn. Rendering functions are pure (they take `now`), so they are
// unit-tested; the command owns the clock and the terminal.
//
// Grid (stdout is a terminal, redrawn in place):
//
//   campaign 3 "fmnist-demo": 9 runs: 1 succeeded, 2 running, 6 blocked  28%  ETA ~4m10s
//   experiment  seed 0                               seed 1
//   teacher:t   S 93.05
//   noise/base  R [######----]  61% 70.12 ETA 1m20s  Q
//   noise/kdci  B                                    B
//   B blocked  Q queued  L leased  R running  S succeeded  F failed  C cancelled
//
// Rows are experiments in campaign order, columns the seeds. A running cell
// shows a progress bar, the latest test accuracy and an ETA from the rate of
// progress seen since the run (this attempt) started running; "#2" marks a
// second attempt, "retry" a queued run that has failed before.
//
// Lines (stdout is not a terminal): one line per run whenever its state or
// attempt changes, or its progress passes a multiple of 10%.
#ifndef DFKD_CLIENT_WATCH_VIEW_H_
#define DFKD_CLIENT_WATCH_VIEW_H_

#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "dfkd/api/v1/scheduler.pb.h"

namespace dfkd::client {

namespace api = ::dfkd::api::v1;

// One run as the watcher knows it. Times are seconds on the caller's clock.
struct TrackedRun {
  api::Run run;
  double progress_time = -1;   // when `run.progress` was last seen to change
  double rate_since = -1;      // start of the rate window (running, this attempt); -1 none
  double rate_progress = 0;    // progress at rate_since
  // What the line view last reported.
  api::RunState reported_state = api::RUN_STATE_UNSPECIFIED;
  int reported_attempt = -1;
  int reported_decile = -1;
};

class WatchModel {
 public:
  void SetCampaign(int64_t id, const std::string& name);
  // Row names and order.
  void SetExperiments(const std::vector<api::Experiment>& experiments);

  // Applies one event received at `now`. A snapshot replaces every run.
  // Returns, in event order, the runs with a change worth a line: first
  // sight, new state or attempt, or progress into a new 10% band.
  std::vector<int64_t> Apply(const api::WatchEvent& event, double now);

  bool done() const { return done_; }
  int64_t campaign_id() const { return campaign_id_; }
  const std::string& campaign_name() const { return campaign_name_; }
  const std::map<int64_t, TrackedRun>& runs() const { return runs_; }
  const TrackedRun* Find(int64_t run_id) const;
  // The experiment's name; for an unknown id (0: a campaign's teacher runs on
  // older servers) the run's kind.
  std::string RowName(int64_t experiment_id, const std::string& kind) const;
  // Experiment ids in campaign order, then ids only runs know, ascending.
  std::vector<int64_t> RowOrder() const;

  // Progress per second of a running run (this attempt), when measurable.
  std::optional<double> Rate(const TrackedRun& run) const;
  // Seconds left for a running run, when a rate is known.
  std::optional<double> RunEta(const TrackedRun& run, double now) const;
  // Rough seconds left for the campaign: the work left (1 - progress of every
  // live run) over the summed rate of the running runs.
  std::optional<double> CampaignEta() const;
  // Mean progress over all runs, finished runs counting 1.
  double OverallProgress() const;
  int Count(api::RunState state) const;

 private:
  int64_t campaign_id_ = 0;
  std::string campaign_name_;
  std::vector<int64_t> experiment_order_;
  std::map<int64_t, std::string> experiment_names_;
  std::map<int64_t, TrackedRun> runs_;
  bool done_ = false;
};

// "[####------]": `width` characters between the brackets.
std::string ProgressBar(double fraction, int width);
// "12 runs: 4 succeeded, 2 running, 6 queued" (non-zero states only).
std::string StateSummary(const WatchModel& model);
// The grid cell of one run, e.g. "R [######----]  61% 70.12 ETA 1m20s", "S 93.05".
std::string RenderCell(const WatchModel& model, const TrackedRun& run, double now);
// The whole grid, one '\n'-terminated line each; lines cut to `columns`
// terminal columns when columns > 0.
std::string RenderGrid(const WatchModel& model, double now, int columns);
// At most `rows` - 1 lines of `frame` (cursor-up cannot reach above the
// screen): the first ones and a last line saying how many were left out.
// `rows` <= 0: the frame unchanged.
std::string FitToHeight(const std::string& frame, int rows);
// The line view: "run 17 dafl/kdci seed 1: running 45% acc 71.20 ETA 1m20s".
std::string RenderRunLine(const WatchModel& model, const TrackedRun& run, double now);
// "campaign 3 "x" finished: 4 succeeded, 1 failed" plus one line per failed
// run (at most `max_failed`) with its last error.
std::string RenderFinalSummary(const WatchModel& model, size_t max_failed);

// Redraws a multi-line frame in place with ANSI escapes: the cursor goes back
// up over the previous frame, which is cleared, then the new one is written.
class TerminalPainter {
 public:
  explicit TerminalPainter(std::ostream& os) : os_(os) {}
  void Draw(const std::string& frame);

 private:
  std::ostream& os_;
  int lines_ = 0;
};

}  // namespace dfkd::client

#endif  // DFKD_CLIENT_WATCH_VIEW_H_
