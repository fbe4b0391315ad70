// Memory of a class-sharded bank of tiny per-class generators
// (worker/methods/class_bank.h): builds the bank of the classes [begin, end)
// of a `classes`-class task (1,000 by default: KDCI's ImageNet protocol of
// one generator per class) on C x S x S images, runs one synthesis of a few
// owned classes, and prints JSON lines:
//   "built":       parameters per class, bytes per class of parameters, BN
//                  buffers and (once allocated) Adam state, the bank's bytes
//                  now and once every owned class has been updated, and the
//                  process's peak RSS (VmHWM) and RSS before and after
//                  building the bank;
//   "synthesized": the same after one synthesis of --synth-classes classes
//                  (their Adam state now allocated), and its time.
// The teacher and student are WRN-16-1s with `classes` outputs, built before
// the first measurement. Run one process per shard (the later issue's 2 ranks:
// --begin 0 --end 500 and --begin 500 --end 1000).
//
// Flags (--name value or --name=value): --classes 1000 --begin 0 --end 0 (=
// classes) --image-size 32 --channels 3 --nz 32 --ngf 8 --synth-classes 2
// --images-per-class 8 --g-steps 1 --threads 2.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "worker/methods/class_bank.h"
#include "worker/models/model_zoo.h"

namespace {
using Clock = std::chrono::steady_clock;
using namespace dfkd::worker;  // NOLINT: a benchmark's main

// A field of /proc/self/status in kB ("VmHWM", "VmRSS"); -1 when unknown.
int64_t StatusKb(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      std::istringstream rest(line.substr(field.size() + 1));
      int64_t kb = -1;
      rest >> kb;
      return kb;
    }
  }
  return -1;
}

nlohmann::json MemoryJson(const BankMemory& m) {
  return {{"classes", m.classes},
          {"parameters_per_class", m.parameters_per_class},
          {"parameter_bytes_per_class", m.parameter_bytes_per_class},
          {"buffer_bytes_per_class", m.buffer_bytes_per_class},
          {"optimizer_state_bytes_per_class", m.optimizer_state_bytes_per_class},
          {"parameter_bytes", m.parameter_bytes},
          {"buffer_bytes", m.buffer_bytes},
          {"optimizer_state_bytes", m.optimizer_state_bytes},
          {"classes_with_optimizer_state", m.classes_with_optimizer_state},
          {"state_bytes", m.state_bytes()},
          {"state_bytes_all_updated", m.state_bytes_all_updated()},
          {"pool_bytes", m.pool_bytes}};
}

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, int64_t> flags = {
      {"classes", 1000}, {"begin", 0},  {"end", 0},           {"image-size", 32},
      {"channels", 3},   {"nz", 32},    {"ngf", 8},           {"synth-classes", 2},
      {"g-steps", 1},    {"threads", 2}, {"images-per-class", 8}};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    const size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    }
    if (arg.rfind("--", 0) != 0 || flags.count(arg.substr(2)) == 0 || value.empty()) {
      std::cerr << "bank_memory_bench: bad flag '" << arg << "'; flags:";
      for (const auto& kv : flags) std::cerr << " --" << kv.first;
      std::cerr << std::endl;
      return 2;
    }
    try {
      flags[arg.substr(2)] = std::stoll(value);
    } catch (const std::exception&) {
      std::cerr << "bank_memory_bench: " << arg << " needs an integer, got '" << value << "'"
                << std::endl;
      return 2;
    }
  }
  const int64_t classes = flags["classes"], channels = flags["channels"];
  const int64_t size = flags["image-size"];
  const ClassRange range{flags["begin"], flags["end"] == 0 ? classes : flags["end"]};

  try {
    torch::set_num_threads(static_cast<int>(flags["threads"]));
    torch::manual_seed(0);
    Classifier teacher = MakeClassifier({"wrn", 16, 1, 1.0, 0.0, classes, channels, size});
    teacher->eval();
    for (auto& p : teacher->parameters()) p.set_requires_grad(false);
    Classifier student = MakeClassifier({"wrn", 16, 1, 1.0, 0.0, classes, channels, size});
    const Normalization norm{std::vector<float>(static_cast<size_t>(channels), 0.5f),
                             std::vector<float>(static_cast<size_t>(channels), 0.5f)};
    MethodDeps deps{teacher, student, {channels, size, size}, classes, norm, 4};
    ClassBankOptions options;
    options.unit(ClassBankUnit::kGenerator)
        .nz(flags["nz"])
        .ngf(flags["ngf"])
        .g_steps(flags["g-steps"])
        .images_per_class(flags["images-per-class"])
        .crop_padding(4)
        .norm(norm);

    const int64_t hwm_before = StatusKb("VmHWM"), rss_before = StatusKb("VmRSS");
    Clock::time_point t0 = Clock::now();
    ClassBank bank(options, range, deps);
    const double build_seconds = SecondsSince(t0);
    const int64_t hwm_after = StatusKb("VmHWM"), rss_after = StatusKb("VmRSS");
    std::cout << nlohmann::json{{"bench", "bank_memory"},
                                {"event", "built"},
                                {"num_classes", classes},
                                {"class_begin", range.begin},
                                {"class_end", range.end},
                                {"image_shape", {channels, size, size}},
                                {"nz", options.nz()},
                                {"ngf", options.ngf()},
                                {"build_seconds", build_seconds},
                                {"vm_hwm_kb_before", hwm_before},
                                {"vm_hwm_kb_after", hwm_after},
                                {"vm_rss_kb_before", rss_before},
                                {"vm_rss_kb_after", rss_after},
                                {"memory", MemoryJson(bank.Memory())}}
                     .dump()
              << std::endl;

    std::vector<int64_t> few = bank.owned();
    few.resize(static_cast<size_t>(
        std::min<int64_t>(flags["synth-classes"], static_cast<int64_t>(few.size()))));
    t0 = Clock::now();
    LabelledImages made = bank.Synthesize(few, /*round=*/0, /*seed=*/1);
    const double synth_seconds = SecondsSince(t0);
    std::cout << nlohmann::json{{"bench", "bank_memory"},
                                {"event", "synthesized"},
                                {"classes", few},
                                {"images", made.images.defined() ? made.images.size(0) : 0},
                                {"g_steps", BankGSteps(options)},
                                {"seconds", synth_seconds},
                                {"vm_hwm_kb", StatusKb("VmHWM")},
                                {"vm_rss_kb", StatusKb("VmRSS")},
                                {"memory", MemoryJson(bank.Memory())}}
                     .dump()
              << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "bank_memory_bench: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
