// `class_bank`: KD from a class-sharded bank; see class_bank_method.h.
#include "worker/methods/class_bank_method.h"

#include <utility>

#include "worker/methods/losses.h"
#include "worker/methods/seeding.h"

namespace dfkd::worker {

ClassBankMethod::ClassBankMethod(ClassBankOptions options, MethodDeps deps)
    : options_(std::move(options)), deps_(std::move(deps)),
      bank_(options_, BankRange(options_, deps_.num_classes), deps_) {
  TORCH_CHECK(options_.temperature() > 0, "class_bank: temperature must be positive");
  TORCH_CHECK(options_.classes_per_round() >= 0,
              "class_bank: classes_per_round must be >= 0 (0: every owned class)");
}

torch::Device ClassBankMethod::device() const {
  return DeviceOf(*deps_.teacher);
}

void ClassBankMethod::Synthesize(const RoundContext& ctx) {
  LabelledImages fresh = bank_.Synthesize(
      bank_.RoundClasses(ctx.round, options_.classes_per_round()), ctx.round, ctx.seed);
  last_images_ = fresh.images;
  last_labels_ = fresh.labels;
}

torch::Tensor ClassBankMethod::Sample(int64_t batch_size, const RoundContext& ctx) {
  TORCH_CHECK(bank_.pool_size() > 0, "class_bank: Sample() before any Synthesize()");
  LabelledImages batch = bank_.Sample(batch_size, StudentBatchKey(ctx));
  return Normalize(batch.images, options_.norm()).to(device());
}

torch::Tensor ClassBankMethod::DistillLoss(const DistillBatch& batch, const RoundContext&) {
  return KdLoss(batch.KdStudentLogits(), batch.teacher.logits, options_.temperature());
}

torch::Tensor ClassBankMethod::LastSynthesized() const {
  if (!last_images_.defined()) return {};
  return Normalize(last_images_, options_.norm()).to(device());
}

nlohmann::json ClassBankMethod::Describe() const {
  const ClassBankOptions& o = options_;
  const BankMemory m = bank_.Memory();
  const std::pair<double, double> betas = BankAdamBetas(o.unit());
  return {{"method", "class_bank"},
          {"temperature", o.temperature()},
          {"unit", ClassBankUnitName(o.unit())},
          {"nz", o.nz()},
          {"ngf", o.ngf()},
          {"g_steps", BankGSteps(o)},
          {"lr", BankLr(o)},
          {"adam_betas", {betas.first, betas.second}},
          {"bn_weight", o.bn_weight()},
          {"oh_weight", o.oh_weight()},
          {"adv_weight", o.adv_weight()},
          {"images_per_class", o.images_per_class()},
          {"classes_per_round", o.classes_per_round()},
          {"class_begin", bank_.range().begin},
          {"class_end", bank_.range().end},
          {"pool_max_images", o.pool_max_images()},
          {"pool_images_per_class", bank_.pool_images_per_class()},
          {"crop_padding", o.crop_padding()},
          {"norm_mean", o.norm().mean},
          {"norm_std", o.norm().std},
          {"pool_size", bank_.pool_size()},
          {"parameters_per_class", m.parameters_per_class},
          {"memory",
           {{"parameter_bytes", m.parameter_bytes},
            {"buffer_bytes", m.buffer_bytes},
            {"optimizer_state_bytes", m.optimizer_state_bytes},
            {"classes_with_optimizer_state", m.classes_with_optimizer_state},
            {"state_bytes", m.state_bytes()},
            {"state_bytes_all_updated", m.state_bytes_all_updated()},
            {"pool_bytes", m.pool_bytes}}}};
}

void ClassBankMethod::Save(torch::serialize::OutputArchive& archive) const {
  torch::serialize::OutputArchive bank_archive(archive.compilation_unit());
  bank_.Save(bank_archive);
  archive.write("bank", bank_archive);
  if (last_images_.defined()) {
    archive.write("last_synthesized", last_images_);
    archive.write("last_labels", last_labels_);
  }
}

void ClassBankMethod::Load(torch::serialize::InputArchive& archive) {
  torch::serialize::InputArchive bank_archive;
  archive.read("bank", bank_archive);
  bank_.Load(bank_archive);
  torch::Tensor images, labels;
  if (archive.try_read("last_synthesized", images) && archive.try_read("last_labels", labels)) {
    last_images_ = images.cpu();
    last_labels_ = labels.cpu();
  } else {
    last_images_ = torch::Tensor();
    last_labels_ = torch::Tensor();
  }
}

}  // namespace dfkd::worker
