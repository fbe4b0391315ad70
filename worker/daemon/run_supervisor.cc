#include "worker/daemon/run_supervisor.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "worker/daemon/log.h"

namespace dfkd::worker::daemon {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxBatch = 500;           // points per ReportMetrics
constexpr size_t kMaxPending = 100000;      // points kept while the scheduler is away
constexpr size_t kMaxError = 8000;          // characters of a Finish error
constexpr double kReportRetrySeconds = 1;   // metrics/checkpoints wait for the next round
constexpr uint64_t kTailBytes = 64 * 1024;  // of the log, for error messages

Clock::duration Seconds(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

int64_t EventStep(const nlohmann::json& event) {
  std::optional<double> step = EventNumber(event, "step");
  return step && std::isfinite(*step) ? static_cast<int64_t>(*step) : 0;
}

std::string EventName(const nlohmann::json& event) {
  auto it = event.find("event");
  return it != event.end() && it->is_string() ? it->get<std::string>() : "";
}

bool ReadWholeFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return false;
  *out = text.str();
  return true;
}

// Keeps the head and the tail of a long message (the tail has the cause).
std::string Truncate(const std::string& text) {
  if (text.size() <= kMaxError) return text;
  const size_t head = 1000;
  const std::string cut = "\n[...]\n";
  return text.substr(0, head) + cut + text.substr(text.size() - (kMaxError - head - cut.size()));
}

std::string Describe(const grpc::Status& status) {
  return std::to_string(static_cast<int>(status.error_code())) + " " + status.error_message();
}

}  // namespace

const char* RunOutcomeName(RunOutcome outcome) {
  switch (outcome) {
    case RunOutcome::kSucceeded: return "succeeded";
    case RunOutcome::kFailed: return "failed";
    case RunOutcome::kCancelled: return "cancelled";
    case RunOutcome::kLeaseLost: return "lease_lost";
    case RunOutcome::kHandedBack: return "handed_back";
  }
  return "failed";
}

std::string LastLines(const std::string& path, uint64_t offset, int lines) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return "";
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  uint64_t start = std::min(offset, size);
  if (size - start > kTailBytes) start = size - kTailBytes;
  std::string text(static_cast<size_t>(size - start), '\0');
  size_t got = 0;
  while (got < text.size()) {
    ssize_t n = ::pread(fd, text.data() + got, text.size() - got,
                        static_cast<off_t>(start + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  text.resize(got);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  size_t begin = text.size();
  for (int found = 0; found < lines && begin > 0;) {
    size_t newline = text.rfind('\n', begin - 1);
    if (newline == std::string::npos) {
      begin = 0;
      break;
    }
    begin = newline;
    if (++found == lines) {
      ++begin;  // start after the newline
      break;
    }
  }
  return text.substr(begin);
}

std::vector<api::MetricPoint> EventMetricPoints(const nlohmann::json& event, int32_t attempt) {
  std::vector<api::MetricPoint> points;
  const std::string name = EventName(event);
  const int64_t step = EventStep(event);
  auto add = [&](const char* series, std::optional<double> value) {
    if (!value || !std::isfinite(*value)) return;
    api::MetricPoint point;
    point.set_name(series);
    point.set_step(step);
    point.set_value(*value);
    point.set_attempt(attempt);
    points.push_back(std::move(point));
  };
  if (name == "progress") {
    std::optional<double> total = EventNumber(event, "total");
    if (total && *total > 0) {
      add("progress", std::clamp(static_cast<double>(step) / *total, 0.0, 1.0));
    }
    add("train_loss", EventNumber(event, "train_loss"));
    add("train_top1", EventNumber(event, "train_top1"));
    add("images_per_second", EventNumber(event, "images_per_second"));
  } else if (name == "eval") {
    add("test_top1", EventNumber(event, "test_top1"));
    add("test_loss", EventNumber(event, "test_loss"));
    add("test_top1_compensated", EventNumber(event, "test_top1_compensated"));
  }
  return points;
}

RunSupervisor::RunSupervisor(SchedulerClient* client, WorkerMetrics* metrics,
                             SupervisorConfig config, api::Assignment assignment)
    : client_(client),
      metrics_(metrics),
      config_(std::move(config)),
      assignment_(std::move(assignment)),
      labels_(TrainLabelsFromSpec(assignment_.spec_json())) {
  fs::path out = assignment_.output_dir();
  if (out.empty()) {
    out = fs::path(config_.artifact_root.empty() ? "dfkd-runs" : config_.artifact_root) /
          "runs" / std::to_string(assignment_.run_id());
  } else if (out.is_relative() && !config_.artifact_root.empty()) {
    out = fs::path(config_.artifact_root) / out;
  }
  out_dir_ = out.string();
  const std::string rank = std::to_string(assignment_.rank());
  log_file_ = (out / ("rank" + rank + ".log")).string();
  events_file_ = (out / ("events.rank" + rank + ".jsonl")).string();
}

RunSupervisor::~RunSupervisor() = default;

void RunSupervisor::RequestShutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_requested_ = true;
  }
  cv_.notify_all();
}

bool RunSupervisor::Prepare(std::string* error) {
  try {
    const fs::path out(out_dir_);
    fs::create_directories(out);
    // Every rank of a gang writes the same spec, maybe into one shared folder:
    // write a private file, then rename it into place.
    const fs::path spec = out / "spec.json";
    fs::path tmp = spec;
    tmp += ".tmp." + std::to_string(static_cast<long long>(::getpid())) + "." +
           std::to_string(assignment_.rank());
    {
      std::ofstream file(tmp, std::ios::binary | std::ios::trunc);
      file << assignment_.spec_json();
      file.close();
      if (!file) throw std::runtime_error(tmp.string() + ": cannot write");
    }
    fs::rename(tmp, spec);

    // dfkd-train resumes from OUT/checkpoint.pt; bring the recorded one there
    // when the scheduler knows of a checkpoint elsewhere.
    const fs::path local_checkpoint = out / "checkpoint.pt";
    if (!assignment_.resume_checkpoint().empty()) {
      fs::path resume = assignment_.resume_checkpoint();
      if (resume.is_relative() && !config_.artifact_root.empty()) {
        resume = fs::path(config_.artifact_root) / resume;
      }
      std::error_code ec;
      if (!fs::exists(local_checkpoint, ec) && fs::exists(resume, ec)) {
        fs::path part = local_checkpoint;
        part += ".part";
        fs::copy_file(resume, part, fs::copy_options::overwrite_existing, ec);
        if (!ec) fs::rename(part, local_checkpoint, ec);
        if (ec) {
          LogLine("run " + std::to_string(assignment_.run_id()) + ": cannot copy checkpoint " +
                  resume.string() + ": " + ec.message() + "; starting without it");
        }
      }
    }
    std::error_code ec;
    resumed_ = fs::exists(local_checkpoint, ec);
    // The previous attempt's events were reported by its worker.
    fs::remove(events_file_, ec);
    {
      std::ofstream log(log_file_, std::ios::app);
      log << "=== dfkd-worker " << config_.worker_name << ": run " << assignment_.run_id()
          << " attempt " << assignment_.attempt() << " rank " << assignment_.rank() << "/"
          << assignment_.world_size() << (resumed_ ? " (resuming)" : "") << " ===\n";
      log.close();
      if (!log) throw std::runtime_error(log_file_ + ": cannot write");
    }
    uint64_t size = fs::file_size(log_file_, ec);
    log_offset_ = ec ? 0 : size;
    return true;
  } catch (const std::exception& e) {
    *error = "cannot prepare " + out_dir_ + ": " + e.what();
    return false;
  }
}

RunOutcome RunSupervisor::Run() {
  const std::string who = "worker " + config_.worker_name;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (shutdown_requested_) {
      lock.unlock();
      Finish(false, "", "", who + " shut down before starting the run", true,
             /*handed_back=*/true);
      return RunOutcome::kHandedBack;
    }
  }
  std::string error;
  if (!Prepare(&error)) {
    LogLine("run " + std::to_string(assignment_.run_id()) + ": " + error);
    Finish(false, "", "", who + ": " + error, true);
    return RunOutcome::kFailed;
  }

  ChildSpec spec;
  spec.argv = {config_.dfkd_train,
               (fs::path(out_dir_) / "spec.json").string(),
               "--out",
               out_dir_,
               "--quiet",
               "--events",
               events_file_,
               "--threads",
               std::to_string(std::max(0, config_.threads))};
  // Always set, so a RANK/WORLD_SIZE inherited by the daemon cannot leak in.
  spec.env = {{"RANK", std::to_string(assignment_.rank())},
              {"WORLD_SIZE", std::to_string(std::max(1, assignment_.world_size()))},
              {"LOCAL_RANK", "0"}};
  if (assignment_.world_size() > 1) {
    spec.env.emplace_back("MASTER_ADDR", assignment_.master_addr());
    spec.env.emplace_back("MASTER_PORT", std::to_string(assignment_.master_port()));
    // Gloo's own address: the one this worker advertises, unless set by hand.
    if (!config_.host.empty() && std::getenv("DFKD_GLOO_ADDR") == nullptr) {
      spec.env.emplace_back("DFKD_GLOO_ADDR", config_.host);
    }
  }
  spec.log_file = log_file_;
  try {
    child_ = ChildProcess::Start(spec);
  } catch (const std::exception& e) {
    LogLine("run " + std::to_string(assignment_.run_id()) + ": " + e.what());
    Finish(false, "", "", who + ": cannot start dfkd-train: " + e.what(), true);
    return RunOutcome::kFailed;
  }
  tail_ = std::make_unique<EventsTail>(events_file_);
  LogLine("run " + std::to_string(assignment_.run_id()) + " attempt " +
          std::to_string(assignment_.attempt()) + " rank " + std::to_string(assignment_.rank()) +
          "/" + std::to_string(assignment_.world_size()) + ": dfkd-train pid " +
          std::to_string(child_->pid()) + ", output " + out_dir_);

  std::thread waiter([this] {
    int code = child_->Wait();
    {
      std::lock_guard<std::mutex> lock(mu_);
      exit_code_ = code;
    }
    cv_.notify_all();
  });
  int exit_code = 0;
  try {
    exit_code = Supervise();
  } catch (const std::exception& e) {
    child_->Terminate(SIGKILL);
    waiter.join();
    LogLine("run " + std::to_string(assignment_.run_id()) + ": " + e.what());
    if (!lease_lost_) Finish(false, "", "", who + ": " + e.what(), true);
    return RunOutcome::kFailed;
  }
  waiter.join();
  return Conclude(exit_code);
}

int RunSupervisor::Supervise() {
  const Clock::duration period = Seconds(std::max(0.05, config_.heartbeat_seconds));
  Clock::time_point next_heartbeat = Clock::now();  // at once: the run becomes running
  while (true) {
    std::optional<int> exited;
    bool shutdown = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      Clock::time_point until = next_heartbeat;
      if (kill_at_ && *kill_at_ < until) until = *kill_at_;
      cv_.wait_until(lock, until, [&] {
        return exit_code_.has_value() || (shutdown_requested_ && stop_ == Stop::kNone);
      });
      exited = exit_code_;
      shutdown = shutdown_requested_ && stop_ == Stop::kNone;
    }
    if (!lease_lost_) DrainEvents();
    if (exited) return *exited;
    if (shutdown) {
      if (lease_lost_) {
        stop_ = Stop::kShutdown;  // already killed; nothing to hand back
      } else {
        LogLine("run " + std::to_string(assignment_.run_id()) +
                ": shutting down; asking dfkd-train to checkpoint and stop");
        StopChild(Stop::kShutdown);
      }
    }
    const Clock::time_point now = Clock::now();
    if (kill_at_ && now >= *kill_at_) {
      LogLine("run " + std::to_string(assignment_.run_id()) + ": dfkd-train did not stop within " +
              std::to_string(static_cast<int>(config_.stop_grace_seconds)) +
              " s of SIGTERM; killing it");
      child_->Terminate(SIGKILL);
      kill_at_.reset();
    }
    if (lease_lost_) {
      next_heartbeat = now + std::chrono::hours(1);  // write nothing more; wait for the exit
    } else if (now >= next_heartbeat) {
      Heartbeat();
      next_heartbeat = Clock::now() + period;
    }
  }
}

void RunSupervisor::StopChild(Stop reason) {
  if (stop_ == Stop::kNone || reason == Stop::kCancel) stop_ = reason;
  child_->Terminate(SIGTERM);
  if (!kill_at_) kill_at_ = Clock::now() + Seconds(std::max(0.0, config_.stop_grace_seconds));
}

void RunSupervisor::LoseLease(const std::string& why) {
  if (lease_lost_) return;
  lease_lost_ = true;
  LogLine("run " + std::to_string(assignment_.run_id()) + " attempt " +
          std::to_string(assignment_.attempt()) + ": " + why +
          "; killing dfkd-train and reporting nothing more");
  child_->Terminate(SIGKILL);
  kill_at_.reset();
  pending_points_.clear();
  pending_checkpoints_.clear();
}

void RunSupervisor::Heartbeat() {
  api::HeartbeatRequest request;
  request.set_run_id(assignment_.run_id());
  request.set_attempt_token(assignment_.attempt_token());
  request.set_progress(progress_);
  api::HeartbeatReply reply;
  grpc::Status status = client_->Heartbeat(request, &reply, config_.heartbeat_seconds);
  if (status.ok()) {
    if (heartbeat_failing_) {
      LogLine("run " + std::to_string(assignment_.run_id()) + ": heartbeats answered again");
    }
    heartbeat_failing_ = false;
    if (metrics_ != nullptr) metrics_->Heartbeat();
    if (reply.lease_lost()) {
      LoseLease("the scheduler says the lease is lost");
    } else if (reply.cancel() && stop_ != Stop::kCancel) {
      LogLine("run " + std::to_string(assignment_.run_id()) + " cancelled; stopping dfkd-train");
      StopChild(Stop::kCancel);
    }
    return;
  }
  if (status.error_code() == grpc::StatusCode::ABORTED) {
    LoseLease("heartbeat refused (" + status.error_message() + ")");
    return;
  }
  if (!heartbeat_failing_) {
    LogLine("run " + std::to_string(assignment_.run_id()) + ": heartbeat failed (" +
            Describe(status) + "); training goes on");
    heartbeat_failing_ = true;
  }
}

void RunSupervisor::DrainEvents() {
  if (!tail_) return;
  for (const std::string& line : tail_->ReadNewLines()) {
    if (std::optional<nlohmann::json> event = ParseEventLine(line)) HandleEvent(*event);
  }
  FlushReports();
}

void RunSupervisor::HandleEvent(const nlohmann::json& event) {
  const std::string name = EventName(event);
  const int64_t step = EventStep(event);
  if (name == "progress") {
    std::optional<double> total = EventNumber(event, "total");
    if (total && *total > 0) {
      progress_ = std::clamp(static_cast<double>(step) / *total, 0.0, 1.0);
      if (metrics_ != nullptr) metrics_->SetProgress(labels_, progress_);
    }
    // Steps this worker ran: a resumed attempt's first event counts from there.
    int64_t delta = last_step_ >= 0 ? step - last_step_ : (resumed_ ? 0 : step);
    last_step_ = step;
    if (metrics_ != nullptr) {
      metrics_->AddSteps(labels_, delta);
      if (auto loss = EventNumber(event, "train_loss")) metrics_->SetLoss(labels_, *loss);
      if (auto ips = EventNumber(event, "images_per_second")) {
        metrics_->SetImagesPerSecond(labels_, *ips);
      }
    }
  } else if (name == "eval") {
    if (auto top1 = EventNumber(event, "test_top1"); top1 && metrics_ != nullptr) {
      metrics_->SetTestTop1(labels_, *top1);
    }
  } else if (name == "checkpoint") {
    auto path = event.find("path");
    if (path != event.end() && path->is_string() && assignment_.rank() == 0) {
      pending_checkpoints_.emplace_back(step, path->get<std::string>());
    }
  }
  // Rank 0 speaks for the gang: the other ranks' series would repeat it.
  if (assignment_.rank() != 0) return;
  for (api::MetricPoint& point : EventMetricPoints(event, assignment_.attempt())) {
    pending_points_.push_back(std::move(point));
  }
  if (pending_points_.size() > kMaxPending) {
    pending_points_.erase(pending_points_.begin(),
                          pending_points_.begin() +
                              static_cast<std::ptrdiff_t>(pending_points_.size() - kMaxPending));
  }
}

void RunSupervisor::FlushReports() {
  auto transient = [](const grpc::Status& s) {
    return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
           s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
  };
  while (!lease_lost_ && !pending_points_.empty()) {
    const size_t n = std::min(kMaxBatch, pending_points_.size());
    api::ReportMetricsRequest request;
    request.set_run_id(assignment_.run_id());
    request.set_attempt_token(assignment_.attempt_token());
    for (size_t i = 0; i < n; ++i) *request.add_points() = pending_points_[i];
    api::ReportMetricsReply reply;
    grpc::Status status = client_->ReportMetrics(request, &reply, kReportRetrySeconds);
    if (!status.ok()) {
      if (status.error_code() == grpc::StatusCode::ABORTED) {
        if (stop_ == Stop::kCancel) {  // a cancelled run may refuse writes: just stop sending
          pending_points_.clear();
          pending_checkpoints_.clear();
          return;
        }
        LoseLease("metrics refused (" + status.error_message() + ")");
        return;
      }
      if (transient(status)) return;  // kept for the next round
      LogLine("run " + std::to_string(assignment_.run_id()) + ": ReportMetrics failed (" +
              Describe(status) + "); dropping " + std::to_string(n) + " points");
    }
    pending_points_.erase(pending_points_.begin(),
                          pending_points_.begin() + static_cast<std::ptrdiff_t>(n));
  }
  while (!lease_lost_ && !pending_checkpoints_.empty()) {
    api::ReportCheckpointRequest request;
    request.set_run_id(assignment_.run_id());
    request.set_attempt_token(assignment_.attempt_token());
    request.set_step(pending_checkpoints_.front().first);
    request.set_path(pending_checkpoints_.front().second);
    api::ReportCheckpointReply reply;
    grpc::Status status = client_->ReportCheckpoint(request, &reply, kReportRetrySeconds);
    if (!status.ok()) {
      if (status.error_code() == grpc::StatusCode::ABORTED) {
        if (stop_ == Stop::kCancel) {
          pending_checkpoints_.clear();
          return;
        }
        LoseLease("checkpoint refused (" + status.error_message() + ")");
        return;
      }
      if (transient(status)) return;
      LogLine("run " + std::to_string(assignment_.run_id()) + ": ReportCheckpoint failed (" +
              Describe(status) + ")");
    }
    pending_checkpoints_.pop_front();
  }
}

std::string RunSupervisor::LogTail(int lines) const {
  return LastLines(log_file_, log_offset_, lines);
}

RunOutcome RunSupervisor::Conclude(int exit_code) {
  if (lease_lost_) return RunOutcome::kLeaseLost;
  const std::string who = "worker " + config_.worker_name;
  if (stop_ == Stop::kCancel) {
    Finish(false, "", "", "cancelled", false);
    return RunOutcome::kCancelled;
  }
  if (exit_code == 0) {
    if (assignment_.rank() != 0) {
      Finish(true, "", "", "", false);
      return RunOutcome::kSucceeded;
    }
    const fs::path out(out_dir_);
    std::string result;
    if (!ReadWholeFile((out / "result.json").string(), &result)) {
      Finish(false, "", "", "dfkd-train exited 0 but " + (out / "result.json").string() +
             " cannot be read", true);
      return RunOutcome::kFailed;
    }
    Finish(true, result, (out / "model.pt").string(), "", false);
    return RunOutcome::kSucceeded;
  }
  if (stop_ == Stop::kShutdown) {
    std::string error = who + " shut down; resumes from checkpoint";
    if (exit_code != 3) error += " (dfkd-train exited with " + std::to_string(exit_code) + ")";
    Finish(false, "", "", error, true, /*handed_back=*/exit_code == 3);
    return RunOutcome::kHandedBack;
  }
  const std::string tail = LogTail(20);
  switch (exit_code) {
    case 2:
      Finish(false, "", "", "bad spec: " + tail, false);
      break;
    case 4:
      Finish(false, "", "", "data error: " + tail, false);
      break;
    case 3:
      Finish(false, "", "",
             "dfkd-train stopped (exit 3) though " + who +
                 " did not ask it to; resumes from checkpoint: " + tail,
             true);
      break;
    default:
      Finish(false, "", "", "dfkd-train exited with " + std::to_string(exit_code) + ": " + tail,
             true);
      break;
  }
  return RunOutcome::kFailed;
}

void RunSupervisor::Finish(bool success, const std::string& result_json,
                           const std::string& artifact, const std::string& error,
                           bool retryable, bool handed_back) {
  api::FinishRequest request;
  request.set_run_id(assignment_.run_id());
  request.set_attempt_token(assignment_.attempt_token());
  request.set_success(success);
  request.set_result_json(result_json);
  request.set_artifact(artifact);
  request.set_error(Truncate(error));
  request.set_retryable(retryable);
  request.set_handed_back(handed_back);
  api::FinishReply reply;
  grpc::Status status = client_->Finish(request, &reply, std::max(10.0, config_.lease_seconds));
  const std::string what = "run " + std::to_string(assignment_.run_id()) + " attempt " +
                           std::to_string(assignment_.attempt()) + " rank " +
                           std::to_string(assignment_.rank());
  if (!status.ok()) {
    LogLine(what + ": Finish failed (" + Describe(status) +
            "); the scheduler will expire the lease");
    return;
  }
  std::string first_line = error.substr(0, error.find('\n'));
  LogLine(what + (success ? ": succeeded"
                          : std::string(": failed") + (retryable ? " (retryable)" : "") + ": " +
                                first_line));
}

}  // namespace dfkd::worker::daemon
