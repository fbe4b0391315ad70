#include "worker/kdci/kdci_method.h"

#include <ATen/CPUGeneratorImpl.h>

#include <stdexcept>

namespace dfkd::worker {

// Rows per chunk when replaying cached pool logits (the streamed build's
// reservoir draws per row, so chunking does not change the dictionary).
constexpr int64_t kCachedChunk = 8192;

KdciAblation ParseKdciAblation(const std::string& name) {
  if (name == "none") return KdciAblation::kNone;
  if (name == "random_lambda") return KdciAblation::kRandomLambda;
  if (name == "random_z") return KdciAblation::kRandomZ;
  if (name == "no_prior") return KdciAblation::kNoPrior;
  if (name == "other_z") return KdciAblation::kOtherZ;
  throw std::invalid_argument("kdci.ablation: unknown '" + name + "'");
}

const char* KdciAblationName(KdciAblation a) {
  switch (a) {
    case KdciAblation::kNone: return "none";
    case KdciAblation::kRandomLambda: return "random_lambda";
    case KdciAblation::kRandomZ: return "random_z";
    case KdciAblation::kNoPrior: return "no_prior";
    case KdciAblation::kOtherZ: return "other_z";
  }
  return "?";
}

KdciMethod::KdciMethod(std::unique_ptr<Method> inner, KdciOptions options,
                       Classifier feature_source)
    : inner_(std::move(inner)), options_(std::move(options)),
      feature_source_(std::move(feature_source)),
      intervention_(options_.intervention) {
  TORCH_CHECK(inner_, "kdci: no inner method");
  TORCH_CHECK(feature_source_, "kdci: no feature source model");
  // Extra student parameters: on the models' device (the engine puts the
  // teacher, the other teacher and the student on one device) before the
  // student optimizer takes them.
  intervention_->to(DeviceOf(*feature_source_));
}

torch::Tensor KdciMethod::FeatureLogits(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  const bool was_training = feature_source_->is_training();
  feature_source_->eval();
  torch::Tensor logits = feature_source_->forward(x);
  feature_source_->train(was_training);
  return logits;
}

void KdciMethod::Synthesize(const RoundContext& ctx) {
  inner_->Synthesize(ctx);
  using R = KdciOptions::Rebuild;
  const bool once = options_.rebuild == R::kOnce || inner_->has_pool() ||
                    options_.intervention.ablation() == KdciAblation::kRandomZ;
  if (!prototypes_.defined() || (!once && options_.rebuild == R::kEveryRound)) {
    RefreshDictionary(ctx);
  }
}

DictionaryOptions KdciMethod::SeededOptions(const RoundContext& ctx) const {
  DictionaryOptions opts = options_.dictionary;
  opts.seed(opts.seed() ^ (ctx.seed * 0x9e3779b97f4a7c15ull) ^
            static_cast<uint64_t>(ctx.global_step));
  return opts;
}

void KdciMethod::Adopt(const ConfounderDictionary& dict, Communicator* comm) {
  // The dictionary lives on the CPU (built there, broadcast and checkpointed
  // from there); PriorTerm moves it to the logits' device.
  prototypes_ = dict.prototypes.defined() ? dict.prototypes.cpu() : dict.prototypes;
  prior_ = dict.prior.defined() ? dict.prior.cpu() : dict.prior;
  last_pca_dim_ = dict.pca_dim_used;
  ShareFromRoot(comm);
  ++builds_;
}

void KdciMethod::RefreshDictionaryFrom(const torch::Tensor& logits, const RoundContext& ctx) {
  ConfounderDictionary dict;
  if (ctx.comm == nullptr || ctx.comm->is_root()) {
    dict = BuildDictionary(logits.detach().cpu(), SeededOptions(ctx));
  }
  Adopt(dict, ctx.comm);
}

void KdciMethod::RefreshDictionary(const RoundContext& ctx) {
  ConfounderDictionary dict;
  if (ctx.comm == nullptr || ctx.comm->is_root()) {
    DictionaryOptions opts = SeededOptions(ctx);
    if (options_.intervention.ablation() == KdciAblation::kRandomZ) {
      // (3) random z: a dictionary that knows nothing of the data, drawn once,
      // with the scale of the feature source's logits so F(z) is comparable.
      torch::Tensor x = inner_->LastSynthesized();
      double scale = x.defined() ? FeatureLogits(x).std().item<double>() : 1.0;
      dict = RandomDictionary(opts.num_prototypes(), options_.intervention.dictionary_dim(),
                              scale, opts.seed());
    } else if (inner_->has_pool()) {
      StreamingDictionaryBuilder builder(opts, options_.pool_max_points);
      // Both passes of the streamed build read the pool's feature logits:
      // from the inner method when it already ran this network over the
      // pool (DFND's selection), else by running it chunk by chunk.
      const torch::Tensor cached = inner_->CachedPoolLogits(*feature_source_);
      auto for_each_logits = [&](const std::function<void(const torch::Tensor&)>& fn) {
        if (cached.defined()) {
          for (int64_t begin = 0; begin < cached.size(0); begin += kCachedChunk) {
            fn(cached.narrow(0, begin, std::min(kCachedChunk, cached.size(0) - begin)));
          }
        } else {
          inner_->ForEachPoolChunk([&](const torch::Tensor& x) { fn(FeatureLogits(x).cpu()); });
        }
      };
      pool_logits_cached_ = cached.defined();
      for_each_logits([&](const torch::Tensor& logits) { builder.Add(logits); });
      dict = builder.Finish(for_each_logits);
    } else {
      torch::Tensor x = inner_->LastSynthesized();
      TORCH_CHECK(x.defined(), "kdci: method ", inner_->name(),
                  " produced no substitute batch to build the dictionary from");
      dict = BuildDictionary(FeatureLogits(x).cpu(), opts);
    }
  }
  Adopt(dict, ctx.comm);
}

void KdciMethod::ShareFromRoot(Communicator* comm) {
  if (comm == nullptr || comm->size() == 1) return;
  // All ranks must use one dictionary; its size is only known on rank 0.
  std::vector<torch::Tensor> shape = {
      comm->is_root() ? torch::tensor({prototypes_.size(0), prototypes_.size(1)})
                      : torch::zeros({2}, torch::kInt64)};
  comm->Broadcast(shape, 0);
  if (!comm->is_root()) {
    prototypes_ = torch::zeros({shape[0][0].item<int64_t>(), shape[0][1].item<int64_t>()});
    prior_ = torch::zeros({shape[0][0].item<int64_t>()});
  }
  std::vector<torch::Tensor> data = {prototypes_, prior_};
  comm->Broadcast(data, 0);
}

torch::Tensor KdciMethod::RandomLambda(int64_t batch, uint64_t seed, int64_t step) const {
  at::Generator gen = at::detail::createCPUGenerator(seed * 0x2545f4914f6cdd1dull ^
                                                     static_cast<uint64_t>(step));
  torch::Tensor w = torch::rand({batch, prototypes_.size(0)}, gen, torch::kFloat32);
  return w / w.sum(1, /*keepdim=*/true);
}

torch::Tensor KdciMethod::DistillLoss(const DistillBatch& batch, const RoundContext& ctx) {
  const bool every_step = options_.rebuild == KdciOptions::Rebuild::kEveryStep &&
                          !inner_->has_pool() &&
                          options_.intervention.ablation() != KdciAblation::kRandomZ;
  if (every_step) {
    // The KD batch's teacher logits are the feature source's logits when the
    // source is the teacher; another source must embed the batch itself.
    RefreshDictionaryFrom(options_.feature_source == "teacher"
                              ? batch.teacher.logits
                              : FeatureLogits(batch.inputs),
                          ctx);
  }
  TORCH_CHECK(prototypes_.defined(), "kdci: DistillLoss before the first dictionary build");
  torch::Tensor random_lambda;
  const torch::Tensor& s = batch.student.logits;
  if (options_.intervention.ablation() == KdciAblation::kRandomLambda) {
    random_lambda = RandomLambda(s.size(0), ctx.seed, ctx.global_step);
  }
  DistillBatch adjusted = batch;
  adjusted.kd_logits = intervention_->forward(s, prototypes_, prior_, random_lambda);
  return inner_->DistillLoss(adjusted, ctx);
}

torch::Tensor KdciMethod::CompensatedLogits(const torch::Tensor& s) {
  if (!prototypes_.defined()) return {};
  torch::NoGradGuard no_grad;
  torch::Tensor random_lambda;
  if (options_.intervention.ablation() == KdciAblation::kRandomLambda) {
    random_lambda = RandomLambda(s.size(0), 0, 0);
  }
  return intervention_->forward(s, prototypes_, prior_, random_lambda);
}

std::vector<torch::Tensor> KdciMethod::ExtraStudentParameters() {
  std::vector<torch::Tensor> p = inner_->ExtraStudentParameters();
  for (const torch::Tensor& t : intervention_->parameters()) p.push_back(t);
  return p;
}

nlohmann::json KdciMethod::Describe() const {
  nlohmann::json j = inner_->Describe();
  const InterventionOptions& io = options_.intervention;
  const DictionaryOptions& d = options_.dictionary;
  j["kdci"] = {
      {"enabled", true},
      {"ablation", KdciAblationName(io.ablation())},
      {"num_prototypes", d.num_prototypes()},
      {"dictionary_size_last", prototypes_.defined() ? prototypes_.size(0) : 0},
      {"pca_dim_last", last_pca_dim_},
      {"dictionary_builds", builds_},
      {"pool_logits_reused", pool_logits_cached_},
      {"feature_source", options_.feature_source},
      {"hidden", io.hidden() > 0 ? io.hidden() : io.classes()},
      {"bias", io.bias()},
      {"detach_query", io.detach_query()},
      {"rebuild", inner_->has_pool() || options_.rebuild == KdciOptions::Rebuild::kOnce
                      ? "once"
                      : options_.rebuild == KdciOptions::Rebuild::kEveryStep ? "every_step"
                                                                             : "every_round"},
  };
  return j;
}

void KdciMethod::Save(torch::serialize::OutputArchive& archive) const {
  torch::serialize::OutputArchive inner, module;
  inner_->Save(inner);
  intervention_->save(module);
  archive.write("inner", inner);
  archive.write("kdci_intervention", module);
  archive.write("kdci_builds", torch::tensor(builds_));
  if (prototypes_.defined()) {
    archive.write("kdci_prototypes", prototypes_);
    archive.write("kdci_prior", prior_);
  }
}

void KdciMethod::Load(torch::serialize::InputArchive& archive) {
  torch::serialize::InputArchive inner, module;
  archive.read("inner", inner);
  inner_->Load(inner);
  archive.read("kdci_intervention", module);
  const torch::Device dev = DeviceOf(*intervention_);
  intervention_->load(module);
  intervention_->to(dev);  // load() may have put CPU tensors in place; same tensors, moved back
  // Fresh tensors: reading into a defined tensor would try to resize it.
  torch::Tensor builds, prototypes, prior;
  archive.read("kdci_builds", builds);
  builds_ = builds.item<int64_t>();
  if (archive.try_read("kdci_prototypes", prototypes)) {
    archive.read("kdci_prior", prior);
    prototypes_ = prototypes.cpu();
    prior_ = prior.cpu();
  }
}

}  // namespace dfkd::worker
