// disk.drain: moves every shard off a readable disk (POST /disks/{disk}/drain) so that it can
// be removed without losing redundancy.
#include "admin/internal.h"
#include "admin/jobs/jobs.h"

namespace cv::admin::jobs {

// disk.drain: progress {objects_total, objects_done, stripes_moved, shards_moved, bytes_moved,
// stripes_failed, problems[<= 200], last, pass}, saved about once a second, so that a resumed
// drain goes on after `last`. Up to three passes: a stripe written meanwhile behind the walk
// (an upload that had reserved space on the disk before it began draining) is caught by the
// next. Done when nothing on the disk is referenced any more, or after the third pass.
JobResult RunDrainJob(JobContext& ctx) {
  json::object params = ParsedObjectOrEmpty(ctx.job.params_json);
  const size_t disk = U64(params, "disk");
  json::object progress = ParsedObjectOrEmpty(ctx.job.progress_json);
  if (!progress.contains("objects_total")) {
    auto objects = CountObjects(ctx.store);
    if (!objects) return tl::unexpected(objects.error());
    progress["objects_total"] = *objects;
    progress["pass"] = 1;
  }
  constexpr uint64_t kPasses = 3;
  storage::DrainReport total;
  while (true) {
    storage::DrainOptions o;
    o.start_after = KeyFromJson(progress.if_contains("last"));
    const json::object base = progress;
    auto merged = [&](const storage::DrainReport& rep, const index::ObjectKey* last) {
      json::object p = base;
      p["objects_done"] = U64(base, "objects_done") + rep.objects;
      p["stripes_moved"] = U64(base, "stripes_moved") + rep.stripes_moved;
      p["shards_moved"] = U64(base, "shards_moved") + rep.shards_moved;
      p["bytes_moved"] = U64(base, "bytes_moved") + rep.bytes_moved;
      p["stripes_failed"] = U64(base, "stripes_failed") + rep.stripes_failed;
      p["problems"] = AppendCapped(base.if_contains("problems"), rep.problems, 200);
      if (last) p["last"] = KeyJson(*last);
      return p;
    };
    ProgressSaver saver(ctx);
    o.progress = [&](const storage::DrainReport& rep, const index::ObjectKey& last) {
      return saver.Tick([&] { return merged(rep, &last); });
    };
    auto rep = ctx.store.Drain(disk, o);
    if (!rep) return tl::unexpected(rep.error());
    if (saver.error()) return tl::unexpected(*saver.error());
    if (!rep->complete || saver.cancelled()) return std::optional<json::object>();
    progress = merged(*rep, nullptr);
    progress.erase("last");
    total.extents_removed += rep->extents_removed;
    total.remaining_bytes = rep->remaining_bytes;
    const uint64_t pass = U64(progress, "pass");
    if (rep->remaining_bytes == 0 || pass >= kPasses || rep->stripes_moved == 0) break;
    progress["pass"] = pass + 1;
    auto saved = ctx.SaveProgress(progress);
    if (!saved) return tl::unexpected(saved.error());
    if (!*saved) return std::optional<json::object>();
  }
  json::object o;
  o["disk"] = disk;
  o["path"] = params.contains("path") ? params.at("path") : json::value(nullptr);
  o["complete"] = total.remaining_bytes == 0;
  o["objects"] = U64(progress, "objects_done");
  o["stripes_moved"] = U64(progress, "stripes_moved");
  o["shards_moved"] = U64(progress, "shards_moved");
  o["bytes_moved"] = U64(progress, "bytes_moved");
  o["stripes_failed"] = U64(progress, "stripes_failed");
  o["extents_removed"] = total.extents_removed;
  o["remaining_bytes"] = total.remaining_bytes;
  o["problems"] = progress.contains("problems") ? progress.at("problems") : json::array{};
  o["passes"] = U64(progress, "pass");
  o["started_at"] = internal::TimeOrNull(ctx.job.started_ns);
  o["finished_at"] = internal::TimeOrNull(NowNanos());
  o["next"] = total.remaining_bytes == 0
                  ? "the disk holds nothing the node needs: cvctl disk remove, then unplug it"
                  : "some shards could not be moved (see problems): drain again";
  internal::ForgetCensus();
  return std::optional<json::object>(std::move(o));
}

}  // namespace cv::admin::jobs
