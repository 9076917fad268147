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

json::array Strings(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v) a.push_back(json::value(s));
  return a;
}

}  // namespace

json::object RepairJson(const storage::RepairReport& rep, bool include_failed) {
  json::object o;
  o["complete"] = rep.stripes_lost == 0 && rep.still_queued == 0;
  o["include_failed_disks"] = include_failed;
  o["stripes_examined"] = rep.stripes_examined;
  o["bytes_rewritten"] = rep.bytes_rewritten;
  o["stripes_repaired"] = rep.stripes_repaired;
  o["shards_rewritten"] = rep.shards_rewritten;
  o["stripes_lost"] = rep.stripes_lost;
  o["still_queued"] = rep.still_queued;
  o["lost"] = Strings(rep.lost);
  return o;
}

JobResult RunRepairJob(JobContext& ctx) {
  json::object params = ParsedObjectOrEmpty(ctx.job.params_json);
  const json::value* inc = params.if_contains("include_failed_disks");
  const bool include_failed = inc && inc->is_bool() && inc->as_bool();
  const int64_t started = NowNanos();
  auto rep = ctx.store.Repair(include_failed);
  if (!rep) return tl::unexpected(rep.error());
  internal::ForgetCensus();
  const int64_t finished = NowNanos();
  if (rep->bytes_rewritten >= kRateMinBytes && finished > started) {
    const uint64_t rate =
        static_cast<uint64_t>(double(rep->bytes_rewritten) * 1e9 / double(finished - started));
    CV_TRY(ctx.store.Index().Update([&](index::WriteTxn& txn) {
      return txn.PutMeta(kRepairRateMeta, std::to_string(rate) + " " + std::to_string(finished));
    }));
  }
  json::object o = RepairJson(*rep, include_failed);
  o["started_at"] = internal::TimeOrNull(started);
  o["finished_at"] = internal::TimeOrNull(NowNanos());
  return std::optional<json::object>(std::move(o));
}

}  // namespace cv::admin::jobs
