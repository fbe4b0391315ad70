#include "client/watch_view.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <set>

#include "client/cli_common.h"
#include "client/text_table.h"

namespace dfkd::client {
namespace {

constexpr int kBarWidth = 10;

int Decile(double progress) {
  const int d = static_cast<int>(std::floor(progress * 10 + 1e-9));
  return std::clamp(d, 0, 10);
}

std::string Percent(double progress) {
  const int p = std::clamp(static_cast<int>(std::floor(progress * 100 + 1e-9)), 0, 100);
  char buf[16];
  snprintf(buf, sizeof buf, "%3d%%", p);
  return buf;
}

// "61%" without padding.
std::string PercentText(double progress) {
  const std::string padded = Percent(progress);
  return padded.substr(padded.find_first_not_of(' '));
}

std::string RunTitle(const WatchModel& model, const api::Run& run) {
  return "run " + std::to_string(run.id()) + " " +
         model.RowName(run.experiment_id(), run.kind()) + " seed " + std::to_string(run.seed());
}

std::string Attempts(const api::Run& run) {
  return std::to_string(run.attempt()) + "/" + std::to_string(run.max_attempts());
}

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

}  // namespace

void WatchModel::SetCampaign(int64_t id, const std::string& name) {
  campaign_id_ = id;
  campaign_name_ = name;
}

void WatchModel::SetExperiments(const std::vector<api::Experiment>& experiments) {
  experiment_order_.clear();
  experiment_names_.clear();
  for (const api::Experiment& e : experiments) {
    experiment_order_.push_back(e.id());
    experiment_names_[e.id()] = e.name();
  }
}

std::vector<int64_t> WatchModel::Apply(const api::WatchEvent& event, double now) {
  if (event.snapshot()) {
    std::set<int64_t> present;
    for (const api::Run& run : event.runs()) present.insert(run.id());
    for (auto it = runs_.begin(); it != runs_.end();) {
      it = present.count(it->first) ? std::next(it) : runs_.erase(it);
    }
  }
  std::vector<int64_t> notable;
  for (const api::Run& run : event.runs()) {
    const bool is_new = runs_.find(run.id()) == runs_.end();
    TrackedRun& t = runs_[run.id()];
    const bool reset = is_new || run.attempt() != t.run.attempt() ||
                       run.state() != t.run.state() || run.progress() < t.run.progress();
    if (is_new || run.progress() != t.run.progress()) t.progress_time = now;
    t.run = run;
    if (run.state() != api::RUN_STATE_RUNNING) {
      t.rate_since = -1;
    } else if (reset || t.rate_since < 0) {
      t.rate_since = now;
      t.rate_progress = run.progress();
    }
    const int decile = run.state() == api::RUN_STATE_RUNNING ? Decile(run.progress()) : -1;
    if (is_new || run.state() != t.reported_state || run.attempt() != t.reported_attempt ||
        decile != t.reported_decile) {
      notable.push_back(run.id());
      t.reported_state = run.state();
      t.reported_attempt = run.attempt();
      t.reported_decile = decile;
    }
  }
  done_ = event.campaign_done();
  return notable;
}

const TrackedRun* WatchModel::Find(int64_t run_id) const {
  auto it = runs_.find(run_id);
  return it == runs_.end() ? nullptr : &it->second;
}

std::string WatchModel::RowName(int64_t experiment_id, const std::string& kind) const {
  auto it = experiment_names_.find(experiment_id);
  if (it != experiment_names_.end()) return it->second;
  if (!kind.empty()) return kind;
  return "experiment " + std::to_string(experiment_id);
}

std::vector<int64_t> WatchModel::RowOrder() const {
  std::vector<int64_t> order = experiment_order_;
  std::set<int64_t> others;
  for (const auto& entry : runs_) {
    const int64_t e = entry.second.run.experiment_id();
    if (!experiment_names_.count(e)) others.insert(e);
  }
  order.insert(order.end(), others.begin(), others.end());
  return order;
}

std::optional<double> WatchModel::Rate(const TrackedRun& run) const {
  if (run.run.state() != api::RUN_STATE_RUNNING || run.rate_since < 0) return std::nullopt;
  const double dt = run.progress_time - run.rate_since;
  const double dp = run.run.progress() - run.rate_progress;
  if (dt <= 0 || dp <= 0) return std::nullopt;
  return dp / dt;
}

std::optional<double> WatchModel::RunEta(const TrackedRun& run, double now) const {
  const std::optional<double> rate = Rate(run);
  if (!rate) return std::nullopt;
  const double left = std::max(0.0, 1.0 - run.run.progress()) / *rate;
  return std::max(0.0, left - std::max(0.0, now - run.progress_time));
}

std::optional<double> WatchModel::CampaignEta() const {
  double rate = 0, work = 0;
  for (const auto& entry : runs_) {
    const TrackedRun& t = entry.second;
    if (IsTerminalState(t.run.state())) continue;
    work += std::max(0.0, 1.0 - std::clamp(t.run.progress(), 0.0, 1.0));
    if (std::optional<double> r = Rate(t)) rate += *r;
  }
  if (work <= 0) return 0.0;
  if (rate <= 0) return std::nullopt;
  return work / rate;
}

double WatchModel::OverallProgress() const {
  if (runs_.empty()) return 0;
  double sum = 0;
  for (const auto& entry : runs_) {
    const api::Run& r = entry.second.run;
    sum += IsTerminalState(r.state()) ? 1.0 : std::clamp(r.progress(), 0.0, 1.0);
  }
  return sum / static_cast<double>(runs_.size());
}

int WatchModel::Count(api::RunState state) const {
  int n = 0;
  for (const auto& entry : runs_) n += entry.second.run.state() == state ? 1 : 0;
  return n;
}

std::string ProgressBar(double fraction, int width) {
  if (width < 1) width = 1;
  if (!(fraction > 0)) fraction = 0;
  if (fraction > 1) fraction = 1;
  const int filled = static_cast<int>(std::floor(fraction * width + 1e-9));
  return "[" + std::string(filled, '#') + std::string(width - filled, '-') + "]";
}

std::string StateSummary(const WatchModel& model) {
  static const api::RunState kOrder[] = {
      api::RUN_STATE_SUCCEEDED, api::RUN_STATE_RUNNING, api::RUN_STATE_LEASED,
      api::RUN_STATE_QUEUED,    api::RUN_STATE_BLOCKED, api::RUN_STATE_FAILED,
      api::RUN_STATE_CANCELLED};
  std::string out = std::to_string(model.runs().size()) +
                    (model.runs().size() == 1 ? " run" : " runs");
  bool first = true;
  for (api::RunState state : kOrder) {
    const int n = model.Count(state);
    if (n == 0) continue;
    out += first ? ": " : ", ";
    out += std::to_string(n) + " " + RunStateName(state);
    first = false;
  }
  return out;
}

std::string RenderCell(const WatchModel& model, const TrackedRun& t, double now) {
  const api::Run& r = t.run;
  std::string cell(1, RunStateLetter(r.state()));
  switch (r.state()) {
    case api::RUN_STATE_RUNNING: {
      cell += " " + ProgressBar(r.progress(), kBarWidth) + " " + Percent(r.progress());
      if (r.latest_accuracy() >= 0) cell += " " + FormatFixed(r.latest_accuracy(), 2);
      if (std::optional<double> eta = model.RunEta(t, now)) cell += " ETA " + FormatDuration(*eta);
      if (r.attempt() > 1) cell += " #" + std::to_string(r.attempt());
      break;
    }
    case api::RUN_STATE_LEASED:
      if (r.attempt() > 1) cell += " #" + std::to_string(r.attempt());
      break;
    case api::RUN_STATE_QUEUED:
      if (r.attempt() > 0) cell += " retry";
      break;
    case api::RUN_STATE_SUCCEEDED:
      if (r.latest_accuracy() >= 0) cell += " " + FormatFixed(r.latest_accuracy(), 2);
      if (r.reused_from() != 0) cell += " reused";
      break;
    default:
      break;
  }
  return cell;
}

std::string RenderGrid(const WatchModel& model, double now, int columns) {
  std::string title = "campaign " + std::to_string(model.campaign_id()) + " \"" +
                      model.campaign_name() + "\": " + StateSummary(model) + "  " +
                      PercentText(model.OverallProgress());
  if (model.done()) {
    title += "  done";
  } else if (std::optional<double> eta = model.CampaignEta()) {
    title += "  ETA ~" + FormatDuration(*eta);
  }

  std::set<int64_t> seeds;
  std::map<int64_t, std::map<int64_t, const TrackedRun*>> cells;   // experiment -> seed -> run
  for (const auto& entry : model.runs()) {
    const api::Run& r = entry.second.run;
    seeds.insert(r.seed());
    cells[r.experiment_id()][r.seed()] = &entry.second;   // runs_ is by id: the latest wins
  }
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header = {"experiment"};
  for (int64_t seed : seeds) header.push_back("seed " + std::to_string(seed));
  rows.push_back(header);
  for (int64_t experiment : model.RowOrder()) {
    auto it = cells.find(experiment);
    if (it == cells.end()) continue;
    std::string kind = it->second.begin()->second->run.kind();
    std::vector<std::string> row = {model.RowName(experiment, kind)};
    for (int64_t seed : seeds) {
      auto run = it->second.find(seed);
      row.push_back(run == it->second.end() ? "" : RenderCell(model, *run->second, now));
    }
    rows.push_back(std::move(row));
  }

  std::string text = title + "\n" + RenderColumns(rows, {});
  text += "B blocked  Q queued  L leased  R running  S succeeded  F failed  C cancelled\n";
  constexpr size_t kMaxFailedLines = 5;
  size_t failed = 0;
  for (const auto& entry : model.runs()) {
    const api::Run& r = entry.second.run;
    if (r.state() != api::RUN_STATE_FAILED) continue;
    if (++failed > kMaxFailedLines) continue;
    text += "F " + RunTitle(model, r) + ": " + FirstLine(r.last_error(), 160) + "\n";
  }
  if (failed > kMaxFailedLines) {
    text += "  ... and " + std::to_string(failed - kMaxFailedLines) + " more failed runs\n";
  }
  if (columns <= 0) return text;
  std::string cut;
  const size_t width = static_cast<size_t>(std::max(1, columns - 1));
  for (const std::string& line : SplitLines(text)) cut += TruncateToWidth(line, width) + "\n";
  return cut;
}

std::string FitToHeight(const std::string& frame, int rows) {
  const std::vector<std::string> lines = SplitLines(frame);
  if (rows <= 0 || static_cast<int>(lines.size()) <= rows - 1) return frame;
  const int keep = std::max(1, rows - 2);
  std::string out;
  for (int i = 0; i < keep; ++i) out += lines[i] + "\n";
  out += "... " + std::to_string(lines.size() - keep) +
         " more lines (a taller terminal, or `dfkd watch ID | cat`)\n";
  return out;
}

std::string RenderRunLine(const WatchModel& model, const TrackedRun& t, double now) {
  const api::Run& r = t.run;
  std::string line = RunTitle(model, r) + ": " + RunStateName(r.state());
  switch (r.state()) {
    case api::RUN_STATE_RUNNING: {
      line += " " + PercentText(r.progress());
      if (r.latest_accuracy() >= 0) line += " acc " + FormatFixed(r.latest_accuracy(), 2);
      if (std::optional<double> eta = model.RunEta(t, now)) line += " ETA " + FormatDuration(*eta);
      if (r.attempt() > 1) line += " (attempt " + Attempts(r) + ")";
      break;
    }
    case api::RUN_STATE_LEASED:
      if (r.attempt() > 1) line += " (attempt " + Attempts(r) + ")";
      break;
    case api::RUN_STATE_QUEUED:
      if (r.attempt() > 0) {
        line += " (retry after attempt " + Attempts(r);
        if (!r.last_error().empty()) line += ": " + FirstLine(r.last_error(), 160);
        line += ")";
      }
      break;
    case api::RUN_STATE_SUCCEEDED:
      if (r.latest_accuracy() >= 0) line += " acc " + FormatFixed(r.latest_accuracy(), 2);
      if (r.reused_from() != 0) line += " (reused run " + std::to_string(r.reused_from()) + ")";
      break;
    case api::RUN_STATE_FAILED:
      line += " (attempt " + Attempts(r) + ")";
      if (!r.last_error().empty()) line += ": " + FirstLine(r.last_error(), 200);
      break;
    default:
      break;
  }
  return line;
}

std::string RenderFinalSummary(const WatchModel& model, size_t max_failed) {
  std::string text = "campaign " + std::to_string(model.campaign_id()) + " \"" +
                     model.campaign_name() + "\" " + (model.done() ? "finished" : "stopped") +
                     ": " + StateSummary(model) + "\n";
  size_t failed = 0;
  for (const auto& entry : model.runs()) {
    const api::Run& r = entry.second.run;
    if (r.state() != api::RUN_STATE_FAILED) continue;
    if (++failed > max_failed) continue;
    text += "  " + RunTitle(model, r) + " failed (attempt " + Attempts(r) + ")";
    if (!r.last_error().empty()) text += ": " + FirstLine(r.last_error(), 200);
    text += "\n";
  }
  if (failed > max_failed) {
    text += "  ... and " + std::to_string(failed - max_failed) + " more (dfkd ls runs --campaign " +
            std::to_string(model.campaign_id()) + " --state failed)\n";
  }
  return text;
}

void TerminalPainter::Draw(const std::string& frame) {
  if (lines_ > 0) os_ << "\x1b[" << lines_ << "A";
  os_ << "\r\x1b[J" << frame;
  os_.flush();
  lines_ = static_cast<int>(std::count(frame.begin(), frame.end(), '\n'));
}

}  // namespace dfkd::client
