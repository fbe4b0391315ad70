// `dfkd watch` rendering: the model fed by hand-made Watch events, the grid,
// the lines, ETAs and the in-place painter.
#include "client/watch_view.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "client/cli_common.h"
#include "client/text_table.h"

namespace dfkd::client {
namespace {

api::Run MakeRun(int64_t id, int64_t experiment, const std::string& kind, int64_t seed,
                 api::RunState state, double progress = 0, double accuracy = -1,
                 int attempt = 0) {
  api::Run r;
  r.set_id(id);
  r.set_campaign_id(3);
  r.set_experiment_id(experiment);
  r.set_kind(kind);
  r.set_seed(seed);
  r.set_state(state);
  r.set_progress(progress);
  r.set_latest_accuracy(accuracy);
  r.set_attempt(attempt);
  r.set_max_attempts(3);
  return r;
}

api::WatchEvent Event(const std::vector<api::Run>& runs, bool snapshot, bool done = false) {
  api::WatchEvent e;
  for (const api::Run& r : runs) *e.add_runs() = r;
  e.set_snapshot(snapshot);
  e.set_campaign_done(done);
  return e;
}

WatchModel DemoModel() {
  WatchModel model;
  model.SetCampaign(3, "demo");
  std::vector<api::Experiment> experiments(2);
  experiments[0].set_id(10);
  experiments[0].set_name("teacher:t");
  experiments[1].set_id(11);
  experiments[1].set_name("noise/base");
  model.SetExperiments(experiments);
  return model;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

TEST(WatchViewTest, ProgressBarAndDurations) {
  EXPECT_EQ(ProgressBar(0.61, 10), "[######----]");
  EXPECT_EQ(ProgressBar(0, 4), "[----]");
  EXPECT_EQ(ProgressBar(1.5, 4), "[####]");
  EXPECT_EQ(ProgressBar(-1, 4), "[----]");
  EXPECT_EQ(FormatDuration(45), "45s");
  EXPECT_EQ(FormatDuration(185), "3m05s");
  EXPECT_EQ(FormatDuration(7800), "2h10m");
  EXPECT_EQ(FormatDuration(90000), "1d01h");
  EXPECT_EQ(FormatDuration(-3), "0s");
}

TEST(WatchViewTest, SnapshotThenChanges) {
  WatchModel model = DemoModel();
  const std::vector<int64_t> first = model.Apply(
      Event({MakeRun(1, 10, "train_teacher", 0, api::RUN_STATE_SUCCEEDED, 1, 93.05, 1),
             MakeRun(2, 11, "distill", 0, api::RUN_STATE_RUNNING, 0.2, -1, 1),
             MakeRun(3, 11, "distill", 1, api::RUN_STATE_QUEUED)},
            true),
      0);
  EXPECT_EQ(first, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(StateSummary(model), "3 runs: 1 succeeded, 1 running, 1 queued");
  EXPECT_FALSE(model.done());

  // Progress within the same 10% band: no line; into the next band: a line.
  EXPECT_TRUE(model.Apply(Event({MakeRun(2, 11, "distill", 0, api::RUN_STATE_RUNNING, 0.25, -1, 1)},
                                false),
                          5)
                  .empty());
  EXPECT_EQ(model.Apply(Event({MakeRun(2, 11, "distill", 0, api::RUN_STATE_RUNNING, 0.3, 55.5, 1)},
                              false),
                        10),
            (std::vector<int64_t>{2}));
  // A state change always gives a line.
  EXPECT_EQ(model.Apply(Event({MakeRun(3, 11, "distill", 1, api::RUN_STATE_LEASED, 0, -1, 1)},
                              false),
                        11),
            (std::vector<int64_t>{3}));
}

TEST(WatchViewTest, EtaFromProgressRate) {
  WatchModel model = DemoModel();
  model.Apply(Event({MakeRun(2, 11, "distill", 0, api::RUN_STATE_RUNNING, 0.2, -1, 1),
                     MakeRun(3, 11, "distill", 1, api::RUN_STATE_QUEUED)},
                    true),
              0);
  const TrackedRun* run = model.Find(2);
  ASSERT_NE(run, nullptr);
  EXPECT_FALSE(model.RunEta(*run, 0).has_value());   // no rate yet
  EXPECT_FALSE(model.CampaignEta().has_value());

  model.Apply(Event({MakeRun(2, 11, "distill", 0, api::RUN_STATE_RUNNING, 0.3, 55.5, 1)}, false),
              10);
  run = model.Find(2);
  // 0.1 in 10 s: 0.7 left takes 70 s.
  ASSERT_TRUE(model.RunEta(*run, 10).has_value());
  EXPECT_NEAR(*model.RunEta(*run, 10), 70, 1e-6);
  EXPECT_NEAR(*model.RunEta(*run, 15), 65, 1e-6);   // time passes without news
  EXPECT_EQ(RenderCell(model, *run, 10), "R [###-------]  30% 55.50 ETA 1m10s");
  EXPECT_EQ(RenderRunLine(model, *run, 10),
            "run 2 noise/base seed 0: running 30% acc 55.50 ETA 1m10s");
  // Campaign: 0.7 + 1 (queued) left at 0.01/s.
  ASSERT_TRUE(model.CampaignEta().has_value());
  EXPECT_NEAR(*model.CampaignEta(), 170, 1e-6);

  // A new attempt restarts the rate window.
  model.Apply(Event({MakeRun(2, 11, "distill", 0, api::RUN_STATE_RUNNING, 0.1, -1, 2)}, false), 20);
  run = model.Find(2);
  EXPECT_FALSE(model.RunEta(*run, 20).has_value());
  EXPECT_EQ(RenderCell(model, *run, 20), "R [#---------]  10% #2");
}

TEST(WatchViewTest, GridRowsAreExperimentsColumnsSeeds) {
  WatchModel model = DemoModel();
  model.Apply(Event({MakeRun(1, 10, "train_teacher", 0, api::RUN_STATE_SUCCEEDED, 1, 93.05, 1),
                     MakeRun(2, 11, "distill", 0, api::RUN_STATE_RUNNING, 0.2, -1, 1),
                     MakeRun(3, 11, "distill", 1, api::RUN_STATE_QUEUED),
                     MakeRun(4, 0, "train_student_scratch", 1, api::RUN_STATE_BLOCKED)},
                    true),
              0);
  const std::string grid = RenderGrid(model, 0, 0);
  const std::vector<std::string> lines = Lines(grid);
  ASSERT_GE(lines.size(), 6u);
  EXPECT_EQ(lines[0].rfind("campaign 3 \"demo\": 4 runs: 1 succeeded, 1 running, 1 queued, "
                           "1 blocked",
                           0),
            0u);
  EXPECT_NE(lines[0].find("30%"), std::string::npos);   // (1 + 0.2 + 0 + 0) / 4
  EXPECT_EQ(lines[1].rfind("experiment", 0), 0u);
  EXPECT_NE(lines[1].find("seed 0"), std::string::npos);
  EXPECT_NE(lines[1].find("seed 1"), std::string::npos);
  // Seed columns line up.
  const size_t seed1 = lines[1].find("seed 1");
  EXPECT_EQ(lines[2].rfind("teacher:t", 0), 0u);
  EXPECT_NE(lines[2].find("S 93.05"), std::string::npos);
  EXPECT_EQ(lines[3].rfind("noise/base", 0), 0u);
  EXPECT_NE(lines[3].find("R [##--------]  20%"), std::string::npos);
  EXPECT_EQ(lines[3].find("Q"), seed1);
  // A run whose experiment is unknown is shown under its kind.
  EXPECT_EQ(lines[4].rfind("train_student_scratch", 0), 0u);
  EXPECT_EQ(lines[4].find("B"), seed1);
  EXPECT_NE(grid.find("B blocked  Q queued"), std::string::npos);

  // Cut to the terminal's width.
  for (const std::string& line : Lines(RenderGrid(model, 0, 20))) {
    EXPECT_LE(DisplayWidth(line), 19u) << line;
  }
}

TEST(WatchViewTest, FailuresAndTheEnd) {
  WatchModel model = DemoModel();
  model.Apply(Event({MakeRun(1, 10, "train_teacher", 0, api::RUN_STATE_SUCCEEDED, 1, 93.05, 1),
                     MakeRun(2, 11, "distill", 0, api::RUN_STATE_QUEUED, 0.4, -1, 1)},
                    true),
              0);
  EXPECT_EQ(RenderCell(model, *model.Find(2), 0), "Q retry");

  api::Run failed = MakeRun(2, 11, "distill", 0, api::RUN_STATE_FAILED, 0.4, -1, 3);
  failed.set_last_error("nan loss at step 12\ntraceback...");
  model.Apply(Event({failed}, false, /*done=*/true), 30);
  EXPECT_TRUE(model.done());
  EXPECT_EQ(model.Count(api::RUN_STATE_FAILED), 1);
  const TrackedRun* run = model.Find(2);
  ASSERT_NE(run, nullptr);
  EXPECT_EQ(RenderRunLine(model, *run, 30),
            "run 2 noise/base seed 0: failed (attempt 3/3): nan loss at step 12");
  const std::string summary = RenderFinalSummary(model, 10);
  EXPECT_EQ(summary,
            "campaign 3 \"demo\" finished: 2 runs: 1 succeeded, 1 failed\n"
            "  run 2 noise/base seed 0 failed (attempt 3/3): nan loss at step 12\n");
  const std::string grid = RenderGrid(model, 30, 0);
  EXPECT_NE(grid.find("done"), std::string::npos);
  EXPECT_NE(grid.find("F run 2 noise/base seed 0: nan loss at step 12"), std::string::npos);
  EXPECT_NEAR(model.OverallProgress(), 1.0, 1e-9);
}

TEST(WatchViewTest, SnapshotReplacesEveryRun) {
  WatchModel model = DemoModel();
  model.Apply(Event({MakeRun(1, 10, "train_teacher", 0, api::RUN_STATE_RUNNING, 0.5),
                     MakeRun(2, 11, "distill", 0, api::RUN_STATE_BLOCKED)},
                    true),
              0);
  // After a reconnect, a new snapshot: unchanged runs give no line.
  const std::vector<int64_t> changed =
      model.Apply(Event({MakeRun(1, 10, "train_teacher", 0, api::RUN_STATE_RUNNING, 0.5)}, true),
                  5);
  EXPECT_TRUE(changed.empty());
  EXPECT_EQ(model.runs().size(), 1u);
  EXPECT_EQ(model.Find(2), nullptr);
}

TEST(WatchViewTest, FitToHeight) {
  EXPECT_EQ(FitToHeight("a\nb\nc\n", 0), "a\nb\nc\n");
  EXPECT_EQ(FitToHeight("a\nb\nc\n", 4), "a\nb\nc\n");
  const std::string cut = FitToHeight("a\nb\nc\nd\n", 4);
  EXPECT_EQ(cut.substr(0, 4), "a\nb\n");
  EXPECT_NE(cut.find("... 2 more lines"), std::string::npos);
  EXPECT_EQ(Lines(cut).size(), 3u);
}

TEST(WatchViewTest, TerminalPainterRedrawsInPlace) {
  std::ostringstream out;
  TerminalPainter painter(out);
  painter.Draw("a\nb\n");
  EXPECT_EQ(out.str(), "\r\x1b[Ja\nb\n");
  painter.Draw("c\n");
  EXPECT_EQ(out.str(), "\r\x1b[Ja\nb\n\x1b[2A\r\x1b[Jc\n");
}

}  // namespace
}  // namespace dfkd::client
