// Which queued run a free worker should take next: priorities, then fair
// share between owners. A pure function of a snapshot of the queue, so it is
// unit-tested without a database; the store claims the runs it names in
// order (FOR UPDATE SKIP LOCKED), falling back to plain priority order.
#ifndef DFKD_SERVER_POLICY_FAIR_SHARE_H_
#define DFKD_SERVER_POLICY_FAIR_SHARE_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace dfkd::server {

// One queued run as the policy sees it.
struct QueuedRun {
  int64_t run_id = 0;
  std::string owner;
  int priority = 0;
  int64_t order = 0;    // submission order (smaller = older)
  int world_size = 1;
};

struct QueueSnapshot {
  std::vector<QueuedRun> queued;               // the head of each owner's queue
  std::vector<std::pair<std::string, int>> running_by_owner;  // ranks in use
};

struct FairShareOptions {
  std::map<std::string, double> weights;   // owner -> share weight (default 1)
};

// Orders the snapshot's runs: a higher priority always goes first; among equal
// priorities, the owner with the least (running ranks + ranks already handed
// out in this ordering) / weight goes next, ties by the oldest run, then by
// owner name. Within one owner, runs keep priority-then-age order.
std::vector<int64_t> FairShareOrder(const QueueSnapshot& snapshot,
                                    const FairShareOptions& options = {});

}  // namespace dfkd::server

#endif  // DFKD_SERVER_POLICY_FAIR_SHARE_H_
