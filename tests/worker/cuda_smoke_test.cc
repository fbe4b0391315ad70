// gpu tier: a training step of a real model on CUDA. Where LibTorch has no
// CUDA (Debian's is CPU-only) the test reports itself as skipped, and ctest
// counts it as skipped, not passed.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "worker/models/model_zoo.h"

namespace dfkd::worker {
namespace {

TEST(CudaSmokeTest, Wrn16TrainStepOnGpu) {
  if (!torch::cuda::is_available()) {
    GTEST_SKIP() << "no CUDA device visible to LibTorch (CPU-only build or no GPU)";
  }
  torch::manual_seed(0);
  Classifier model = MakeClassifier({"wrn", 16, 1, 1.0, 0.0, 10, 3, 32});
  model->to(torch::kCUDA);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  torch::Tensor x = torch::randn({64, 3, 32, 32}, torch::kCUDA);
  torch::Tensor y = torch::randint(10, {64}, torch::TensorOptions(torch::kCUDA).dtype(torch::kLong));
  double first = 0, last = 0;
  for (int i = 0; i < 20; ++i) {
    torch::Tensor loss = torch::cross_entropy_loss(model->forward(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    (i == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_LT(last, first);  // memorising one batch must lower the loss
}

}  // namespace
}  // namespace dfkd::worker
