#include "storage/group_commit.h"

#include <chrono>
#include <exception>

namespace cv::storage::internal {

GroupCommit::GroupCommit(DiskSet& disks, index::Index& index)
    : disks_(disks), index_(index), thread_([this] { Loop(); }) {}

GroupCommit::~GroupCommit() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void GroupCommit::Submit(Job job) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(job));
    ++submitted_;
  }
  cv_.notify_one();
}

void GroupCommit::WaitIdle() {
  std::unique_lock lock(mu_);
  const uint64_t target = submitted_;
  idle_cv_.wait(lock, [&] { return finished_ >= target; });
}

GroupCommit::Counters GroupCommit::counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

void GroupCommit::Loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left
    std::vector<Job> group;
    while (!queue_.empty() && group.size() < kMaxGroup) {
      group.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    const size_t n = group.size();
    lock.unlock();
    Counters c;
    Run(group, &c);
    group.clear();  // what the jobs own goes before they count as finished
    lock.lock();
    finished_ += n;
    ++counters_.groups;
    counters_.jobs += n;
    counters_.sync_ns += c.sync_ns;
    counters_.index_ns += c.index_ns;
    idle_cv_.notify_all();
  }
}

namespace {
uint64_t NanosSince(std::chrono::steady_clock::time_point t) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now() - t)
                                   .count());
}
}  // namespace

void GroupCommit::Run(std::vector<Job>& group, Counters* c) {
  std::vector<Status> result(group.size());
  const auto sync_start = std::chrono::steady_clock::now();
  // One fdatasync per extent of the whole group. If that fails, each job syncs its own
  // extents again (those already synced cost nothing), so that only the jobs that wrote to
  // a failing extent fail.
  SyncList all;
  for (const Job& j : group) all.insert(all.end(), j.sync.begin(), j.sync.end());
  if (!all.empty() && !disks_.Sync(all)) {
    for (size_t i = 0; i < group.size(); ++i) {
      if (!group[i].sync.empty()) result[i] = disks_.Sync(group[i].sync);
    }
  }
  c->sync_ns = NanosSince(sync_start);
  std::vector<std::function<Status(index::WriteTxn&)>> fns;
  std::vector<size_t> of;
  for (size_t i = 0; i < group.size(); ++i) {
    if (result[i] && group[i].update) {
      fns.push_back(std::move(group[i].update));
      of.push_back(i);
    }
  }
  if (!fns.empty()) {
    const auto index_start = std::chrono::steady_clock::now();
    std::vector<Status> committed = index_.UpdateMany(fns);
    c->index_ns = NanosSince(index_start);
    for (size_t j = 0; j < of.size(); ++j) result[of[j]] = std::move(committed[j]);
  }
  for (size_t i = 0; i < group.size(); ++i) {
    try {
      if (group[i].done) group[i].done(std::move(result[i]));
    } catch (const std::exception& e) {
      Log(LogLevel::kError, "group_commit_callback_threw", {{"what", e.what()}});
    } catch (...) {
      Log(LogLevel::kError, "group_commit_callback_threw", {{"what", "unknown"}});
    }
  }
}

}  // namespace cv::storage::internal
