#include "server/policy/fair_share.h"

#include <algorithm>
#include <deque>
#include <limits>

namespace dfkd::server {
namespace {

// Ranks a run occupies; a malformed world size still counts as one rank.
int Ranks(const QueuedRun& run) { return std::max(1, run.world_size); }

}  // namespace

// Priority levels are served highest first. Within a level, each owner's runs
// form a queue in age order (submission order, then run id); the next run is
// the head of the owner with the smallest (running ranks + ranks handed out so
// far in this ordering, across all levels) / weight, ties broken by the older
// head run, then by the owner name. A missing weight is 1; a weight that is not
// positive puts the owner after every positive-weight owner of the level.
std::vector<int64_t> FairShareOrder(const QueueSnapshot& snapshot,
                                    const FairShareOptions& options) {
  std::map<std::string, double> used;   // ranks, per owner
  for (const auto& [owner, ranks] : snapshot.running_by_owner) {
    used[owner] += std::max(0, ranks);
  }
  auto share = [&](const std::string& owner) {
    double weight = 1.0;
    auto w = options.weights.find(owner);
    if (w != options.weights.end()) weight = w->second;
    if (!(weight > 0)) return std::numeric_limits<double>::infinity();
    auto u = used.find(owner);
    return (u == used.end() ? 0.0 : u->second) / weight;
  };

  std::vector<const QueuedRun*> runs;
  runs.reserve(snapshot.queued.size());
  for (const QueuedRun& r : snapshot.queued) runs.push_back(&r);
  std::sort(runs.begin(), runs.end(), [](const QueuedRun* a, const QueuedRun* b) {
    if (a->priority != b->priority) return a->priority > b->priority;
    if (a->order != b->order) return a->order < b->order;
    if (a->run_id != b->run_id) return a->run_id < b->run_id;
    return a->owner < b->owner;
  });

  std::vector<int64_t> order;
  order.reserve(runs.size());
  size_t begin = 0;
  while (begin < runs.size()) {
    size_t end = begin;
    while (end < runs.size() && runs[end]->priority == runs[begin]->priority) ++end;
    // This level's runs by owner, each queue already in age order.
    std::map<std::string, std::deque<const QueuedRun*>> queues;
    for (size_t i = begin; i < end; ++i) queues[runs[i]->owner].push_back(runs[i]);
    while (!queues.empty()) {
      auto best = queues.end();
      double best_share = 0;
      for (auto it = queues.begin(); it != queues.end(); ++it) {
        const double s = share(it->first);
        if (best == queues.end() || s < best_share ||
            (s == best_share && it->second.front()->order < best->second.front()->order)) {
          best = it;
          best_share = s;
        }
        // Equal share and equal age: the map's name order keeps the first.
      }
      const QueuedRun* run = best->second.front();
      order.push_back(run->run_id);
      used[run->owner] += Ranks(*run);
      best->second.pop_front();
      if (best->second.empty()) queues.erase(best);
    }
    begin = end;
  }
  return order;
}

}  // namespace dfkd::server
