// Builds any classifier of the project from a flat description (the one switch
// over architectures), and names it the way reports and file names do.
#ifndef DFKD_WORKER_MODELS_MODEL_ZOO_H_
#define DFKD_WORKER_MODELS_MODEL_ZOO_H_

#include <cstdint>
#include <string>

#include "worker/models/classifier.h"

namespace dfkd::worker {

struct ModelConfig {
  // "resnet" (CIFAR ResNet, depth 18|34), "wrn" (depth 6n+4, widen_factor,
  // dropout), "vgg" (depth 11: VGG-11-BN), "resnet_imagenet" (depth 18|50),
  // "mobilenet_v2" (depth ignored; width_mult).
  std::string arch;
  int64_t depth = 0;
  int64_t widen_factor = 1;  // wrn only
  double width_mult = 1.0;   // mobilenet_v2 only
  double dropout = 0.0;      // wrn only
  int64_t num_classes = 0;
  int64_t in_channels = 3;
  int64_t input_size = 32;  // height = width of the inputs; informational
};

// Throws std::invalid_argument naming the offending field (arch, depth,
// widen_factor, width_mult, dropout, num_classes, in_channels).
Classifier MakeClassifier(const ModelConfig& config);

// "resnet-18", "wrn-40-2", "vgg-11-bn", "resnet-50-imagenet",
// "mobilenet-v2" ("mobilenet-v2-x0.5" for other widths). Throws
// std::invalid_argument for an unknown arch.
std::string ModelName(const ModelConfig& config);

// Stores every 4-D parameter of `module` in channels-last (NHWC)
// layout. oneDNN then convolves without the NCHW <-> blocked reorders it
// otherwise runs around every convolution: a WRN-16-1 training step on CPU is
// ~25% faster. Feed inputs with x.contiguous(torch::MemoryFormat::ChannelsLast).
// Values, names and checkpoints are unchanged; only strides differ.
void UseChannelsLast(torch::nn::Module& module);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_MODELS_MODEL_ZOO_H_
