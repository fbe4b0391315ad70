// One leased rank of one attempt, run to its end as a `dfkd-train` child:
// write OUT/spec.json, start the child, heartbeat, forward its events
// (metrics, checkpoints) to the scheduler and Prometheus, and Finish with
// what its exit code means. See README.md ("How a lease flows").
#ifndef DFKD_WORKER_DAEMON_RUN_SUPERVISOR_H_
#define DFKD_WORKER_DAEMON_RUN_SUPERVISOR_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dfkd/api/v1/scheduler.grpc.pb.h"
#include "worker/daemon/child_process.h"
#include "worker/daemon/events_tail.h"
#include "worker/daemon/scheduler_client.h"
#include "worker/daemon/worker_metrics.h"

namespace dfkd::worker::daemon {

struct SupervisorConfig {
  std::string worker_name;          // for error messages
  std::string dfkd_train;           // the child binary
  int threads = 0;                  // --threads of the child (0 = one per core)
  double heartbeat_seconds = 5;     // from RegisterReply
  double lease_seconds = 30;        // from RegisterReply: bounds Finish's retries
  std::string artifact_root;        // from RegisterReply: base of relative output dirs
  std::string host;                 // advertised address: DFKD_GLOO_ADDR of gang ranks
  double stop_grace_seconds = 120;  // SIGTERM -> exit before SIGKILL
};

enum class RunOutcome { kSucceeded, kFailed, kCancelled, kLeaseLost, kHandedBack };
// succeeded | failed | cancelled | lease_lost | handed_back (metric label values).
const char* RunOutcomeName(RunOutcome outcome);

class RunSupervisor {
 public:
  RunSupervisor(SchedulerClient* client, WorkerMetrics* metrics, SupervisorConfig config,
                api::Assignment assignment);
  ~RunSupervisor();
  RunSupervisor(const RunSupervisor&) = delete;
  RunSupervisor& operator=(const RunSupervisor&) = delete;

  // Runs the attempt to its end (blocking) and reports it: Finish is called
  // except when the lease was lost. Call from a thread that outlives the
  // child (see child_process.h).
  RunOutcome Run();

  // From any thread: the daemon shuts down. The child gets SIGTERM, writes a
  // checkpoint and exits 3; Run() then hands the attempt back (Finish,
  // retryable). Before the child started, Run() hands it back at once.
  void RequestShutdown();

  // The folder the child writes to (output_dir, resolved against the
  // artifact root when relative).
  const std::string& out_dir() const { return out_dir_; }

 private:
  enum class Stop { kNone, kCancel, kShutdown };

  bool Prepare(std::string* error);
  int Supervise();  // returns the child's exit code
  RunOutcome Conclude(int exit_code);
  void Heartbeat();
  void DrainEvents();
  void HandleEvent(const nlohmann::json& event);
  void FlushReports();
  void LoseLease(const std::string& why);
  void StopChild(Stop reason);
  void Finish(bool success, const std::string& result_json, const std::string& artifact,
              const std::string& error, bool retryable, bool handed_back = false);
  std::string LogTail(int lines) const;

  SchedulerClient* client_;
  WorkerMetrics* metrics_;
  SupervisorConfig config_;
  api::Assignment assignment_;
  TrainLabels labels_;
  std::string out_dir_;
  std::string log_file_;
  std::string events_file_;
  uint64_t log_offset_ = 0;  // where this attempt's output starts in the log
  bool resumed_ = false;     // OUT/checkpoint.pt existed when the child started

  std::unique_ptr<ChildProcess> child_;
  std::unique_ptr<EventsTail> tail_;

  // Owned by the Run() thread.
  Stop stop_ = Stop::kNone;
  bool lease_lost_ = false;
  std::optional<std::chrono::steady_clock::time_point> kill_at_;
  double progress_ = 0;
  int64_t last_step_ = -1;
  std::vector<api::MetricPoint> pending_points_;
  std::deque<std::pair<int64_t, std::string>> pending_checkpoints_;
  bool heartbeat_failing_ = false;

  // Shared with RequestShutdown() and the child-waiting thread.
  std::mutex mu_;
  std::condition_variable cv_;
  bool shutdown_requested_ = false;
  std::optional<int> exit_code_;
};

// The last `lines` lines of `path` from byte `offset` on (at most its last
// 64 KiB), joined with '\n'; "" if unreadable.
std::string LastLines(const std::string& path, uint64_t offset, int lines);

// The MetricPoints of one events line (see README.md): "progress" gives
// progress (step/total), train_loss, train_top1, images_per_second; "eval"
// gives test_top1, test_loss and test_top1_compensated when present. Others
// give none. Each point is at the event's step, with `attempt`.
std::vector<api::MetricPoint> EventMetricPoints(const nlohmann::json& event, int32_t attempt);

}  // namespace dfkd::worker::daemon

#endif  // DFKD_WORKER_DAEMON_RUN_SUPERVISOR_H_
