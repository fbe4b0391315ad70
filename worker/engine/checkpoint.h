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

// Several ranks: each rank's own state (a DFKD method's pool, its shard of a
// class bank) goes to a shard file per rank and step, next to the main
// checkpoint (which rank 0 writes after every shard is on disk). A shard is
// named for its step, so a crash between the shards and the main file leaves
// the previous step's shards, which the main file still points at.
std::string ShardPath(const std::string& checkpoint_path, int64_t rank, int64_t step);
void SaveShard(const std::string& checkpoint_path, int64_t rank, int64_t step,
               const SaveExtraFn& save);
// Throws std::runtime_error naming the file when the shard of (rank, step) is
// missing or unreadable (a resume with another world size, a lost file).
void LoadShard(const std::string& checkpoint_path, int64_t rank, int64_t step,
               const LoadExtraFn& load);
// Deletes this rank's shards of steps other than `keep_step`.
void RemoveStaleShards(const std::string& checkpoint_path, int64_t rank, int64_t keep_step);

// A module's parameters and buffers in Module::save's layout, but written as
// CPU tensors and read by copying into the module's own tensors, wherever
// they live: a checkpoint written on a GPU resumes on the CPU and the other
// way round, and optimizers keep pointing at the same tensors. A tensor of
// another shape than the module's is refused, naming it.
void SaveModuleState(torch::nn::Module& module, torch::serialize::OutputArchive& archive);
void LoadModuleState(torch::serialize::InputArchive& archive, torch::nn::Module& module);

// Weights only (parameters and buffers): what a teacher hands to distillation.
void SaveWeights(const std::string& path, torch::nn::Module& model);
void LoadWeights(const std::string& path, torch::nn::Module& model);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_ENGINE_CHECKPOINT_H_
