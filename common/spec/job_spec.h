// The job spec: the one description of a unit of work that dfkd-train runs
// alone and that the scheduler hands to workers. JSON on disk and on the wire,
// parsed here into typed structs with defaults filled in.
//
// Every field is validated at parse time and every error names its field path
// ("model.depth: must be one of 16, 40"), so a bad spec is rejected before any
// work starts. Unknown fields are errors too: a typo never silently falls back
// to a default. This library depends on nlohmann/json only, so the control
// plane (no LibTorch) validates specs with exactly the same code as the engine.
#ifndef DFKD_COMMON_SPEC_JOB_SPEC_H_
#define DFKD_COMMON_SPEC_JOB_SPEC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace dfkd::common {

// Bumped when a field changes meaning. A spec without "version" is refused.
inline constexpr int kJobSpecVersion = 1;

enum class JobKind { kTrainTeacher, kTrainStudentScratch, kDistill };
const char* JobKindName(JobKind kind);

struct DataSpec {
  // fashion_mnist | cifar10 | cifar100 | image_folder
  std::string dataset = "fashion_mnist";
  // Folder holding the files; empty = the dataset's default location
  // (/usr/share/datasets/fashion-mnist for Fashion-MNIST).
  std::string root;
  bool augment = true;          // random crop with padding + horizontal flip
  int64_t crop_padding = -1;    // -1 = dataset default (4, Fashion-MNIST 2)
  bool horizontal_flip = true;
  int64_t image_size = 0;       // image_folder only: resize to this square size
  int64_t train_limit = 0;      // use only the first N training images (0 = all)
  int64_t test_limit = 0;       // use only the first N test images (0 = all)
};

struct ModelSpec {
  // resnet (CIFAR stem) | wrn | vgg | resnet_imagenet | mobilenet_v2
  std::string arch = "wrn";
  int64_t depth = 16;           // resnet 18/34, wrn 16/40, vgg 11, resnet_imagenet 18/50
  int64_t widen_factor = 1;     // wrn only: 1 or 2
  double width_mult = 1.0;      // mobilenet_v2 only
  double dropout = 0.0;         // wrn only (the DFKD references use 0)
};

struct OptimSpec {
  double lr = 0.1;
  double momentum = 0.9;
  double weight_decay = 5e-4;
  bool nesterov = false;
  std::string schedule = "cosine";     // cosine | multistep | constant
  std::vector<double> milestones;      // multistep: fractions of the run in (0,1)
  double gamma = 0.2;                  // multistep factor
  double eta_min = 0.0;                // cosine floor
  int64_t warmup_steps = 0;            // linear warm-up from 0
};

struct TrainSpec {
  int64_t epochs = 1;
  int64_t max_steps = 0;               // > 0: stop after this many steps (instant configs)
  int64_t batch_size = 128;
  int64_t eval_batch_size = 500;
  int64_t eval_every_epochs = 1;
  int64_t checkpoint_every_steps = 500;
  OptimSpec optim;
};

struct RuntimeSpec {
  int64_t threads = 0;                 // 0 = one per core
  std::string device = "cpu";          // cpu | cuda
  bool channels_last = true;           // NHWC weights and inputs (faster oneDNN convs)
};

// Data-parallel training across ranks (DDP semantics over c10d; worker/dist).
struct DistSpec {
  int64_t world_size = 1;              // ranks; the scheduler leases them as one gang
  std::string backend = "gloo";        // gloo (CPU) | nccl (runtime.device cuda, CUDA builds)
  int64_t bucket_mb = 25;              // gradient-averaging bucket size (DDP's default)
  bool overlap = true;                 // all-reduce buckets while backward runs (DDP)
  int64_t timeout_seconds = 60;        // rendezvous and collective timeout
};

// A trained network to load: architecture plus a weights file (model.pt of a
// train_teacher run).
struct TeacherSpec {
  std::string weights;
  ModelSpec model;
  int64_t num_classes = 0;     // 0 = the task's; set for another data set's teacher
};

// DAFL's options (dfkd-methods.md §3, Fast-Datafree's values).
struct DaflSpec {
  int64_t nz = 512;
  int64_t g_steps = 1;
  double lr_g = 1e-3;
  double oh_weight = 1.0;
  double ie_weight = 20.0;
  double act_weight = 0.001;
};

// DeepInversion's options (dfkd-methods.md §6, Fast-Datafree's values).
struct DeepInvSpec {
  int64_t g_steps = 1000;              // Adam iterations on the pixels per round
  double lr = 0.1;
  double bn_weight = 10.0;
  double oh_weight = 1.0;
  double adv_weight = 1.0;
  double tv_weight = 0.0;
  double l2_weight = 0.0;
  double student_bn_weight = 0.001;
  int64_t jitter = 4;
  int64_t pool_max_images = 51200;
  bool keep_lowest_loss = true;        // false: the final iterate (what the code keeps)
};

// Fast's options (dfkd-methods.md §4, Fast-Datafree's scripts/fast_cifar.sh:
// the Fast-10 row KDCI reports, loss weights of the wrn40_2 teacher).
struct FastSpec {
  int64_t nz = 256;
  int64_t g_steps = 10;                // inner steps per synthesis call (Fast-2/5: 2/5)
  double lr_g = 2e-3;                  // inner Adam lr of the generator copy (Fast-2 5e-3,
                                       // Fast-5 3e-3); the meta lr is lr_g * g_steps
  double lr_z = 0.01;                  // inner Adam lr of the latent batch (Fast-2 0.015)
  double bn_weight = 10.0;
  double oh_weight = 0.4;              // resnet34 and vgg11 teachers: 0.5
  double adv_weight = 1.1;             // resnet34 teacher 1.33, vgg11 1.0
  double bn_momentum = 0.9;            // bn_mmt of the BN-statistics loss; 0 = plain
  int64_t warmup = 20;                 // synthesis calls before the first student step
  std::string meta = "fomaml";         // fomaml (is_maml 1, the scripts) | reptile
  bool reset_l0 = true;                // re-initialise the generator's input layer once,
  int64_t reset_l0_after = 120;        // at synthesis call warmup + reset_l0_after
  int64_t pool_max_images = 56320;     // 220 calls x 256 images: the reference's final pool
};

// CMI's options (dfkd-methods.md §5, Fast-Datafree's scripts/cmi_cifar.sh).
struct CmiSpec {
  int64_t nz = 256;
  int64_t g_steps = 200;               // inner iterations per synthesis call
  double lr_g = 1e-3;                  // Adam over the generator, z and the head
  double bn_weight = 1.0;
  double oh_weight = 1.0;
  double adv_weight = 0.5;
  double cr_weight = 0.8;              // contrastive term (0 = the "tuned fast" variant)
  double cr_temperature = 0.2;         // tau (CMI repo scripts: 0.1)
  int64_t head_dim = 256;
  int64_t bank_size = 40960;           // memory bank of instance features
  int64_t n_neg = 4096;                // negatives drawn from the bank per iteration
  double local_scale_min = 0.25;       // RandomResizedCrop scale of the local view
  int64_t pool_max_images = 51200;     // 200 calls x 256
};

// The class-sharded synthesis bank (the paper's ImageNet "one generator per
// class"; dfkd-methods.md §12): one tiny generator (or inversion batch) per
// class, owning the classes [class_begin, class_end).
struct ClassBankSpec {
  std::string unit = "generator";      // generator | inversion
  int64_t nz = 32;
  int64_t ngf = 8;
  int64_t g_steps = 0;                 // per class and call; 0 = the unit's (10 / 50)
  double lr = 0.0;                     // Adam lr; 0 = the unit's (generator 1e-3, inversion 0.1)
  double bn_weight = 10.0;
  double oh_weight = 1.0;
  double adv_weight = 0.0;
  int64_t images_per_class = 32;       // per synthesis of one class
  int64_t classes_per_round = 0;       // 0 = every owned class each round
  int64_t class_begin = 0;
  int64_t class_end = 0;               // 0 = num_classes
  int64_t pool_max_images = 51200;
};

// The unlabeled "wild" pool the sampling methods read (a `dfkd pool` file).
struct PoolSpec {
  std::string path;                    // required for mosaickd and dfnd
  // How pool images are normalised for the models: the task's statistics
  // (default), ImageNet's (DFND's code, §14.16) or 0.5/0.5 (MosaicKD's
  // ImageNet-32 OOD sets, §14.17).
  std::string normalize = "task";      // task | imagenet | half
};

// MosaicKD's options (dfkd-methods.md §7, README command weights).
struct MosaicKdSpec {
  int64_t nz = 100;
  int64_t ndf = 128;
  double lr_g = 1e-3;
  double lr_d = 1e-3;
  double local_weight = 1.0;
  double align_weight = 1.0;
  double adv_weight = 1.0;
  double balance_weight = 10.0;
  int64_t ood_subset = 0;              // > 0: keep this many highest-entropy pool images
};

// DFND's options (dfkd-methods.md §8).
struct DfndSpec {
  int64_t num_select = 0;              // most confident pool images kept (0 = all)
  double teacher_accuracy = 0.9523;    // a_T of the noise transition (the code's CIFAR-10 value)
  double lr_theta = 1e-3;              // Adam lr of the noise-adaptation logits
};

// kind distill: a student learns from `teacher` without its training data.
struct DistillSpec {
  TeacherSpec teacher;
  // noise | dafl | deepinv | fast | cmi | class_bank | mosaickd | dfnd
  std::string method = "noise";
  double temperature = 20.0;           // KD temperature; omitted = DefaultTemperature(method)
  int64_t steps_per_epoch = 400;       // student steps between evaluations
  int64_t kd_steps = 400;              // student steps per synthesis round;
                                       // omitted = DefaultKdSteps(method)
  int64_t synthesis_batch_size = 256;
  double noise_stddev = 1.0;           // method noise
  DaflSpec dafl;                       // method dafl
  DeepInvSpec deepinv;                 // method deepinv
  FastSpec fast;                       // method fast
  CmiSpec cmi;                         // method cmi
  ClassBankSpec class_bank;            // method class_bank
  PoolSpec pool;                       // methods mosaickd, dfnd
  MosaicKdSpec mosaickd;               // method mosaickd
  DfndSpec dfnd;                       // method dfnd
};

// The KD temperature of a method's reference scripts when distill.temperature
// is omitted: 20 (every zju-vipa CIFAR script), MosaicKD 1 (kd_mosaic.py's
// default, §7.3), DFND 4 (DFND-train.py's kdloss, §8.3).
double DefaultTemperature(const std::string& method);

// Whether a distill method reads an unlabeled pool (distill.pool).
bool MethodUsesPool(const std::string& method);

// KDCI on top of the distill method (dfkd-methods.md §1; defaults §1.7).
struct KdciSpec {
  bool enabled = false;
  int64_t num_prototypes = 0;          // N; omitted = DefaultKdciPrototypes(method)
  std::string feature_source = "teacher";   // teacher | other (Table 5 "other Z")
  TeacherSpec other_teacher;           // feature_source "other"
  // none | random_lambda | random_z | no_prior | other_z (Tables 4-5)
  std::string ablation = "none";
  int64_t hidden = 0;                  // d_n; 0 = d (the paper's shapes)
  bool bias = false;
  bool detach_query = false;
  std::string pca = "variance";        // variance | fixed | off
  double pca_variance = 0.95;
  int64_t pca_dim = 0;
  int64_t kmeans_max_iters = 300;
  std::string rebuild = "every_round"; // every_round | every_step | once
};

struct JobSpec {
  int version = kJobSpecVersion;
  JobKind kind = JobKind::kTrainTeacher;
  std::string name;                    // free text, shown in progress and results
  int64_t seed = 0;
  DataSpec data;
  ModelSpec model;
  TrainSpec train;
  RuntimeSpec runtime;
  DistSpec dist;
  DistillSpec distill;                 // kind distill only
  KdciSpec kdci;                       // kind distill only
};

// The paper's dictionary size N for a method (§4.3 "Confounder setup"): 8 for
// generator methods (DAFL, Fast; also noise), 32 for inversion methods
// (DeepInv, CMI), 128 for pool methods (MosaicKD, DFND).
int64_t DefaultKdciPrototypes(const std::string& method);

// Student steps per synthesis round when distill.kd_steps is omitted: the
// reference scripts' values (DAFL 5 with g_steps 1; DeepInv and Fast 400 =
// ep_steps, one synthesis per epoch; noise 400; CMI 400; MosaicKD 5 student
// steps per generator/discriminator iteration; DFND 400, it has no rounds;
// class_bank 400).
int64_t DefaultKdSteps(const std::string& method);

struct SpecError {
  std::string path;     // "model.depth"
  std::string message;  // "must be one of 16, 40"
  std::string ToString() const { return path + ": " + message; }
};

struct SpecParseResult {
  std::optional<JobSpec> spec;        // set iff errors is empty
  std::vector<SpecError> errors;
  bool ok() const { return errors.empty(); }
  std::string ErrorText() const;      // one error per line
};

// Parses and validates. Never throws.
SpecParseResult ParseJobSpec(const nlohmann::json& json);
// Reads a file, then ParseJobSpec. A missing file or broken JSON is reported as
// an error with path "<file>".
SpecParseResult LoadJobSpecFile(const std::string& path);

// The spec with every default filled in; ParseJobSpec(ToJson(s)) == s.
nlohmann::json ToJson(const JobSpec& spec);
// 16 hex digits identifying the spec's canonical JSON (defaults filled, keys
// sorted). Equal specs hash equal, whatever their key order or omitted defaults.
std::string CanonicalHash(const JobSpec& spec);

}  // namespace dfkd::common

#endif  // DFKD_COMMON_SPEC_JOB_SPEC_H_
