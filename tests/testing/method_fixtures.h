// What the DFKD method tests share: tiny WRN-16-1 teachers and students on the
// 1x8x8 4-class task (tiny_task.h), the method deps and round context they
// synthesise with, state snapshots and their comparison, a parameter-free
// teacher and a planted pool for selection tests, and the harness a resumed
// distillation runs through. Every factory seeds the global generator itself,
// so a test's random draws do not depend on what ran before it.
#ifndef DFKD_TESTS_TESTING_METHOD_FIXTURES_H_
#define DFKD_TESTS_TESTING_METHOD_FIXTURES_H_

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/spec/job_spec.h"
#include "worker/data/transforms.h"
#include "worker/dist/communicator.h"
#include "worker/engine/distill_source.h"
#include "worker/engine/job_data.h"
#include "worker/engine/trainer.h"
#include "worker/methods/method.h"
#include "worker/models/classifier.h"
#include "worker/models/model_zoo.h"

namespace dfkd::testing {

// ------------------------------------------------------------------ models

// WRN-16-1 for 1x8x8 inputs and 4 classes.
inline worker::ModelConfig TinyWrnConfig() { return {"wrn", 16, 1, 1.0, 0.0, 4, 1, 8}; }

// A fresh TinyWrnConfig() model drawn after torch::manual_seed(seed).
inline worker::Classifier TinyWrn(uint64_t seed) {
  torch::manual_seed(seed);
  return worker::MakeClassifier(TinyWrnConfig());
}

// TinyWrn(seed), frozen in eval mode. With warmup_passes > 0 its running
// statistics first move away from the generators' (and noise's): that many
// train-mode passes on 16 images of U(0.5, 3.5).
inline worker::Classifier TinyTeacher(uint64_t seed, int warmup_passes) {
  worker::Classifier t = TinyWrn(seed);
  if (warmup_passes > 0) {
    t->train();
    torch::NoGradGuard no_grad;
    for (int i = 0; i < warmup_passes; ++i) {
      t->forward(torch::rand({16, 1, 8, 8}) * 3.0 + 0.5);
    }
  }
  t->eval();
  for (auto& p : t->parameters()) {
    p.set_requires_grad(false);
  }
  return t;
}

// TinyWrn(seed) in eval mode.
inline worker::Classifier TinyStudent(uint64_t seed) {
  worker::Classifier s = TinyWrn(seed);
  s->eval();
  return s;
}

// The teacher, slightly perturbed (its parameters + 0.01 N(0, 1), its
// buffers): it agrees with the teacher on most inputs, so a
// decision-adversarial term is non-zero.
inline worker::Classifier CloseStudent(const worker::Classifier& teacher) {
  worker::Classifier s = TinyStudent(2);
  torch::NoGradGuard no_grad;
  auto src = teacher->named_parameters();
  for (auto& kv : s->named_parameters()) {
    kv.value().copy_(src[kv.key()] + 0.01 * torch::randn_like(src[kv.key()]));
  }
  auto bufs = teacher->named_buffers();
  for (auto& kv : s->named_buffers()) {
    kv.value().copy_(bufs[kv.key()]);
  }
  return s;
}

// logits (2m, -2m, 0, 0), m the mean of the normalised input: the further
// the mean is from 0, the more confident the teacher (class 0 above 0, class
// 1 below) and the lower its entropy. No parameters; differentiable in the
// input.
class MeanTeacherImpl : public worker::ClassifierImpl {
 public:
  worker::ClassifierOutput ForwardWithTaps(const torch::Tensor& x,
                                           const worker::TapRequest&) override {
    worker::ClassifierOutput out;
    out.features = x.flatten(1).mean(1, /*keepdim=*/true);
    out.logits = Classify(out.features);
    return out;
  }
  torch::Tensor Classify(const torch::Tensor& m) override {
    torch::Tensor zero = torch::zeros_like(m);
    return torch::cat({2 * m, -2 * m, zero, zero}, 1);
  }
  int64_t feature_dim() const override { return 1; }
  int64_t num_classes() const override { return 4; }
};

// An unlabeled pool: 64 uniform uint8 1x8x8 images drawn after
// torch::manual_seed(seed).
inline torch::Tensor RandomPool(uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(256, {64, 1, 8, 8}, torch::kUInt8);
}

// 64 constant 1x8x8 images; image i has every pixel PlantedValue(i) =
// 4 * ((37 i) mod 64), so the values 0, 4, ..., 252 in a scrambled order.
inline int64_t PlantedValue(int64_t i) { return 4 * ((37 * i) % 64); }

inline torch::Tensor PlantedPool() {
  torch::Tensor pool = torch::empty({64, 1, 8, 8}, torch::kUInt8);
  for (int64_t i = 0; i < 64; ++i) {
    pool[i].fill_(PlantedValue(i));
  }
  return pool;
}

// ------------------------------------------------------ method and rounds

// What a method on the tiny task is built from: 1x8x8 images of 4 classes,
// normalised with mean 0.5 / std 0.5, crop padding 1.
inline worker::MethodDeps TinyDeps(const worker::Classifier& teacher,
                                   const worker::Classifier& student) {
  worker::MethodDeps d;
  d.teacher = teacher;
  d.student = student;
  d.image_shape = {1, 8, 8};
  d.num_classes = 4;
  d.norm = {{0.5f}, {0.5f}};
  d.crop_padding = 1;
  return d;
}

// The fixture of a method's tests: the teacher TinyTeacher(1, warm-up passes),
// then the student TinyStudent(2); deps on the tiny task (TinyDeps) for them
// or other models; the context of a call at `round` after `step` student
// steps, in a job of seed 7, alone.
class TinyMethodTest : public ::testing::Test {
 protected:
  explicit TinyMethodTest(int teacher_warmup_passes = 10)
      : teacher_(TinyTeacher(1, teacher_warmup_passes)), student_(TinyStudent(2)) {}

  worker::MethodDeps Deps() const { return DepsWith(student_); }
  worker::MethodDeps DepsWith(const worker::Classifier& student) const {
    return TinyDeps(teacher_, student);
  }
  worker::MethodDeps DepsWith(const worker::Classifier& teacher,
                              const worker::Classifier& student) const {
    return TinyDeps(teacher, student);
  }
  worker::RoundContext Ctx(int64_t round, int64_t step) {
    worker::RoundContext c;
    c.round = round;
    c.global_step = step;
    c.seed = 7;
    c.comm = &comm_;
    return c;
  }

  worker::Classifier teacher_;
  worker::Classifier student_;
  worker::LocalCommunicator comm_;
};

// The trainer's part of a step, what DistillLoss reads: the teacher (without
// gradients) and the student on `inputs`.
inline worker::DistillBatch TrainerBatch(const worker::Classifier& teacher,
                                         const worker::Classifier& student,
                                         torch::Tensor inputs) {
  worker::DistillBatch b;
  b.inputs = std::move(inputs);
  {
    torch::NoGradGuard no_grad;
    b.teacher = teacher->ForwardWithTaps(b.inputs, {});
  }
  b.student = student->ForwardWithTaps(b.inputs, {});
  return b;
}

// ----------------------------------------------------------------- state

// Detached copies of a module's parameters.
inline std::vector<torch::Tensor> ParamsOf(const torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters()) {
    out.push_back(p.detach().clone());
  }
  return out;
}

// Detached copies of a module's parameters, then its buffers.
inline std::vector<torch::Tensor> StateOf(const torch::nn::Module& m) {
  std::vector<torch::Tensor> out = ParamsOf(m);
  for (const auto& b : m.buffers()) {
    out.push_back(b.detach().clone());
  }
  return out;
}

// Whether two lists hold equal tensors, pairwise.
inline bool SameTensors(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (!torch::equal(a[i], b[i])) {
      return false;
    }
  }
  return true;
}

// Whether synthesis left `model` as it found it: the parameters and buffers
// `before` (StateOf), no gradient on any parameter, and train mode iff
// `training`.
inline ::testing::AssertionResult Untouched(const std::vector<torch::Tensor>& before,
                                           const worker::Classifier& model, bool training) {
  std::string wrong;
  if (!SameTensors(before, StateOf(*model))) {
    wrong += " its parameters or buffers changed;";
  }
  int64_t with_grad = 0;
  for (const auto& p : model->parameters()) {
    with_grad += p.grad().defined() ? 1 : 0;
  }
  if (with_grad > 0) {
    wrong += " " + std::to_string(with_grad) + " of its parameters hold a gradient;";
  }
  if (model->is_training() != training) {
    wrong += training ? " it is in eval mode;" : " it is in train mode;";
  }
  if (wrong.empty()) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "model touched:" << wrong;
}

// Whether no gradient reached the parameters of `m`: none defined, or zero.
inline ::testing::AssertionResult NoGradientReached(const torch::nn::Module& m) {
  int64_t reached = 0;
  for (const auto& p : m.parameters()) {
    if (p.grad().defined() && p.grad().abs().sum().item<double>() != 0.0) {
      ++reached;
    }
  }
  if (reached == 0) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << reached << " parameters received a gradient";
}

// Whether two models of one architecture hold equal parameters; a failure
// names those that differ.
inline ::testing::AssertionResult SameParameters(const worker::Classifier& a,
                                                 const worker::Classifier& b) {
  auto pb = b->named_parameters();
  std::string differ;
  for (const auto& kv : a->named_parameters()) {
    if (!torch::equal(kv.value(), pb[kv.key()])) {
      differ += " " + kv.key();
    }
  }
  if (differ.empty()) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "parameters differ:" << differ;
}

// Softmax of doubles, for hand computations.
inline std::vector<double> Softmax(const std::vector<double>& v) {
  std::vector<double> e(v.size());
  double z = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    z += (e[i] = std::exp(v[i]));
  }
  for (double& x : e) {
    x /= z;
  }
  return e;
}

// ------------------------------------------------------ resumed distillation

// The job a resumed-distillation test runs with `method`: seed 2, 2 epochs of
// 5 steps with batches of 8, a synthesis round every 3 steps (rounds 0..3),
// and no periodic checkpoint within the run. The method's own fields are the
// caller's.
inline common::JobSpec TinyDistillJob(const std::string& method) {
  common::JobSpec spec;
  spec.kind = common::JobKind::kDistill;
  spec.seed = 2;
  spec.train.epochs = 2;
  spec.train.batch_size = 8;
  spec.train.checkpoint_every_steps = 1000;
  spec.distill.method = method;
  spec.distill.steps_per_epoch = 5;
  spec.distill.kd_steps = 3;
  return spec;
}

// A student distilled from a teacher by a method as the job runner wires them
// (a DistillSource in a world of one). The method outlives Train(), so a test
// reads its state after the run.
class TinyDistillation {
 public:
  TinyDistillation(const common::JobSpec& spec, const worker::Classifier& teacher,
                   const worker::Classifier& student, std::unique_ptr<worker::Method> method)
      : spec_(spec), student_(student), source_(spec, teacher, student, std::move(method), comm_) {}
  TinyDistillation(const TinyDistillation&) = delete;
  TinyDistillation& operator=(const TinyDistillation&) = delete;

  // Trains quietly on `data` with its output folder `out` (resuming from a
  // checkpoint there); stop_at >= 0 stops after that step, -1 runs to the
  // end. Whether the run finished.
  bool Train(const worker::JobData& data, const std::string& out, int64_t stop_at) {
    worker::RunControl control;
    control.quiet = true;
    control.stop_at_step = stop_at;
    return worker::Trainer(spec_, student_, data, comm_, source_, out).Run(control).finished;
  }
  worker::Method& method() { return source_.method(); }

 private:
  common::JobSpec spec_;
  worker::Classifier student_;
  worker::LocalCommunicator comm_;  // before source_, which holds it
  worker::DistillSource source_;
};

}  // namespace dfkd::testing

#endif  // DFKD_TESTS_TESTING_METHOD_FIXTURES_H_
