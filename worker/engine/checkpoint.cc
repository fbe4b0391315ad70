#include "worker/engine/checkpoint.h"

#include <cstdio>
#include <filesystem>
#include <stdexcept>

namespace dfkd::worker {
namespace {

void AtomicSave(torch::serialize::OutputArchive& archive, const std::string& path) {
  const std::string tmp = path + ".tmp";
  archive.save_to(tmp);
  std::filesystem::rename(tmp, path);
}

torch::Tensor StringTensor(const std::string& s) {
  return torch::from_blob(const_cast<char*>(s.data()),
                          {static_cast<int64_t>(s.size())}, torch::kUInt8)
      .clone();
}

std::string TensorString(const torch::Tensor& t) {
  return std::string(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()),
                     t.numel());
}

}  // namespace

void SaveCheckpoint(const std::string& path, torch::nn::Module& model,
                    torch::optim::Optimizer& optimizer, const TrainState& state,
                    const SaveExtraFn& save_extra) {
  torch::serialize::OutputArchive root, m, o, extra;
  model.save(m);
  optimizer.save(o);
  root.write("model", m);
  root.write("optimizer", o);
  if (save_extra) {
    save_extra(extra);
    root.write("extra", extra);
  }
  root.write("step", torch::tensor(state.step));
  root.write("best_top1", torch::tensor(state.best_top1, torch::kFloat64));
  root.write("best_step", torch::tensor(state.best_step));
  root.write("train_seconds", torch::tensor(state.train_seconds, torch::kFloat64));
  root.write("spec_hash", StringTensor(state.spec_hash));
  AtomicSave(root, path);
}

bool LoadCheckpoint(const std::string& path, torch::nn::Module& model,
                    torch::optim::Optimizer& optimizer, TrainState* state,
                    const LoadExtraFn& load_extra) {
  if (!std::filesystem::exists(path)) return false;
  torch::serialize::InputArchive root, m, o, extra;
  try {
    root.load_from(path);
  } catch (const c10::Error& e) {
    throw std::runtime_error("checkpoint " + path + " is unreadable: " +
                             e.what_without_backtrace());
  }
  torch::Tensor t;
  root.read("spec_hash", t);
  std::string hash = TensorString(t);
  if (!state->spec_hash.empty() && hash != state->spec_hash) {
    throw std::runtime_error("checkpoint " + path + " belongs to spec " + hash +
                             ", this run is spec " + state->spec_hash +
                             " (use another output folder or --fresh)");
  }
  root.read("model", m);
  root.read("optimizer", o);
  model.load(m);
  optimizer.load(o);
  if (load_extra) {
    root.read("extra", extra);
    load_extra(extra);
  }
  root.read("step", t);
  state->step = t.item<int64_t>();
  root.read("best_top1", t);
  state->best_top1 = t.item<double>();
  root.read("best_step", t);
  state->best_step = t.item<int64_t>();
  root.read("train_seconds", t);
  state->train_seconds = t.item<double>();
  state->spec_hash = hash;
  return true;
}

void SaveWeights(const std::string& path, torch::nn::Module& model) {
  torch::serialize::OutputArchive a;
  model.save(a);
  AtomicSave(a, path);
}

void LoadWeights(const std::string& path, torch::nn::Module& model) {
  if (!std::filesystem::exists(path)) {
    throw std::runtime_error("weights file " + path + " does not exist");
  }
  torch::serialize::InputArchive a;
  a.load_from(path);
  model.load(a);
}

}  // namespace dfkd::worker
