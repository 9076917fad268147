// scrub: reads and verifies every shard record (POST /scrub, or the node's background pass,
// maintenance.cc), queues damage for repair, and repairs it at once when auto_repair is on.
#include "admin/internal.h"
#include "admin/jobs/jobs.h"

namespace cv::admin::jobs {

// scrub: progress {objects_done, objects_total, shards_checked, bytes_checked, damaged_shards,
// lost_stripes, damaged[<= 200], last (the last object done)}, saved about once a second, so a
// resumed pass goes on after `last`. When complete: the time of the pass becomes the node's
// last full scrub, and damage found is repaired at once if auto_repair is on.
JobResult RunScrubJob(JobContext& ctx) {
  json::object params = ParsedObjectOrEmpty(ctx.job.params_json);
  json::object progress = ParsedObjectOrEmpty(ctx.job.progress_json);
  if (!progress.contains("objects_total")) {
    auto total = CountObjects(ctx.store);
    if (!total) return tl::unexpected(total.error());
    progress["objects_total"] = *total;
  }
  storage::ScrubOptions so;
  so.max_bytes_per_sec = U64(params, "max_bytes_per_sec");
  so.start_after = KeyFromJson(progress.if_contains("last"));
  const json::object base = progress;
  auto merged = [&](const storage::ScrubReport& rep, const index::ObjectKey& last) {
    json::object p = base;
    p["objects_done"] = U64(base, "objects_done") + rep.objects;
    p["shards_checked"] = U64(base, "shards_checked") + rep.shards_checked;
    p["bytes_checked"] = U64(base, "bytes_checked") + rep.bytes_checked;
    p["damaged_shards"] = U64(base, "damaged_shards") + rep.damaged_shards;
    p["lost_stripes"] = U64(base, "lost_stripes") + rep.lost_stripes;
    p["damaged"] = AppendCapped(base.if_contains("damaged"), rep.damaged, 200);
    p["last"] = KeyJson(last);
    return p;
  };
  ProgressSaver saver(ctx);
  so.progress = [&](const storage::ScrubReport& rep, const index::ObjectKey& last) {
    return saver.Tick([&] { return merged(rep, last); });
  };
  auto rep = ctx.store.Scrub(so);
  if (!rep) return tl::unexpected(rep.error());
  if (saver.error()) return tl::unexpected(*saver.error());
  if (!rep->complete || saver.cancelled()) return std::optional<json::object>();
  const index::ObjectKey last = so.start_after.value_or(index::ObjectKey{});
  json::object p = rep->objects > 0 || so.start_after ? merged(*rep, last) : base;
  const uint64_t damaged_shards = U64(p, "damaged_shards");
  const uint64_t lost = U64(p, "lost_stripes");
  const int64_t pass_started = ctx.job.started_ns;
  auto saved = ctx.SaveProgress(p, [&](index::WriteTxn& txn) {
    return txn.PutMeta(kLastFullScrubMeta, std::to_string(pass_started));
  });
  if (!saved) return tl::unexpected(saved.error());
  if (!*saved) return std::optional<json::object>();
  internal::ForgetCensus();
  json::object o;
  o["clean"] = damaged_shards == 0 && lost == 0;
  o["background"] = params.contains("background") && params.at("background").is_bool() &&
                    params.at("background").as_bool();
  o["objects"] = U64(p, "objects_done");
  o["shards_checked"] = U64(p, "shards_checked");
  o["bytes_checked"] = U64(p, "bytes_checked");
  o["damaged_shards"] = damaged_shards;
  o["lost_stripes"] = lost;
  o["damaged"] = p["damaged"];
  o["started_at"] = internal::TimeOrNull(pass_started);
  o["finished_at"] = internal::TimeOrNull(NowNanos());
  if (damaged_shards > 0 && ctx.options.auto_repair) {
    auto r = ctx.store.Repair(false);
    if (!r) return tl::unexpected(r.error());
    internal::ForgetCensus();
    o["repair"] = RepairJson(*r, false);
  }
  return std::optional<json::object>(std::move(o));
}

}  // namespace cv::admin::jobs
