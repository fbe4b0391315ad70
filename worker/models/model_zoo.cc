#include "worker/models/model_zoo.h"

#include <memory>
#include <sstream>
#include <stdexcept>

#include "worker/models/mobilenet_v2.h"
#include "worker/models/resnet_cifar.h"
#include "worker/models/resnet_imagenet.h"
#include "worker/models/vgg.h"
#include "worker/models/wide_resnet.h"

namespace dfkd::worker {
namespace {

[[noreturn]] void Bad(const std::string& field, const std::string& why) {
  throw std::invalid_argument("ModelConfig." + field + ": " + why);
}

void CheckDepth(const ModelConfig& c, int64_t a, int64_t b) {
  if (c.depth != a && c.depth != b) {
    Bad("depth", c.arch + " supports depth " + std::to_string(a) + " or " + std::to_string(b) +
                     ", got " + std::to_string(c.depth));
  }
}

void CheckCommon(const ModelConfig& c) {
  if (c.num_classes < 1) {
    Bad("num_classes", "must be >= 1, got " + std::to_string(c.num_classes));
  }
  if (c.in_channels < 1) {
    Bad("in_channels", "must be >= 1, got " + std::to_string(c.in_channels));
  }
}

}  // namespace

Classifier MakeClassifier(const ModelConfig& c) {
  if (c.arch == "resnet") {
    CheckDepth(c, 18, 34);
    CheckCommon(c);
    return std::make_shared<ResNetCifarImpl>(
        ResNetCifarOptions(c.depth, c.num_classes).in_channels(c.in_channels));
  }
  if (c.arch == "wrn") {
    if (c.depth < 10 || (c.depth - 4) % 6 != 0) {
      Bad("depth", "wrn needs depth = 6n + 4 (16, 40, ...), got " + std::to_string(c.depth));
    }
    if (c.widen_factor < 1) {
      Bad("widen_factor", "must be >= 1, got " + std::to_string(c.widen_factor));
    }
    if (!(c.dropout >= 0.0 && c.dropout < 1.0)) {
      Bad("dropout", "must be in [0, 1), got " + std::to_string(c.dropout));
    }
    CheckCommon(c);
    return std::make_shared<WideResNetImpl>(WideResNetOptions(c.depth, c.num_classes)
                                                .widen_factor(c.widen_factor)
                                                .dropout(c.dropout)
                                                .in_channels(c.in_channels));
  }
  if (c.arch == "vgg") {
    if (c.depth != 11) {
      Bad("depth", "vgg supports depth 11 (VGG-11-BN), got " + std::to_string(c.depth));
    }
    CheckCommon(c);
    return std::make_shared<VggImpl>(VggOptions(c.num_classes).in_channels(c.in_channels));
  }
  if (c.arch == "resnet_imagenet") {
    CheckDepth(c, 18, 50);
    CheckCommon(c);
    return std::make_shared<ResNetImageNetImpl>(
        ResNetImageNetOptions(c.depth).num_classes(c.num_classes).in_channels(c.in_channels));
  }
  if (c.arch == "mobilenet_v2") {
    if (!(c.width_mult > 0.0)) {
      Bad("width_mult", "must be > 0, got " + std::to_string(c.width_mult));
    }
    CheckCommon(c);
    return std::make_shared<MobileNetV2Impl>(MobileNetV2Options()
                                                 .num_classes(c.num_classes)
                                                 .in_channels(c.in_channels)
                                                 .width_mult(c.width_mult));
  }
  Bad("arch", "unknown architecture '" + c.arch +
                  "' (expected resnet, wrn, vgg, resnet_imagenet or "
                  "mobilenet_v2)");
}

std::string ModelName(const ModelConfig& c) {
  const std::string depth = std::to_string(c.depth);
  if (c.arch == "resnet") return "resnet-" + depth;
  if (c.arch == "wrn") {
    return "wrn-" + depth + "-" + std::to_string(c.widen_factor);
  }
  if (c.arch == "vgg") return "vgg-" + depth + "-bn";
  if (c.arch == "resnet_imagenet") return "resnet-" + depth + "-imagenet";
  if (c.arch == "mobilenet_v2") {
    if (c.width_mult == 1.0) return "mobilenet-v2";
    std::ostringstream name;
    name << "mobilenet-v2-x" << c.width_mult;
    return name.str();
  }
  Bad("arch", "unknown architecture '" + c.arch + "'");
}

void UseChannelsLast(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) {
    if (p.dim() == 4) p.set_data(p.data().contiguous(torch::MemoryFormat::ChannelsLast));
  }
}

}  // namespace dfkd::worker
