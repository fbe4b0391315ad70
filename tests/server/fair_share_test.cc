#include "server/policy/fair_share.h"

#include <algorithm>
#include <vector>

#include <gtest/gtest.h>

namespace dfkd::server {
namespace {

QueuedRun Queued(int64_t id, const std::string& owner, int64_t order, int priority = 0,
              int world_size = 1) {
  QueuedRun r;
  r.run_id = id;
  r.owner = owner;
  r.order = order;
  r.priority = priority;
  r.world_size = world_size;
  return r;
}

using Ids = std::vector<int64_t>;

TEST(FairShareTest, EmptySnapshot) {
  QueueSnapshot s;
  s.running_by_owner = {{"alice", 3}};
  EXPECT_TRUE(FairShareOrder(s).empty());
}

TEST(FairShareTest, PriorityDominates) {
  QueueSnapshot s;
  s.queued = {Queued(1, "bob", 1, 0), Queued(2, "alice", 3, 5), Queued(3, "alice", 2, 5)};
  s.running_by_owner = {{"alice", 100}};   // however much alice already uses
  EXPECT_EQ(FairShareOrder(s), (Ids{3, 2, 1}));
}

TEST(FairShareTest, EqualOwnersInterleave) {
  QueueSnapshot s;
  s.queued = {Queued(1, "alice", 1), Queued(2, "alice", 2), Queued(3, "alice", 3),
              Queued(4, "bob", 4),   Queued(5, "bob", 5),   Queued(6, "bob", 6)};
  EXPECT_EQ(FairShareOrder(s), (Ids{1, 4, 2, 5, 3, 6}));
}

TEST(FairShareTest, OwnerWithMoreRunningRanksGoesLater) {
  QueueSnapshot s;
  s.queued = {Queued(1, "alice", 1), Queued(2, "alice", 2), Queued(3, "bob", 3), Queued(4, "bob", 4),
              Queued(5, "bob", 5)};
  // Two entries for one owner add up.
  s.running_by_owner = {{"alice", 1}, {"alice", 1}, {"bob", 0}};
  // bob catches up to alice's 2 ranks; at 2:2 alice's older run goes; and so on.
  EXPECT_EQ(FairShareOrder(s), (Ids{3, 4, 1, 5, 2}));
}

TEST(FairShareTest, RanksNotRunsAreCounted) {
  QueueSnapshot s;
  s.queued = {Queued(1, "alice", 1, 0, /*world_size=*/4), Queued(2, "alice", 2), Queued(3, "bob", 3),
              Queued(4, "bob", 4), Queued(5, "bob", 5)};
  EXPECT_EQ(FairShareOrder(s), (Ids{1, 3, 4, 5, 2}));
}

TEST(FairShareTest, HandedOutRanksCarryAcrossPriorities) {
  QueueSnapshot s;
  s.queued = {Queued(1, "alice", 5, 1, 3), Queued(2, "alice", 1, 0), Queued(3, "bob", 2, 0)};
  EXPECT_EQ(FairShareOrder(s), (Ids{1, 3, 2}));
}

TEST(FairShareTest, WeightsScaleTheShare) {
  QueueSnapshot s;
  for (int i = 1; i <= 4; ++i) s.queued.push_back(Queued(i, "alice", i));
  for (int i = 5; i <= 8; ++i) s.queued.push_back(Queued(i, "bob", i));
  FairShareOptions o;
  o.weights = {{"alice", 2.0}};   // bob: the default weight 1
  EXPECT_EQ(FairShareOrder(s, o), (Ids{1, 5, 2, 3, 6, 4, 7, 8}));

  // A zero weight waits for every other owner of its priority.
  QueueSnapshot z;
  z.queued = {Queued(9, "carol", 0), Queued(1, "alice", 1), Queued(2, "alice", 2), Queued(10, "carol", 3, 1)};
  o.weights = {{"carol", 0.0}};
  EXPECT_EQ(FairShareOrder(z, o), (Ids{10, 1, 2, 9}));
}

TEST(FairShareTest, TiesAreDeterministic) {
  // Equal share and equal age: the owner name decides; within one owner, the run id.
  std::vector<QueuedRun> runs = {Queued(10, "bob", 7), Queued(11, "alice", 7), Queued(21, "carol", 7),
                                 Queued(20, "carol", 7)};
  std::sort(runs.begin(), runs.end(),
            [](const QueuedRun& a, const QueuedRun& b) { return a.run_id < b.run_id; });
  const Ids expected = {11, 10, 20, 21};
  int permutations = 0;
  do {
    QueueSnapshot s;
    s.queued = runs;
    EXPECT_EQ(FairShareOrder(s), expected);
    ++permutations;
  } while (std::next_permutation(
      runs.begin(), runs.end(),
      [](const QueuedRun& a, const QueuedRun& b) { return a.run_id < b.run_id; }));
  EXPECT_EQ(permutations, 24);
}

}  // namespace
}  // namespace dfkd::server
