#include "common/spec/job_spec.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "common/spec/fnv1a.h"

namespace dfkd::common {
namespace {

using nlohmann::json;

// Walks one JSON object, reading known keys into typed fields and recording
// an error (with the full dotted path) for every wrong type, bad value or
// unknown key.
class ObjectReader {
 public:
  ObjectReader(const json& obj, std::string path, std::vector<SpecError>* errors)
      : obj_(obj), path_(std::move(path)), errors_(errors) {
    if (!obj_.is_object()) {
      Error(path_.empty() ? "<root>" : path_, "must be an object");
      valid_ = false;
    }
  }
  ~ObjectReader() {
    if (!valid_) return;
    for (auto it = obj_.begin(); it != obj_.end(); ++it) {
      if (!seen_.count(it.key())) Error(Path(it.key()), "unknown field");
    }
  }

  std::string Path(const std::string& key) const {
    return path_.empty() ? key : path_ + "." + key;
  }
  void Error(const std::string& path, const std::string& message) {
    errors_->push_back({path, message});
  }
  bool Has(const std::string& key) const { return valid_ && obj_.contains(key); }
  const json* Get(const std::string& key) {
    seen_.insert(key);
    if (!valid_ || !obj_.contains(key)) return nullptr;
    return &obj_.at(key);
  }

  void Int(const std::string& key, int64_t* out, int64_t min, int64_t max) {
    const json* v = Get(key);
    if (!v) return;
    if (!v->is_number_integer()) return Error(Path(key), "must be an integer");
    int64_t x = v->get<int64_t>();
    if (x < min || x > max) {
      return Error(Path(key), RangeText(min, max));
    }
    *out = x;
  }
  void Number(const std::string& key, double* out, double min, double max) {
    const json* v = Get(key);
    if (!v) return;
    if (!v->is_number()) return Error(Path(key), "must be a number");
    double x = v->get<double>();
    if (!(x >= min && x <= max)) return Error(Path(key), RangeText(min, max));
    *out = x;
  }
  void Bool(const std::string& key, bool* out) {
    const json* v = Get(key);
    if (!v) return;
    if (!v->is_boolean()) return Error(Path(key), "must be true or false");
    *out = v->get<bool>();
  }
  void String(const std::string& key, std::string* out) {
    const json* v = Get(key);
    if (!v) return;
    if (!v->is_string()) return Error(Path(key), "must be a string");
    *out = v->get<std::string>();
  }
  void Enum(const std::string& key, std::string* out,
            const std::vector<std::string>& allowed) {
    const json* v = Get(key);
    if (!v) return;
    if (!v->is_string() ||
        std::find(allowed.begin(), allowed.end(), v->get<std::string>()) ==
            allowed.end()) {
      return Error(Path(key), "must be one of " + Join(allowed));
    }
    *out = v->get<std::string>();
  }
  // Reads a nested object with `fn(ObjectReader&)` when present.
  template <typename Fn>
  void Object(const std::string& key, Fn fn) {
    const json* v = Get(key);
    if (!v) return;
    ObjectReader child(*v, Path(key), errors_);
    if (child.valid_) fn(child);
  }

  static std::string Join(const std::vector<std::string>& items) {
    std::string s;
    for (size_t i = 0; i < items.size(); ++i) s += (i ? ", " : "") + items[i];
    return s;
  }

 private:
  template <typename T>
  static std::string RangeText(T min, T max) {
    std::ostringstream os;
    os << "must be in [" << min << ", " << max << "]";
    return os.str();
  }

  const json& obj_;
  std::string path_;
  std::vector<SpecError>* errors_;
  std::set<std::string> seen_;
  bool valid_ = true;
};

constexpr int64_t kBig = int64_t{1} << 40;

// Every distill method and its reference defaults, in one place: the name
// list distill.method accepts and the Default* functions read this table.
struct MethodTraits {
  const char* name;
  int64_t kd_steps;     // student steps per synthesis round (DefaultKdSteps)
  double temperature;   // KD temperature (DefaultTemperature)
  int64_t prototypes;   // KDCI's N (DefaultKdciPrototypes: §4.3 "Confounder setup")
  bool uses_pool;       // reads distill.pool (MethodUsesPool)
};
constexpr MethodTraits kMethods[] = {
    {"noise", 400, 20.0, 8, false},     {"dafl", 5, 20.0, 8, false},
    {"deepinv", 400, 20.0, 32, false},  {"fast", 400, 20.0, 8, false},
    {"cmi", 400, 20.0, 32, false},      {"class_bank", 400, 20.0, 8, false},
    {"mosaickd", 5, 1.0, 128, true},    {"dfnd", 400, 4.0, 128, true},
};

// An unknown name (already reported by the parser) gets noise's defaults.
const MethodTraits& TraitsOf(const std::string& method) {
  for (const MethodTraits& t : kMethods) {
    if (method == t.name) return t;
  }
  return kMethods[0];
}

std::vector<std::string> MethodNames() {
  std::vector<std::string> names;
  for (const MethodTraits& t : kMethods) names.emplace_back(t.name);
  return names;
}

void ReadData(ObjectReader& r, DataSpec* d) {
  r.Enum("dataset", &d->dataset,
         {"fashion_mnist", "cifar10", "cifar100", "image_folder"});
  r.String("root", &d->root);
  r.Bool("augment", &d->augment);
  r.Int("crop_padding", &d->crop_padding, -1, 64);
  r.Bool("horizontal_flip", &d->horizontal_flip);
  r.Int("image_size", &d->image_size, 0, 1024);
  r.Int("train_limit", &d->train_limit, 0, kBig);
  r.Int("test_limit", &d->test_limit, 0, kBig);
  if (d->dataset == "image_folder") {
    if (d->root.empty()) r.Error(r.Path("root"), "required for image_folder");
    if (d->image_size == 0) r.Error(r.Path("image_size"), "required for image_folder");
  }
  if ((d->dataset == "cifar10" || d->dataset == "cifar100") && d->root.empty()) {
    r.Error(r.Path("root"), "required for " + d->dataset +
                                " (folder with the binary batches)");
  }
}

void ReadModel(ObjectReader& r, ModelSpec* m) {
  r.Enum("arch", &m->arch,
         {"resnet", "wrn", "vgg", "resnet_imagenet", "mobilenet_v2"});
  r.Int("depth", &m->depth, 0, 1000);
  r.Int("widen_factor", &m->widen_factor, 1, 16);
  r.Number("width_mult", &m->width_mult, 0.1, 4.0);
  r.Number("dropout", &m->dropout, 0.0, 0.9);
  auto depth_in = [&](std::vector<int64_t> allowed) {
    if (std::find(allowed.begin(), allowed.end(), m->depth) == allowed.end()) {
      std::vector<std::string> s;
      for (int64_t a : allowed) s.push_back(std::to_string(a));
      r.Error(r.Path("depth"), "must be one of " + ObjectReader::Join(s) +
                                   " for arch " + m->arch);
    }
  };
  if (m->arch == "resnet") depth_in({18, 34});
  if (m->arch == "wrn") {
    depth_in({16, 40});
    if (m->widen_factor != 1 && m->widen_factor != 2) {
      r.Error(r.Path("widen_factor"), "must be one of 1, 2");
    }
  }
  if (m->arch == "vgg") depth_in({11});
  if (m->arch == "resnet_imagenet") depth_in({18, 50});
  if (!r.Has("depth") && m->arch != "wrn" && m->arch != "mobilenet_v2") {
    r.Error(r.Path("depth"), "required for arch " + m->arch);
  }
}

void ReadOptim(ObjectReader& r, OptimSpec* o) {
  r.Number("lr", &o->lr, 0.0, 10.0);
  r.Number("momentum", &o->momentum, 0.0, 0.999);
  r.Number("weight_decay", &o->weight_decay, 0.0, 1.0);
  r.Bool("nesterov", &o->nesterov);
  r.Enum("schedule", &o->schedule, {"cosine", "multistep", "constant"});
  if (const json* v = r.Get("milestones")) {
    if (!v->is_array()) {
      r.Error(r.Path("milestones"), "must be an array of fractions in (0, 1)");
    } else {
      o->milestones.clear();
      for (size_t i = 0; i < v->size(); ++i) {
        const json& x = (*v)[i];
        if (!x.is_number() || x.get<double>() <= 0 || x.get<double>() >= 1) {
          r.Error(r.Path("milestones") + "[" + std::to_string(i) + "]",
                  "must be a fraction of the run in (0, 1)");
        } else {
          o->milestones.push_back(x.get<double>());
        }
      }
      if (!std::is_sorted(o->milestones.begin(), o->milestones.end())) {
        r.Error(r.Path("milestones"), "must be increasing");
      }
    }
  }
  r.Number("gamma", &o->gamma, 0.0, 1.0);
  r.Number("eta_min", &o->eta_min, 0.0, 10.0);
  r.Int("warmup_steps", &o->warmup_steps, 0, kBig);
  if (o->schedule == "multistep" && o->milestones.empty()) {
    r.Error(r.Path("milestones"), "required for schedule multistep");
  }
}

void ReadTrain(ObjectReader& r, TrainSpec* t) {
  r.Int("epochs", &t->epochs, 1, 100000);
  r.Int("max_steps", &t->max_steps, 0, kBig);
  r.Int("batch_size", &t->batch_size, 1, 1 << 16);
  r.Int("eval_batch_size", &t->eval_batch_size, 1, 1 << 16);
  r.Int("eval_every_epochs", &t->eval_every_epochs, 1, 100000);
  r.Int("checkpoint_every_steps", &t->checkpoint_every_steps, 1, kBig);
  r.Object("optim", [&](ObjectReader& c) { ReadOptim(c, &t->optim); });
}

void ReadTeacher(ObjectReader& r, TeacherSpec* t) {
  if (!r.Has("weights")) r.Error(r.Path("weights"), "required (model.pt of a train_teacher run)");
  r.String("weights", &t->weights);
  if (!r.Has("model")) r.Error(r.Path("model"), "required");
  r.Object("model", [&](ObjectReader& c) { ReadModel(c, &t->model); });
  r.Int("num_classes", &t->num_classes, 0, 100000);
}

void ReadDistill(ObjectReader& r, DistillSpec* d) {
  if (!r.Has("teacher")) r.Error(r.Path("teacher"), "required");
  r.Object("teacher", [&](ObjectReader& c) { ReadTeacher(c, &d->teacher); });
  r.Enum("method", &d->method, MethodNames());
  d->temperature = DefaultTemperature(d->method);
  r.Number("temperature", &d->temperature, 1e-3, 1000.0);
  r.Int("steps_per_epoch", &d->steps_per_epoch, 1, kBig);
  // Omitted: the method's reference value (DAFL and MosaicKD 5, others 400).
  d->kd_steps = DefaultKdSteps(d->method);
  r.Int("kd_steps", &d->kd_steps, 1, kBig);
  r.Int("synthesis_batch_size", &d->synthesis_batch_size, 1, 1 << 16);
  r.Number("noise_stddev", &d->noise_stddev, 0.0, 100.0);
  r.Object("dafl", [&](ObjectReader& c) {
    DaflSpec& a = d->dafl;
    c.Int("nz", &a.nz, 1, 1 << 16);
    c.Int("g_steps", &a.g_steps, 1, 1 << 20);
    c.Number("lr_g", &a.lr_g, 0.0, 10.0);
    c.Number("oh_weight", &a.oh_weight, 0.0, 1e6);
    c.Number("ie_weight", &a.ie_weight, 0.0, 1e6);
    c.Number("act_weight", &a.act_weight, 0.0, 1e6);
  });
  r.Object("deepinv", [&](ObjectReader& c) {
    DeepInvSpec& a = d->deepinv;
    c.Int("g_steps", &a.g_steps, 0, 1 << 20);
    c.Number("lr", &a.lr, 0.0, 100.0);
    c.Number("bn_weight", &a.bn_weight, 0.0, 1e6);
    c.Number("oh_weight", &a.oh_weight, 0.0, 1e6);
    c.Number("adv_weight", &a.adv_weight, 0.0, 1e6);
    c.Number("tv_weight", &a.tv_weight, 0.0, 1e6);
    c.Number("l2_weight", &a.l2_weight, 0.0, 1e6);
    c.Number("student_bn_weight", &a.student_bn_weight, 0.0, 1e6);
    c.Int("jitter", &a.jitter, 0, 1024);
    c.Int("pool_max_images", &a.pool_max_images, 1, kBig);
    c.Bool("keep_lowest_loss", &a.keep_lowest_loss);
  });
  r.Object("fast", [&](ObjectReader& c) {
    FastSpec& a = d->fast;
    c.Int("nz", &a.nz, 1, 1 << 16);
    c.Int("g_steps", &a.g_steps, 1, 1 << 20);
    c.Number("lr_g", &a.lr_g, 0.0, 10.0);
    c.Number("lr_z", &a.lr_z, 0.0, 100.0);
    c.Number("bn_weight", &a.bn_weight, 0.0, 1e6);
    c.Number("oh_weight", &a.oh_weight, 0.0, 1e6);
    c.Number("adv_weight", &a.adv_weight, 0.0, 1e6);
    c.Number("bn_momentum", &a.bn_momentum, 0.0, 0.999);
    c.Int("warmup", &a.warmup, 0, 1 << 20);
    c.Enum("meta", &a.meta, {"fomaml", "reptile"});
    c.Bool("reset_l0", &a.reset_l0);
    c.Int("reset_l0_after", &a.reset_l0_after, 0, kBig);
    c.Int("pool_max_images", &a.pool_max_images, 1, kBig);
  });
  r.Object("cmi", [&](ObjectReader& c) {
    CmiSpec& a = d->cmi;
    c.Int("nz", &a.nz, 1, 1 << 16);
    c.Int("g_steps", &a.g_steps, 1, 1 << 20);
    c.Number("lr_g", &a.lr_g, 0.0, 10.0);
    c.Number("bn_weight", &a.bn_weight, 0.0, 1e6);
    c.Number("oh_weight", &a.oh_weight, 0.0, 1e6);
    c.Number("adv_weight", &a.adv_weight, 0.0, 1e6);
    c.Number("cr_weight", &a.cr_weight, 0.0, 1e6);
    c.Number("cr_temperature", &a.cr_temperature, 1e-4, 100.0);
    c.Int("head_dim", &a.head_dim, 1, 1 << 16);
    c.Int("bank_size", &a.bank_size, 1, kBig);
    c.Int("n_neg", &a.n_neg, 0, kBig);
    c.Number("local_scale_min", &a.local_scale_min, 0.01, 1.0);
    c.Int("pool_max_images", &a.pool_max_images, 1, kBig);
    if (a.n_neg > a.bank_size) c.Error(c.Path("n_neg"), "must be <= bank_size");
  });
  r.Object("class_bank", [&](ObjectReader& c) {
    ClassBankSpec& a = d->class_bank;
    c.Enum("unit", &a.unit, {"generator", "inversion"});
    c.Int("nz", &a.nz, 1, 1 << 16);
    c.Int("ngf", &a.ngf, 1, 1 << 12);
    c.Int("g_steps", &a.g_steps, 0, 1 << 20);
    c.Number("lr", &a.lr, 0.0, 100.0);
    c.Number("bn_weight", &a.bn_weight, 0.0, 1e6);
    c.Number("oh_weight", &a.oh_weight, 0.0, 1e6);
    c.Number("adv_weight", &a.adv_weight, 0.0, 1e6);
    c.Int("images_per_class", &a.images_per_class, 1, 1 << 16);
    c.Int("classes_per_round", &a.classes_per_round, 0, 1 << 20);
    c.Int("class_begin", &a.class_begin, 0, 1 << 20);
    c.Int("class_end", &a.class_end, 0, 1 << 20);
    c.Int("pool_max_images", &a.pool_max_images, 1, kBig);
    if (a.class_end != 0 && a.class_end <= a.class_begin) {
      c.Error(c.Path("class_end"), "must be > class_begin (or 0 = every class)");
    }
  });
  r.Object("pool", [&](ObjectReader& c) {
    c.String("path", &d->pool.path);
    c.Enum("normalize", &d->pool.normalize, {"task", "imagenet", "half"});
  });
  if (MethodUsesPool(d->method) && d->pool.path.empty()) {
    r.Error(r.Path("pool.path"), "required for method " + d->method +
                                     " (an unlabeled pool file; build one with `dfkd pool`)");
  }
  r.Object("mosaickd", [&](ObjectReader& c) {
    MosaicKdSpec& a = d->mosaickd;
    c.Int("nz", &a.nz, 1, 1 << 16);
    c.Int("ndf", &a.ndf, 1, 1 << 12);
    c.Number("lr_g", &a.lr_g, 0.0, 10.0);
    c.Number("lr_d", &a.lr_d, 0.0, 10.0);
    c.Number("local_weight", &a.local_weight, 0.0, 1e6);
    c.Number("align_weight", &a.align_weight, 0.0, 1e6);
    c.Number("adv_weight", &a.adv_weight, 0.0, 1e6);
    c.Number("balance_weight", &a.balance_weight, 0.0, 1e6);
    c.Int("ood_subset", &a.ood_subset, 0, kBig);
  });
  r.Object("dfnd", [&](ObjectReader& c) {
    DfndSpec& a = d->dfnd;
    c.Int("num_select", &a.num_select, 0, kBig);
    c.Number("teacher_accuracy", &a.teacher_accuracy, 1e-6, 1.0 - 1e-6);
    c.Number("lr_theta", &a.lr_theta, 0.0, 10.0);
  });
}

void ReadKdci(ObjectReader& r, KdciSpec* k, const std::string& method) {
  r.Bool("enabled", &k->enabled);
  k->num_prototypes = DefaultKdciPrototypes(method);
  if (const json* v = r.Get("num_prototypes")) {
    if (!v->is_number_integer() || v->get<int64_t>() < 1) {
      r.Error(r.Path("num_prototypes"), "must be >= 1");
    } else {
      k->num_prototypes = v->get<int64_t>();
    }
  }
  r.Enum("feature_source", &k->feature_source, {"teacher", "other"});
  r.Object("other_teacher", [&](ObjectReader& c) { ReadTeacher(c, &k->other_teacher); });
  r.Enum("ablation", &k->ablation,
         {"none", "random_lambda", "random_z", "no_prior", "other_z"});
  r.Int("hidden", &k->hidden, 0, 1 << 16);
  r.Bool("bias", &k->bias);
  r.Bool("detach_query", &k->detach_query);
  r.Enum("pca", &k->pca, {"variance", "fixed", "off"});
  r.Number("pca_variance", &k->pca_variance, 1e-6, 1.0);
  r.Int("pca_dim", &k->pca_dim, 0, 1 << 16);
  r.Int("kmeans_max_iters", &k->kmeans_max_iters, 1, 100000);
  r.Enum("rebuild", &k->rebuild, {"every_round", "every_step", "once"});
  const bool other = k->feature_source == "other" || k->ablation == "other_z";
  if (other && (k->feature_source != "other" || k->ablation != "other_z")) {
    r.Error(r.Path("ablation"),
            "other_z and feature_source \"other\" go together (Table 5's other Z)");
  }
  if (other && k->other_teacher.weights.empty()) {
    r.Error(r.Path("other_teacher"), "required for feature_source \"other\"");
  }
  if (k->pca == "fixed" && k->pca_dim < 1) {
    r.Error(r.Path("pca_dim"), "must be >= 1 for pca \"fixed\"");
  }
}

void ReadDist(ObjectReader& r, DistSpec* d, const RuntimeSpec& rt) {
  r.Int("world_size", &d->world_size, 1, 4096);
  r.Enum("backend", &d->backend, {"gloo", "nccl"});
  r.Int("bucket_mb", &d->bucket_mb, 1, 4096);
  r.Bool("overlap", &d->overlap);
  r.Int("timeout_seconds", &d->timeout_seconds, 1, 86400);
  if (d->backend == "nccl" && rt.device != "cuda") {
    r.Error(r.Path("backend"), "nccl needs runtime.device \"cuda\"");
  }
}

void ReadRuntime(ObjectReader& r, RuntimeSpec* rt) {
  r.Int("threads", &rt->threads, 0, 1024);
  r.Enum("device", &rt->device, {"cpu", "cuda"});
  r.Bool("channels_last", &rt->channels_last);
}

}  // namespace

int64_t DefaultKdSteps(const std::string& method) { return TraitsOf(method).kd_steps; }

double DefaultTemperature(const std::string& method) { return TraitsOf(method).temperature; }

bool MethodUsesPool(const std::string& method) { return TraitsOf(method).uses_pool; }

int64_t DefaultKdciPrototypes(const std::string& method) { return TraitsOf(method).prototypes; }

const char* JobKindName(JobKind kind) {
  switch (kind) {
    case JobKind::kTrainTeacher: return "train_teacher";
    case JobKind::kTrainStudentScratch: return "train_student_scratch";
    case JobKind::kDistill: return "distill";
  }
  return "?";
}

std::string SpecParseResult::ErrorText() const {
  std::string s;
  for (const SpecError& e : errors) s += e.ToString() + "\n";
  return s;
}

SpecParseResult ParseJobSpec(const json& j) {
  SpecParseResult result;
  JobSpec spec;
  {
    ObjectReader r(j, "", &result.errors);
    if (!r.Has("version")) {
      r.Error("version", "required (this build reads version " +
                             std::to_string(kJobSpecVersion) + ")");
    }
    int64_t version = kJobSpecVersion;
    r.Int("version", &version, 1, kJobSpecVersion);
    spec.version = static_cast<int>(version);
    std::string kind;
    if (!r.Has("kind")) r.Error("kind", "required");
    r.Enum("kind", &kind, {"train_teacher", "train_student_scratch", "distill"});
    if (kind == "train_student_scratch") spec.kind = JobKind::kTrainStudentScratch;
    if (kind == "distill") spec.kind = JobKind::kDistill;
    r.String("name", &spec.name);
    r.Int("seed", &spec.seed, 0, kBig);
    r.Object("data", [&](ObjectReader& c) { ReadData(c, &spec.data); });
    if (!r.Has("model")) r.Error("model", "required");
    r.Object("model", [&](ObjectReader& c) { ReadModel(c, &spec.model); });
    r.Object("train", [&](ObjectReader& c) { ReadTrain(c, &spec.train); });
    r.Object("runtime", [&](ObjectReader& c) { ReadRuntime(c, &spec.runtime); });
    r.Object("dist", [&](ObjectReader& c) { ReadDist(c, &spec.dist, spec.runtime); });
    if (spec.kind == JobKind::kDistill) {
      if (!r.Has("distill")) r.Error("distill", "required for kind distill");
      r.Object("distill", [&](ObjectReader& c) { ReadDistill(c, &spec.distill); });
      spec.kdci.num_prototypes = DefaultKdciPrototypes(spec.distill.method);
      r.Object("kdci", [&](ObjectReader& c) { ReadKdci(c, &spec.kdci, spec.distill.method); });
    } else {
      if (r.Has("distill")) r.Error("distill", "only for kind distill");
      if (r.Has("kdci")) r.Error("kdci", "only for kind distill");
      r.Get("distill");
      r.Get("kdci");
    }
  }  // the reader's destructor reports unknown top-level fields
  if (result.errors.empty()) result.spec = spec;
  return result;
}

SpecParseResult LoadJobSpecFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return {std::nullopt, {{path, "cannot open file"}}};
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false,
                       /*ignore_comments=*/true);
  if (j.is_discarded()) return {std::nullopt, {{path, "not valid JSON"}}};
  return ParseJobSpec(j);
}

namespace {
json ModelJson(const ModelSpec& m) {
  return {{"arch", m.arch},
          {"depth", m.depth},
          {"widen_factor", m.widen_factor},
          {"width_mult", m.width_mult},
          {"dropout", m.dropout}};
}
json TeacherJson(const TeacherSpec& t) {
  return {{"weights", t.weights}, {"model", ModelJson(t.model)}, {"num_classes", t.num_classes}};
}
}  // namespace

json ToJson(const JobSpec& s) {
  const OptimSpec& o = s.train.optim;
  json j = json{
      {"version", s.version},
      {"kind", JobKindName(s.kind)},
      {"name", s.name},
      {"seed", s.seed},
      {"data",
       {{"dataset", s.data.dataset},
        {"root", s.data.root},
        {"augment", s.data.augment},
        {"crop_padding", s.data.crop_padding},
        {"horizontal_flip", s.data.horizontal_flip},
        {"image_size", s.data.image_size},
        {"train_limit", s.data.train_limit},
        {"test_limit", s.data.test_limit}}},
      {"model", ModelJson(s.model)},
      {"train",
       {{"epochs", s.train.epochs},
        {"max_steps", s.train.max_steps},
        {"batch_size", s.train.batch_size},
        {"eval_batch_size", s.train.eval_batch_size},
        {"eval_every_epochs", s.train.eval_every_epochs},
        {"checkpoint_every_steps", s.train.checkpoint_every_steps},
        {"optim",
         {{"lr", o.lr},
          {"momentum", o.momentum},
          {"weight_decay", o.weight_decay},
          {"nesterov", o.nesterov},
          {"schedule", o.schedule},
          {"milestones", o.milestones},
          {"gamma", o.gamma},
          {"eta_min", o.eta_min},
          {"warmup_steps", o.warmup_steps}}}}},
      {"dist",
       {{"world_size", s.dist.world_size},
        {"backend", s.dist.backend},
        {"bucket_mb", s.dist.bucket_mb},
        {"overlap", s.dist.overlap},
        {"timeout_seconds", s.dist.timeout_seconds}}},
      {"runtime",
       {{"threads", s.runtime.threads},
        {"device", s.runtime.device},
        {"channels_last", s.runtime.channels_last}}},
  };
  if (s.kind == JobKind::kDistill) {
    const DistillSpec& d = s.distill;
    const KdciSpec& k = s.kdci;
    j["distill"] = {{"teacher", TeacherJson(d.teacher)},
                    {"method", d.method},
                    {"temperature", d.temperature},
                    {"steps_per_epoch", d.steps_per_epoch},
                    {"kd_steps", d.kd_steps},
                    {"synthesis_batch_size", d.synthesis_batch_size},
                    {"noise_stddev", d.noise_stddev}};
    // Only the active method's block: adding a method never changes the
    // canonical JSON (and so the hash) of another method's specs.
    if (d.method == "dafl") {
      j["distill"]["dafl"] = {{"nz", d.dafl.nz},
                              {"g_steps", d.dafl.g_steps},
                              {"lr_g", d.dafl.lr_g},
                              {"oh_weight", d.dafl.oh_weight},
                              {"ie_weight", d.dafl.ie_weight},
                              {"act_weight", d.dafl.act_weight}};
    } else if (d.method == "deepinv") {
      j["distill"]["deepinv"] = {{"g_steps", d.deepinv.g_steps},
                                 {"lr", d.deepinv.lr},
                                 {"bn_weight", d.deepinv.bn_weight},
                                 {"oh_weight", d.deepinv.oh_weight},
                                 {"adv_weight", d.deepinv.adv_weight},
                                 {"tv_weight", d.deepinv.tv_weight},
                                 {"l2_weight", d.deepinv.l2_weight},
                                 {"student_bn_weight", d.deepinv.student_bn_weight},
                                 {"jitter", d.deepinv.jitter},
                                 {"pool_max_images", d.deepinv.pool_max_images},
                                 {"keep_lowest_loss", d.deepinv.keep_lowest_loss}};
    } else if (d.method == "fast") {
      j["distill"]["fast"] = {{"nz", d.fast.nz},
                              {"g_steps", d.fast.g_steps},
                              {"lr_g", d.fast.lr_g},
                              {"lr_z", d.fast.lr_z},
                              {"bn_weight", d.fast.bn_weight},
                              {"oh_weight", d.fast.oh_weight},
                              {"adv_weight", d.fast.adv_weight},
                              {"bn_momentum", d.fast.bn_momentum},
                              {"warmup", d.fast.warmup},
                              {"meta", d.fast.meta},
                              {"reset_l0", d.fast.reset_l0},
                              {"reset_l0_after", d.fast.reset_l0_after},
                              {"pool_max_images", d.fast.pool_max_images}};
    } else if (d.method == "cmi") {
      const CmiSpec& a = d.cmi;
      j["distill"]["cmi"] = {{"nz", a.nz},
                             {"g_steps", a.g_steps},
                             {"lr_g", a.lr_g},
                             {"bn_weight", a.bn_weight},
                             {"oh_weight", a.oh_weight},
                             {"adv_weight", a.adv_weight},
                             {"cr_weight", a.cr_weight},
                             {"cr_temperature", a.cr_temperature},
                             {"head_dim", a.head_dim},
                             {"bank_size", a.bank_size},
                             {"n_neg", a.n_neg},
                             {"local_scale_min", a.local_scale_min},
                             {"pool_max_images", a.pool_max_images}};
    } else if (d.method == "class_bank") {
      const ClassBankSpec& a = d.class_bank;
      j["distill"]["class_bank"] = {{"unit", a.unit},
                                    {"nz", a.nz},
                                    {"ngf", a.ngf},
                                    {"g_steps", a.g_steps},
                                    {"lr", a.lr},
                                    {"bn_weight", a.bn_weight},
                                    {"oh_weight", a.oh_weight},
                                    {"adv_weight", a.adv_weight},
                                    {"images_per_class", a.images_per_class},
                                    {"classes_per_round", a.classes_per_round},
                                    {"class_begin", a.class_begin},
                                    {"class_end", a.class_end},
                                    {"pool_max_images", a.pool_max_images}};
    } else if (d.method == "mosaickd") {
      const MosaicKdSpec& a = d.mosaickd;
      j["distill"]["mosaickd"] = {{"nz", a.nz},
                                  {"ndf", a.ndf},
                                  {"lr_g", a.lr_g},
                                  {"lr_d", a.lr_d},
                                  {"local_weight", a.local_weight},
                                  {"align_weight", a.align_weight},
                                  {"adv_weight", a.adv_weight},
                                  {"balance_weight", a.balance_weight},
                                  {"ood_subset", a.ood_subset}};
    } else if (d.method == "dfnd") {
      j["distill"]["dfnd"] = {{"num_select", d.dfnd.num_select},
                              {"teacher_accuracy", d.dfnd.teacher_accuracy},
                              {"lr_theta", d.dfnd.lr_theta}};
    }
    if (MethodUsesPool(d.method)) {
      j["distill"]["pool"] = {{"path", d.pool.path}, {"normalize", d.pool.normalize}};
    }
    j["kdci"] = {{"enabled", k.enabled},
                 {"num_prototypes", k.num_prototypes},
                 {"feature_source", k.feature_source},
                 {"ablation", k.ablation},
                 {"hidden", k.hidden},
                 {"bias", k.bias},
                 {"detach_query", k.detach_query},
                 {"pca", k.pca},
                 {"pca_variance", k.pca_variance},
                 {"pca_dim", k.pca_dim},
                 {"kmeans_max_iters", k.kmeans_max_iters},
                 {"rebuild", k.rebuild}};
    if (!k.other_teacher.weights.empty()) j["kdci"]["other_teacher"] = TeacherJson(k.other_teacher);
  }
  return j;
}

std::string CanonicalHash(const JobSpec& spec) {
  // FNV-1a 64 over the canonical dump (nlohmann sorts object keys). The name
  // is presentation only, so it does not take part.
  json j = ToJson(spec);
  j.erase("name");
  return Fnv1a64Hex(j.dump());
}

}  // namespace dfkd::common
