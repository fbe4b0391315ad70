// A class-sharded synthesis bank: one synthesis unit per class, for KDCI's
// ImageNet protocol "1,000 generators (one generator for one class)"
// (dfkd-methods.md §12). No public Fast or DeepInv code has per-class
// generators (§12): the protocol is the authors' own and unpublished, so
// everything below is our reading of it ([inference] in §12: class-conditional
// synthesis where each synthesis batch targets one class, with separate state
// per class), built from the pieces of §2.3-§2.5, §3, §4 and §6.
//
// A bank owns a contiguous range of classes [begin, end) (ClassRange; ShardOf
// splits num_classes into near-equal contiguous ranges over ranks) and holds
// state only for those: one unit per owned class, plus one small uint8 image
// pool per owned class. Two unit kinds sit behind one interface (ClassUnits):
//
//   generator  (DAFL/Fast style) a persistent per-class generator G_c, G-A of
//              §9.5 with a small nz/ngf (32/8 by default), and a persistent
//              per-class Adam (lr 1e-3, betas (0.5, 0.999): Fast-Datafree's
//              generator optimiser for DAFL and CMI, §3.4, §5.4). Synthesizing
//              class c runs g_steps (10: Fast-10's inner steps, §4.4) Adam
//              steps on G_c with a latent batch z ~ N(0, 1) [n, nz] drawn once
//              per call (Fast's per-call z, here not learned), on
//              x = G_c(z) in [0, 1], x~ = normalise(crop + flip(x)) (Fast's
//              augmentation, §4.2), t = T(x~), s = S(x~), both models in eval
//              mode:
//                L = w_bn * L_bn(T, x~) + w_oh * CE(t, c) + w_adv * L_adv(s, t)
//              with L_bn DeepInversion's BN-statistics loss (§2.3, no
//              momentum), CE to the class itself (§2.5's one-hot term with the
//              labels fixed to c), L_adv Fast's decision-adversarial term
//              (§2.5; off by default, w_adv 0). The kept batch is the x of the
//              lowest-loss iteration (as Fast keeps it, §4.3).
//   inversion  (DeepInv style) no persistent state: synthesizing class c
//              optimises fresh pixels x ~ N(0, 1) in the normalised input
//              space for g_steps (50) Adam steps (lr 0.1, betas (0.5, 0.99):
//              DeepInv's, §6.4) with the same loss on crop + flip(x), x
//              clipped per channel to the image range after every step
//              (§6.3); the lowest-loss iterate, in [0, 1], is kept.
//
// Both return `images01` [n, C, H, W] in [0, 1]; the bank labels them c and
// adds them to class c's pool, quantised to uint8 by truncation (the
// reference's PNG writer, §2.4). Sample(n) is class-balanced over the owned
// classes that have images: each gets floor(n / k) draws and n mod k of them
// (keyed-random, distinct) one more; within a class, images are drawn with
// replacement and get the task's random crop + flip (ImagePool::Sample).
//
// Memory per owned class (measured by Memory(), printed by
// bench/bank_memory_bench.cc). Generator units keep a class's parameters as
// one flat float tensor, its BN running statistics as another, and its Adam
// moments as two more allocated lazily on the class's first update (a class a
// round schedule has not reached yet costs no optimizer state); one shared
// workspace Generator receives a class's flat state for each computation.
// G-A's parameter count is
//   P = nz * 2ngf s^2 + 2ngf s^2      (Linear nz -> 2ngf x s x s, s = size / 4)
//     + 4ngf + 36 ngf^2 + 4ngf        (BN 2ngf, Conv3x3 2ngf -> 2ngf, BN 2ngf)
//     + 18 ngf^2 + 2ngf               (Conv3x3 2ngf -> ngf, BN ngf)
//     + 9 ngf C + C                   (Conv3x3 ngf -> C with bias);
// at nz 32, ngf 8, 3x32x32: P = 37,547 (33,792 of them the Linear's):
// 150,188 bytes of parameters, 332 of BN buffers and, once the class has been
// updated, 300,376 of Adam moments: ~440 KiB a class, ~430 MiB for 1,000
// classes in one process, half of it per rank on 2 ranks. Inversion units
// keep nothing between calls. Pools: each class keeps its newest
// max(1, pool_max_images / owned classes) images.
//
// Keys (worker/methods/seeding.h): class c's initial generator is drawn from
// a generator keyed by (base, c), base being one draw from LibTorch's global
// generator at construction (the job runner seeds it, as it does for Fast's
// generator); class c's synthesis in round r is keyed by (seed, r, c). No key
// holds the rank: a class's unit evolves identically whichever shard owns it,
// as long as it is visited in the same rounds.
//
// Several ranks (the later issue): rank k builds its bank over
// ShardOf(num_classes, k, world) and owns that range's generators, optimizer
// state, pools and checkpoint entries only. Each rank's student batch is drawn
// from its own shard (class-balanced there); the gradient average over ranks
// (DDP) then covers every class at every student step: with equal per-rank
// batches and near-equal shards each class weighs ~1/num_classes in the step.
// Nothing in the bank is collective, so ranks never exchange generator state.
#ifndef DFKD_WORKER_METHODS_CLASS_BANK_H_
#define DFKD_WORKER_METHODS_CLASS_BANK_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/arg.h>
#include <torch/torch.h>

#include "worker/data/transforms.h"
#include "worker/methods/image_pool.h"
#include "worker/methods/method.h"
#include "worker/models/generator.h"

namespace dfkd::worker {

// Classes [begin, end): end exclusive.
struct ClassRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool contains(int64_t c) const { return c >= begin && c < end; }
  bool operator==(const ClassRange& o) const { return begin == o.begin && end == o.end; }
  bool operator!=(const ClassRange& o) const { return !(*this == o); }
  std::string ToString() const;  // "[begin, end)"
};

// Rank `rank`'s share of `num_classes` over `world` ranks: contiguous, in rank
// order, sizes differing by at most one (the first num_classes % world ranks
// get one more). Empty when num_classes < world and rank >= num_classes.
ClassRange ShardOf(int64_t num_classes, int64_t rank, int64_t world);

enum class ClassBankUnit {
  kGenerator,  // a persistent per-class generator + Adam (DAFL/Fast style)
  kInversion,  // per-class pixels optimised from noise at each call (DeepInv style)
};
// "generator" | "inversion".
std::string ClassBankUnitName(ClassBankUnit unit);
// Throws std::invalid_argument for any other name.
ClassBankUnit ParseClassBankUnit(const std::string& name);

// The bank's options and the `class_bank` method's (ClassBankMethod); the
// bank ignores temperature, classes_per_round and the class range (it is
// given its range).
struct ClassBankOptions {
  TORCH_ARG(double, temperature) = 20.0;  // method: of the student's KD loss (§2.2)
  TORCH_ARG(ClassBankUnit, unit) = ClassBankUnit::kGenerator;
  TORCH_ARG(int64_t, nz) = 32;            // generator units: G-A's latent size
  TORCH_ARG(int64_t, ngf) = 8;            // generator units: G-A's width
  TORCH_ARG(int64_t, g_steps) = 0;        // per class and call; 0 = the unit's (10 / 50)
  TORCH_ARG(double, lr) = 0;              // Adam; 0 = the unit's (1e-3 / 0.1)
  TORCH_ARG(double, bn_weight) = 10.0;    // Fast's and DeepInv's w_bn (§4.3, §6.3)
  TORCH_ARG(double, oh_weight) = 1.0;     // DeepInv's w_oh (§6.3)
  TORCH_ARG(double, adv_weight) = 0.0;    // the decision-adversarial term; off
  TORCH_ARG(int64_t, images_per_class) = 32;  // made per class and call
  TORCH_ARG(int64_t, classes_per_round) = 0;  // method: 0 = every owned class each round
  TORCH_ARG(int64_t, class_begin) = 0;        // method: the owned range
  TORCH_ARG(int64_t, class_end) = 0;          // method: 0 = num_classes
  TORCH_ARG(int64_t, pool_max_images) = 51200;  // the shard's, split evenly over its classes
  TORCH_ARG(int64_t, crop_padding) = 4;   // of the synthesis augmentation and of Sample()
  TORCH_ARG(Normalization, norm);         // the task's; set by the caller
};

// The options in effect: g_steps and lr with 0 replaced by the unit's default.
int64_t BankGSteps(const ClassBankOptions& options);
double BankLr(const ClassBankOptions& options);
// The unit's Adam betas: generator (0.5, 0.999), inversion (0.5, 0.99).
std::pair<double, double> BankAdamBetas(ClassBankUnit unit);
// [class_begin, class_end or num_classes); throws unless 0 <= begin < end <= num_classes.
ClassRange BankRange(const ClassBankOptions& options, int64_t num_classes);

// What a bank holds, in bytes of tensor data (object overheads not counted).
struct BankMemory {
  int64_t classes = 0;                 // owned
  int64_t parameters_per_class = 0;    // generator units; 0 for inversion
  int64_t parameter_bytes_per_class = 0;
  int64_t buffer_bytes_per_class = 0;  // BN running statistics (counters as float)
  int64_t optimizer_state_bytes_per_class = 0;  // once allocated (Adam's two moments)
  int64_t parameter_bytes = 0;         // all owned classes
  int64_t buffer_bytes = 0;
  int64_t optimizer_state_bytes = 0;   // allocated so far
  int64_t classes_with_optimizer_state = 0;
  int64_t pool_bytes = 0;              // uint8 images
  // Parameters + buffers + optimizer state allocated now.
  int64_t state_bytes() const { return parameter_bytes + buffer_bytes + optimizer_state_bytes; }
  // ... once every owned class has been updated.
  int64_t state_bytes_all_updated() const {
    return classes * (parameter_bytes_per_class + buffer_bytes_per_class +
                      optimizer_state_bytes_per_class);
  }
};

// The latest iteration's terms (logging and tests).
struct UnitLosses {
  double bn = 0, one_hot = 0, adversarial = 0, total = 0;
};

// The per-class synthesis state of one range of classes: the interface the
// two unit kinds implement. Callers put the teacher and the student in eval
// mode first (ClassBank::Synthesize does). Not thread-safe.
class ClassUnits {
 public:
  virtual ~ClassUnits() = default;
  ClassUnits(const ClassUnits&) = delete;
  ClassUnits& operator=(const ClassUnits&) = delete;

  virtual ClassBankUnit kind() const = 0;
  // `n` images of owned class `cls`, float [n, C, H, W] in [0, 1], detached,
  // every draw keyed by `key`. Updates the class's state (generator units).
  virtual torch::Tensor Synthesize(int64_t cls, int64_t n, uint64_t key) = 0;
  virtual int64_t parameters_per_class() const = 0;
  // Adds the units' bytes to `memory` (the pools are the bank's).
  virtual void AddMemory(BankMemory& memory) const = 0;
  // Class `cls`'s state into / from its own archive.
  virtual void SaveClass(int64_t cls, torch::serialize::OutputArchive& archive) const = 0;
  virtual void LoadClass(int64_t cls, torch::serialize::InputArchive& archive) = 0;

  const ClassRange& range() const { return range_; }
  const UnitLosses& last_losses() const { return last_losses_; }

 protected:
  ClassUnits(const ClassBankOptions& options, ClassRange range, const MethodDeps& deps);
  // The loss of one augmented, normalised batch of class `cls`; records
  // last_losses_.
  torch::Tensor Score(const torch::Tensor& x_normalised, int64_t cls);
  // cls - range.begin; throws for a class outside the range.
  int64_t Index(int64_t cls) const;
  torch::Device device() const;

  ClassBankOptions options_;
  ClassRange range_;
  MethodDeps deps_;
  UnitLosses last_losses_;
};

// One G-A generator and one Adam per owned class, stored flat.
class GeneratorUnits final : public ClassUnits {
 public:
  // Draws one base seed from LibTorch's global generator (see the keys above).
  GeneratorUnits(const ClassBankOptions& options, ClassRange range, const MethodDeps& deps);
  ClassBankUnit kind() const override { return ClassBankUnit::kGenerator; }
  torch::Tensor Synthesize(int64_t cls, int64_t n, uint64_t key) override;
  int64_t parameters_per_class() const override { return num_params_; }
  void AddMemory(BankMemory& memory) const override;
  void SaveClass(int64_t cls, torch::serialize::OutputArchive& archive) const override;
  void LoadClass(int64_t cls, torch::serialize::InputArchive& archive) override;

  // G_cls(z) in train mode (batch statistics, as during synthesis), no grad;
  // the class's state is not changed.
  torch::Tensor Generate(int64_t cls, const torch::Tensor& z);
  // Class `cls`'s parameters, flat [P] in the order of Generator::parameters().
  const torch::Tensor& parameters(int64_t cls) const;
  bool has_optimizer_state(int64_t cls) const;
  int64_t adam_steps(int64_t cls) const;

 private:
  struct State {
    torch::Tensor params;      // float [P]
    torch::Tensor buffers;     // float [B]: BN running mean/var, counters
    torch::Tensor exp_avg;     // float [P]; undefined until the first update
    torch::Tensor exp_avg_sq;  // float [P]; likewise
    int64_t step = 0;          // Adam steps taken
  };
  // The class's parameters (and, when `buffers`, its BN buffers) -> workspace.
  void Install(const State& state, bool buffers);
  void AdamStep(State& state, const torch::Tensor& grad);

  Generator workspace_;
  std::vector<torch::Tensor> ws_params_, ws_buffers_;
  int64_t num_params_ = 0, num_buffers_ = 0;
  std::vector<State> states_;  // index cls - range.begin
};

// Per-class pixel inversion; nothing persists between calls.
class InversionUnits final : public ClassUnits {
 public:
  InversionUnits(const ClassBankOptions& options, ClassRange range, const MethodDeps& deps);
  ClassBankUnit kind() const override { return ClassBankUnit::kInversion; }
  torch::Tensor Synthesize(int64_t cls, int64_t n, uint64_t key) override;
  int64_t parameters_per_class() const override { return 0; }
  void AddMemory(BankMemory& memory) const override;
  void SaveClass(int64_t, torch::serialize::OutputArchive&) const override {}
  void LoadClass(int64_t, torch::serialize::InputArchive&) override {}

 private:
  torch::Tensor lo_, hi_;  // [1, C, 1, 1] the image range in normalised units
};

// uint8 [N, C, H, W] on the CPU with int64 labels [N].
struct LabelledImages {
  torch::Tensor images;
  torch::Tensor labels;
};

class ClassBank {
 public:
  // Builds the units of every class in `owned` (non-empty, within
  // [0, deps.num_classes)) now: their memory is what Memory() reports.
  ClassBank(ClassBankOptions options, ClassRange owned, MethodDeps deps);

  const ClassRange& range() const { return range_; }
  // The owned class ids, ascending.
  std::vector<int64_t> owned() const;
  int64_t num_classes() const { return deps_.num_classes; }
  // The owned classes round `round` visits: round 0 all of them (the pool
  // covers the shard before the first student step, as Fast's warm-up fills
  // its pool first); round r > 0 the next classes_per_round in round-robin
  // order from owned index (r - 1) * classes_per_round (mod owned), so every
  // class is revisited every ceil(owned / classes_per_round) rounds.
  // classes_per_round <= 0 or >= owned: all of them every round.
  std::vector<int64_t> RoundClasses(int64_t round, int64_t classes_per_round) const;

  // images_per_class images of each class in `classes` (all owned, else it
  // throws before any work), keyed by (seed, round, class); adds them to the
  // pools. Returns the new images as the pools store them, with their labels,
  // in the order of `classes`. Both models are run in eval mode, their modes
  // restored, their parameters never given gradients.
  LabelledImages Synthesize(const std::vector<int64_t>& classes, int64_t round, uint64_t seed);
  // n images, class-balanced over the owned classes that have images (see
  // the header comment), grouped by class in ascending order, each randomly
  // cropped (crop_padding) and flipped; every draw keyed by `key`. Throws
  // when no class has images yet.
  LabelledImages Sample(int64_t n, uint64_t key) const;

  int64_t pool_size() const;  // over all owned classes
  const ImagePool& pool(int64_t cls) const;
  int64_t pool_images_per_class() const { return pool_per_class_; }
  BankMemory Memory() const;
  ClassUnits& units() { return *units_; }
  const ClassUnits& units() const { return *units_; }
  GeneratorUnits* generator_units();  // nullptr for inversion units
  const ClassBankOptions& options() const { return options_; }

  // The shard: "num_classes", "class_range" {begin, end}, "unit", and per
  // owned class a nested archive "class_0042" holding "class_id", the unit's
  // state ("generator", "generator_buffers", "adam_step", "adam_exp_avg",
  // "adam_exp_avg_sq" for generator units) and "pool".
  void Save(torch::serialize::OutputArchive& archive) const;
  // Throws (c10::Error naming both ranges) for a checkpoint of another range
  // or class count, or of the other unit kind.
  void Load(torch::serialize::InputArchive& archive);

 private:
  int64_t Index(int64_t cls) const;

  ClassBankOptions options_;
  ClassRange range_;
  MethodDeps deps_;
  std::unique_ptr<ClassUnits> units_;
  int64_t pool_per_class_;
  std::vector<ImagePool> pools_;  // index cls - range.begin
};

// "class_0042": the archive key of a class (at least four digits).
std::string ClassArchiveKey(int64_t cls);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_METHODS_CLASS_BANK_H_
