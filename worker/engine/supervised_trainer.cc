#include "worker/engine/supervised_trainer.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "worker/data/loader.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/evaluator.h"
#include "worker/engine/losses.h"
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

LoaderOptions TrainLoaderOptions(const common::JobSpec& spec, const JobData& data,
                                 const Communicator& comm) {
  LoaderOptions lo;
  lo.batch_size = spec.train.batch_size;
  lo.seed = static_cast<uint64_t>(spec.seed);
  lo.augment = spec.data.augment;
  lo.crop_padding = data.crop_padding;
  lo.horizontal_flip = spec.data.horizontal_flip;
  lo.norm = data.norm;
  lo.rank = comm.rank();
  lo.world_size = comm.size();
  return lo;
}

}  // namespace

SupervisedTrainer::SupervisedTrainer(common::JobSpec spec, Classifier model,
                                     const JobData& data, Communicator& comm,
                                     std::string out_dir)
    : spec_(std::move(spec)), model_(std::move(model)), data_(data), comm_(comm),
      out_dir_(std::move(out_dir)) {}

int64_t SupervisedTrainer::total_steps() const {
  Loader probe(*data_.train, TrainLoaderOptions(spec_, data_, comm_));
  int64_t total = spec_.train.epochs * probe.batches_per_epoch();
  if (spec_.train.max_steps > 0) total = std::min(total, spec_.train.max_steps);
  return total;
}

RunOutcome SupervisedTrainer::Run(const RunControl& control) {
  namespace fs = std::filesystem;
  fs::create_directories(out_dir_);
  const std::string ckpt_path = (fs::path(out_dir_) / "checkpoint.pt").string();
  const common::OptimSpec& o = spec_.train.optim;

  torch::optim::SGD optimizer(model_->parameters(),
                              torch::optim::SGDOptions(o.lr)
                                  .momentum(o.momentum)
                                  .weight_decay(o.weight_decay)
                                  .nesterov(o.nesterov));
  if (spec_.runtime.channels_last) UseChannelsLast(*model_);
  TrainState state;
  state.spec_hash = common::CanonicalHash(spec_);
  bool resumed = !control.fresh &&
                 LoadCheckpoint(ckpt_path, *model_, optimizer, &state);
  BroadcastModule(comm_, *model_);

  Loader loader(*data_.train, TrainLoaderOptions(spec_, data_, comm_));
  const int64_t per_epoch = loader.batches_per_epoch();
  TORCH_CHECK(per_epoch > 0, "train.batch_size ", spec_.train.batch_size,
              " is larger than the training set (", data_.train->size(), ")");
  const int64_t total = total_steps();
  const bool root = comm_.is_root();

  Progress progress(spec_.name.empty() ? common::JobKindName(spec_.kind) : spec_.name,
                    total, StderrIsTerminal(), std::cerr);
  progress.quiet = control.quiet || !root;
  if (resumed) {
    progress.Message("resumed from " + ckpt_path + " at step " +
                     std::to_string(state.step) + "/" + std::to_string(total));
  }

  std::ofstream metrics;
  if (root) metrics.open(fs::path(out_dir_) / "metrics.jsonl", std::ios::app);
  const double earlier_seconds = state.train_seconds;  // before this process
  auto session_start = Clock::now();
  auto session_seconds = [&] {
    return std::chrono::duration<double>(Clock::now() - session_start).count();
  };
  auto save = [&] {
    state.train_seconds = earlier_seconds + session_seconds();
    if (root) SaveCheckpoint(ckpt_path, *model_, optimizer, state);
  };

  model_->train();
  std::vector<torch::Tensor> params = model_->parameters();
  double loss_avg = 0.0, acc_avg = 0.0;  // exponential moving averages
  int64_t images = 0, last_eval_step = -1;
  auto evaluate = [&](int64_t epoch) {
    if (root) {
      EvalResult ev = Evaluate(*model_, *data_.test, data_.norm,
                               spec_.train.eval_batch_size,
                               spec_.runtime.channels_last);
      if (ev.top1 > state.best_top1) {
        state.best_top1 = ev.top1;
        state.best_step = state.step;
      }
      double lr = LearningRateAt(o, std::max<int64_t>(state.step - 1, 0), total);
      metrics << nlohmann::json{{"step", state.step}, {"epoch", epoch},
                                {"lr", lr}, {"train_loss", loss_avg},
                                {"train_top1", acc_avg}, {"test_top1", ev.top1},
                                {"test_loss", ev.loss}}
                     .dump()
              << "\n"
              << std::flush;
      progress.Message(Fmt("epoch %.0f  test top-1 %.2f%%  (best %.2f%%)", epoch,
                           ev.top1, state.best_top1));
    }
    comm_.Barrier();
    last_eval_step = state.step;
  };

  int64_t epoch = state.step / per_epoch;
  int64_t skip = state.step % per_epoch;
  bool stopped = false;
  while (state.step < total && !stopped) {
    loader.StartEpoch(epoch, skip);
    skip = 0;
    while (state.step < total) {
      std::optional<Batch> batch = loader.Next();
      if (!batch) break;
      const double lr = LearningRateAt(o, state.step, total);
      for (auto& group : optimizer.param_groups()) {
        static_cast<torch::optim::SGDOptions&>(group.options()).lr(lr);
      }
      if (spec_.runtime.channels_last) {
        batch->images = batch->images.contiguous(torch::MemoryFormat::ChannelsLast);
      }
      torch::Tensor logits = model_->forward(batch->images);
      torch::Tensor loss = torch::cross_entropy_loss(logits, batch->labels);
      optimizer.zero_grad();
      loss.backward();
      AverageGradients(comm_, params);
      optimizer.step();
      ++state.step;
      images += batch->labels.size(0) * comm_.size();

      const double l = loss.item<double>();
      const double a = 100.0 * CountCorrect(logits.detach(), batch->labels) /
                       batch->labels.size(0);
      const double k = state.step == 1 || loss_avg == 0.0 ? 1.0 : 0.05;
      loss_avg += k * (l - loss_avg);
      acc_avg += k * (a - acc_avg);
      const double secs = session_seconds();
      progress.Update(state.step, Fmt("loss %.4f  acc %.1f%%  %.0f img/s", loss_avg,
                                      acc_avg, secs > 0 ? images / secs : 0.0));
      TORCH_CHECK(std::isfinite(l), "loss became ", l, " at step ", state.step,
                  " (learning rate ", lr, "); lower train.optim.lr");

      const bool stop_now = (control.stop && control.stop->load()) ||
                            state.step == control.stop_at_step;
      if (state.step % spec_.train.checkpoint_every_steps == 0 || stop_now) {
        save();
      }
      if (stop_now) {
        stopped = true;
        break;
      }
    }
    if (stopped) break;
    ++epoch;
    if (epoch % spec_.train.eval_every_epochs == 0 || state.step == total) {
      evaluate(epoch);
    }
  }
  RunOutcome outcome;
  outcome.step = state.step;
  if (stopped) {
    progress.Message("stopped at step " + std::to_string(state.step) +
                     "; checkpoint " + ckpt_path + " (run again to resume)");
    return outcome;
  }
  if (last_eval_step != state.step) evaluate(epoch);
  const double seconds = session_seconds();
  save();
  progress.Finish();

  outcome.finished = true;
  if (root) {
    EvalResult final_eval =
        Evaluate(*model_, *data_.test, data_.norm, spec_.train.eval_batch_size,
                               spec_.runtime.channels_last);
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
        {"images_per_second",
         seconds > 0 ? images / seconds : 0.0},
        {"threads", at::get_num_threads()},
        {"world_size", comm_.size()},
        {"spec", common::ToJson(spec_)},
    };
    std::ofstream(fs::path(out_dir_) / "result.json") << outcome.result.dump(2) << "\n";
  }
  return outcome;
}

}  // namespace dfkd::worker
