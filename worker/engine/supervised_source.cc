#include "worker/engine/supervised_source.h"

#include "worker/methods/losses.h"

namespace dfkd::worker {
namespace {

LoaderOptions TrainLoaderOptions(const common::JobSpec& spec, const JobData& data,
                                 const Communicator& comm) {
  LoaderOptions lo;
  // train.batch_size is the global batch: each rank trains its share, so a
  // spec means the same experiment at any world size.
  TORCH_CHECK(spec.train.batch_size % comm.size() == 0, "train.batch_size: ",
              spec.train.batch_size, " is not divisible by the world size ", comm.size());
  lo.batch_size = spec.train.batch_size / comm.size();
  lo.seed = static_cast<uint64_t>(spec.seed);
  lo.augment = spec.data.augment;
  lo.crop_padding = data.crop_padding;
  lo.horizontal_flip = spec.data.horizontal_flip;
  lo.norm = data.norm;
  lo.rank = comm.rank();
  lo.world_size = comm.size();
  return lo;
}

}  // namespace

SupervisedSource::SupervisedSource(const common::JobSpec& spec, Classifier model,
                                   const JobData& data, const Communicator& comm)
    : model_(std::move(model)), device_(DeviceOf(*model_)),
      channels_last_(spec.runtime.channels_last),
      loader_(*data.train, TrainLoaderOptions(spec, data, comm)) {
  TORCH_CHECK(loader_.batches_per_epoch() > 0, "train.batch_size ", spec.train.batch_size,
              " is larger than the training set (", data.train->size(), " images)");
}

void SupervisedSource::Start(int64_t step) {
  epoch_ = step / loader_.batches_per_epoch();
  loader_.StartEpoch(epoch_, step % loader_.batches_per_epoch());
}

StepResult SupervisedSource::Step(int64_t) {
  std::optional<Batch> batch = loader_.Next();
  if (!batch) {
    loader_.StartEpoch(++epoch_);
    batch = loader_.Next();
  }
  torch::Tensor x = batch->images.to(device_);
  if (channels_last_) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  const torch::Tensor labels = batch->labels.to(device_);
  torch::Tensor logits = model_->forward(x);
  StepResult r;
  r.loss = torch::cross_entropy_loss(logits, labels);
  r.images = batch->labels.size(0);
  r.correct = CountCorrect(logits.detach(), labels);
  return r;
}

}  // namespace dfkd::worker
