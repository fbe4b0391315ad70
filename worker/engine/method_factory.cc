#include "worker/engine/method_factory.h"

#include <stdexcept>

#include "worker/kdci/kdci_method.h"
#include "worker/data/transforms.h"
#include "worker/methods/dafl.h"
#include "worker/methods/deep_inversion.h"
#include "worker/methods/fast_meta.h"
#include "worker/methods/noise_method.h"

namespace dfkd::worker {
namespace {

PcaMode ParsePca(const std::string& s) {
  if (s == "fixed") return PcaMode::kFixedDim;
  if (s == "off") return PcaMode::kOff;
  return PcaMode::kVariance;
}

}  // namespace

std::unique_ptr<Method> MakeMethod(const common::JobSpec& spec, const MethodDeps& deps,
                                   Classifier other_teacher) {
  const common::DistillSpec& d = spec.distill;
  std::unique_ptr<Method> method;
  if (d.method == "noise") {
    method = std::make_unique<NoiseMethod>(NoiseOptions()
                                               .temperature(d.temperature)
                                               .stddev(d.noise_stddev)
                                               .synthesis_batch_size(d.synthesis_batch_size),
                                           deps);
  } else if (d.method == "dafl") {
    const common::DaflSpec& a = d.dafl;
    method = std::make_unique<Dafl>(DaflOptions()
                                        .temperature(d.temperature)
                                        .nz(a.nz)
                                        .synthesis_batch_size(d.synthesis_batch_size)
                                        .g_steps(a.g_steps)
                                        .lr_g(a.lr_g)
                                        .oh_weight(a.oh_weight)
                                        .ie_weight(a.ie_weight)
                                        .act_weight(a.act_weight)
                                        .norm(deps.norm),
                                    deps);
  } else if (d.method == "deepinv") {
    const common::DeepInvSpec& a = d.deepinv;
    method = std::make_unique<DeepInversion>(DeepInversionOptions()
                                                 .temperature(d.temperature)
                                                 .synthesis_batch_size(d.synthesis_batch_size)
                                                 .g_steps(a.g_steps)
                                                 .lr(a.lr)
                                                 .bn_weight(a.bn_weight)
                                                 .oh_weight(a.oh_weight)
                                                 .adv_weight(a.adv_weight)
                                                 .tv_weight(a.tv_weight)
                                                 .l2_weight(a.l2_weight)
                                                 .student_bn_weight(a.student_bn_weight)
                                                 .jitter(a.jitter)
                                                 .pool_max_images(a.pool_max_images)
                                                 .keep_lowest_loss(a.keep_lowest_loss)
                                                 .crop_padding(deps.crop_padding)
                                                 .norm(deps.norm),
                                             deps);
  } else if (d.method == "fast") {
    const common::FastSpec& a = d.fast;
    method = std::make_unique<FastMethod>(
        FastOptions()
            .temperature(d.temperature)
            .nz(a.nz)
            .synthesis_batch_size(d.synthesis_batch_size)
            .g_steps(a.g_steps)
            .lr_g(a.lr_g)
            .lr_z(a.lr_z)
            .bn_weight(a.bn_weight)
            .oh_weight(a.oh_weight)
            .adv_weight(a.adv_weight)
            .bn_momentum(a.bn_momentum)
            .warmup(a.warmup)
            .meta(a.meta == "reptile" ? FastMetaUpdate::kReptile : FastMetaUpdate::kFomaml)
            .reset_l0(a.reset_l0)
            .reset_l0_after(a.reset_l0_after)
            .pool_max_images(a.pool_max_images)
            .crop_padding(deps.crop_padding)
            .norm(deps.norm),
        deps);
  } else {
    throw std::invalid_argument("distill.method: '" + d.method + "' is not built in yet");
  }
  const common::KdciSpec& k = spec.kdci;
  if (!k.enabled) return method;

  const KdciAblation ablation = ParseKdciAblation(k.ablation);
  Classifier source = deps.teacher;
  int64_t dictionary_dim = deps.num_classes;
  if (ablation == KdciAblation::kOtherZ) {
    if (!other_teacher) throw std::invalid_argument("kdci.other_teacher: required for other_z");
    source = other_teacher;
    dictionary_dim = other_teacher->num_classes();
  }
  DictionaryOptions dict;
  dict.num_prototypes(k.num_prototypes > 0 ? k.num_prototypes
                                         : common::DefaultKdciPrototypes(d.method))
      .pca_mode(ParsePca(k.pca))
      .pca_variance(k.pca_variance)
      .pca_dim(k.pca_dim)
      .max_iters(k.kmeans_max_iters)
      .seed(static_cast<uint64_t>(spec.seed));
  InterventionOptions inter(deps.num_classes, dictionary_dim);
  inter.hidden(k.hidden).bias(k.bias).detach_query(k.detach_query).ablation(ablation);
  KdciOptions options(dict, inter);
  options.rebuild = k.rebuild == "every_step" ? KdciOptions::Rebuild::kEveryStep
                    : k.rebuild == "once"     ? KdciOptions::Rebuild::kOnce
                                              : KdciOptions::Rebuild::kEveryRound;
  options.feature_source = k.feature_source;
  return std::make_unique<KdciMethod>(std::move(method), options, source);
}

}  // namespace dfkd::worker
