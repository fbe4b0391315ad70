#include "worker/engine/checkpoint.h"

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "worker/methods/optimizer_state.h"
#include "worker/models/classifier.h"

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
  const torch::Tensor cpu = t.cpu();
  return std::string(reinterpret_cast<const char*>(cpu.data_ptr<uint8_t>()), cpu.numel());
}

void LoadModuleStateAt(torch::serialize::InputArchive& archive, torch::nn::Module& module,
                       const std::string& prefix) {
  torch::NoGradGuard no_grad;
  auto load = [&](const std::string& key, torch::Tensor& into, bool is_buffer) {
    torch::Tensor saved;
    archive.read(key, saved, is_buffer);
    if (saved.sizes() != into.sizes()) {
      std::ostringstream msg;
      msg << (is_buffer ? "buffer " : "parameter ") << prefix << key << ": saved shape "
          << saved.sizes() << ", model shape " << into.sizes();
      throw std::runtime_error(msg.str());
    }
    into.copy_(saved);
  };
  for (auto& p : module.named_parameters(/*recurse=*/false)) load(p.key(), p.value(), false);
  for (auto& b : module.named_buffers(/*recurse=*/false)) load(b.key(), b.value(), true);
  for (const auto& child : module.named_children()) {
    if (!child.value()->is_serializable()) continue;
    torch::serialize::InputArchive sub;
    archive.read(child.key(), sub);
    LoadModuleStateAt(sub, *child.value(), prefix + child.key() + ".");
  }
}

}  // namespace

void SaveCheckpoint(const std::string& path, torch::nn::Module& model,
                    torch::optim::Optimizer& optimizer, const TrainState& state,
                    const SaveExtraFn& save_extra) {
  torch::serialize::OutputArchive root, m, o, extra;
  SaveModuleState(model, m);
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
    root.load_from(path, torch::Device(torch::kCPU));
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
  LoadModuleState(m, model);
  optimizer.load(o);
  MoveOptimizerState(optimizer, DeviceOf(model));
  if (load_extra) {
    if (!root.try_read("extra", extra)) {
      throw std::runtime_error("checkpoint " + path +
                               " was written by a multi-rank run (each rank's method state "
                               "is in its own shard): resume it with the same world size");
    }
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

std::string ShardPath(const std::string& checkpoint_path, int64_t rank, int64_t step) {
  return checkpoint_path + ".rank" + std::to_string(rank) + ".step" + std::to_string(step);
}

void SaveShard(const std::string& checkpoint_path, int64_t rank, int64_t step,
               const SaveExtraFn& save) {
  torch::serialize::OutputArchive root, extra;
  save(extra);
  root.write("extra", extra);
  root.write("rank", torch::tensor(rank));
  root.write("step", torch::tensor(step));
  AtomicSave(root, ShardPath(checkpoint_path, rank, step));
}

void LoadShard(const std::string& checkpoint_path, int64_t rank, int64_t step,
               const LoadExtraFn& load) {
  const std::string path = ShardPath(checkpoint_path, rank, step);
  if (!std::filesystem::exists(path)) {
    throw std::runtime_error("checkpoint shard " + path + " of rank " + std::to_string(rank) +
                             " at step " + std::to_string(step) +
                             " is missing (was the run started with another world size?)");
  }
  torch::serialize::InputArchive root, extra;
  try {
    root.load_from(path, torch::Device(torch::kCPU));
  } catch (const c10::Error& e) {
    throw std::runtime_error("checkpoint shard " + path + " is unreadable: " +
                             e.what_without_backtrace());
  }
  root.read("extra", extra);
  load(extra);
}

void RemoveStaleShards(const std::string& checkpoint_path, int64_t rank, int64_t keep_step) {
  namespace fs = std::filesystem;
  const fs::path main(checkpoint_path);
  const std::string prefix = main.filename().string() + ".rank" + std::to_string(rank) + ".step";
  const std::string keep = ShardPath(checkpoint_path, rank, keep_step);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(main.parent_path(), ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || entry.path().string() == keep) continue;
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) continue;
    fs::remove(entry.path(), ec);
  }
}

void SaveModuleState(torch::nn::Module& module, torch::serialize::OutputArchive& archive) {
  for (const auto& p : module.named_parameters(/*recurse=*/false)) {
    archive.write(p.key(), p.value().detach().cpu());
  }
  for (const auto& b : module.named_buffers(/*recurse=*/false)) {
    archive.write(b.key(), b.value().cpu(), /*is_buffer=*/true);
  }
  for (const auto& child : module.named_children()) {
    if (!child.value()->is_serializable()) continue;
    torch::serialize::OutputArchive sub(archive.compilation_unit());
    SaveModuleState(*child.value(), sub);
    archive.write(child.key(), sub);
  }
}

void LoadModuleState(torch::serialize::InputArchive& archive, torch::nn::Module& module) {
  LoadModuleStateAt(archive, module, "");
}

void SaveWeights(const std::string& path, torch::nn::Module& model) {
  torch::serialize::OutputArchive a;
  SaveModuleState(model, a);
  AtomicSave(a, path);
}

void LoadWeights(const std::string& path, torch::nn::Module& model) {
  if (!std::filesystem::exists(path)) {
    throw std::runtime_error("weights file " + path + " does not exist");
  }
  torch::serialize::InputArchive a;
  a.load_from(path, torch::Device(torch::kCPU));
  LoadModuleState(a, model);
}

}  // namespace dfkd::worker
