// scrub: reads and verifies every shard record (POST /scrub, or the node's background pass,
// maintenance.cc), queues damage for repair, and repairs it at once when auto_repair is on.
#include "admin/internal.h"
#include "admin/jobs/jobs.h"

namespace cv::admin::jobs {

// Progress (ScrubProgress): objects_total, then {objects_done, shards_checked, bytes_checked,
// damaged_shards, lost_stripes, damaged[<= 200], last (the last object done)}, saved about
// once a second, so a resumed pass goes on after `last`. When complete: the time of the pass
// becomes the node's last full scrub, and damage found is repaired at once if auto_repair is
// on.
JobResult RunScrubJob(JobContext& ctx) {
  const ScrubParams params = FromJsonText<ScrubParams>(ctx.job.params_json);
  ScrubProgress progress = FromJsonText<ScrubProgress>(ctx.job.progress_json);
  if (!progress.objects_total) {
    CV_TRY_ASSIGN(auto total, CountObjects(ctx.store));
    progress.objects_total = total;
  }
  storage::ScrubOptions so;
  so.max_bytes_per_sec = params.max_bytes_per_sec;
  so.start_after = KeyFromJson(progress.counts ? progress.counts->last : std::nullopt);
  const ScrubProgress base = progress;
  auto merged = [&](const storage::ScrubReport& rep, const index::ObjectKey& last) {
    ScrubProgress p = base;
    ScrubCounts& c = p.counts.emplace(base.counts.value_or(ScrubCounts{}));
    c.objects_done += rep.objects;
    c.shards_checked += rep.shards_checked;
    c.bytes_checked += rep.bytes_checked;
    c.damaged_shards += rep.damaged_shards;
    c.lost_stripes += rep.lost_stripes;
    c.damaged = AppendCapped(std::move(c.damaged), rep.damaged, 200);
    c.last = KeyJson(last);
    return p;
  };
  ProgressSaver saver(ctx);
  so.progress = [&](const storage::ScrubReport& rep, const index::ObjectKey& last) {
    return saver.Tick([&] { return json::value_from(merged(rep, last)); });
  };
  CV_TRY_ASSIGN(auto rep, ctx.store.Scrub(so));
  if (saver.error()) return tl::unexpected(*saver.error());
  if (!rep.complete || saver.cancelled()) return Stopped();
  const index::ObjectKey last = so.start_after.value_or(index::ObjectKey{});
  const ScrubProgress p = rep.objects > 0 || so.start_after ? merged(rep, last) : base;
  const ScrubCounts counts = p.counts.value_or(ScrubCounts{});
  const int64_t pass_started = ctx.job.started_ns;
  CV_TRY_ASSIGN(auto saved, ctx.SaveProgress(p, [&](index::WriteTxn& txn) {
    return txn.PutMeta(kLastFullScrubMeta, std::to_string(pass_started));
  }));
  if (!saved) return Stopped();
  internal::ForgetCensus();
  ScrubResult result;
  result.clean = counts.damaged_shards == 0 && counts.lost_stripes == 0;
  result.background = params.background;
  result.objects = counts.objects_done;
  result.shards_checked = counts.shards_checked;
  result.bytes_checked = counts.bytes_checked;
  result.damaged_shards = counts.damaged_shards;
  result.lost_stripes = counts.lost_stripes;
  // null when no counts were ever kept (a pass over an empty index)
  if (p.counts) result.damaged = counts.damaged;
  result.started_at = TimeOf(pass_started);
  result.finished_at = TimeOf(NowNanos());
  if (counts.damaged_shards > 0 && ctx.options.auto_repair) {
    CV_TRY_ASSIGN(auto r, ctx.store.Repair(false));
    internal::ForgetCensus();
    result.repair = Summarize(r, false);
  }
  return Done(result);
}

}  // namespace cv::admin::jobs
