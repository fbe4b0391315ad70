// KDCI's cost. Modes:
//   time   one distillation step (teacher WRN-40-2, student WRN-16-1, batch
//          256 of 3x32x32, noise substitute data) without and with KDCI
//          (dictionary rebuilt every step from the KD batch, N = 32),
//          interleaved step by step in one process so drift hits both alike;
//          then dictionary build times for 256x10, 256x100 and a streamed
//          100,000 x 100 pool.
//   memory-base / memory-base-lapack / memory-kdci   10 steps of one
//          variant; prints peak RSS (run each in its own process, as
//          bench/run.sh does). memory-base-lapack builds one dictionary
//          before the baseline steps.
// Output: one JSON object per line.
#include <c10/core/CPUAllocator.h>
#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <unordered_map>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "worker/engine/distill_source.h"
#include "worker/engine/method_factory.h"
#include "worker/engine/runtime.h"
#include "worker/kdci/confounder_dictionary.h"
#include "worker/models/model_zoo.h"

namespace {

// Wraps LibTorch's CPU allocator and keeps the current and peak number of
// bytes held by tensors: an exact, repeatable peak, unlike the resident set.
class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* base) {
    base_ = base;
    base_free_ = base->raw_deleter();
  }
  c10::DataPtr allocate(size_t n) const override {
    void* p = base_->raw_allocate(n);
    {
      std::lock_guard<std::mutex> lock(mu_);
      sizes_[p] = n;
      current_ += static_cast<int64_t>(n);
      peak_ = std::max(peak_, current_);
    }
    // Context == data, as LibTorch's raw_allocate (oneDNN scratch) requires.
    return {p, p, &Release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &Release; }
  static int64_t peak() {
    std::lock_guard<std::mutex> lock(mu_);
    return peak_;
  }

 private:
  static void Release(void* p) {
    if (p == nullptr) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = sizes_.find(p);
      if (it != sizes_.end()) {
        current_ -= static_cast<int64_t>(it->second);
        sizes_.erase(it);
      }
    }
    base_free_(p);
  }
  static inline c10::Allocator* base_ = nullptr;
  static inline c10::DeleterFnPtr base_free_ = nullptr;
  static inline std::mutex mu_;
  static inline std::unordered_map<void*, size_t> sizes_;
  static inline int64_t current_ = 0;
  static inline int64_t peak_ = 0;
};

using Clock = std::chrono::steady_clock;
using namespace dfkd::worker;  // NOLINT: a benchmark's main

struct Variant {
  Classifier student;
  std::unique_ptr<DistillSource> source;
  std::unique_ptr<torch::optim::SGD> opt;
  int64_t step = 0;
};

Variant Make(Classifier teacher, bool kdci, LocalCommunicator& comm) {
  dfkd::common::JobSpec spec;
  spec.kind = dfkd::common::JobKind::kDistill;
  spec.train.batch_size = 256;
  spec.distill.kd_steps = 1 << 30;  // one synthesis round: measure the step
  spec.distill.steps_per_epoch = 1 << 30;
  spec.kdci.enabled = kdci;
  spec.kdci.num_prototypes = 32;
  spec.kdci.rebuild = "every_step";
  torch::manual_seed(1);
  Variant v;
  v.student = MakeClassifier({"wrn", 16, 1, 1.0, 0.0, 10, 3, 32});
  UseChannelsLast(*v.student);
  MethodDeps deps{teacher, v.student, {3, 32, 32}, 10, NormalizationFor("cifar10")};
  v.source = std::make_unique<DistillSource>(spec, teacher, v.student, MakeMethod(spec, deps),
                                             comm);
  std::vector<torch::Tensor> params = v.student->parameters();
  for (auto& p : v.source->ExtraParameters()) params.push_back(p);
  v.opt = std::make_unique<torch::optim::SGD>(
      params, torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(1e-4));
  return v;
}

double StepMs(Variant& v) {
  auto t0 = Clock::now();
  StepResult r = v.source->Step(v.step++);
  v.opt->zero_grad();
  r.loss.backward();
  v.opt->step();
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double Median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x[x.size() / 2];
}

double BuildMs(int64_t m, int64_t d, int64_t n) {
  torch::manual_seed(0);
  torch::Tensor logits = torch::randn({m, d}) * 4;
  std::vector<double> t;
  for (int i = 0; i < 7; ++i) {
    auto t0 = Clock::now();
    BuildDictionary(logits, DictionaryOptions().num_prototypes(n).seed(i));
    t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return Median(t);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"KDCI overhead and dictionary build benchmark"};
  std::string mode = "time";
  int pairs = 20;
  app.add_option("--mode", mode, "time | memory-base | memory-base-lapack | memory-kdci");
  app.add_option("--pairs", pairs, "interleaved step pairs to time");
  CLI11_PARSE(app, argc, argv);
  ConfigureRuntime(2);
  static CountingAllocator counting(c10::GetDefaultCPUAllocator());
  if (mode != "time") c10::SetCPUAllocator(&counting, /*priority=*/100);
  LocalCommunicator comm;
  torch::manual_seed(0);
  Classifier teacher = MakeClassifier({"wrn", 40, 2, 1.0, 0.0, 10, 3, 32});
  teacher->eval();
  UseChannelsLast(*teacher);

  if (mode != "time") {
    if (mode == "memory-base-lapack") {
      // The baseline after one dictionary build: separates a one-time cost
      // (LAPACK/BLAS workspaces of the first eigen-decomposition) from what
      // KDCI's steps keep alive.
      BuildDictionary(torch::randn({256, 10}), DictionaryOptions().num_prototypes(32));
    }
    Variant v = Make(teacher, mode == "memory-kdci", comm);
    for (int i = 0; i < 10; ++i) StepMs(v);
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    // With mmap off and trimming off (ConfigureRuntime), the main heap only
    // grows: its size is the high-water mark of what was ever allocated,
    // far less noisy than the resident set.
    struct mallinfo2 mi = mallinfo2();
    std::cout << nlohmann::json{{"bench", "kdci_peak_rss"}, {"variant", mode},
                                {"peak_rss_kb", ru.ru_maxrss},
                                {"main_heap_kb", static_cast<int64_t>(mi.arena / 1024)},
                                {"peak_tensor_bytes", CountingAllocator::peak()}}
                     .dump()
              << std::endl;
    return 0;
  }
  Variant base = Make(teacher, false, comm), kdci = Make(teacher, true, comm);
  for (int i = 0; i < 2; ++i) StepMs(base), StepMs(kdci);  // warm-up
  std::vector<double> tb, tk;
  for (int i = 0; i < pairs; ++i) {
    // Alternate which goes first so cache and clock effects even out.
    if (i % 2 == 0) {
      tb.push_back(StepMs(base));
      tk.push_back(StepMs(kdci));
    } else {
      tk.push_back(StepMs(kdci));
      tb.push_back(StepMs(base));
    }
  }
  double sb = 0, sk = 0;
  for (double x : tb) sb += x;
  for (double x : tk) sk += x;
  std::cout << nlohmann::json{{"bench", "kdci_step_overhead"}, {"pairs", pairs},
                              {"base_median_ms", Median(tb)}, {"kdci_median_ms", Median(tk)},
                              {"base_mean_ms", sb / pairs}, {"kdci_mean_ms", sk / pairs},
                              {"overhead_median_pct", 100.0 * (Median(tk) / Median(tb) - 1)},
                              {"overhead_mean_pct", 100.0 * (sk / sb - 1)}}
                   .dump()
            << std::endl;
  for (auto [m, d, n] : {std::tuple<int64_t, int64_t, int64_t>{256, 10, 32}, {256, 100, 32}}) {
    std::cout << nlohmann::json{{"bench", "dictionary_build"}, {"points", m}, {"dim", d},
                                {"prototypes", n}, {"median_ms", BuildMs(m, d, n)}}
                     .dump()
              << std::endl;
  }
  // A 100,000 x 100 pool streamed in chunks of 4,096 (as a pool method feeds it).
  torch::manual_seed(0);
  torch::Tensor pool = torch::randn({100000, 100}) * 4;
  auto t0 = Clock::now();
  StreamingDictionaryBuilder builder(DictionaryOptions().num_prototypes(128));
  auto feed = [&](const std::function<void(const torch::Tensor&)>& consume) {
    for (int64_t i = 0; i < pool.size(0); i += 4096) {
      consume(pool.narrow(0, i, std::min<int64_t>(4096, pool.size(0) - i)));
    }
  };
  feed([&](const torch::Tensor& c) { builder.Add(c); });
  ConfounderDictionary dict = builder.Finish(feed);
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::cout << nlohmann::json{{"bench", "dictionary_build_pool"}, {"points", 100000},
                              {"dim", 100}, {"prototypes", 128}, {"seconds", s},
                              {"kmeans_iterations", dict.iterations}}
                   .dump()
            << std::endl;
  return 0;
}
