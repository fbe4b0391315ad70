#include "worker/engine/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "worker/dist/overlapped_sync.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/evaluator.h"
#include "worker/engine/lr_schedule.h"
#include "worker/engine/progress.h"

namespace dfkd::worker {
namespace {

using Clock = std::chrono::steady_clock;

std::string Fmt(const char* fmt, double a, double b = 0, double c = 0) {
  char buf[160];
  snprintf(buf, sizeof buf, fmt, a, b, c);
  return buf;
}

}  // namespace

Trainer::Trainer(common::JobSpec spec, Classifier model, const JobData& data,
                 Communicator& comm, StepSource& source, std::string out_dir)
    : spec_(std::move(spec)), model_(std::move(model)), data_(data), comm_(comm),
      source_(source), out_dir_(std::move(out_dir)) {}

int64_t Trainer::total_steps() const {
  return PlannedSteps(spec_.train, source_.steps_per_epoch());
}

RunOutcome Trainer::Run(const RunControl& control) {
  namespace fs = std::filesystem;
  fs::create_directories(out_dir_);
  const std::string ckpt_path = (fs::path(out_dir_) / "checkpoint.pt").string();
  const common::OptimSpec& o = spec_.train.optim;

  std::vector<torch::Tensor> params = model_->parameters();
  for (const torch::Tensor& p : source_.ExtraParameters()) params.push_back(p);
  torch::optim::SGD optimizer(params, torch::optim::SGDOptions(o.lr)
                                          .momentum(o.momentum)
                                          .weight_decay(o.weight_decay)
                                          .nesterov(o.nesterov));
  TrainState state;
  state.spec_hash = common::CanonicalHash(spec_);
  // Alone, the source's state (a method's generator, pool, dictionary) rides
  // in the checkpoint; with several ranks each rank keeps its own in a shard.
  const bool sharded = comm_.size() > 1;
  const SaveExtraFn save_source = [&](torch::serialize::OutputArchive& a) { source_.Save(a); };
  const LoadExtraFn load_source = [&](torch::serialize::InputArchive& a) { source_.Load(a); };
  const bool resumed = !control.fresh && LoadCheckpoint(ckpt_path, *model_, optimizer, &state,
                                                        sharded ? nullptr : load_source);
  if (resumed && sharded) LoadShard(ckpt_path, comm_.rank(), state.step, load_source);
  BroadcastModule(comm_, *model_);

  const int64_t per_epoch = source_.steps_per_epoch();
  const int64_t total = total_steps();
  const bool root = comm_.is_root();
  Progress progress(spec_.name.empty() ? common::JobKindName(spec_.kind) : spec_.name,
                    total, StderrIsTerminal(), std::cerr);
  progress.quiet = control.quiet || !root;
  if (resumed) {
    progress.Message("resumed from " + ckpt_path + " at step " +
                     std::to_string(state.step) + "/" + std::to_string(total));
  }

  std::ofstream metrics, events;
  if (root) metrics.open(fs::path(out_dir_) / "metrics.jsonl", std::ios::app);
  if (root && !control.events_path.empty()) events.open(control.events_path, std::ios::app);
  auto emit = [&](nlohmann::json event) {
    if (events.is_open()) events << event.dump() << "\n" << std::flush;
  };
  const int64_t progress_every = std::max<int64_t>(1, total / 100);
  const double earlier_seconds = state.train_seconds;  // before this process
  const auto session_start = Clock::now();
  auto session_seconds = [&] {
    return std::chrono::duration<double>(Clock::now() - session_start).count();
  };
  double checkpoint_seconds = 0.0;  // this process's saves (rank 0: every shard's too)
  auto save = [&] {
    const auto save_start = Clock::now();
    state.train_seconds = earlier_seconds + session_seconds();
    if (sharded) {
      SaveShard(ckpt_path, comm_.rank(), state.step, save_source);
      comm_.Barrier();  // every shard of this step is on disk before the main file names it
    }
    if (root) {
      SaveCheckpoint(ckpt_path, *model_, optimizer, state, sharded ? nullptr : save_source);
      emit({{"event", "checkpoint"}, {"step", state.step}, {"path", ckpt_path}});
    }
    if (sharded) {
      comm_.Barrier();
      RemoveStaleShards(ckpt_path, comm_.rank(), state.step);
    }
    checkpoint_seconds += std::chrono::duration<double>(Clock::now() - save_start).count();
  };
  const bool channels_last = spec_.runtime.channels_last;
  std::function<torch::Tensor(const torch::Tensor&)> compensate =
      [&](const torch::Tensor& logits) { return source_.CompensatedLogits(logits); };
  auto run_eval = [&] {
    return Evaluate(*model_, *data_.test, data_.norm, spec_.train.eval_batch_size,
                    channels_last, &compensate);
  };

  double loss_avg = 0.0, acc_avg = 0.0;  // exponential moving averages
  double sync_seconds = 0.0, step_seconds = 0.0;  // this process's steps
  int64_t images = 0, last_eval_step = -1;
  EvalResult last_eval;  // rank 0: the evaluation at last_eval_step
  auto evaluate = [&] {
    if (root) {
      EvalResult ev = run_eval();
      last_eval = ev;
      if (ev.top1 > state.best_top1) {
        state.best_top1 = ev.top1;
        state.best_step = state.step;
      }
      const double epoch = static_cast<double>(state.step) / per_epoch;
      nlohmann::json line = {
          {"step", state.step}, {"epoch", epoch},
          {"lr", LearningRateAt(o, std::max<int64_t>(state.step - 1, 0), total)},
          {"train_loss", loss_avg}, {"train_top1", acc_avg},
          {"test_top1", ev.top1}, {"test_loss", ev.loss}};
      std::string msg = Fmt("epoch %.1f  test top-1 %.2f%%  (best %.2f%%)", epoch, ev.top1,
                            state.best_top1);
      if (ev.compensated_top1 >= 0) {
        line["test_top1_compensated"] = ev.compensated_top1;
        msg += Fmt("  compensated %.2f%%", ev.compensated_top1);
      }
      metrics << line.dump() << "\n" << std::flush;
      nlohmann::json event = {{"event", "eval"}, {"step", state.step},
                              {"test_top1", ev.top1}, {"test_loss", ev.loss}};
      if (ev.compensated_top1 >= 0) event["test_top1_compensated"] = ev.compensated_top1;
      emit(event);
      progress.Message(msg);
    }
    comm_.Barrier();
    last_eval_step = state.step;
  };

  // Several ranks: average gradients bucket by bucket while backward runs
  // (dist.overlap), or all at once after it.
  std::unique_ptr<OverlappedGradientSync> overlap;
  if (comm_.size() > 1 && spec_.dist.overlap) {
    overlap = std::make_unique<OverlappedGradientSync>(comm_, params,
                                                       spec_.dist.bucket_mb << 20);
  }

  model_->train();
  source_.Start(state.step);
  bool stopped = false;
  while (state.step < total) {
    const double lr = LearningRateAt(o, state.step, total);
    for (auto& group : optimizer.param_groups()) {
      static_cast<torch::optim::SGDOptions&>(group.options()).lr(lr);
    }
    const auto step_start = Clock::now();
    StepResult r = source_.Step(state.step);
    optimizer.zero_grad();
    if (overlap) overlap->Arm();
    r.loss.backward();
    const auto sync_start = Clock::now();
    if (overlap) {
      overlap->Finish();  // waits for the buckets still in flight
    } else {
      AverageGradients(comm_, params, spec_.dist.bucket_mb << 20);
    }
    sync_seconds += std::chrono::duration<double>(Clock::now() - sync_start).count();
    optimizer.step();
    step_seconds += std::chrono::duration<double>(Clock::now() - step_start).count();
    ++state.step;
    images += r.images * comm_.size();

    const double l = r.loss.item<double>();
    TORCH_CHECK(std::isfinite(l), "loss became ", l, " at step ", state.step,
                " (learning rate ", lr, "); lower train.optim.lr");
    const double a = r.images ? 100.0 * r.correct / r.images : 0.0;
    const double k = state.step == 1 || loss_avg == 0.0 ? 1.0 : 0.05;
    loss_avg += k * (l - loss_avg);
    acc_avg += k * (a - acc_avg);
    const double secs = session_seconds();
    progress.Update(state.step, Fmt("loss %.4f  acc %.1f%%  %.0f img/s", loss_avg, acc_avg,
                                    secs > 0 ? images / secs : 0.0));
    if (state.step % progress_every == 0 || state.step == total) {
      emit({{"event", "progress"}, {"step", state.step}, {"total", total},
            {"train_loss", loss_avg}, {"train_top1", acc_avg},
            {"images_per_second", secs > 0 ? images / secs : 0.0}});
    }

    if (state.step % per_epoch == 0 &&
        (state.step / per_epoch) % spec_.train.eval_every_epochs == 0) {
      evaluate();
    }
    bool stop_now = (control.stop && control.stop->load()) ||
                    state.step == control.stop_at_step;
    if (comm_.size() > 1) {
      // All ranks must stop after the same step, or the others would wait
      // in the next collective until the timeout.
      std::vector<torch::Tensor> flag = {torch::tensor({stop_now ? 1.0f : 0.0f})};
      comm_.AllReduceSum(flag);
      stop_now = flag[0].item<float>() > 0;
    }
    if (state.step % spec_.train.checkpoint_every_steps == 0 || stop_now) save();
    if (stop_now && state.step < total) {
      stopped = true;
      break;
    }
  }

  RunOutcome outcome;
  outcome.step = state.step;
  if (stopped) {
    progress.Message("stopped at step " + std::to_string(state.step) + "; checkpoint " +
                     ckpt_path + " (run again to resume)");
    return outcome;
  }
  if (last_eval_step != state.step) evaluate();
  const double seconds = session_seconds();
  save();
  progress.Finish();
  outcome.finished = true;
  if (root) {
    // The model has not changed since the evaluation at this step.
    const EvalResult& final_eval = last_eval;
    SaveWeights((fs::path(out_dir_) / "model.pt").string(), *model_);
    outcome.result = {
        {"spec_hash", state.spec_hash},
        {"kind", common::JobKindName(spec_.kind)},
        {"name", spec_.name},
        {"seed", spec_.seed},
        {"dataset", spec_.data.dataset},
        {"model", ModelName(ModelConfigFor(spec_.model, data_))},
        {"parameters", CountParameters(*model_)},
        {"test_top1", final_eval.top1},
        {"best_test_top1", state.best_top1},
        {"best_step", state.best_step},
        {"test_loss", final_eval.loss},
        {"per_class_top1", final_eval.per_class},
        {"test_samples", final_eval.samples},
        {"steps", state.step},
        {"epochs_equivalent", static_cast<double>(state.step) / per_epoch},
        {"train_seconds", state.train_seconds},
        {"images_per_second", seconds > 0 ? images / seconds : 0.0},
        {"step_seconds", step_seconds},          // this process, excluding evaluation
        {"grad_sync_seconds", sync_seconds},     // of which: averaging gradients
        {"checkpoint_seconds", checkpoint_seconds},  // writing checkpoints (and shards)
        {"threads", at::get_num_threads()},
        {"world_size", comm_.size()},
        {"method", source_.Describe()},
        {"spec", common::ToJson(spec_)},
    };
    outcome.result.update(extra_result_);
    if (final_eval.compensated_top1 >= 0) {
      outcome.result["test_top1_compensated"] = final_eval.compensated_top1;
    }
    std::ofstream(fs::path(out_dir_) / "result.json") << outcome.result.dump(2) << "\n";
  }
  return outcome;
}

}  // namespace dfkd::worker
