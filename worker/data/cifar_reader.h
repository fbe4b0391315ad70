// Readers for the binary versions of CIFAR-10 and CIFAR-100.
//
// CIFAR-10: data_batch_1.bin .. data_batch_5.bin (train), test_batch.bin;
// each record is 1 label byte + 3072 pixel bytes (32x32, CHW, RGB).
// CIFAR-100: train.bin, test.bin; each record is a coarse label byte, a fine
// label byte and 3072 pixel bytes; the fine label (100 classes) is used.
// root may be the folder holding the .bin files or its parent (holding
// cifar-10-batches-bin / cifar-100-binary). Errors throw DataError naming the
// file and the byte offset.
#ifndef DFKD_WORKER_DATA_CIFAR_READER_H_
#define DFKD_WORKER_DATA_CIFAR_READER_H_

#include <string>

#include "worker/data/dataset.h"

namespace dfkd::worker {

// 50000 (train) or 10000 (test) images uint8 [N, 3, 32, 32], 10 classes.
TensorDataset LoadCifar10(const std::string& root, bool train);

// 50000 (train) or 10000 (test) images uint8 [N, 3, 32, 32], 100 classes.
TensorDataset LoadCifar100(const std::string& root, bool train);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_DATA_CIFAR_READER_H_
