// PgStore against a real PostgreSQL: every test gets a fresh database from
// DFKD_TEST_POSTGRES_URL (scripts/pg-ephemeral.sh run -- store_test).
// Campaigns are built by hand (not through ExpandCampaign) so this test
// depends on the store alone. Lease expiry is driven by moving heartbeat_at
// back in time through a direct connection: no sleeps.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "server/policy/summary.h"
#include "server/store/migrations.h"
#include "server/store/store.h"
#include "tests/testing/pg_database.h"

namespace dfkd::server {
namespace {

using Code = StoreError::Code;

// ---------------------------------------------------------------- campaign builders

common::ExpandedExperiment Experiment(const std::string& name, const std::string& kind,
                                      bool kdci = false, int baseline = -1) {
  common::ExpandedExperiment e;
  e.name = name;
  e.kind = kind;
  e.method = kind == "distill" ? "dafl" : kind == "train_teacher" ? "teacher" : "scratch";
  e.kdci = kdci;
  e.axes = {{"kdci.enabled", kdci}};
  e.baseline = baseline;
  return e;
}

common::ExpandedRun MakeRun(int experiment, const std::string& kind, int64_t seed,
                        const std::string& identity, int depends_on = -1, int world_size = 1) {
  common::ExpandedRun run;
  run.experiment = experiment;
  run.kind = kind;
  run.seed = seed;
  run.spec = {{"version", 1}, {"kind", kind}, {"seed", seed}};
  if (kind == "distill") {
    run.spec["distill"] = {{"method", "dafl"}, {"teacher", {{"weights", ""}}}};
  }
  run.depends_on = depends_on;
  run.world_size = world_size;
  run.identity = identity;
  return run;
}

// One teacher (run 0) and `students` distill runs (seeds 0..) that depend on it.
common::ExpandedCampaign TeacherCampaign(const std::string& name, int students) {
  common::ExpandedCampaign c;
  c.name = name;
  c.spec = {{"name", name}};
  c.experiments = {Experiment("teacher:t", "train_teacher"), Experiment("dafl", "distill")};
  c.runs.push_back(MakeRun(0, "train_teacher", 7, "teacher-identity"));
  for (int i = 0; i < students; ++i) {
    c.runs.push_back(MakeRun(1, "distill", i, "student-identity-" + std::to_string(i), 0));
  }
  return c;
}

// `runs` independent scratch runs of one experiment.
common::ExpandedCampaign ScratchCampaign(const std::string& name, int runs, int max_attempts = 3,
                                         int world_size = 1) {
  common::ExpandedCampaign c;
  c.name = name;
  c.max_attempts = max_attempts;
  c.spec = {{"name", name}};
  c.experiments = {Experiment("scratch", "train_student_scratch")};
  for (int i = 0; i < runs; ++i) {
    c.runs.push_back(MakeRun(0, "train_student_scratch", i, name + "-" + std::to_string(i), -1,
                         world_size));
  }
  return c;
}

template <typename F>
void ExpectStoreError(F&& fn, Code code, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "expected a StoreError containing \"" << fragment << "\"";
  } catch (const StoreError& e) {
    EXPECT_EQ(static_cast<int>(e.code()), static_cast<int>(code)) << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- fixture

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* url = std::getenv("DFKD_TEST_POSTGRES_URL");
    ASSERT_TRUE(url != nullptr && *url != '\0')
        << "DFKD_TEST_POSTGRES_URL is not set: run this test via "
           "`scripts/pg-ephemeral.sh run -- store_test` (ctest does)";
    db_ = std::make_unique<dfkd::testing::PgDatabase>();
    sql_ = std::make_unique<pqxx::connection>(db_->url());
  }

  StoreOptions Options() const {
    StoreOptions options;
    options.url = db_->url();
    options.pool_size = 4;
    options.lease_seconds = 60;          // expiry is forced by back-dating heartbeats
    options.retry_backoff_seconds = 0;   // a retried run is leasable at once
    options.retry_backoff_max_seconds = 0;
    options.artifact_root = "/artifacts";
    return options;
  }

  Store& store() {
    if (!store_) store_ = Store::Open(Options());
    return *store_;
  }

  pqxx::result Sql(const std::string& query) {
    pqxx::nontransaction txn(*sql_);
    return txn.exec(query);
  }
  int64_t SqlInt(const std::string& query) { return Sql(query)[0][0].as<int64_t>(); }

  int64_t Worker(const std::string& name) { return store().RegisterWorker(name, {}); }

  api::Assignment Lease(int64_t worker, const std::string& host = "host", int port = 29500) {
    std::optional<api::Assignment> assignment = store().TryLease(worker, host, port, {});
    if (!assignment) throw std::runtime_error("expected an assignment for worker " +
                                              std::to_string(worker));
    return *assignment;
  }

  void FinishOk(const api::Assignment& a, double top1, const std::string& artifact = "") {
    api::FinishRequest request;
    request.set_run_id(a.run_id());
    request.set_attempt_token(a.attempt_token());
    request.set_success(true);
    request.set_result_json(nlohmann::json{{"test_top1", top1}}.dump());
    request.set_artifact(artifact.empty() ? a.output_dir() + "/model.pt" : artifact);
    store().Finish(request);
  }

  void FinishFailed(const api::Assignment& a, const std::string& error, bool retryable) {
    api::FinishRequest request;
    request.set_run_id(a.run_id());
    request.set_attempt_token(a.attempt_token());
    request.set_success(false);
    request.set_error(error);
    request.set_retryable(retryable);
    store().Finish(request);
  }

  // Makes the live attempt rows of `run_id` (one rank, or all with -1) look
  // silent for an hour.
  void Backdate(int64_t run_id, int rank = -1) {
    Sql("UPDATE attempts SET heartbeat_at = now() - interval '1 hour', "
        "leased_at = now() - interval '1 hour' WHERE ended_at IS NULL AND run_id = " +
        std::to_string(run_id) + (rank >= 0 ? " AND rank = " + std::to_string(rank) : ""));
  }

  // Three workers form the W=3 gang of the only queued run; ranks in order.
  std::vector<api::Assignment> FormGang() {
    const int64_t w1 = Worker("w1"), w2 = Worker("w2"), w3 = Worker("w3");
    EXPECT_FALSE(store().TryLease(w1, "host-1", 1111, {}));
    EXPECT_FALSE(store().TryLease(w2, "host-2", 2222, {}));
    const api::Assignment a3 = Lease(w3, "host-3", 3333);
    const api::Assignment a1 = Lease(w1, "host-1", 1111);
    const api::Assignment a2 = Lease(w2, "host-2", 2222);
    return {a1, a2, a3};
  }

  std::unique_ptr<dfkd::testing::PgDatabase> db_;   // declared first: dropped last
  std::unique_ptr<Store> store_;
  std::unique_ptr<pqxx::connection> sql_;
};

// ---------------------------------------------------------------- migrations

TEST_F(StoreTest, MigrationsAreIdempotent) {
  ASSERT_GE(Store::KnownSchemaVersion(), 1);
  auto first = Store::Open(Options());
  EXPECT_EQ(first->SchemaVersion(), Store::KnownSchemaVersion());
  auto second = Store::Open(Options());
  EXPECT_EQ(second->SchemaVersion(), Store::KnownSchemaVersion());
  EXPECT_EQ(SqlInt("SELECT count(*) FROM schema_migrations"),
            static_cast<int64_t>(EmbeddedMigrations().size()));
}

TEST_F(StoreTest, ConcurrentOpenAppliesEachMigrationOnce) {
  std::mutex mu;
  std::vector<std::string> errors;
  std::atomic<int> opened{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      try {
        auto s = Store::Open(Options());
        if (s->SchemaVersion() == Store::KnownSchemaVersion()) ++opened;
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mu);
        errors.push_back(e.what());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_EQ(opened.load(), 4);
  EXPECT_EQ(SqlInt("SELECT count(*) FROM schema_migrations"),
            static_cast<int64_t>(EmbeddedMigrations().size()));
  EXPECT_EQ(SqlInt("SELECT count(DISTINCT version) FROM schema_migrations"),
            static_cast<int64_t>(EmbeddedMigrations().size()));
}

TEST_F(StoreTest, NewerSchemaIsRefused) {
  store();
  const int known = Store::KnownSchemaVersion();
  Sql("INSERT INTO schema_migrations (version, name) VALUES (" + std::to_string(known + 1) +
      ", 'from_the_future')");
  ExpectStoreError([&] { Store::Open(Options()); }, Code::kFailedPrecondition,
                   "database schema is at version " + std::to_string(known + 1) +
                       " but this dfkd-scheduler knows only up to " + std::to_string(known) +
                       "; run a newer dfkd-scheduler");
}

TEST_F(StoreTest, IllegalTransitionIsRefusedByTheDatabase) {
  store().SubmitCampaign("alice", TeacherCampaign("c", 1), false);
  ASSERT_EQ(SqlInt("SELECT count(*) FROM runs WHERE state = 'blocked'"), 1);
  try {
    Sql("UPDATE runs SET state = 'succeeded' WHERE state = 'blocked'");
    ADD_FAILURE() << "blocked -> succeeded was accepted";
  } catch (const pqxx::sql_error& e) {
    EXPECT_EQ(e.sqlstate(), "DF001");
    EXPECT_NE(std::string(e.what()).find("illegal run state transition blocked -> succeeded"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(Sql("INSERT INTO runs (campaign_id, kind, spec, identity, owner, state, "
                   "max_attempts) SELECT id, 'x', '{}', 'x', 'o', 'bogus', 1 FROM campaigns"),
               pqxx::sql_error);
}

// ---------------------------------------------------------------- leasing

TEST_F(StoreTest, ThirtyTwoWorkersLeaseEveryRunExactlyOnce) {
  constexpr int kRuns = 10000;
  constexpr int kThreads = 32;
  StoreOptions options = Options();
  options.pool_size = kThreads;
  std::unique_ptr<Store> s = Store::Open(options);
  const api::SubmitReply reply = s->SubmitCampaign("alice", ScratchCampaign("many", kRuns), false);
  ASSERT_EQ(reply.runs(), kRuns);
  ASSERT_EQ(reply.reused_runs(), 0);
  std::vector<int64_t> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.push_back(s->RegisterWorker("w" + std::to_string(t), {}));
  }

  auto queued = [&] {
    for (const auto& [state, count] : s->CountRunsByState()) {
      if (state == "queued") return count;
    }
    return int64_t{0};
  };
  std::vector<std::vector<int64_t>> leased(kThreads);
  std::mutex mu;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      try {
        for (;;) {
          std::optional<api::Assignment> a =
              s->TryLease(workers[t], "host-" + std::to_string(t), 1000 + t, {});
          if (a) {
            leased[t].push_back(a->run_id());
            if (a->attempt() != 1) throw std::runtime_error("attempt != 1");
          } else if (queued() == 0) {
            return;   // nullopt can also mean "all remaining rows were locked"
          }
        }
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mu);
        errors.push_back(e.what());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  ASSERT_TRUE(errors.empty()) << errors.front();

  std::vector<int64_t> all;
  for (const auto& ids : leased) all.insert(all.end(), ids.begin(), ids.end());
  const std::set<int64_t> distinct(all.begin(), all.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(kRuns));
  EXPECT_EQ(distinct.size(), static_cast<size_t>(kRuns));
  EXPECT_EQ(SqlInt("SELECT count(*) FROM attempts"), kRuns);
  EXPECT_EQ(SqlInt("SELECT count(*) FROM runs WHERE state = 'leased' AND attempt = 1"), kRuns);
}

TEST_F(StoreTest, StaleTokenIsRefusedAfterExpiryRequeued) {
  store().SubmitCampaign("alice", ScratchCampaign("c", 1), false);
  const int64_t w = Worker("w1");
  const api::Assignment a = Lease(w);
  EXPECT_EQ(a.attempt(), 1);
  EXPECT_FALSE(store().Heartbeat(a.run_id(), a.attempt_token(), 0.1).lease_lost());
  EXPECT_EQ(store().GetRun(a.run_id()).state(), api::RUN_STATE_RUNNING);

  Backdate(a.run_id());
  const ExpireReport report = store().ExpireLeases();
  EXPECT_EQ(report.expired, 1);
  EXPECT_EQ(report.requeued, 1);
  EXPECT_EQ(report.failed, 0);
  const api::Run run = store().GetRun(a.run_id());
  EXPECT_EQ(run.state(), api::RUN_STATE_QUEUED);
  EXPECT_NE(run.last_error().find("lease expired: no heartbeat from worker w1 for"),
            std::string::npos)
      << run.last_error();

  const api::HeartbeatReply stale = store().Heartbeat(a.run_id(), a.attempt_token(), 0.2);
  EXPECT_TRUE(stale.lease_lost());
  EXPECT_FALSE(stale.cancel());
  api::MetricPoint point;
  point.set_name("loss");
  point.set_step(1);
  point.set_value(1.0);
  ExpectStoreError([&] { store().ReportMetrics(a.run_id(), a.attempt_token(), {point}); },
                   Code::kAborted, "lease lost");
  ExpectStoreError(
      [&] { store().ReportCheckpoint(a.run_id(), a.attempt_token(), 1, "/ck", "00"); },
      Code::kAborted, "lease lost");
  ExpectStoreError([&] { FinishOk(a, 99); }, Code::kAborted, "lease lost");

  const api::Assignment b = Lease(w);
  EXPECT_EQ(b.run_id(), a.run_id());
  EXPECT_EQ(b.attempt(), 2);
  EXPECT_NE(b.attempt_token(), a.attempt_token());
  EXPECT_FALSE(store().Heartbeat(b.run_id(), b.attempt_token(), 0.3).lease_lost());
  EXPECT_TRUE(store().Heartbeat(a.run_id(), a.attempt_token(), 0.3).lease_lost());
  EXPECT_EQ(store().ExpireLeases().expired, 0);
}

TEST_F(StoreTest, RetriesStopAfterMaxAttemptsKeepingTheLastError) {
  store().SubmitCampaign("alice", ScratchCampaign("c", 1, /*max_attempts=*/2), false);
  const int64_t w = Worker("w1");
  const api::Assignment first = Lease(w);
  FinishFailed(first, "boom 1", /*retryable=*/true);
  api::Run run = store().GetRun(first.run_id());
  EXPECT_EQ(run.state(), api::RUN_STATE_QUEUED);
  EXPECT_EQ(run.last_error(), "boom 1");

  const api::Assignment second = Lease(w);
  EXPECT_EQ(second.attempt(), 2);
  FinishFailed(second, "boom 2", /*retryable=*/true);
  run = store().GetRun(first.run_id());
  EXPECT_EQ(run.state(), api::RUN_STATE_FAILED);
  EXPECT_EQ(run.attempt(), 2);
  EXPECT_EQ(run.last_error(), "boom 2");
  EXPECT_FALSE(store().TryLease(w, "host", 1, {}));

  // Expiry counts attempts too: one attempt allowed, its lease runs out.
  store().SubmitCampaign("alice", ScratchCampaign("d", 1, /*max_attempts=*/1), false);
  const api::Assignment only = Lease(w);
  Backdate(only.run_id());
  const ExpireReport report = store().ExpireLeases();
  EXPECT_EQ(report.failed, 1);
  run = store().GetRun(only.run_id());
  EXPECT_EQ(run.state(), api::RUN_STATE_FAILED);
  EXPECT_NE(run.last_error().find("lease expired"), std::string::npos) << run.last_error();
}

TEST_F(StoreTest, HandedBackRunIsRequeuedWithoutSpendingAnAttempt) {
  store().SubmitCampaign("alice", ScratchCampaign("c", 1, /*max_attempts=*/1), false);
  const int64_t w = Worker("w1");
  const api::Assignment first = Lease(w);
  api::FinishRequest request;
  request.set_run_id(first.run_id());
  request.set_attempt_token(first.attempt_token());
  request.set_error("worker w1 shut down; resumes from checkpoint");
  request.set_retryable(true);
  request.set_handed_back(true);
  store().Finish(request);
  api::Run run = store().GetRun(first.run_id());
  EXPECT_EQ(run.state(), api::RUN_STATE_QUEUED);
  EXPECT_EQ(run.max_attempts(), 2);
  // With max_attempts 1, a plain failure now would have failed the run; the
  // handed-back attempt did not count, so a second attempt runs and may fail once.
  const api::Assignment second = Lease(w);
  EXPECT_EQ(second.attempt(), 2);
  EXPECT_TRUE(store().Heartbeat(first.run_id(), first.attempt_token(), 0.1).lease_lost());
  FinishFailed(second, "boom", /*retryable=*/true);
  EXPECT_EQ(store().GetRun(first.run_id()).state(), api::RUN_STATE_FAILED);
}

TEST_F(StoreTest, LeaseBatchAnswersEachAskInOrder) {
  store().SubmitCampaign("alice", ScratchCampaign("c", 2), false);
  const int64_t w1 = Worker("w1"), w2 = Worker("w2"), w3 = Worker("w3");
  const std::vector<Store::LeaseAnswer> answers = store().TryLeaseBatch(
      {{w1, "h1", 1}, {999999, "ghost", 2}, {w2, "h2", 3}, {w3, "h3", 4}}, {});
  ASSERT_EQ(answers.size(), 4u);
  ASSERT_TRUE(answers[0].registered && answers[0].assignment);
  EXPECT_FALSE(answers[1].registered);
  ASSERT_TRUE(answers[2].registered && answers[2].assignment);
  EXPECT_TRUE(answers[3].registered);
  EXPECT_FALSE(answers[3].assignment) << "only two runs were queued";
  EXPECT_NE(answers[0].assignment->run_id(), answers[2].assignment->run_id());
  EXPECT_EQ(answers[2].assignment->master_addr(), "h2");
  EXPECT_THROW(store().TryLease(999999, "ghost", 2, {}), StoreError);
}

TEST_F(StoreTest, GangIsLeasedAllOrNothing) {
  store().SubmitCampaign("alice", ScratchCampaign("gang", 1, 3, /*world_size=*/3), false);
  const int64_t w1 = Worker("w1"), w2 = Worker("w2"), w3 = Worker("w3");
  EXPECT_FALSE(store().TryLease(w1, "host-1", 1111, {}));
  EXPECT_FALSE(store().TryLease(w1, "host-1", 1111, {}));   // no second rank for w1
  EXPECT_EQ(SqlInt("SELECT count(*) FROM gang_slots"), 1);
  EXPECT_FALSE(store().TryLease(w2, "host-2", 2222, {}));
  EXPECT_EQ(SqlInt("SELECT count(*) FROM runs WHERE state = 'queued'"), 1);
  EXPECT_EQ(SqlInt("SELECT count(*) FROM attempts"), 0);

  const api::Assignment a3 = Lease(w3, "host-3", 3333);
  EXPECT_EQ(SqlInt("SELECT count(*) FROM gang_slots"), 0);
  const api::Assignment a1 = Lease(w1, "host-1", 1111);
  const api::Assignment a2 = Lease(w2, "host-2", 2222);
  EXPECT_EQ(a1.rank(), 0);
  EXPECT_EQ(a2.rank(), 1);
  EXPECT_EQ(a3.rank(), 2);
  for (const api::Assignment* a : {&a1, &a2, &a3}) {
    EXPECT_EQ(a->run_id(), a1.run_id());
    EXPECT_EQ(a->attempt(), 1);
    EXPECT_EQ(a->world_size(), 3);
    EXPECT_EQ(a->master_addr(), "host-1");
    EXPECT_EQ(a->master_port(), 1111);
  }
  const std::set<std::string> tokens{a1.attempt_token(), a2.attempt_token(), a3.attempt_token()};
  EXPECT_EQ(tokens.size(), 3u);
  EXPECT_EQ(store().GetRun(a1.run_id()).state(), api::RUN_STATE_LEASED);
  EXPECT_FALSE(store().TryLease(w1, "host-1", 1111, {}));   // delivered once
}

// Two workers that started two different W=2 gangs (here fair share points
// them at different runs; overlapping lease transactions do the same) must
// not wait on each other forever: the one outside the best forming gang
// moves into it and completes it.
TEST_F(StoreTest, SplitGangsConvergeIntoOne) {
  store().SubmitCampaign("alice", ScratchCampaign("gangs", 2, 3, /*world_size=*/2), false);
  const std::vector<int64_t> ids = {
      SqlInt("SELECT min(id) FROM runs"), SqlInt("SELECT max(id) FROM runs")};
  const int64_t w1 = Worker("w1"), w2 = Worker("w2");
  EXPECT_FALSE(store().TryLease(w1, "host-1", 1111, {ids[0]}));
  EXPECT_FALSE(store().TryLease(w2, "host-2", 2222, {ids[1]}));
  EXPECT_EQ(SqlInt("SELECT count(DISTINCT run_id) FROM gang_slots"), 2);

  // w1 holds the best gang (same free ranks, older run): it stays.
  EXPECT_FALSE(store().TryLease(w1, "host-1", 1111, {ids[0]}));
  // w2 leaves the newer run and completes the older one as rank 1.
  const api::Assignment a2 = Lease(w2, "host-2", 2222);
  EXPECT_EQ(a2.run_id(), ids[0]);
  EXPECT_EQ(a2.rank(), 1);
  EXPECT_EQ(a2.master_addr(), "host-1");
  EXPECT_EQ(a2.master_port(), 1111);
  const api::Assignment a1 = Lease(w1, "host-1", 1111);
  EXPECT_EQ(a1.run_id(), ids[0]);
  EXPECT_EQ(a1.rank(), 0);
  EXPECT_EQ(SqlInt("SELECT count(*) FROM gang_slots"), 0);
  EXPECT_EQ(store().GetRun(ids[1]).state(), api::RUN_STATE_QUEUED);
  EXPECT_EQ(store().GetRun(ids[1]).attempt(), 0);
}

// The race itself: eight workers polling at once, each pointed (by fair
// share) at a different W=2 run, so all eight start gangs of their own. They
// must drain into four complete gangs, never wait on each other for good.
TEST_F(StoreTest, ConcurrentWorkersFormCompleteGangs) {
  constexpr int kWorkers = 8;
  constexpr int kPollLimit = 2000;
  StoreOptions options = Options();
  options.pool_size = kWorkers;
  std::unique_ptr<Store> s = Store::Open(options);
  s->SubmitCampaign("alice", ScratchCampaign("gangs", kWorkers, 3, /*world_size=*/2), false);
  std::vector<int64_t> runs, workers;
  for (const auto& row : Sql("SELECT id FROM runs ORDER BY id")) {
    runs.push_back(row[0].as<int64_t>());
  }
  ASSERT_EQ(runs.size(), static_cast<size_t>(kWorkers));
  for (int t = 0; t < kWorkers; ++t) {
    workers.push_back(s->RegisterWorker("w" + std::to_string(t), {}));
  }
  std::vector<std::optional<api::Assignment>> got(kWorkers);
  std::vector<std::thread> threads;
  for (int t = 0; t < kWorkers; ++t) {
    threads.emplace_back([&, t] {
      for (int poll = 0; poll < kPollLimit && !got[t]; ++poll) {
        got[t] = s->TryLease(workers[t], "host-" + std::to_string(t), 1000 + t, {runs[t]});
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::map<int64_t, std::set<int>> ranks_of_run;
  for (int t = 0; t < kWorkers; ++t) {
    ASSERT_TRUE(got[t]) << "worker " << t << " got no rank in " << kPollLimit << " polls";
    EXPECT_TRUE(ranks_of_run[got[t]->run_id()].insert(got[t]->rank()).second);
  }
  EXPECT_EQ(ranks_of_run.size(), static_cast<size_t>(kWorkers / 2));
  for (const auto& [run, ranks] : ranks_of_run) {
    EXPECT_EQ(ranks, (std::set<int>{0, 1})) << "run " << run;
  }
  EXPECT_EQ(SqlInt("SELECT count(*) FROM gang_slots"), 0);
  EXPECT_EQ(SqlInt("SELECT count(*) FROM runs WHERE state = 'queued'"), kWorkers / 2);
}

// A gang closer to completion wins over an older one with more free ranks.
TEST_F(StoreTest, WorkersMoveToTheGangClosestToForming) {
  common::ExpandedCampaign wide = ScratchCampaign("wide", 1, 3, /*world_size=*/3);
  common::ExpandedCampaign narrow = ScratchCampaign("narrow", 1, 3, /*world_size=*/2);
  store().SubmitCampaign("alice", wide, false);
  store().SubmitCampaign("alice", narrow, false);
  const int64_t wide_id = SqlInt("SELECT min(id) FROM runs");
  const int64_t narrow_id = SqlInt("SELECT max(id) FROM runs");
  const int64_t w1 = Worker("w1"), w2 = Worker("w2"), w3 = Worker("w3");
  EXPECT_FALSE(store().TryLease(w1, "h1", 1, {wide_id}));     // wide: 1 of 3
  EXPECT_FALSE(store().TryLease(w2, "h2", 2, {narrow_id}));   // narrow: 1 of 2
  // w1's gang has two free ranks, narrow has one: w1 moves and forms it.
  const api::Assignment a1 = Lease(w1, "h1", 1);
  EXPECT_EQ(a1.run_id(), narrow_id);
  EXPECT_EQ(a1.rank(), 1);
  EXPECT_EQ(Lease(w2, "h2", 2).rank(), 0);
  // The wide run is queued again with no slots; w3 starts it afresh.
  EXPECT_EQ(SqlInt("SELECT count(*) FROM gang_slots"), 0);
  EXPECT_FALSE(store().TryLease(w3, "h3", 3, {}));
  EXPECT_EQ(SqlInt("SELECT run_id FROM gang_slots WHERE worker_id = " + std::to_string(w3)),
            wide_id);
}

TEST_F(StoreTest, LostGangRankRequeuesTheWholeGang) {
  store().SubmitCampaign("alice", ScratchCampaign("gang", 1, 3, /*world_size=*/3), false);
  const std::vector<api::Assignment> gang = FormGang();
  const int64_t run_id = gang[0].run_id();
  for (const api::Assignment& a : gang) {
    EXPECT_FALSE(store().Heartbeat(run_id, a.attempt_token(), 0.1).lease_lost());
  }
  Backdate(run_id, /*rank=*/1);
  const ExpireReport report = store().ExpireLeases();
  EXPECT_EQ(report.expired, 1);
  EXPECT_EQ(report.requeued, 1);
  EXPECT_EQ(store().GetRun(run_id).state(), api::RUN_STATE_QUEUED);
  for (const api::Assignment& a : gang) {
    EXPECT_TRUE(store().Heartbeat(run_id, a.attempt_token(), 0.2).lease_lost()) << a.rank();
  }
  EXPECT_EQ(SqlInt("SELECT count(*) FROM attempts WHERE ended_at IS NULL"), 0);
  EXPECT_EQ(SqlInt("SELECT count(*) FROM attempts WHERE outcome = 'expired'"), 3);
}

// ---------------------------------------------------------------- dependencies and reuse

TEST_F(StoreTest, TeacherSuccessReleasesDependantWithWeights) {
  const api::SubmitReply reply = store().SubmitCampaign("alice", TeacherCampaign("c", 1), false);
  EXPECT_EQ(reply.experiments(), 2);
  EXPECT_EQ(reply.runs(), 2);
  const std::vector<api::Run> runs = store().RunsOfCampaign(reply.campaign_id());
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].state(), api::RUN_STATE_QUEUED);
  EXPECT_EQ(runs[1].state(), api::RUN_STATE_BLOCKED);
  EXPECT_EQ(runs[1].depends_on(), runs[0].id());

  const int64_t w = Worker("w1");
  const api::Assignment teacher = Lease(w);
  ASSERT_EQ(teacher.run_id(), runs[0].id());
  EXPECT_FALSE(store().TryLease(w, "host", 1, {}));   // the student is still blocked
  const std::string weights = "/artifacts/runs/" + std::to_string(teacher.run_id()) + "/model.pt";
  FinishOk(teacher, 91.5, weights);
  const api::Run done = store().GetRun(teacher.run_id());
  EXPECT_EQ(done.state(), api::RUN_STATE_SUCCEEDED);
  EXPECT_EQ(done.artifact(), weights);
  EXPECT_DOUBLE_EQ(done.latest_accuracy(), 91.5);
  EXPECT_EQ(store().GetRun(runs[1].id()).state(), api::RUN_STATE_QUEUED);

  const api::Assignment student = Lease(w);
  ASSERT_EQ(student.run_id(), runs[1].id());
  const nlohmann::json spec = nlohmann::json::parse(student.spec_json());
  EXPECT_EQ(spec["distill"]["teacher"]["weights"].get<std::string>(), weights);
  EXPECT_EQ(student.output_dir(), "/artifacts/runs/" + std::to_string(student.run_id()));
  EXPECT_EQ(student.resume_checkpoint(), "");
}

TEST_F(StoreTest, TeacherFailureFailsDependantsAndRetryRequeuesThem) {
  const api::SubmitReply reply = store().SubmitCampaign("alice", TeacherCampaign("c", 2), false);
  const api::Assignment teacher = Lease(Worker("w1"));
  FinishFailed(teacher, "out of memory", /*retryable=*/false);
  const std::vector<api::Run> runs = store().RunsOfCampaign(reply.campaign_id());
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[0].state(), api::RUN_STATE_FAILED);
  EXPECT_EQ(runs[0].last_error(), "out of memory");
  for (size_t i = 1; i < runs.size(); ++i) {
    EXPECT_EQ(runs[i].state(), api::RUN_STATE_FAILED);
    EXPECT_EQ(runs[i].last_error(), "dependency run " + std::to_string(teacher.run_id()) +
                                        " failed: out of memory");
  }
  EXPECT_TRUE(store().CampaignDone(reply.campaign_id()));
  const api::Campaign campaign = store().GetCampaign(reply.campaign_id());
  EXPECT_EQ(campaign.state(), "finished");
  EXPECT_EQ(campaign.runs_by_state().at("failed"), 3);

  EXPECT_EQ(store().RetryCampaign(reply.campaign_id(), false), 3);
  const std::vector<api::Run> retried = store().RunsOfCampaign(reply.campaign_id());
  EXPECT_EQ(retried[0].state(), api::RUN_STATE_QUEUED);
  EXPECT_EQ(retried[0].max_attempts(), 1 + 3);
  EXPECT_EQ(retried[0].last_error(), "out of memory");
  EXPECT_EQ(retried[1].state(), api::RUN_STATE_BLOCKED);
  EXPECT_EQ(store().GetCampaign(reply.campaign_id()).state(), "active");
}

TEST_F(StoreTest, IdenticalCampaignReusesResultsUnlessForced) {
  const api::SubmitReply first = store().SubmitCampaign("alice", TeacherCampaign("c1", 2), false);
  EXPECT_EQ(first.reused_runs(), 0);
  const int64_t w = Worker("w1");
  for (int i = 0; i < 3; ++i) {
    const api::Assignment a = Lease(w);
    FinishOk(a, 50 + i);
  }
  ASSERT_TRUE(store().CampaignDone(first.campaign_id()));
  const std::vector<api::Run> originals = store().RunsOfCampaign(first.campaign_id());

  const api::SubmitReply second = store().SubmitCampaign("bob", TeacherCampaign("c2", 2), false);
  EXPECT_EQ(second.runs(), 3);
  EXPECT_EQ(second.reused_runs(), 3);
  const std::vector<api::Run> reused = store().RunsOfCampaign(second.campaign_id());
  ASSERT_EQ(reused.size(), 3u);
  for (size_t i = 0; i < reused.size(); ++i) {
    EXPECT_EQ(reused[i].state(), api::RUN_STATE_SUCCEEDED);
    EXPECT_EQ(reused[i].reused_from(), originals[i].id());
    EXPECT_EQ(reused[i].artifact(), originals[i].artifact());
    EXPECT_FALSE(reused[i].result_json().empty());
  }
  EXPECT_TRUE(store().CampaignDone(second.campaign_id()));

  const api::SubmitReply forced = store().SubmitCampaign("bob", TeacherCampaign("c3", 2), true);
  EXPECT_EQ(forced.reused_runs(), 0);
  const std::vector<api::Run> fresh = store().RunsOfCampaign(forced.campaign_id());
  ASSERT_EQ(fresh.size(), 3u);
  EXPECT_EQ(fresh[0].state(), api::RUN_STATE_QUEUED);
  EXPECT_EQ(fresh[1].state(), api::RUN_STATE_BLOCKED);
  EXPECT_EQ(fresh[1].reused_from(), 0);
}

TEST_F(StoreTest, PendingIdenticalTeacherIsShared) {
  const api::SubmitReply first = store().SubmitCampaign("alice", TeacherCampaign("c1", 1), false);
  const api::SubmitReply second = store().SubmitCampaign("bob", TeacherCampaign("c2", 1), false);
  EXPECT_EQ(second.runs(), 2);
  EXPECT_EQ(second.reused_runs(), 1);
  const int64_t teacher_id = store().RunsOfCampaign(first.campaign_id())[0].id();
  const std::vector<api::Run> runs = store().RunsOfCampaign(second.campaign_id());
  ASSERT_EQ(runs.size(), 1u);   // the teacher is c1's
  EXPECT_EQ(runs[0].depends_on(), teacher_id);
  EXPECT_EQ(runs[0].state(), api::RUN_STATE_BLOCKED);

  const api::Assignment teacher = Lease(Worker("w1"));
  ASSERT_EQ(teacher.run_id(), teacher_id);
  FinishOk(teacher, 90);
  EXPECT_EQ(store().GetRun(runs[0].id()).state(), api::RUN_STATE_QUEUED);
  EXPECT_EQ(store().RunsOfCampaign(first.campaign_id())[1].state(), api::RUN_STATE_QUEUED);
}

// ---------------------------------------------------------------- cancel, tokens, metrics

TEST_F(StoreTest, CancelledRunIsToldThroughHeartbeat) {
  const api::SubmitReply reply = store().SubmitCampaign("alice", ScratchCampaign("c", 1), false);
  const api::Assignment a = Lease(Worker("w1"));
  EXPECT_FALSE(store().Heartbeat(a.run_id(), a.attempt_token(), 0.5).cancel());
  EXPECT_EQ(store().CancelRun(a.run_id()), 1);
  EXPECT_EQ(store().CancelRun(a.run_id()), 0);
  const api::HeartbeatReply beat = store().Heartbeat(a.run_id(), a.attempt_token(), 0.6);
  EXPECT_TRUE(beat.cancel());
  EXPECT_FALSE(beat.lease_lost());
  FinishFailed(a, "cancelled by the scheduler", false);   // accepted, no error
  EXPECT_EQ(store().GetRun(a.run_id()).state(), api::RUN_STATE_CANCELLED);
  EXPECT_TRUE(store().CampaignDone(reply.campaign_id()));
  EXPECT_EQ(SqlInt("SELECT count(*) FROM attempts WHERE ended_at IS NULL"), 0);
  ExpectStoreError([&] { store().CancelRun(999999); }, Code::kNotFound, "run 999999 not found");

  const api::SubmitReply other = store().SubmitCampaign("alice", ScratchCampaign("d", 2), false);
  EXPECT_EQ(store().CancelCampaign(other.campaign_id()), 2);
  const api::Campaign cancelled = store().GetCampaign(other.campaign_id());
  EXPECT_EQ(cancelled.state(), "cancelled");
  EXPECT_EQ(cancelled.runs_by_state().at("cancelled"), 2);
  EXPECT_EQ(store().RetryCampaign(other.campaign_id(), /*include_cancelled=*/true), 2);
  EXPECT_EQ(store().GetCampaign(other.campaign_id()).state(), "active");
}

TEST_F(StoreTest, TokensAuthenticateUntilRevoked) {
  const std::string plain = store().CreateToken("alice", Role::kResearcher);
  EXPECT_EQ(plain.rfind("dfkd_", 0), 0u);
  EXPECT_EQ(plain.size(), 45u);
  const std::optional<Principal> alice = store().Authenticate(plain);
  ASSERT_TRUE(alice);
  EXPECT_EQ(alice->name, "alice");
  EXPECT_EQ(alice->role, Role::kResearcher);
  EXPECT_GT(alice->token_id, 0);
  EXPECT_FALSE(store().Authenticate("dfkd_0000000000000000000000000000000000000000"));
  EXPECT_FALSE(store().Authenticate(""));
  EXPECT_EQ(SqlInt("SELECT count(*) FROM tokens WHERE sha256 = " + sql_->quote(plain)), 0);
  EXPECT_EQ(SqlInt("SELECT min(length(sha256)) FROM tokens"), 64);

  const std::string worker = store().CreateToken("bob", Role::kWorker);
  EXPECT_EQ(store().RevokeTokens("alice"), 1);
  EXPECT_FALSE(store().Authenticate(plain));
  ASSERT_TRUE(store().Authenticate(worker));
  EXPECT_EQ(store().Authenticate(worker)->role, Role::kWorker);
  EXPECT_EQ(ParseRole(RoleName(Role::kAdmin)), Role::kAdmin);
  EXPECT_FALSE(ParseRole("root"));
}

TEST_F(StoreTest, MetricsBatchIsStoredAndUpdatesTheRun) {
  store().SubmitCampaign("alice", ScratchCampaign("c", 1), false);
  const int64_t w = Worker("w1");
  const api::Assignment a = Lease(w);
  std::vector<api::MetricPoint> points;
  auto add = [&](const std::string& name, int64_t step, double value) {
    api::MetricPoint p;
    p.set_name(name);
    p.set_step(step);
    p.set_value(value);
    points.push_back(p);
  };
  add("loss", 1, 2.0);
  add("loss", 2, 1.5);
  add("loss", 3, 1.0);
  add("progress", 3, 0.3);
  add("test_top1", 3, 42.5);
  EXPECT_EQ(store().ReportMetrics(a.run_id(), a.attempt_token(), points), 5);

  api::GetMetricsRequest request;
  request.set_run_id(a.run_id());
  EXPECT_EQ(store().GetMetrics(request).points_size(), 5);
  request.set_name("loss");
  const api::GetMetricsReply loss = store().GetMetrics(request);
  ASSERT_EQ(loss.points_size(), 3);
  EXPECT_EQ(loss.points(2).step(), 3);
  EXPECT_DOUBLE_EQ(loss.points(2).value(), 1.0);
  EXPECT_EQ(loss.points(2).attempt(), 1);
  request.set_name("");
  request.set_after_step(2);
  EXPECT_EQ(store().GetMetrics(request).points_size(), 3);
  const api::Run run = store().GetRun(a.run_id());
  EXPECT_DOUBLE_EQ(run.progress(), 0.3);
  EXPECT_DOUBLE_EQ(run.latest_accuracy(), 42.5);

  // The next attempt resumes from the recorded checkpoint.
  store().ReportCheckpoint(a.run_id(), a.attempt_token(), 3, "/ck/step3.pt", "abc");
  Backdate(a.run_id());
  store().ExpireLeases();
  EXPECT_EQ(Lease(w).resume_checkpoint(), "/ck/step3.pt");
}

TEST_F(StoreTest, ResultsSummarizeSeedsAgainstTheBaseline) {
  common::ExpandedCampaign c;
  c.name = "table";
  c.experiments = {Experiment("dafl", "distill"), Experiment("dafl/kdci", "distill", true, 0)};
  for (int e = 0; e < 2; ++e) {
    for (int seed = 0; seed < 3; ++seed) {
      c.runs.push_back(MakeRun(e, "distill", seed, "cell-" + std::to_string(e * 10 + seed)));
    }
  }
  const api::SubmitReply reply = store().SubmitCampaign("alice", c, false);
  const double kTop1[2][3] = {{80, 82, 84}, {85, 86, 87}};
  const std::vector<api::Experiment> experiments = store().ListExperiments(reply.campaign_id());
  ASSERT_EQ(experiments.size(), 2u);
  const int64_t w = Worker("w1");
  for (int i = 0; i < 6; ++i) {
    const api::Assignment a = Lease(w);
    const api::Run run = store().GetRun(a.run_id());
    const int e = run.experiment_id() == experiments[0].id() ? 0 : 1;
    FinishOk(a, kTop1[e][run.seed()]);
  }
  const api::ResultsReply results = store().Results(reply.campaign_id());
  EXPECT_EQ(results.campaign_name(), "table");
  ASSERT_EQ(results.cells_size(), 2);
  const api::ResultCell& base = results.cells(0);
  const api::ResultCell& kdci = results.cells(1);
  EXPECT_EQ(base.n(), 3);
  EXPECT_EQ(base.runs(), 3);
  EXPECT_NEAR(base.mean(), 82, 1e-9);
  EXPECT_NEAR(base.std(), 2, 1e-9);
  EXPECT_EQ(base.baseline_experiment_id(), 0);
  EXPECT_DOUBLE_EQ(base.delta(), 0);
  EXPECT_TRUE(kdci.kdci());
  EXPECT_EQ(kdci.kind(), "distill");
  EXPECT_NEAR(kdci.mean(), 86, 1e-9);
  EXPECT_NEAR(kdci.std(), 1, 1e-9);
  EXPECT_EQ(kdci.baseline_experiment_id(), base.experiment_id());
  EXPECT_NEAR(kdci.baseline_mean(), 82, 1e-9);
  EXPECT_NEAR(kdci.delta(), 4, 1e-9);
  EXPECT_EQ(Summarize({}).n, 0);
  EXPECT_DOUBLE_EQ(Summarize({5}).std, 0);
}

TEST_F(StoreTest, ListingPagesAndFiltersAndSnapshotsTheQueue) {
  for (int i = 0; i < 3; ++i) {
    store().SubmitCampaign("alice", ScratchCampaign("a" + std::to_string(i), 2), false);
  }
  const api::SubmitReply bob = store().SubmitCampaign("bob", ScratchCampaign("b", 2), false);
  api::ListCampaignsRequest request;
  request.set_owner("alice");
  request.mutable_page()->set_page_size(2);
  const api::ListCampaignsReply page1 = store().ListCampaigns(request);
  ASSERT_EQ(page1.campaigns_size(), 2);
  ASSERT_FALSE(page1.next_page_token().empty());
  EXPECT_EQ(page1.campaigns(0).runs_by_state().at("queued"), 2);
  request.mutable_page()->set_page_token(page1.next_page_token());
  const api::ListCampaignsReply page2 = store().ListCampaigns(request);
  ASSERT_EQ(page2.campaigns_size(), 1);
  EXPECT_TRUE(page2.next_page_token().empty());
  EXPECT_EQ(page2.campaigns(0).owner(), "alice");
  EXPECT_EQ(store().CampaignOwner(bob.campaign_id()), "bob");
  ExpectStoreError([&] { store().CampaignOwner(12345); }, Code::kNotFound,
                   "campaign 12345 not found");

  api::ListRunsRequest runs;
  runs.set_campaign_id(bob.campaign_id());
  runs.set_state(api::RUN_STATE_QUEUED);
  const api::ListRunsReply listed = store().ListRuns(runs, "");
  ASSERT_EQ(listed.runs_size(), 2);
  EXPECT_EQ(store().RunOwner(listed.runs(0).id()), "bob");
  EXPECT_EQ(store().ListRuns(runs, "alice").runs_size(), 0);

  const QueueSnapshot snapshot = store().SnapshotQueue(1);
  ASSERT_EQ(snapshot.queued.size(), 2u);   // the head of alice's and of bob's queue
  EXPECT_EQ(snapshot.queued[0].owner, "alice");
  EXPECT_EQ(snapshot.queued[1].owner, "bob");
  const int64_t w = Worker("w1");
  const api::Assignment a = *store().TryLease(w, "host", 1, {snapshot.queued[1].run_id});
  EXPECT_EQ(a.run_id(), snapshot.queued[1].run_id);   // the preferred run first
  const QueueSnapshot after = store().SnapshotQueue(1);
  ASSERT_EQ(after.running_by_owner.size(), 1u);
  EXPECT_EQ(after.running_by_owner[0], std::make_pair(std::string("bob"), 1));
  EXPECT_EQ(store().WorkersSeenWithin(60), 1);
}

}  // namespace
}  // namespace dfkd::server
