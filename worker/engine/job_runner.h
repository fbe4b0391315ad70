// Runs one job spec with the engine alone: the code path shared by
// dfkd-train and (later) the worker daemon's child process.
//
// This is the single place where exceptions from LibTorch, the data readers
// and the trainer become a status with context; nothing above it sees one.
#ifndef DFKD_WORKER_ENGINE_JOB_RUNNER_H_
#define DFKD_WORKER_ENGINE_JOB_RUNNER_H_

#include <string>

#include <nlohmann/json.hpp>

#include "common/spec/job_spec.h"
#include "worker/dist/communicator.h"
#include "worker/engine/trainer.h"

namespace dfkd::worker {

enum class JobCode {
  kOk,            // finished; result.json written
  kStopped,       // stop requested; checkpoint written, run again to resume
  kDataError,     // a data file is missing, truncated or corrupt
  kFailed,        // anything else (diverged loss, bad checkpoint, ...)
};

struct JobStatus {
  JobCode code = JobCode::kOk;
  std::string message;
  nlohmann::json result;
};

// `spec` must already be validated (ParseJobSpec). `comm` may be null (a world
// of one).
JobStatus RunJob(const common::JobSpec& spec, const std::string& out_dir,
                 const RunControl& control, Communicator* comm = nullptr);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_ENGINE_JOB_RUNNER_H_
