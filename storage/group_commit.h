// GroupCommit: the store's commit thread. Uploads from every connection (and index updates
// that must not block an event loop: the records a dropped Writer leaves dead) queue here; the thread takes
// everything queued as one group and runs
//
//   one fdatasync per extent the group wrote to (all at once, DiskSet::Sync)
//   -> one index commit for every job's update (Index::UpdateMany: a failing job undoes
//      only itself)
//   -> each job's `done`, with its own result
//
// and starts the next group as soon as this one's commit has completed: while group N syncs
// and commits, group N+1 fills. A job's `done` never runs before its extents are durable and
// its update is committed (durability rule 3), and never on the caller's thread. Internal to
// storage/.
//
// Thread-safety: Submit and WaitIdle are safe from any thread; `done` runs on the commit
// thread and must not wait for another job.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "index/index.h"
#include "storage/disk_set.h"

namespace cv::storage::internal {

class GroupCommit {
 public:
  using SyncList = std::vector<std::pair<std::shared_ptr<Extent>, uint64_t>>;
  struct Job {
    SyncList sync;                                   // made durable first (may be empty)
    std::function<Status(index::WriteTxn&)> update;  // then committed (empty: none)
    // The first of: the sync's error (for this job's extents), the update's error, OK.
    std::function<void(Status)> done;
  };

  GroupCommit(DiskSet& disks, index::Index& index);
  // Runs every job queued so far, then stops the thread.
  ~GroupCommit();
  GroupCommit(const GroupCommit&) = delete;
  GroupCommit& operator=(const GroupCommit&) = delete;

  void Submit(Job job);
  // Returns once every job submitted before the call has run its `done`.
  void WaitIdle();

  static constexpr size_t kMaxGroup = 256;

  // Since the thread started (StoreStats).
  struct Counters {
    uint64_t groups = 0;
    uint64_t jobs = 0;
    uint64_t sync_ns = 0;   // in the groups' DiskSet::Sync calls
    uint64_t index_ns = 0;  // in their Index::UpdateMany calls
  };
  Counters counters() const;

 private:
  void Loop();
  // Runs a group; its time in syncs and in the index commit go to *c.
  void Run(std::vector<Job>& group, Counters* c);

  DiskSet& disks_;
  index::Index& index_;
  mutable std::mutex mu_;
  std::condition_variable cv_;       // jobs queued, or stopping
  std::condition_variable idle_cv_;  // a group finished
  std::deque<Job> queue_;
  uint64_t submitted_ = 0;  // jobs ever queued
  uint64_t finished_ = 0;   // jobs whose done has run
  bool stopping_ = false;
  Counters counters_;  // guarded by mu_ (added to once per group)
  std::thread thread_;  // last: starts once the rest is ready
};

}  // namespace cv::storage::internal
