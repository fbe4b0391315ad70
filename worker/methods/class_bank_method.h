// `class_bank`: data-free KD from a class-sharded bank of per-class synthesis
// units (worker/methods/class_bank.h): KDCI's ImageNet protocol of "one
// generator per class" (dfkd-methods.md §12; the protocol is unpublished, the
// reading is ours).
//
// The method owns the classes [class_begin, class_end) (class_end 0 = all);
// a later issue sets that range per rank with ShardOf. Each round:
//   Synthesize  the bank's RoundClasses(round, classes_per_round): round 0
//               every owned class, then classes_per_round of them round-robin
//               (0 = every owned class every round); each visited class makes
//               images_per_class images with its unit (a per-class generator
//               trained g_steps Adam steps, or per-class pixels inverted for
//               g_steps), labelled with the class, into its per-class pool.
//   Sample      a class-balanced batch over the owned classes with images,
//               randomly cropped (crop_padding) and flipped, normalised; drawn
//               with keys (seed, global step, rank) (StudentBatchKey), so a
//               resumed run draws what an uninterrupted one would.
//   DistillLoss plain KD, KL(t || s) at T = 20 times T^2 (§2.2), on the
//               teacher's and the student's logits for that batch (like
//               FastMethod / DeepInversion: the student is trained on pool
//               samples, the pool's labels are not used by the loss).
// LastSynthesized() = this round's new images as the pools store them
// (uint8, truncated), normalised; kept as uint8 so that round 0 of a
// 1,000-class bank holds a quarter of float's memory.
//
// Several ranks (the later issue): each rank builds the method over its own
// range; its student batches come from its shard only, and the trainer's
// gradient average over ranks covers every class at every step. Save() writes
// only the owned classes (with the range); Load() refuses another range.
#ifndef DFKD_WORKER_METHODS_CLASS_BANK_METHOD_H_
#define DFKD_WORKER_METHODS_CLASS_BANK_METHOD_H_

#include <string>

#include "worker/methods/class_bank.h"
#include "worker/methods/method.h"

namespace dfkd::worker {

class ClassBankMethod final : public Method {
 public:
  ClassBankMethod(ClassBankOptions options, MethodDeps deps);
  std::string name() const override { return "class_bank"; }
  void Synthesize(const RoundContext& ctx) override;
  torch::Tensor Sample(int64_t batch_size, const RoundContext& ctx) override;
  torch::Tensor DistillLoss(const DistillBatch& batch, const RoundContext& ctx) override;
  double temperature() const override { return options_.temperature(); }
  // This round's new images, normalised float [N, C, H, W]; undefined
  // before the first round.
  torch::Tensor LastSynthesized() const override;
  nlohmann::json Describe() const override;
  // Writes the bank's shard under "bank" (see ClassBank::Save) and the
  // latest round's images; Load() throws for a checkpoint of another range.
  void Save(torch::serialize::OutputArchive& archive) const override;
  void Load(torch::serialize::InputArchive& archive) override;

  ClassBank& bank() { return bank_; }
  const ClassBank& bank() const { return bank_; }
  // The labels of LastSynthesized(); undefined before the first round.
  const torch::Tensor& last_labels() const { return last_labels_; }
  const ClassBankOptions& options() const { return options_; }

 private:
  torch::Device device() const;

  ClassBankOptions options_;
  MethodDeps deps_;
  ClassBank bank_;
  torch::Tensor last_images_;  // uint8 [N, C, H, W], CPU
  torch::Tensor last_labels_;  // int64 [N]
};

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_METHODS_CLASS_BANK_METHOD_H_
