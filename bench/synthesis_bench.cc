// Images synthesized per second by each generation method, teacher WRN-40-2
// and student WRN-16-1 on CIFAR-shaped data (3x32x32), batch 256, 2 threads.
//   DAFL:    one generator step makes a batch (fresh G(z) per student step).
//   DeepInv: a round of g_steps pixel-optimisation steps makes one batch; the
//            rate is measured over a few steps and extrapolated to the
//            reference's 1000 steps a round.
//   Fast:    one synthesis call (g_steps 10 inner iterations of G' and z, then
//            the meta update) makes one batch of 256.
//   CMI:     one call of g_steps inner iterations (two teacher passes, head,
//            memory bank) makes one batch of 256; measured over a few steps
//            and extrapolated to the reference's 200 steps a call.
//   MosaicKD: one D step + one G step on 256 images; the student's generator
//            half then comes from fresh G(z) per step (as DAFL).
//   class_bank: one tiny per-class generator (nz 32, ngf 8) trained for 10
//            steps on 32 images of its class.
// Output: one JSON object per line.
#include <chrono>
#include <iostream>

#include <nlohmann/json.hpp>

#include "worker/engine/runtime.h"
#include "worker/methods/dafl.h"
#include "worker/methods/deep_inversion.h"
#include "worker/methods/class_bank_method.h"
#include "worker/methods/cmi.h"
#include "worker/methods/fast_meta.h"
#include "worker/methods/mosaic_kd.h"
#include "worker/models/model_zoo.h"

namespace {
using Clock = std::chrono::steady_clock;
using namespace dfkd::worker;  // NOLINT: a benchmark's main

double Seconds(const std::function<void()>& f) {
  auto t0 = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
}  // namespace

int main() {
  ConfigureRuntime(2);
  torch::manual_seed(0);
  Classifier teacher = MakeClassifier({"wrn", 40, 2, 1.0, 0.0, 10, 3, 32});
  teacher->eval();
  for (auto& p : teacher->parameters()) p.set_requires_grad(false);
  UseChannelsLast(*teacher);
  Classifier student = MakeClassifier({"wrn", 16, 1, 1.0, 0.0, 10, 3, 32});
  UseChannelsLast(*student);
  MethodDeps deps{teacher, student, {3, 32, 32}, 10, NormalizationFor("cifar10"), 4};
  RoundContext ctx;

  Dafl dafl(DaflOptions().norm(deps.norm), deps);
  dafl.Synthesize(ctx);  // warm-up
  const int rounds = 3;
  double s = Seconds([&] {
    for (int r = 1; r <= rounds; ++r) {
      ctx.round = r;
      dafl.Synthesize(ctx);
    }
  });
  std::cout << nlohmann::json{{"bench", "synthesis"}, {"method", "dafl"},
                              {"seconds_per_generator_step", s / rounds},
                              {"images_per_second", 256 * rounds / s}}
                   .dump()
            << std::endl;

  const int steps = 5;
  DeepInversion di(DeepInversionOptions().g_steps(steps).norm(deps.norm), deps);
  ctx.round = 0;
  di.Synthesize(ctx);  // warm-up
  ctx.round = 1;
  s = Seconds([&] { di.Synthesize(ctx); });
  const double per_step = s / steps;
  std::cout << nlohmann::json{{"bench", "synthesis"}, {"method", "deepinv"},
                              {"seconds_per_pixel_step", per_step},
                              {"images_per_second_at_1000_steps", 256 / (per_step * 1000)}}
                   .dump()
            << std::endl;

  // warmup 0: every Synthesize() is one call (round 0 would make warmup + 1).
  FastMethod fast(FastOptions().warmup(0).norm(deps.norm), deps);
  ctx.round = 0;
  fast.Synthesize(ctx);  // warm-up
  const int calls = 2;
  s = Seconds([&] {
    for (int r = 1; r <= calls; ++r) {
      ctx.round = r;
      fast.Synthesize(ctx);
    }
  });
  std::cout << nlohmann::json{{"bench", "synthesis"}, {"method", "fast"},
                              {"g_steps", fast.options().g_steps()},
                              {"seconds_per_call", s / calls},
                              {"images_per_second", 256 * calls / s}}
                   .dump()
            << std::endl;

  const int cmi_steps = 5;
  CmiMethod cmi(CmiOptions().g_steps(cmi_steps).norm(deps.norm), deps);
  ctx.round = 0;
  cmi.Synthesize(ctx);  // warm-up (the bank is empty in the first call)
  ctx.round = 1;
  s = Seconds([&] { cmi.Synthesize(ctx); });
  const double cmi_step = s / cmi_steps;
  std::cout << nlohmann::json{{"bench", "synthesis"}, {"method", "cmi"},
                              {"seconds_per_inner_step", cmi_step},
                              {"images_per_second_at_200_steps", 256 / (cmi_step * 200)}}
                   .dump()
            << std::endl;

  torch::Tensor pool = torch::randint(256, {2048, 3, 32, 32}, torch::kUInt8);
  MosaicKd mosaic(MosaicKdOptions().norm(deps.norm).pool(pool), deps);
  ctx.round = 0;
  mosaic.Synthesize(ctx);  // warm-up
  s = Seconds([&] {
    for (int r = 1; r <= rounds; ++r) {
      ctx.round = r;
      mosaic.Synthesize(ctx);
    }
  });
  std::cout << nlohmann::json{{"bench", "synthesis"}, {"method", "mosaickd"},
                              {"seconds_per_iteration", s / rounds},
                              {"images_per_second", 256 * rounds / s}}
                   .dump()
            << std::endl;

  // One round = every owned class once; own 4 classes so a round is short.
  ClassBankMethod bank(ClassBankOptions().g_steps(10).class_begin(0).class_end(4).norm(deps.norm),
                       deps);
  ctx.round = 0;
  bank.Synthesize(ctx);  // warm-up
  ctx.round = 1;
  s = Seconds([&] { bank.Synthesize(ctx); });
  std::cout << nlohmann::json{{"bench", "synthesis"}, {"method", "class_bank"},
                              {"g_steps", 10},
                              {"seconds_per_class", s / 4},
                              {"images_per_second", 4 * 32 / s}}
                   .dump()
            << std::endl;
  return 0;
}
