// Gradient averaging in a world of one (the collectives are the identity):
// the overlapped bucketer fills its buckets from backward hooks in reverse
// parameter order, launches each bucket during backward once its last
// gradient arrives, and leaves every gradient equal to plain backward's
// (zeros for a parameter that got none). Across real ranks the same code is
// exercised by dist_test (bit-identical ranks, overlapped = not overlapped).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "worker/dist/communicator.h"
#include "worker/dist/overlapped_sync.h"

namespace dfkd::worker {
namespace {

struct Net : torch::nn::Module {
  Net() {
    unused = register_module("unused", torch::nn::Linear(2, 2));  // last in reverse order
    a = register_module("a", torch::nn::Linear(4, 8));
    b = register_module("b", torch::nn::Linear(8, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) { return b(torch::relu(a(x))); }
  torch::nn::Linear a{nullptr}, b{nullptr}, unused{nullptr};
};

TEST(OverlappedGradientSyncTest, EqualsPlainBackwardAndLaunchesDuringBackward) {
  torch::manual_seed(0);
  Net net;
  LocalCommunicator comm;
  std::vector<torch::Tensor> params = net.parameters();
  const torch::Tensor x = torch::randn({5, 4});

  net.zero_grad();
  net.forward(x).pow(2).sum().backward();
  std::vector<torch::Tensor> expected;
  for (const auto& p : params) {
    expected.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  }

  // 1 byte: one bucket per parameter, in reverse order b.bias, b.weight,
  // a.bias, a.weight, unused.bias, unused.weight.
  OverlappedGradientSync sync(comm, params, 1);
  EXPECT_EQ(sync.num_buckets(), 6u);
  for (int step = 0; step < 2; ++step) {
    for (auto& p : params) p.mutable_grad() = torch::full_like(p, 7.0);  // stale values
    sync.Arm();
    net.forward(x).pow(2).sum().backward();
    sync.Finish();
    // Only the unused layer's buckets wait for Finish().
    EXPECT_EQ(sync.launched_during_backward(), 4) << "step " << step;
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_TRUE(torch::allclose(params[i].grad(), expected[i])) << "parameter " << i;
    }
  }
  // Unarmed, the hooks pass gradients through untouched.
  for (auto& p : params) p.mutable_grad() = torch::zeros_like(p);
  net.forward(x).pow(2).sum().backward();
  EXPECT_TRUE(torch::allclose(params[2].grad(), expected[2]));
  EXPECT_EQ(params[0].grad().abs().sum().item<float>(), 0.0f);  // unused.weight
}

}  // namespace
}  // namespace dfkd::worker
