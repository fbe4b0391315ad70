// The training loop shared by every job kind.
//
// A step: StepSource::Step (a labelled batch and cross-entropy, or a DFKD
// method's substitute batch and KD loss) -> backward -> AverageGradients over
// ranks -> SGD with the scheduled learning rate. Every
// train.eval_every_epochs epochs (an epoch is StepSource::steps_per_epoch
// steps) and at the end, rank 0 evaluates the model on the real test split:
// raw top-1 and, when the source has them (KDCI), compensated logits' top-1.
// Every train.checkpoint_every_steps steps, at a stop request and at the end
// it writes a checkpoint (model, optimizer, step, the source's state); a later
// Run() with the same spec and out_dir resumes from it and reaches bit-for-bit
// the weights of an uninterrupted run.
//
// out_dir after a finished run:
//   checkpoint.pt   resume point
//   model.pt        final weights (a teacher's artifact for distillation)
//   metrics.jsonl   one JSON line per evaluation
//   result.json     final accuracies, per-class accuracy, timing, spec hash
#ifndef DFKD_WORKER_ENGINE_TRAINER_H_
#define DFKD_WORKER_ENGINE_TRAINER_H_

#include <atomic>
#include <string>

#include <nlohmann/json.hpp>

#include "common/spec/job_spec.h"
#include "worker/dist/communicator.h"
#include "worker/engine/job_data.h"
#include "worker/engine/step_source.h"
#include "worker/models/classifier.h"

namespace dfkd::worker {

struct RunControl {
  const std::atomic<bool>* stop = nullptr;  // checked every step (signals)
  int64_t stop_at_step = -1;                // act as if stopped after this step
  bool fresh = false;                       // ignore an existing checkpoint
  bool quiet = false;                       // no progress output
  // Machine-readable progress for a supervising daemon (dfkd-worker): JSON
  // lines appended to this file by rank 0 ("" = none). Events: "progress"
  // about every 1% of the run, "eval" after each evaluation, "checkpoint"
  // after each checkpoint write. See worker/daemon/README.md.
  std::string events_path;
};

struct RunOutcome {
  bool finished = false;     // false: stopped early, checkpoint written
  int64_t step = 0;
  nlohmann::json result;     // result.json's content when finished
};

class Trainer {
 public:
  // `data`, `comm` and `source` must outlive the trainer. `model` is what the
  // optimizer trains and evaluation scores.
  Trainer(common::JobSpec spec, Classifier model, const JobData& data,
          Communicator& comm, StepSource& source, std::string out_dir);
  RunOutcome Run(const RunControl& control);
  int64_t total_steps() const;
  // Fields merged into result.json (e.g. the teacher's accuracy).
  void AddResultFields(const nlohmann::json& fields) { extra_result_.update(fields); }

 private:
  common::JobSpec spec_;
  Classifier model_;
  const JobData& data_;
  Communicator& comm_;
  StepSource& source_;
  std::string out_dir_;
  nlohmann::json extra_result_ = nlohmann::json::object();
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_ENGINE_TRAINER_H_
