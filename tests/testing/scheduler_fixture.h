// A real dfkd-scheduler for tests: its own fresh database on the test
// PostgreSQL (DFKD_TEST_POSTGRES_URL), gRPC on a free loopback port, tokens
// for every role, and stubs that carry them.
#ifndef DFKD_TESTS_TESTING_SCHEDULER_FIXTURE_H_
#define DFKD_TESTS_TESTING_SCHEDULER_FIXTURE_H_

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "dfkd/api/v1/scheduler.grpc.pb.h"
#include "server/api/scheduler_server.h"
#include "tests/testing/pg_database.h"
#include "tests/testing/temp_dir.h"

namespace dfkd::testing {

namespace api = ::dfkd::api::v1;

inline std::string ReadSourceFile(const std::string& relative) {
  const char* root = std::getenv("DFKD_SOURCE_DIR");
  std::ifstream in(std::string(root ? root : ".") + "/" + relative);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// An instant campaign: one teacher, base distill (noise), kdci off/on, 2 seeds
// = 1 teacher run + 4 distill runs.
inline nlohmann::json InstantCampaign(const std::string& name = "instant") {
  nlohmann::json teacher =
      nlohmann::json::parse(ReadSourceFile("tests/configs/instant/teacher_fashion_mnist.json"));
  nlohmann::json base = {
      {"version", 1},
      {"kind", "distill"},
      {"data", {{"dataset", "fashion_mnist"}, {"test_limit", 256}}},
      {"model", {{"arch", "wrn"}, {"depth", 16}, {"widen_factor", 1}}},
      {"train", {{"epochs", 1}, {"max_steps", 4}, {"batch_size", 32}}},
      {"distill", {{"teacher", {{"run", "t"}}}, {"method", "noise"}, {"steps_per_epoch", 4},
                   {"kd_steps", 2}, {"synthesis_batch_size", 32}}},
  };
  return {{"version", 1},
          {"name", name},
          {"seeds", {0, 1}},
          {"teachers", {{"t", teacher}}},
          {"base", base},
          {"axes", {{"kdci.enabled", {false, true}}}}};
}

class SchedulerFixture {
 public:
  explicit SchedulerFixture(double lease_seconds = 30, bool tls = false,
                            const std::string& cert = "", const std::string& key = "") {
    server::SchedulerOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "127.0.0.1:0";
    options.code_version = "test";
    options.store.url = db_.url();
    options.store.lease_seconds = lease_seconds;
    options.store.retry_backoff_seconds = 0;
    options.store.artifact_root = artifacts_.path();
    if (tls) {
      options.tls_cert = cert;
      options.tls_key = key;
    }
    server_ = std::make_unique<server::SchedulerServer>(options);
    server_->Start();
    auto store = server::Store::Open(options.store);
    researcher_ = store->CreateToken("alice", server::Role::kResearcher);
    other_researcher_ = store->CreateToken("bob", server::Role::kResearcher);
    worker_ = store->CreateToken("worker", server::Role::kWorker);
    admin_ = store->CreateToken("root", server::Role::kAdmin);
    if (!tls) {
      channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                     grpc::InsecureChannelCredentials());
    }
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(server_->port()); }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  server::SchedulerServer& server() { return *server_; }
  const std::string& db_url() const { return db_.url(); }
  const std::string& researcher() const { return researcher_; }
  const std::string& other_researcher() const { return other_researcher_; }
  const std::string& worker() const { return worker_; }
  const std::string& admin() const { return admin_; }

  std::unique_ptr<api::Campaigns::Stub> campaigns() { return api::Campaigns::NewStub(channel_); }
  std::unique_ptr<api::Workers::Stub> workers() { return api::Workers::NewStub(channel_); }

  // A client context carrying `token` (none when empty), 30 s deadline.
  static std::unique_ptr<grpc::ClientContext> As(const std::string& token) {
    auto context = std::make_unique<grpc::ClientContext>();
    if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return context;
  }

 private:
  PgDatabase db_;
  TempDir artifacts_;
  std::unique_ptr<server::SchedulerServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::string researcher_, other_researcher_, worker_, admin_;
};

}  // namespace dfkd::testing

#endif  // DFKD_TESTS_TESTING_SCHEDULER_FIXTURE_H_
