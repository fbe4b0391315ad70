#include "worker/engine/job_runner.h"

#include <exception>

#include "worker/data/dataset.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/device.h"
#include "worker/engine/distill_source.h"
#include "worker/engine/evaluator.h"
#include "worker/engine/job_data.h"
#include "worker/engine/method_factory.h"
#include "worker/engine/supervised_source.h"
#include "worker/engine/trainer.h"
#include "worker/models/model_zoo.h"

namespace dfkd::worker {
namespace {

// A frozen, trained network from a TeacherSpec. `field` names the spec
// section for errors ("distill.teacher").
Classifier LoadTeacher(const common::TeacherSpec& t, const JobData& data,
                       const std::string& field, bool channels_last,
                       const torch::Device& device) {
  ModelConfig cfg = ModelConfigFor(t.model, data);
  if (t.num_classes > 0) cfg.num_classes = t.num_classes;
  Classifier model = MakeClassifier(cfg);
  try {
    LoadWeights(t.weights, *model);
  } catch (const std::exception& e) {
    throw std::runtime_error(field + ".weights: cannot load " + t.weights + " into " +
                             ModelName(cfg) + ": " + e.what());
  }
  MoveModule(*model, device);
  model->eval();
  if (channels_last) UseChannelsLast(*model);
  return model;
}

JobStatus StatusOf(const RunOutcome& outcome) {
  JobStatus status;
  status.code = outcome.finished ? JobCode::kOk : JobCode::kStopped;
  status.result = outcome.result;
  return status;
}

JobStatus Distill(const common::JobSpec& spec, const std::string& out_dir,
                  const RunControl& control, Communicator& comm, const torch::Device& device) {
  JobData data = LoadJobData(spec.data, /*need_train=*/false);
  const bool cl = spec.runtime.channels_last;
  Classifier teacher = LoadTeacher(spec.distill.teacher, data, "distill.teacher", cl, device);
  Classifier other;
  if (spec.kdci.enabled && spec.kdci.feature_source == "other") {
    other = LoadTeacher(spec.kdci.other_teacher, data, "kdci.other_teacher", cl, device);
  }
  EvalResult teacher_eval = Evaluate(*teacher, *data.test, data.norm,
                                     spec.train.eval_batch_size, cl);
  torch::manual_seed(spec.seed);
  Classifier student = MakeClassifier(ModelConfigFor(spec.model, data));
  MoveModule(*student, device);
  if (cl) UseChannelsLast(*student);
  MethodDeps deps{teacher, student, data.image_shape, data.num_classes, data.norm,
                  data.crop_padding};
  DistillSource source(spec, teacher, student,
                       MakeMethod(spec, deps, other, comm.rank(), comm.size()), comm);
  Trainer trainer(spec, student, data, comm, source, out_dir);
  trainer.AddResultFields({{"teacher_test_top1", teacher_eval.top1},
                           {"teacher_model", ModelName(ModelConfigFor(spec.distill.teacher.model,
                                                                      data))}});
  return StatusOf(trainer.Run(control));
}

JobStatus Supervised(const common::JobSpec& spec, const std::string& out_dir,
                     const RunControl& control, Communicator& comm,
                     const torch::Device& device) {
  JobData data = LoadJobData(spec.data, /*need_train=*/true);
  torch::manual_seed(spec.seed);  // the same initial weights for the same seed
  Classifier model = MakeClassifier(ModelConfigFor(spec.model, data));
  MoveModule(*model, device);
  if (spec.runtime.channels_last) UseChannelsLast(*model);
  SupervisedSource source(spec, model, data, comm);
  return StatusOf(Trainer(spec, model, data, comm, source, out_dir).Run(control));
}

}  // namespace

JobStatus RunJob(const common::JobSpec& spec, const std::string& out_dir,
                 const RunControl& control, Communicator* comm) {
  LocalCommunicator local;
  Communicator& c = comm ? *comm : local;
  JobStatus status;
  try {
    const torch::Device device = ResolveDevice(spec.runtime.device, LocalRankFromEnv());
    status = spec.kind == common::JobKind::kDistill
                 ? Distill(spec, out_dir, control, c, device)
                 : Supervised(spec, out_dir, control, c, device);
    if (status.code == JobCode::kStopped) status.message = "stopped";
  } catch (const DataError& e) {
    status.code = JobCode::kDataError;
    status.message = e.what();
  } catch (const c10::Error& e) {
    status.code = JobCode::kFailed;
    status.message = e.what_without_backtrace();
  } catch (const std::exception& e) {
    status.code = JobCode::kFailed;
    status.message = e.what();
  }
  return status;
}

}  // namespace dfkd::worker
