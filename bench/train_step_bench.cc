// Images/s of one training step (forward + backward + SGD with momentum) for
// CIFAR ResNet-18 and WRN-16-1 at batch 128, and of the data loader, so the
// loader is shown not to be the bottleneck. bench/run.sh runs this next to
// the same networks in Python (train_step_bench.py) and prints the ratio.
//
// Output: one JSON object per line.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "worker/data/idx_reader.h"
#include "worker/data/loader.h"
#include "worker/engine/runtime.h"
#include "worker/models/model_zoo.h"

namespace {

using Clock = std::chrono::steady_clock;
using dfkd::worker::ModelConfig;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void BenchStep(const std::string& name, ModelConfig cfg, int64_t batch, int steps,
               bool channels_last) {
  torch::manual_seed(0);
  auto model = dfkd::worker::MakeClassifier(cfg);
  if (channels_last) dfkd::worker::UseChannelsLast(*model);
  model->train();
  torch::optim::SGD opt(model->parameters(),
                        torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(5e-4));
  torch::Tensor x = torch::randn({batch, cfg.in_channels, cfg.input_size, cfg.input_size});
  if (channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  torch::Tensor y = torch::randint(cfg.num_classes, {batch}, torch::kInt64);
  std::vector<double> times;
  for (int i = 0; i < steps + 2; ++i) {
    auto t0 = Clock::now();
    torch::Tensor loss = torch::cross_entropy_loss(model->forward(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (i >= 2) times.push_back(ms);  // two warm-up steps
  }
  double med = Median(times);
  std::cout << nlohmann::json{{"bench", "train_step"}, {"lang", "cpp"}, {"net", name},
                              {"layout", channels_last ? "channels_last" : "contiguous"},
                              {"batch", batch}, {"threads", at::get_num_threads()},
                              {"median_ms", med}, {"images_per_s", batch * 1000.0 / med}}
                   .dump()
            << std::endl;
}

void BenchLoader(const std::string& name, const dfkd::worker::Dataset& data,
                 dfkd::worker::Normalization norm, int64_t padding, int batches) {
  dfkd::worker::LoaderOptions o;
  o.batch_size = 128;
  o.augment = true;
  o.crop_padding = padding;
  o.norm = norm;
  o.prefetch = false;  // measure the work itself, not its overlap
  dfkd::worker::Loader loader(data, o);
  loader.StartEpoch(0);
  int64_t images = 0;
  auto t0 = Clock::now();
  for (int b = 0; b < batches; ++b) {
    auto batch = loader.Next();
    if (!batch) break;
    images += batch->labels.size(0);
  }
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::cout << nlohmann::json{{"bench", "loader"}, {"data", name}, {"batch", 128},
                              {"threads", at::get_num_threads()},
                              {"images_per_s", images / s}}
                   .dump()
            << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dfkd training-step and loader benchmark"};
  int64_t threads = 2;
  int steps = 10;
  app.add_option("--threads", threads, "LibTorch threads");
  app.add_option("--steps", steps, "timed steps per network (after 2 warm-up)");
  CLI11_PARSE(app, argc, argv);
  dfkd::worker::ConfigureRuntime(threads);

  for (bool cl : {true, false}) {
    BenchStep("resnet18", {"resnet", 18, 1, 1.0, 0.0, 10, 3, 32}, 128, std::max(3, steps / 2), cl);
    BenchStep("wrn16_1", {"wrn", 16, 1, 1.0, 0.0, 10, 3, 32}, 128, steps * 2, cl);
    BenchStep("wrn16_1_fmnist", {"wrn", 16, 1, 1.0, 0.0, 10, 1, 28}, 128, steps * 2, cl);
  }

  torch::manual_seed(0);
  dfkd::worker::TensorDataset cifar_like(
      torch::randint(256, {50000, 3, 32, 32}, torch::kUInt8),
      torch::randint(10, {50000}, torch::kInt64), 10);
  BenchLoader("cifar_shape_synthetic", cifar_like, dfkd::worker::NormalizationFor("cifar10"),
              4, 100);
  const std::string fm = dfkd::worker::kFashionMnistDefaultRoot;
  if (std::filesystem::exists(fm)) {
    auto t0 = Clock::now();
    dfkd::worker::TensorDataset train = dfkd::worker::LoadFashionMnist(fm, true);
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::cout << nlohmann::json{{"bench", "read_fashion_mnist_train_gz"}, {"seconds", s},
                                {"images", train.size()}}
                     .dump()
              << std::endl;
    BenchLoader("fashion_mnist", train, dfkd::worker::NormalizationFor("fashion_mnist"), 2,
                200);
  }
  return 0;
}
