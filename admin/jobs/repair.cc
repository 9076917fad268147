// repair: rebuilds what is missing or damaged (POST /repair, a disk's removal, or the node's
// own policy, maintenance.cc): stripes that reads and scrubs queued and, with
// include_failed_disks, every shard of the failed disks. The rate it achieves is what GET
// /status estimates the time to full redundancy with.
#include "admin/internal.h"
#include "admin/jobs/jobs.h"

namespace cv::admin::jobs {

namespace {

// A repair that rewrote less than this is too short to measure the rate by.
constexpr uint64_t kRateMinBytes = 16ull << 20;

}  // namespace

RepairSummary Summarize(const storage::RepairReport& rep, bool include_failed) {
  RepairSummary s;
  s.complete = rep.stripes_lost == 0 && rep.still_queued == 0;
  s.include_failed_disks = include_failed;
  s.stripes_examined = rep.stripes_examined;
  s.bytes_rewritten = rep.bytes_rewritten;
  s.stripes_repaired = rep.stripes_repaired;
  s.shards_rewritten = rep.shards_rewritten;
  s.stripes_lost = rep.stripes_lost;
  s.still_queued = rep.still_queued;
  s.lost = rep.lost;
  return s;
}

JobResult RunRepairJob(JobContext& ctx) {
  const bool include_failed = FromJsonText<RepairParams>(ctx.job.params_json).include_failed_disks;
  const int64_t started = NowNanos();
  CV_TRY_ASSIGN(auto rep, ctx.store.Repair(include_failed));
  internal::ForgetCensus();
  const int64_t finished = NowNanos();
  if (rep.bytes_rewritten >= kRateMinBytes && finished > started) {
    const uint64_t rate =
        static_cast<uint64_t>(double(rep.bytes_rewritten) * 1e9 / double(finished - started));
    CV_TRY(ctx.store.Index().Update([&](index::WriteTxn& txn) {
      return txn.PutMeta(kRepairRateMeta, std::to_string(rate) + " " + std::to_string(finished));
    }));
  }
  return Done(RepairResult{Summarize(rep, include_failed), TimeOf(started), TimeOf(NowNanos())});
}

}  // namespace cv::admin::jobs
