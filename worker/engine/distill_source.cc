#include "worker/engine/distill_source.h"

#include "worker/methods/losses.h"

namespace dfkd::worker {

DistillSource::DistillSource(const common::JobSpec& spec, Classifier teacher,
                             Classifier student, std::unique_ptr<Method> method,
                             Communicator& comm)
    : teacher_(std::move(teacher)), student_(std::move(student)), method_(std::move(method)),
      comm_(comm), device_(DeviceOf(*student_)), seed_(static_cast<uint64_t>(spec.seed)),
      steps_per_epoch_(spec.distill.steps_per_epoch), kd_steps_(spec.distill.kd_steps),
      batch_size_(spec.train.batch_size / comm.size()),
      channels_last_(spec.runtime.channels_last) {
  TORCH_CHECK(spec.train.batch_size % comm.size() == 0, "train.batch_size: ",
              spec.train.batch_size, " is not divisible by the world size ", comm.size());
  teacher_->eval();
  for (auto& p : teacher_->parameters()) p.set_requires_grad(false);
}

StepResult DistillSource::Step(int64_t step) {
  RoundContext ctx;
  ctx.round = step / kd_steps_;
  ctx.global_step = step;
  ctx.seed = seed_;
  ctx.comm = &comm_;
  // A run resumed mid-round skips Synthesize: the method's checkpointed state
  // already holds this round's substitute data.
  if (step % kd_steps_ == 0) {
    method_->Synthesize(ctx);
    student_->train();
  }
  DistillBatch batch;
  batch.inputs = method_->Sample(batch_size_, ctx).to(device_);
  if (channels_last_) batch.inputs = batch.inputs.contiguous(torch::MemoryFormat::ChannelsLast);
  {
    torch::NoGradGuard no_grad;
    batch.teacher = teacher_->ForwardWithTaps(batch.inputs, {});
  }
  batch.student = student_->ForwardWithTaps(batch.inputs, method_->StudentTaps());
  StepResult r;
  r.loss = method_->DistillLoss(batch, ctx);
  r.images = batch.inputs.size(0);
  // "Accuracy" on substitute data: agreement with the teacher's argmax.
  r.correct = CountCorrect(batch.student.logits.detach(), batch.teacher.logits.argmax(1));
  return r;
}

}  // namespace dfkd::worker
