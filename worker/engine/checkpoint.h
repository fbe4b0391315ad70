// Checkpoints: everything a run needs to continue exactly where it stopped.
//
// One file holds the model (parameters and buffers), the optimizer (momentum
// buffers), the step counter and the spec hash it was made under. Writes go to
// a temporary file that is renamed over the old one, so a crash while saving
// leaves the previous checkpoint intact. Loading a checkpoint made under a
// different spec is refused: resuming it would silently mix two experiments.
#ifndef DFKD_WORKER_ENGINE_CHECKPOINT_H_
#define DFKD_WORKER_ENGINE_CHECKPOINT_H_

#include <functional>
#include <string>

#include <torch/torch.h>

namespace dfkd::worker {

struct TrainState {
  int64_t step = 0;            // optimisation steps completed
  double best_top1 = -1.0;     // best test top-1 seen so far (-1: none)
  int64_t best_step = -1;
  double train_seconds = 0.0;  // wall time spent training before this save
  std::string spec_hash;
};

// `save_extra` / `load_extra` write and read the state of whatever else the run
// keeps (a DFKD method's generator, pool, dictionary) in a nested archive.
using SaveExtraFn = std::function<void(torch::serialize::OutputArchive&)>;
using LoadExtraFn = std::function<void(torch::serialize::InputArchive&)>;

void SaveCheckpoint(const std::string& path, torch::nn::Module& model,
                    torch::optim::Optimizer& optimizer, const TrainState& state,
                    const SaveExtraFn& save_extra = nullptr);

// Returns false when `path` does not exist. Throws std::runtime_error when the
// file is unreadable or was written under another spec hash.
bool LoadCheckpoint(const std::string& path, torch::nn::Module& model,
                    torch::optim::Optimizer& optimizer, TrainState* state,
                    const LoadExtraFn& load_extra = nullptr);

// Weights only (parameters and buffers): what a teacher hands to distillation.
void SaveWeights(const std::string& path, torch::nn::Module& model);
void LoadWeights(const std::string& path, torch::nn::Module& model);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_ENGINE_CHECKPOINT_H_
