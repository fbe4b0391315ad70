#include "worker/engine/method_factory.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "worker/kdci/kdci_method.h"
#include "worker/data/transforms.h"
#include "worker/data/unlabeled_pool.h"
#include "worker/engine/lr_schedule.h"
#include "worker/methods/class_bank_method.h"
#include "worker/methods/cmi.h"
#include "worker/methods/dafl.h"
#include "worker/methods/deep_inversion.h"
#include "worker/methods/dfnd.h"
#include "worker/methods/fast_meta.h"
#include "worker/methods/mosaic_kd.h"
#include "worker/methods/noise_method.h"

namespace dfkd::worker {
namespace {

PcaMode ParsePca(const std::string& s) {
  if (s == "fixed") return PcaMode::kFixedDim;
  if (s == "off") return PcaMode::kOff;
  return PcaMode::kVariance;
}

// distill.pool.normalize -> the statistics pool images are normalised with.
Normalization PoolNormalization(const std::string& mode, const MethodDeps& deps) {
  if (mode == "imagenet") {
    if (deps.image_shape.at(0) != 3) {
      throw std::invalid_argument("distill.pool.normalize: imagenet needs 3-channel images");
    }
    return NormalizationFor("imagenet");
  }
  if (mode == "half") {
    const size_t c = static_cast<size_t>(deps.image_shape.at(0));
    return {std::vector<float>(c, 0.5f), std::vector<float>(c, 0.5f)};
  }
  return deps.norm;
}

}  // namespace

std::unique_ptr<Method> MakeMethod(const common::JobSpec& spec, const MethodDeps& deps,
                                   Classifier other_teacher, int64_t rank, int64_t world) {
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
  } else if (d.method == "cmi") {
    const common::CmiSpec& a = d.cmi;
    method = std::make_unique<CmiMethod>(CmiOptions()
                                             .temperature(d.temperature)
                                             .nz(a.nz)
                                             .synthesis_batch_size(d.synthesis_batch_size)
                                             .g_steps(a.g_steps)
                                             .lr_g(a.lr_g)
                                             .bn_weight(a.bn_weight)
                                             .oh_weight(a.oh_weight)
                                             .adv_weight(a.adv_weight)
                                             .cr_weight(a.cr_weight)
                                             .cr_temperature(a.cr_temperature)
                                             .head_dim(a.head_dim)
                                             .bank_size(a.bank_size)
                                             .n_neg(a.n_neg)
                                             .local_scale_min(a.local_scale_min)
                                             .pool_max_images(a.pool_max_images)
                                             .crop_padding(deps.crop_padding)
                                             .norm(deps.norm),
                                         deps);
  } else if (d.method == "class_bank") {
    const common::ClassBankSpec& a = d.class_bank;
    ClassRange owned{a.class_begin, a.class_end};
    if (a.class_begin == 0 && a.class_end == 0 && world > 1) {
      owned = ShardOf(deps.num_classes, rank, world);  // each rank its share
    }
    method = std::make_unique<ClassBankMethod>(ClassBankOptions()
                                                   .temperature(d.temperature)
                                                   .unit(ParseClassBankUnit(a.unit))
                                                   .nz(a.nz)
                                                   .ngf(a.ngf)
                                                   .g_steps(a.g_steps)
                                                   .lr(a.lr)
                                                   .bn_weight(a.bn_weight)
                                                   .oh_weight(a.oh_weight)
                                                   .adv_weight(a.adv_weight)
                                                   .images_per_class(a.images_per_class)
                                                   .classes_per_round(a.classes_per_round)
                                                   .class_begin(owned.begin)
                                                   .class_end(owned.end)
                                                   .pool_max_images(a.pool_max_images)
                                                   .crop_padding(deps.crop_padding)
                                                   .norm(deps.norm),
                                               deps);
  } else if (d.method == "mosaickd") {
    const common::MosaicKdSpec& a = d.mosaickd;
    torch::Tensor pool = LoadUnlabeledPool(d.pool.path, deps.image_shape,
                                           std::max<int64_t>(1, a.ood_subset));
    const int64_t rounds =
        (PlannedSteps(spec.train, d.steps_per_epoch) + d.kd_steps - 1) / d.kd_steps;
    method = std::make_unique<MosaicKd>(MosaicKdOptions()
                                            .temperature(d.temperature)
                                            .nz(a.nz)
                                            .ndf(a.ndf)
                                            .synthesis_batch_size(d.synthesis_batch_size)
                                            .lr_g(a.lr_g)
                                            .lr_d(a.lr_d)
                                            .local_weight(a.local_weight)
                                            .align_weight(a.align_weight)
                                            .adv_weight(a.adv_weight)
                                            .balance_weight(a.balance_weight)
                                            .ood_subset(a.ood_subset)
                                            .total_rounds(rounds)
                                            .crop_padding(deps.crop_padding)
                                            .norm(deps.norm)
                                            .pool(pool)
                                            .pool_norm(PoolNormalization(d.pool.normalize, deps)),
                                        deps);
  } else if (d.method == "dfnd") {
    const common::DfndSpec& a = d.dfnd;
    torch::Tensor pool = LoadUnlabeledPool(d.pool.path, deps.image_shape,
                                           std::max<int64_t>(1, a.num_select));
    method = std::make_unique<Dfnd>(DfndOptions()
                                        .temperature(d.temperature)
                                        .num_select(a.num_select)
                                        .teacher_accuracy(a.teacher_accuracy)
                                        .lr_theta(a.lr_theta)
                                        .crop_padding(deps.crop_padding)
                                        .norm(deps.norm)
                                        .pool(pool)
                                        .pool_norm(PoolNormalization(d.pool.normalize, deps)),
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
