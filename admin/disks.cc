// Disk replacement (what `cvctl disk` calls): GET /disks, POST /disks (add a disk while the
// node serves), POST /disks/{disk}/drain (a disk.drain job moves every shard off a readable
// disk), POST /disks/{disk}/remove (a dead disk is gone for good: a repair job rebuilds its
// shards on the other disks). All operator only; every change is audited in the index
// transaction that records it (the store runs the record inside its own).
#include <boost/json/array.hpp>
#include <chrono>

#include "admin/internal.h"

namespace cv::admin::internal {

json::object DiskJson(const storage::DiskStatus& d) {
  json::object o;
  o["position"] = d.position;
  o["path"] = d.path;
  // ok / failed for an active disk; draining (failed if it failed meanwhile); removed.
  std::string state = d.failed ? "failed" : "ok";
  if (d.state == storage::DiskState::kRemoved) state = "removed";
  if (d.state == storage::DiskState::kDraining && !d.failed) state = "draining";
  o["state"] = state;
  o["capacity_bytes"] = d.total_bytes;
  o["used_bytes"] = d.total_bytes - std::min(d.free_bytes, d.total_bytes);
  o["free_bytes"] = d.free_bytes;
  o["live_bytes"] = d.live_bytes;
  o["errors"] = d.errors;
  return o;
}

namespace {

// The disk of the {disk} placeholder, as the store sees it now; nullopt: no such disk.
std::optional<storage::DiskStatus> FindDisk(Call& c, const storage::StoreStats& stats) {
  if (c.disk >= stats.disks.size()) return std::nullopt;
  return stats.disks[c.disk];
}

// Active, healthy disks other than `except`.
size_t PlaceableOthers(const storage::StoreStats& stats, size_t except) {
  size_t n = 0;
  for (const auto& d : stats.disks) {
    n += d.position != except && !d.failed && d.state == storage::DiskState::kActive ? 1 : 0;
  }
  return n;
}

Result<std::pair<int, int>> Profile(Call& c) {
  auto txn = c.store.Index().BeginRead();
  if (!txn) return tl::unexpected(txn.error());
  auto p = (*txn)->GetMeta("erasure_profile");
  if (!p) return tl::unexpected(p.error());
  auto parsed = *p ? ParseProfile(**p) : std::nullopt;
  if (!parsed) return Err(ErrorKind::kCorruption, "erasure_profile meta missing");
  return *parsed;
}

// 409 unless enough active disks stay for every stripe's k+m distinct disks.
std::optional<Response> RefuseTooFew(Call& c, const storage::StoreStats& stats, size_t except,
                                     std::string_view doing) {
  auto profile = Profile(c);
  if (!profile) return FromError(profile.error());
  const auto [k, m] = *profile;
  const size_t left = PlaceableOthers(stats, except);
  if (left >= static_cast<size_t>(k + m)) return std::nullopt;
  return FromApiError(ApiError{
      409, "too_few_disks",
      std::string(doing) + " would leave " + std::to_string(left) +
          " active disks, and the " + std::to_string(k) + "+" + std::to_string(m) +
          " profile needs " + std::to_string(k + m) + ": add a disk first (cvctl disk add PATH)",
      {}});
}

}  // namespace

Response ChangeDiskState(
    Call& c, size_t d, storage::DiskState state,
    const std::function<Result<Outcome>(index::WriteTxn&, const json::object& disk)>& fn) {
  json::object after;
  return InStoreTxn(
      [&](const TxnFn& in) {
        return c.store.SetDiskState(d, state,
                                    [&](index::WriteTxn& txn, const storage::DiskStatus& a) {
                                      after = DiskJson(a);
                                      return in(txn);
                                    });
      },
      [&](index::WriteTxn& txn) { return fn(txn, after); });
}

Response ListDisks(Call& c) {
  const storage::StoreStats stats = c.store.Stats();
  json::array items;
  for (const auto& d : stats.disks) items.push_back(DiskJson(d));
  return Reply(200, json::object{{"items", std::move(items)}});
}

Response AddDisk(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({"path"}); !ok) return FromApiError(ok.error());
  auto path = JsonBody::Required(body->String("path"), "path");
  if (!path) return FromApiError(path.error());
  if (path->empty() || (*path)[0] != '/' || path->find('\0') != std::string::npos) {
    return FromApiError(
        BadField("path", "must be an absolute path on the node (an empty or new directory)")
            .value());
  }
  // The disk and its audit record commit in one index transaction, or neither does.
  json::object added;
  std::optional<Error> refused;  // the store's refusal of the path, before any transaction
  Response r = InStoreTxn(
      [&](const TxnFn& in) -> Status {
        auto d = c.store.AddDisk(*path, [&](index::WriteTxn& txn, const storage::DiskStatus& a) {
          added = DiskJson(a);
          return in(txn);
        });
        if (!d && added.empty()) refused = d.error();
        return d ? Status{} : Status(tl::unexpected(d.error()));
      },
      [&](index::WriteTxn& txn) -> Result<Outcome> {
        const std::string position = std::to_string(added.at("position").to_number<size_t>());
        CV_TRY(AuditNodeAction(txn, c, "disk.add", "disk/" + position, added));
        Response ok = Reply(201, added);
        ok.headers.emplace_back("Location", "/admin/v1/disks/" + position);
        return Outcome(std::move(ok));
      });
  if (refused) {
    const Error& e = *refused;
    if (e.kind == ErrorKind::kInvalidArgument) {
      return FromApiError(ApiError{400, "invalid_field", e.context, "path"});
    }
    if (e.kind == ErrorKind::kConflict) return FromApiError(ApiError{409, "conflict", e.context, "path"});
    if (e.kind == ErrorKind::kIOError) {
      return FromApiError(ApiError{422, "unusable_disk", e.context, "path"});
    }
  }
  return r;
}

Response DrainDisk(Call& c) {
  if (auto refused = RefuseFields(c)) return *refused;
  const storage::StoreStats stats = c.store.Stats();
  auto disk = FindDisk(c, stats);
  if (!disk) return FromApiError(NoSuch("disk"));
  if (disk->state == storage::DiskState::kRemoved) {
    return FromApiError(ApiError{409, "disk_removed", "the disk was removed", {}});
  }
  if (disk->failed) {
    return FromApiError(ApiError{
        409, "disk_failed",
        "the disk has failed and cannot be read: remove it (cvctl disk remove) so that repair "
        "rebuilds its shards from the other disks",
        {}});
  }
  if (disk->state == storage::DiskState::kActive) {
    if (auto refused = RefuseTooFew(c, stats, disk->position, "draining this disk")) return *refused;
  }
  json::object params;
  params["disk"] = disk->position;
  params["path"] = disk->path;
  // One index transaction: the disk draining, the drain job (409 if one is pending already)
  // and both audit records. A drain job that starts finds the disk draining.
  Response r =
      ChangeDiskState(c, disk->position, storage::DiskState::kDraining,
                      [&](index::WriteTxn& txn, const json::object& after) -> Result<Outcome> {
                        auto job = ScheduleOpsJobIn(txn, c, kDrainJob, params);
                        if (!job) return tl::unexpected(job.error());
                        if (!*job) return Outcome(tl::unexpected(job->error()));
                        CV_TRY(AuditNodeAction(txn, c, "disk.drain",
                                               "disk/" + std::to_string(disk->position), after));
                        return Outcome(JobScheduled(**job));
                      });
  if (r.status == 202 && c.runner) c.runner->Wake();
  return r;
}

Response RemoveDisk(Call& c) {
  auto body = JsonBody::Parse(c.request.body.empty() ? "{}" : c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({"force"}); !ok) return FromApiError(ok.error());
  auto force = body->Bool("force");
  if (!force) return FromApiError(force.error());
  const storage::StoreStats stats = c.store.Stats();
  auto disk = FindDisk(c, stats);
  if (!disk) return FromApiError(NoSuch("disk"));
  if (disk->state == storage::DiskState::kRemoved) {
    return FromApiError(ApiError{409, "disk_removed", "the disk was removed already", {}});
  }
  if (!disk->failed && disk->live_bytes > 0 && !force->value_or(false)) {
    return FromApiError(ApiError{
        409, "disk_in_use",
        "the disk is healthy and still holds " + std::to_string(disk->live_bytes) +
            " bytes of shards: drain it first (cvctl disk drain), or force the removal, which "
            "leaves those stripes short of full redundancy until repair rebuilds them",
        {}});
  }
  if (disk->live_bytes > 0) {
    if (auto refused = RefuseTooFew(c, stats, disk->position, "rebuilding this disk's shards")) {
      return *refused;
    }
  }
  // One index transaction: the disk removed, its audit record and, if it held shards, the
  // repair job that rebuilds them (unless one is pending already) with its own.
  Response r = ChangeDiskState(
      c, disk->position, storage::DiskState::kRemoved,
      [&](index::WriteTxn& txn, const json::object& removed) -> Result<Outcome> {
        CV_TRY(AuditNodeAction(txn, c, "disk.remove", "disk/" + std::to_string(disk->position),
                               removed));
        json::object reply;
        reply["disk"] = removed;
        reply["repair"] = nullptr;
        if (disk->live_bytes > 0) {
          json::object params;
          params["include_failed_disks"] = true;
          params["reason"] = "disk " + std::to_string(disk->position) + " removed";
          auto job = ScheduleOpsJobIn(txn, c, kRepairJob, params);
          if (!job) return tl::unexpected(job.error());
          if (*job) {
            reply["repair"] = JobJson(**job);
          } else {
            reply["message"] =
                "a repair job is scheduled or running already; the node's automatic repair (or "
                "cvctl repair --include-failed) rebuilds this disk's shards after it";
          }
        }
        return Outcome(Reply(200, reply));
      });
  if (r.status == 200 && c.runner) c.runner->Wake();
  return r;
}

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
  o["started_at"] = TimeOrNull(ctx.job.started_ns);
  o["finished_at"] = TimeOrNull(NowNanos());
  o["next"] = total.remaining_bytes == 0
                  ? "the disk holds nothing the node needs: cvctl disk remove, then unplug it"
                  : "some shards could not be moved (see problems): drain again";
  ForgetCensus();
  return std::optional<json::object>(std::move(o));
}

}  // namespace cv::admin::internal
