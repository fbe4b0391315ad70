// dfkd-scheduler over real gRPC on loopback with a real PostgreSQL: roles,
// validation, a campaign from submit to results, health, TLS, /metrics.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <future>
#include <map>

#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include "tests/testing/scheduler_fixture.h"

namespace dfkd {
namespace {

using testing::SchedulerFixture;
namespace api = ::dfkd::api::v1;

// Calls every RPC once with `token`; returns method -> status code.
std::map<std::string, grpc::StatusCode> CallEveryRpc(SchedulerFixture& f,
                                                     const std::string& token) {
  std::map<std::string, grpc::StatusCode> codes;
  auto c = f.campaigns();
  auto w = f.workers();
  auto as = [&] { return SchedulerFixture::As(token); };
  {
    api::SubmitRequest req;
    req.set_campaign_json(testing::InstantCampaign().dump());
    req.set_validate_only(true);
    api::SubmitReply reply;
    codes["Campaigns.Submit"] = c->Submit(as().get(), req, &reply).error_code();
  }
  {
    api::GetCampaignRequest req;
    req.set_campaign_id(1);
    api::Campaign reply;
    codes["Campaigns.GetCampaign"] = c->GetCampaign(as().get(), req, &reply).error_code();
  }
  {
    api::ListCampaignsRequest req;
    api::ListCampaignsReply reply;
    codes["Campaigns.ListCampaigns"] = c->ListCampaigns(as().get(), req, &reply).error_code();
  }
  {
    api::ListExperimentsRequest req;
    req.set_campaign_id(1);
    api::ListExperimentsReply reply;
    codes["Campaigns.ListExperiments"] = c->ListExperiments(as().get(), req, &reply).error_code();
  }
  {
    api::ListRunsRequest req;
    api::ListRunsReply reply;
    codes["Campaigns.ListRuns"] = c->ListRuns(as().get(), req, &reply).error_code();
  }
  {
    api::GetRunRequest req;
    req.set_run_id(1);
    api::Run reply;
    codes["Campaigns.GetRun"] = c->GetRun(as().get(), req, &reply).error_code();
  }
  {
    api::CancelRequest req;
    req.set_run_id(999999);  // NOT_FOUND for roles that may cancel
    api::CancelReply reply;
    codes["Campaigns.Cancel"] = c->Cancel(as().get(), req, &reply).error_code();
  }
  {
    api::RetryRequest req;
    req.set_campaign_id(1);
    api::RetryReply reply;
    codes["Campaigns.Retry"] = c->Retry(as().get(), req, &reply).error_code();
  }
  {
    api::WatchRequest req;
    req.set_campaign_id(1);
    auto context = as();
    auto reader = c->Watch(context.get(), req);
    api::WatchEvent event;
    if (reader->Read(&event)) context->TryCancel();  // allowed: one snapshot is enough
    while (reader->Read(&event)) {
    }
    grpc::Status status = reader->Finish();
    codes["Campaigns.Watch"] = status.error_code();
  }
  {
    api::ResultsRequest req;
    req.set_campaign_id(1);
    api::ResultsReply reply;
    codes["Campaigns.Results"] = c->Results(as().get(), req, &reply).error_code();
  }
  {
    api::GetMetricsRequest req;
    req.set_run_id(1);
    api::GetMetricsReply reply;
    codes["Campaigns.GetMetrics"] = c->GetMetrics(as().get(), req, &reply).error_code();
  }
  {
    api::RegisterRequest req;
    req.set_name("roles-probe");
    api::RegisterReply reply;
    codes["Workers.Register"] = w->Register(as().get(), req, &reply).error_code();
  }
  {
    api::LeaseRequest req;
    req.set_worker_id(1);
    api::LeaseReply reply;
    codes["Workers.Lease"] = w->Lease(as().get(), req, &reply).error_code();
  }
  {
    api::HeartbeatRequest req;
    req.set_run_id(1);
    req.set_attempt_token("stale");
    api::HeartbeatReply reply;
    codes["Workers.Heartbeat"] = w->Heartbeat(as().get(), req, &reply).error_code();
  }
  {
    api::ReportMetricsRequest req;
    req.set_run_id(1);
    req.set_attempt_token("stale");
    api::ReportMetricsReply reply;
    codes["Workers.ReportMetrics"] = w->ReportMetrics(as().get(), req, &reply).error_code();
  }
  {
    api::ReportCheckpointRequest req;
    req.set_run_id(1);
    req.set_attempt_token("stale");
    api::ReportCheckpointReply reply;
    codes["Workers.ReportCheckpoint"] =
        w->ReportCheckpoint(as().get(), req, &reply).error_code();
  }
  {
    api::FinishRequest req;
    req.set_run_id(1);
    req.set_attempt_token("stale");
    api::FinishReply reply;
    codes["Workers.Finish"] = w->Finish(as().get(), req, &reply).error_code();
  }
  return codes;
}

bool Denied(grpc::StatusCode code) {
  return code == grpc::StatusCode::PERMISSION_DENIED ||
         code == grpc::StatusCode::UNAUTHENTICATED;
}

TEST(SchedulerApiTest, EveryRpcAgainstEveryRole) {
  SchedulerFixture f;
  {  // a campaign of alice's, so reads and owner checks have something to find
    api::SubmitRequest req;
    req.set_campaign_json(testing::InstantCampaign().dump());
    api::SubmitReply reply;
    ASSERT_TRUE(f.campaigns()->Submit(SchedulerFixture::As(f.researcher()).get(), req, &reply).ok());
  }
  auto none = CallEveryRpc(f, "");
  auto bogus = CallEveryRpc(f, "dfkd_not_a_real_token");
  auto researcher = CallEveryRpc(f, f.researcher());
  auto worker = CallEveryRpc(f, f.worker());
  auto admin = CallEveryRpc(f, f.admin());
  ASSERT_EQ(none.size(), 17u);
  for (const auto& [method, code] : none) {
    SCOPED_TRACE(method);
    EXPECT_EQ(code, grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(bogus[method], grpc::StatusCode::UNAUTHENTICATED);
    bool worker_rpc = method.rfind("Workers.", 0) == 0;
    EXPECT_EQ(Denied(researcher[method]), worker_rpc) << researcher[method];
    EXPECT_EQ(worker[method] == grpc::StatusCode::PERMISSION_DENIED, !worker_rpc) << worker[method];
    EXPECT_FALSE(Denied(admin[method])) << admin[method];
  }
  // Stale tokens are refused by the store, not by auth.
  EXPECT_EQ(worker["Workers.ReportMetrics"], grpc::StatusCode::ABORTED);
  EXPECT_EQ(worker["Workers.Finish"], grpc::StatusCode::ABORTED);

  // bob may read alice's campaign but not cancel it.
  api::CancelRequest cancel;
  cancel.set_campaign_id(1);
  api::CancelReply cancelled;
  auto status = f.campaigns()->Cancel(SchedulerFixture::As(f.other_researcher()).get(), cancel,
                                      &cancelled);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(status.error_message().find("alice"), std::string::npos);
  ASSERT_TRUE(f.campaigns()->Cancel(SchedulerFixture::As(f.researcher()).get(), cancel,
                                    &cancelled).ok());
  EXPECT_EQ(cancelled.cancelled_runs(), 5);
}

TEST(SchedulerApiTest, InvalidCampaignIsRefusedWholeAndStoresNothing) {
  SchedulerFixture f;
  nlohmann::json campaign = testing::InstantCampaign();
  campaign["seeds"] = {0, -1};
  campaign["axes"]["distill.method"] = {"noise", "no_such_method"};
  campaign["base"]["model"]["depth"] = 17;
  api::SubmitRequest req;
  req.set_campaign_json(campaign.dump());
  api::SubmitReply reply;
  auto status = f.campaigns()->Submit(SchedulerFixture::As(f.researcher()).get(), req, &reply);
  ASSERT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("seeds[1]"), std::string::npos) << status.error_message();
  EXPECT_NE(status.error_message().find("distill.method"), std::string::npos);
  EXPECT_NE(status.error_message().find("model.depth"), std::string::npos);

  req.set_campaign_json("{not json");
  status = f.campaigns()->Submit(SchedulerFixture::As(f.researcher()).get(), req, &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  req.set_campaign_json(std::string(5 << 20, ' '));  // over the 4 MiB message limit
  status = f.campaigns()->Submit(SchedulerFixture::As(f.researcher()).get(), req, &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  api::ListCampaignsRequest list;
  api::ListCampaignsReply listed;
  ASSERT_TRUE(f.campaigns()->ListCampaigns(SchedulerFixture::As(f.admin()).get(), list,
                                           &listed).ok());
  EXPECT_EQ(listed.campaigns_size(), 0);
  api::ListRunsRequest runs;
  api::ListRunsReply run_list;
  ASSERT_TRUE(f.campaigns()->ListRuns(SchedulerFixture::As(f.admin()).get(), runs,
                                      &run_list).ok());
  EXPECT_EQ(run_list.runs_size(), 0);
}

// A worker's side of one run: lease, heartbeat, metrics, checkpoint, finish.
struct FakeWorker {
  SchedulerFixture& f;
  int64_t id = 0;

  std::optional<api::Assignment> Lease(double wait) {
    api::LeaseRequest req;
    req.set_worker_id(id);
    req.set_wait_seconds(wait);
    req.set_host("127.0.0.1");
    req.set_offer_port(29500);
    api::LeaseReply reply;
    auto status = f.workers()->Lease(SchedulerFixture::As(f.worker()).get(), req, &reply);
    EXPECT_TRUE(status.ok()) << status.error_message();
    if (!reply.has_assignment()) return std::nullopt;
    return reply.assignment();
  }

  void Complete(const api::Assignment& a, double top1) {
    auto as = [&] { return SchedulerFixture::As(f.worker()); };
    api::HeartbeatRequest hb;
    hb.set_run_id(a.run_id());
    hb.set_attempt_token(a.attempt_token());
    hb.set_progress(0.5);
    api::HeartbeatReply hb_reply;
    ASSERT_TRUE(f.workers()->Heartbeat(as().get(), hb, &hb_reply).ok());
    EXPECT_FALSE(hb_reply.cancel());
    EXPECT_FALSE(hb_reply.lease_lost());
    api::ReportMetricsRequest metrics;
    metrics.set_run_id(a.run_id());
    metrics.set_attempt_token(a.attempt_token());
    for (int step = 1; step <= 3; ++step) {
      auto* p = metrics.add_points();
      p->set_name("test_top1");
      p->set_step(step);
      p->set_value(top1 - 3 + step);
    }
    api::ReportMetricsReply stored;
    ASSERT_TRUE(f.workers()->ReportMetrics(as().get(), metrics, &stored).ok());
    EXPECT_EQ(stored.stored(), 3);
    api::ReportCheckpointRequest ckpt;
    ckpt.set_run_id(a.run_id());
    ckpt.set_attempt_token(a.attempt_token());
    ckpt.set_step(3);
    ckpt.set_path(a.output_dir() + "/checkpoint.pt");
    api::ReportCheckpointReply ckpt_reply;
    ASSERT_TRUE(f.workers()->ReportCheckpoint(as().get(), ckpt, &ckpt_reply).ok());
    api::FinishRequest finish;
    finish.set_run_id(a.run_id());
    finish.set_attempt_token(a.attempt_token());
    finish.set_success(true);
    finish.set_result_json(nlohmann::json{{"test_top1", top1}}.dump());
    finish.set_artifact(a.output_dir() + "/model.pt");
    api::FinishReply finished;
    ASSERT_TRUE(f.workers()->Finish(as().get(), finish, &finished).ok());
  }
};

TEST(SchedulerApiTest, CampaignRunsFromSubmitToResults) {
  SchedulerFixture f;
  api::SubmitRequest req;
  req.set_campaign_json(testing::InstantCampaign().dump());
  api::SubmitReply submitted;
  ASSERT_TRUE(f.campaigns()->Submit(SchedulerFixture::As(f.researcher()).get(), req,
                                    &submitted).ok());
  EXPECT_EQ(submitted.runs(), 5);
  EXPECT_EQ(submitted.experiments(), 3);  // teacher + base + kdci

  // Watch in the background until the campaign is done.
  auto watched = std::async(std::launch::async, [&] {
    api::WatchRequest w;
    w.set_campaign_id(submitted.campaign_id());
    w.set_poll_seconds(0.05);
    auto context = SchedulerFixture::As(f.researcher());
    auto reader = f.campaigns()->Watch(context.get(), w);
    api::WatchEvent event;
    int events = 0;
    bool done = false, first_was_snapshot = false;
    while (reader->Read(&event)) {
      if (events++ == 0) first_was_snapshot = event.snapshot() && event.runs_size() == 5;
      done = event.campaign_done();
    }
    return reader->Finish().ok() && done && first_was_snapshot;
  });

  api::RegisterRequest reg;
  reg.set_name("test-worker");
  reg.mutable_capabilities()->set_threads(2);
  api::RegisterReply registered;
  ASSERT_TRUE(f.workers()->Register(SchedulerFixture::As(f.worker()).get(), reg,
                                    &registered).ok());
  EXPECT_GT(registered.heartbeat_seconds(), 0);
  FakeWorker worker{f, registered.worker_id()};

  auto teacher = worker.Lease(5);
  ASSERT_TRUE(teacher.has_value());
  auto teacher_spec = nlohmann::json::parse(teacher->spec_json());
  EXPECT_EQ(teacher_spec["kind"], "train_teacher");
  EXPECT_FALSE(worker.Lease(0).has_value()) << "distill runs must wait for their teacher";
  worker.Complete(*teacher, 90.0);

  std::map<std::string, std::vector<double>> by_kdci;
  for (int i = 0; i < 4; ++i) {
    auto run = worker.Lease(5);
    ASSERT_TRUE(run.has_value()) << i;
    auto spec = nlohmann::json::parse(run->spec_json());
    EXPECT_EQ(spec["distill"]["teacher"]["weights"], teacher->output_dir() + "/model.pt");
    bool kdci = spec["kdci"]["enabled"];
    double top1 = (kdci ? 60.0 : 50.0) + static_cast<double>(spec["seed"]);
    worker.Complete(*run, top1);
  }
  EXPECT_FALSE(worker.Lease(0).has_value());
  EXPECT_TRUE(watched.get());

  api::ResultsRequest rr;
  rr.set_campaign_id(submitted.campaign_id());
  api::ResultsReply results;
  ASSERT_TRUE(f.campaigns()->Results(SchedulerFixture::As(f.researcher()).get(), rr,
                                     &results).ok());
  ASSERT_EQ(results.cells_size(), 3);
  int checked = 0;
  for (const auto& cell : results.cells()) {
    if (cell.kind() != "distill") continue;
    EXPECT_EQ(cell.n(), 2);
    if (cell.kdci()) {
      EXPECT_DOUBLE_EQ(cell.mean(), 60.5);
      EXPECT_NEAR(cell.std(), 0.7071067811865476, 1e-12);
      EXPECT_DOUBLE_EQ(cell.baseline_mean(), 50.5);
      EXPECT_DOUBLE_EQ(cell.delta(), 10.0);
    } else {
      EXPECT_DOUBLE_EQ(cell.mean(), 50.5);
      EXPECT_EQ(cell.baseline_experiment_id(), 0);
    }
    ++checked;
  }
  EXPECT_EQ(checked, 2);

  api::GetMetricsRequest mr;
  mr.set_run_id(teacher->run_id());
  mr.set_after_step(1);
  api::GetMetricsReply metrics;
  ASSERT_TRUE(f.campaigns()->GetMetrics(SchedulerFixture::As(f.researcher()).get(), mr,
                                        &metrics).ok());
  EXPECT_EQ(metrics.points_size(), 2);  // steps 2 and 3
}

TEST(SchedulerApiTest, StandardHealthServiceAnswersServing) {
  SchedulerFixture f;
  grpc::GenericStub stub(f.channel());
  grpc::ClientContext context;
  grpc::Slice empty("");  // HealthCheckRequest{service: ""} serializes to no bytes
  grpc::ByteBuffer request(&empty, 1), response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                 &response, [&](grpc::Status s) { done.set_value(s); });
  ASSERT_TRUE(done.get_future().get().ok());
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));  // status: SERVING
}

std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

TEST(SchedulerApiTest, PrometheusEndpointExportsSchedulerFamilies) {
  SchedulerFixture f;
  api::ListRunsRequest req;
  api::ListRunsReply reply;
  ASSERT_TRUE(f.campaigns()->ListRuns(SchedulerFixture::As(f.researcher()).get(), req,
                                      &reply).ok());
  std::string body = HttpGet(f.server().metrics_port(), "/metrics");
  EXPECT_NE(body.find("dfkd_scheduler_rpc_duration_seconds_count{code=\"OK\",method=\"Campaigns.ListRuns\"} 1"),
            std::string::npos) << body.substr(0, 2000);
  for (const char* family : {"dfkd_scheduler_leases_total", "dfkd_scheduler_queue_depth",
                             "dfkd_scheduler_expired_leases_total", "dfkd_scheduler_retries_total",
                             "dfkd_scheduler_heartbeats_total",
                             "dfkd_scheduler_workers_connected",
                             "dfkd_scheduler_lease_claim_seconds"}) {
    EXPECT_NE(body.find(std::string("# TYPE ") + family), std::string::npos) << family;
  }
}

TEST(SchedulerApiTest, TlsWithACertificateTheTestMakes) {
  testing::TempDir dir;
  std::string cert = dir.File("cert.pem"), key = dir.File("key.pem");
  std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
                    "-addext subjectAltName=DNS:localhost -keyout " + key + " -out " + cert +
                    " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "openssl failed";
  SchedulerFixture f(30, /*tls=*/true, cert, key);
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = server::ReadFileOrThrow(cert);
  auto secure = grpc::CreateChannel("localhost:" + std::to_string(f.server().port()),
                                    grpc::SslCredentials(ssl));
  api::ListRunsRequest req;
  api::ListRunsReply reply;
  auto status = api::Campaigns::NewStub(secure)->ListRuns(
      SchedulerFixture::As(f.researcher()).get(), req, &reply);
  EXPECT_TRUE(status.ok()) << status.error_message();

  auto plain = grpc::CreateChannel("localhost:" + std::to_string(f.server().port()),
                                   grpc::InsecureChannelCredentials());
  auto context = SchedulerFixture::As(f.researcher());
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  status = api::Campaigns::NewStub(plain)->ListRuns(context.get(), req, &reply);
  EXPECT_FALSE(status.ok()) << "a plaintext client must not talk to a TLS scheduler";
}

}  // namespace
}  // namespace dfkd
