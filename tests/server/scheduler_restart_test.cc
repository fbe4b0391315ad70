// The dfkd-scheduler binary killed with SIGKILL mid-campaign and restarted on
// the same database: the campaign finishes, no run lost or run twice, and the
// attempt a worker held across the crash stays valid.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include <gtest/gtest.h>

#include "tests/testing/scheduler_fixture.h"

namespace dfkd {
namespace {

namespace api = ::dfkd::api::v1;
using testing::SchedulerFixture;

// A dfkd-scheduler child process; the port is read from its first line.
class SchedulerProcess {
 public:
  explicit SchedulerProcess(const std::string& db_url, const std::string& artifacts) {
    int out[2];
    EXPECT_EQ(pipe(out), 0);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      std::string bin = std::string(std::getenv("DFKD_BINARY_DIR")) + "/bin/dfkd-scheduler";
      execl(bin.c_str(), bin.c_str(), "--db", db_url.c_str(), "--listen", "127.0.0.1:0",
            "--artifact-root", artifacts.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(out[1]);
    FILE* in = fdopen(out[0], "r");
    char line[512] = {0};
    if (fgets(line, sizeof(line), in)) {
      std::string text(line);
      auto at = text.find("port ");
      if (at != std::string::npos) port_ = std::stoi(text.substr(at + 5));
    }
    fclose(in);
  }
  ~SchedulerProcess() { Kill(SIGTERM); }
  int port() const { return port_; }
  void Kill(int sig) {
    if (pid_ > 0) {
      kill(pid_, sig);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

struct Client {
  std::unique_ptr<api::Campaigns::Stub> campaigns;
  std::unique_ptr<api::Workers::Stub> workers;
  explicit Client(int port) {
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                       grpc::InsecureChannelCredentials());
    campaigns = api::Campaigns::NewStub(channel);
    workers = api::Workers::NewStub(channel);
  }
};

TEST(SchedulerRestartTest, KilledMidCampaignFinishesWithNoRunLostOrDoubled) {
  testing::PgDatabase db;
  testing::TempDir artifacts;
  server::StoreOptions store_options;
  store_options.url = db.url();
  std::string researcher, worker;
  {
    auto store = server::Store::Open(store_options);
    researcher = store->CreateToken("alice", server::Role::kResearcher);
    worker = store->CreateToken("w", server::Role::kWorker);
  }
  auto as = [](const std::string& token) { return SchedulerFixture::As(token); };

  auto scheduler = std::make_unique<SchedulerProcess>(db.url(), artifacts.path());
  ASSERT_GT(scheduler->port(), 0);
  auto client = std::make_unique<Client>(scheduler->port());

  nlohmann::json campaign = testing::InstantCampaign("restart");
  campaign["seeds"] = {0, 1, 2, 3, 4};  // 1 teacher + 10 distill runs
  api::SubmitRequest submit;
  submit.set_campaign_json(campaign.dump());
  api::SubmitReply submitted;
  ASSERT_TRUE(client->campaigns->Submit(as(researcher).get(), submit, &submitted).ok());
  ASSERT_EQ(submitted.runs(), 11);

  api::RegisterRequest reg;
  reg.set_name("restart-worker");
  api::RegisterReply registered;
  ASSERT_TRUE(client->workers->Register(as(worker).get(), reg, &registered).ok());

  auto lease = [&]() -> std::optional<api::Assignment> {
    api::LeaseRequest req;
    req.set_worker_id(registered.worker_id());
    req.set_wait_seconds(5);
    api::LeaseReply reply;
    auto status = client->workers->Lease(as(worker).get(), req, &reply);
    EXPECT_TRUE(status.ok()) << status.error_message();
    if (!reply.has_assignment()) return std::nullopt;
    return reply.assignment();
  };
  auto finish = [&](const api::Assignment& a) {
    api::FinishRequest req;
    req.set_run_id(a.run_id());
    req.set_attempt_token(a.attempt_token());
    req.set_success(true);
    req.set_result_json(R"({"test_top1": 50})");
    req.set_artifact(a.output_dir() + "/model.pt");
    api::FinishReply reply;
    auto status = client->workers->Finish(as(worker).get(), req, &reply);
    EXPECT_TRUE(status.ok()) << status.error_message();
  };

  int finished = 0;
  std::optional<api::Assignment> in_flight;
  while (true) {
    auto a = lease();
    if (!a) break;
    if (finished == 5 && !in_flight) {
      // Hold this attempt across a crash of the scheduler.
      in_flight = a;
      scheduler->Kill(SIGKILL);
      scheduler = std::make_unique<SchedulerProcess>(db.url(), artifacts.path());
      ASSERT_GT(scheduler->port(), 0);
      client = std::make_unique<Client>(scheduler->port());
    }
    finish(*a);
    ++finished;
  }
  EXPECT_EQ(finished, 11);

  api::ListRunsRequest list;
  list.set_campaign_id(submitted.campaign_id());
  api::ListRunsReply runs;
  ASSERT_TRUE(client->campaigns->ListRuns(as(researcher).get(), list, &runs).ok());
  ASSERT_EQ(runs.runs_size(), 11);
  for (const auto& run : runs.runs()) {
    EXPECT_EQ(run.state(), api::RUN_STATE_SUCCEEDED) << run.id();
    EXPECT_EQ(run.attempt(), 1) << "run " << run.id() << " was leased more than once";
  }
}

}  // namespace
}  // namespace dfkd
