#include "worker/engine/job_runner.h"

#include <exception>

#include "worker/data/dataset.h"
#include "worker/engine/job_data.h"
#include "worker/models/model_zoo.h"

namespace dfkd::worker {

JobStatus RunJob(const common::JobSpec& spec, const std::string& out_dir,
                 const RunControl& control, Communicator* comm) {
  LocalCommunicator local;
  Communicator& c = comm ? *comm : local;
  JobStatus status;
  try {
    if (spec.runtime.device != "cpu") {
      throw std::runtime_error("runtime.device: '" + spec.runtime.device +
                               "' is not available in this build (CPU LibTorch)");
    }
    JobData data = LoadJobData(spec.data);
    torch::manual_seed(spec.seed);  // the same initial weights for the same seed
    Classifier model = MakeClassifier(ModelConfigFor(spec.model, data));
    SupervisedTrainer trainer(spec, model, data, c, out_dir);
    RunOutcome outcome = trainer.Run(control);
    status.code = outcome.finished ? JobCode::kOk : JobCode::kStopped;
    status.result = outcome.result;
    if (!outcome.finished) {
      status.message = "stopped at step " + std::to_string(outcome.step);
    }
  } catch (const DataError& e) {
    status.code = JobCode::kDataError;
    status.message = e.what();
  } catch (const c10::Error& e) {
    status.code = JobCode::kFailed;
    status.message = e.what_without_backtrace();
  } catch (const std::exception& e) {
    status.code = JobCode::kFailed;
    status.message = e.what();
  }
  return status;
}

}  // namespace dfkd::worker
