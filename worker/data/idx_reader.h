// Reader for IDX files (the MNIST / Fashion-MNIST format), gzipped or plain.
//
// An IDX file is a big-endian header (magic, then one uint32 per dimension)
// followed by the raw uint8 payload. Files are read through zlib, which reads
// uncompressed files transparently. Errors throw DataError naming the file
// and the byte offset in the uncompressed stream.
#ifndef DFKD_WORKER_DATA_IDX_READER_H_
#define DFKD_WORKER_DATA_IDX_READER_H_

#include <cstdint>
#include <string>

#include <torch/torch.h>

#include "worker/data/dataset.h"

namespace dfkd::worker {

inline constexpr char kFashionMnistDefaultRoot[] =
    "/usr/share/datasets/fashion-mnist";

// Magic numbers of the two IDX files the readers accept.
inline constexpr uint32_t kIdxImagesMagic = 0x00000803;  // uint8, 3 dims
inline constexpr uint32_t kIdxLabelsMagic = 0x00000801;  // uint8, 1 dim

// uint8 [N, 1, H, W] from an images file (magic 0x00000803).
torch::Tensor ReadIdxImages(const std::string& path);

// int64 [N] from a labels file (magic 0x00000801).
torch::Tensor ReadIdxLabels(const std::string& path);

// The train (60000) or test (10000) split of Fashion-MNIST from root, which
// holds train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-*.gz (a
// file without the .gz suffix is used when the .gz one is absent). An empty
// root means kFashionMnistDefaultRoot. 10 classes.
TensorDataset LoadFashionMnist(const std::string& root, bool train);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_DATA_IDX_READER_H_
