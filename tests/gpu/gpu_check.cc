// The C++ half of tests/gpu/run.sh, built only with -DDFKD_ENABLE_CUDA=ON.
// Each check prints "ok: ..." or "FAIL: ..."; the exit code is the number of
// failures. What it covers that the CPU tests cannot:
//   - ProcessGroupNCCL through the engine's Communicator (one rank: a machine
//     with one GPU cannot hold two NCCL ranks), CUDA tensors summed in place
//     and CPU tensors staged through the GPU and written back;
//   - Gloo with CUDA tensors;
//   - weights and a checkpoint written from a CUDA model load into a CPU
//     model, and the other way round, bit for bit.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include <torch/torch.h>

#include "worker/dist/c10d_communicator.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/device.h"
#include "worker/models/model_zoo.h"

namespace {

int failures = 0;

void Check(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAIL", what.c_str());
  std::fflush(stdout);
  if (!ok) ++failures;
}

bool SameOnCpu(torch::nn::Module& a, torch::nn::Module& b) {
  const auto pa = a.parameters(), pb = b.parameters();
  if (pa.size() != pb.size()) return false;
  for (size_t i = 0; i < pa.size(); ++i) {
    if (!torch::equal(pa[i].cpu(), pb[i].cpu())) return false;
  }
  const auto ba = a.buffers(), bb = b.buffers();
  for (size_t i = 0; i < ba.size(); ++i) {
    if (!torch::equal(ba[i].cpu(), bb[i].cpu())) return false;
  }
  return true;
}

void CommunicatorCheck(const std::string& backend, const torch::Device& gpu) {
  dfkd::worker::RendezvousOptions r;
  r.port = dfkd::worker::FindFreePort();
  r.world_size = 1;
  r.rank = 0;
  r.timeout = std::chrono::seconds(60);
  auto comm = dfkd::worker::MakeCommunicator(r, backend, gpu);
  torch::Tensor on_gpu = torch::arange(6, torch::TensorOptions(gpu).dtype(torch::kFloat32));
  torch::Tensor on_cpu = torch::full({3}, 2.5);
  std::vector<torch::Tensor> both{on_gpu, on_cpu};
  comm->AllReduceSum(both);
  Check(on_gpu.is_cuda() && torch::equal(on_gpu.cpu(), torch::arange(6).to(torch::kFloat32)),
        backend + ": all-reduce of a CUDA tensor in a world of one leaves it in place");
  Check(on_cpu.is_cpu() && torch::equal(on_cpu, torch::full({3}, 2.5)),
        backend + ": a CPU tensor takes part (staged through the GPU) and stays on the CPU");
  std::vector<torch::Tensor> async{on_gpu};
  comm->AllReduceSumAsync(async)->Wait();
  std::vector<torch::Tensor> bc{on_cpu, on_gpu};
  comm->Broadcast(bc, 0);
  comm->Barrier();
  Check(torch::equal(on_gpu.cpu(), torch::arange(6).to(torch::kFloat32)),
        backend + ": async all-reduce, broadcast and barrier complete");
}

}  // namespace

int main() {
  using namespace dfkd::worker;
  if (!torch::cuda::is_available()) {
    std::printf("FAIL: no CUDA device visible to LibTorch\n");
    return 1;
  }
  const torch::Device gpu = ResolveDevice("cuda", 0);
  std::printf("LibTorch %s, %d GPU(s), built with CUDA: %s, NCCL: %s\n", TORCH_VERSION,
              static_cast<int>(torch::cuda::device_count()), BuiltWithCuda() ? "yes" : "no",
              NcclCompiledIn() ? "yes" : "no");
  try {
    CommunicatorCheck("nccl", gpu);
  } catch (const std::exception& e) {
    Check(false, std::string("nccl communicator threw: ") + e.what());
  }
  try {
    CommunicatorCheck("gloo", gpu);
  } catch (const std::exception& e) {
    Check(false, std::string("gloo communicator threw: ") + e.what());
  }

  const ModelConfig cfg{"wrn", 16, 1, 1.0, 0.0, 10, 3, 32};
  const std::string dir = "/tmp/dfkd_gpu_check";
  std::filesystem::create_directories(dir);
  torch::manual_seed(0);
  Classifier on_gpu = MakeClassifier(cfg);
  MoveModule(*on_gpu, gpu);
  {
    // One step, so BN statistics and momentum differ from a fresh model.
    torch::optim::SGD opt(on_gpu->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
    torch::Tensor x = torch::randn({8, 3, 32, 32}).to(gpu);
    torch::Tensor y = torch::randint(10, {8}).to(gpu);
    torch::cross_entropy_loss(on_gpu->forward(x), y).backward();
    opt.step();
    SaveWeights(dir + "/w.pt", *on_gpu);
    TrainState state;
    state.step = 1;
    state.spec_hash = "gpu-check";
    SaveCheckpoint(dir + "/ckpt.pt", *on_gpu, opt, state);
  }
  torch::manual_seed(1);
  Classifier on_cpu = MakeClassifier(cfg);
  LoadWeights(dir + "/w.pt", *on_cpu);
  Check(SameOnCpu(*on_gpu, *on_cpu), "weights written from CUDA load into a CPU model");
  Classifier back = MakeClassifier(cfg);
  MoveModule(*back, gpu);
  torch::optim::SGD opt(back->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  TrainState state;
  state.spec_hash = "gpu-check";
  LoadCheckpoint(dir + "/ckpt.pt", *back, opt, &state);
  bool moments_on_gpu = true;
  for (auto& entry : opt.state()) {
    auto* s = dynamic_cast<torch::optim::SGDParamState*>(entry.second.get());
    if (s && s->momentum_buffer().defined()) moments_on_gpu &= s->momentum_buffer().is_cuda();
  }
  Check(SameOnCpu(*on_gpu, *back) && back->parameters().front().is_cuda() && moments_on_gpu &&
            state.step == 1,
        "a checkpoint loads into a CUDA model with its momentum on the GPU");
  const torch::Tensor before = back->parameters().front().detach().cpu();
  torch::Tensor x = torch::randn({4, 3, 32, 32}).to(gpu);
  torch::cross_entropy_loss(back->forward(x), torch::zeros({4}, torch::kLong).to(gpu))
      .backward();
  opt.step();
  Check(back->parameters().front().is_cuda() &&
            !torch::equal(back->parameters().front().detach().cpu(), before),
        "an SGD step after the resume updates the weights on the GPU");
  std::printf("%d failure(s)\n", failures);
  return failures;
}
