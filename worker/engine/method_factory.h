// MakeMethod: the only switch over DFKD methods, and where KDCI is wrapped
// around the chosen method when kdci.enabled.
#ifndef DFKD_WORKER_ENGINE_METHOD_FACTORY_H_
#define DFKD_WORKER_ENGINE_METHOD_FACTORY_H_

#include <memory>
#include <string>

#include "common/spec/job_spec.h"
#include "worker/methods/method.h"

namespace dfkd::worker {

// `other_teacher` is the feature source of the other-Z ablation (null
// otherwise). `rank` of `world` ranks: a class bank without an explicit
// class range owns this rank's contiguous share of the classes (ShardOf).
// Throws std::invalid_argument naming the spec field at fault.
std::unique_ptr<Method> MakeMethod(const common::JobSpec& spec, const MethodDeps& deps,
                                   Classifier other_teacher = nullptr, int64_t rank = 0,
                                   int64_t world = 1);

}  // namespace dfkd::worker

#endif  // DFKD_WORKER_ENGINE_METHOD_FACTORY_H_
