// What the node schedules by itself on the maintenance lane ([scrub] in the config): a
// background scrub pass when the last full one is too old, and a repair when disks have
// failed or damage is queued.
#include <algorithm>

#include "admin/jobs/jobs.h"

namespace cv::admin::jobs {

namespace {

constexpr std::string_view kLastAutoRepairMeta = "ops/last_auto_repair_ns";
constexpr int64_t kAutoRepairEveryNs = int64_t{600} * 1000000000;  // when disks stay failed

}  // namespace

Result<std::optional<index::Job>> DueMaintenanceJob(storage::ObjectStore& store,
                                                    const Options& options, int64_t now_ns,
                                                    std::optional<SteadyTime>& last_disk_check) {
  CV_TRY_ASSIGN(auto txn, store.Index().BeginRead());
  for (const char* state : {"scheduled", "running"}) {
    index::JobQuery q;
    q.state = state;
    q.limit = 1000;
    CV_TRY_ASSIGN(auto jobs, txn->ListJobs(q));
    for (const auto& j : jobs) {
      if (j.kind == kScrubJob || j.kind == kRepairJob || j.kind == kDrainJob) {
        return std::optional<index::Job>();
      }
    }
  }
  auto meta_ns = [&](std::string_view key) -> Result<int64_t> {
    CV_TRY_ASSIGN(auto v, txn->GetMeta(key));
    int64_t ns = 0;
    if (v) {
      try {
        ns = std::stoll(*v);
      } catch (...) {
        ns = 0;
      }
    }
    return ns;
  };
  bool scrub_due = false;
  if (options.scrub_interval_ns > 0) {
    CV_TRY_ASSIGN(auto last, meta_ns(kLastFullScrubMeta));
    scrub_due = now_ns - last >= options.scrub_interval_ns;
  }
  const SteadyTime now_steady = std::chrono::steady_clock::now();
  if (!scrub_due && last_disk_check && now_steady - *last_disk_check < kDiskCheckInterval) {
    return std::optional<index::Job>();
  }
  last_disk_check = now_steady;
  const storage::StoreStats stats = store.Stats();
  bool failed_disk = false;
  uint64_t used = 0;
  for (const auto& d : stats.disks) {
    // A removed disk needs repair only while the index still references shards on it.
    failed_disk =
        failed_disk || (d.failed && (d.state != storage::DiskState::kRemoved || d.live_bytes > 0));
    used += d.total_bytes - std::min(d.total_bytes, d.free_bytes);
  }
  if (options.auto_repair && (failed_disk || stats.pending_repairs > 0)) {
    CV_TRY_ASSIGN(auto last, meta_ns(kLastAutoRepairMeta));
    if (now_ns - last >= kAutoRepairEveryNs || (!failed_disk && stats.pending_repairs > 0)) {
      txn.reset();
      const RepairParams params{failed_disk, /*automatic=*/true, std::nullopt};
      CV_TRY(store.Index().Update([&](index::WriteTxn& w) {
        return w.PutMeta(kLastAutoRepairMeta, std::to_string(now_ns));
      }));
      return std::optional<index::Job>(
          NewJob(kRepairJob, std::nullopt, std::nullopt, json::value_from(params), now_ns, now_ns));
    }
  }
  if (scrub_due) {
    // A pass over what the disks hold in half the interval, within the bounds.
    const double secs = double(options.scrub_interval_ns) / 2e9;
    uint64_t rate = static_cast<uint64_t>(double(used) / secs);
    rate = std::clamp<uint64_t>(
        rate, options.scrub_min_bytes_per_sec,
        std::max(options.scrub_min_bytes_per_sec, options.scrub_max_bytes_per_sec));
    const ScrubParams params{/*background=*/true, rate};
    return std::optional<index::Job>(
        NewJob(kScrubJob, std::nullopt, std::nullopt, json::value_from(params), now_ns, now_ns));
  }
  return std::optional<index::Job>();
}

}  // namespace cv::admin::jobs
