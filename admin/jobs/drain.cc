// disk.drain: moves every shard off a readable disk (POST /disks/{disk}/drain) so that it can
// be removed without losing redundancy.
#include "admin/internal.h"
#include "admin/jobs/jobs.h"

namespace cv::admin::jobs {

// Progress (DrainProgress): {objects_total, pass, objects_done, stripes_moved, shards_moved,
// bytes_moved, stripes_failed, problems[<= 200], last}, saved about once a second, so that a
// resumed drain goes on after `last`. Up to three passes: a stripe written meanwhile behind
// the walk (an upload that had reserved space on the disk before it began draining) is caught
// by the next. Done when nothing on the disk is referenced any more, or after the third pass.
JobResult RunDrainJob(JobContext& ctx) {
  const DrainParams params = FromJsonText<DrainParams>(ctx.job.params_json);
  const size_t disk = params.disk.value_or(0);
  DrainProgress progress = FromJsonText<DrainProgress>(ctx.job.progress_json);
  if (!progress.objects_total) {
    CV_TRY_ASSIGN(auto objects, CountObjects(ctx.store));
    progress.objects_total = objects;
    progress.pass = 1;
  }
  constexpr uint64_t kPasses = 3;
  storage::DrainReport total;
  while (true) {
    storage::DrainOptions o;
    o.start_after = KeyFromJson(progress.last);
    const DrainProgress base = progress;
    auto merged = [&](const storage::DrainReport& rep, const index::ObjectKey* last) {
      DrainProgress p = base;
      DrainCounts& c = p.counts.emplace(base.counts.value_or(DrainCounts{}));
      c.objects_done += rep.objects;
      c.stripes_moved += rep.stripes_moved;
      c.shards_moved += rep.shards_moved;
      c.bytes_moved += rep.bytes_moved;
      c.stripes_failed += rep.stripes_failed;
      c.problems = AppendCapped(std::move(c.problems), rep.problems, 200);
      if (last) p.last = KeyJson(*last);
      return p;
    };
    ProgressSaver saver(ctx);
    o.progress = [&](const storage::DrainReport& rep, const index::ObjectKey& last) {
      return saver.Tick([&] { return json::value_from(merged(rep, &last)); });
    };
    CV_TRY_ASSIGN(auto rep, ctx.store.Drain(disk, o));
    if (saver.error()) return tl::unexpected(*saver.error());
    if (!rep.complete || saver.cancelled()) return Stopped();
    progress = merged(rep, nullptr);
    progress.last.reset();
    total.extents_removed += rep.extents_removed;
    total.remaining_bytes = rep.remaining_bytes;
    if (rep.remaining_bytes == 0 || progress.pass >= kPasses || rep.stripes_moved == 0) break;
    ++progress.pass;
    CV_TRY_ASSIGN(auto saved, ctx.SaveProgress(progress));
    if (!saved) return Stopped();
  }
  const DrainCounts counts = progress.counts.value_or(DrainCounts{});
  DrainResult result;
  result.disk = disk;
  result.path = params.path;
  result.complete = total.remaining_bytes == 0;
  result.objects = counts.objects_done;
  result.stripes_moved = counts.stripes_moved;
  result.shards_moved = counts.shards_moved;
  result.bytes_moved = counts.bytes_moved;
  result.stripes_failed = counts.stripes_failed;
  result.extents_removed = total.extents_removed;
  result.remaining_bytes = total.remaining_bytes;
  result.problems = counts.problems;
  result.passes = progress.pass;
  result.started_at = TimeOf(ctx.job.started_ns);
  result.finished_at = TimeOf(NowNanos());
  result.next = total.remaining_bytes == 0
                    ? "the disk holds nothing the node needs: cvctl disk remove, then unplug it"
                    : "some shards could not be moved (see problems): drain again";
  internal::ForgetCensus();
  return Done(result);
}

}  // namespace cv::admin::jobs
