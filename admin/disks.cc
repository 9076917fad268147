// Disk replacement (what `cvctl disk` calls): GET /disks, POST /disks (add a disk while the
// node serves), POST /disks/{disk}/drain (a disk.drain job, admin/jobs/drain.cc, moves every
// shard off a readable disk), POST /disks/{disk}/remove (a dead disk is gone for good: a
// repair job rebuilds its shards on the other disks). All operator only; every change is
// audited in the index transaction that records it (the store runs the record inside its
// own).
#include <boost/json/array.hpp>
#include <chrono>

#include "admin/internal.h"
#include "admin/jobs/jobs.h"

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
  CV_TRY_ASSIGN(auto txn, c.store.Index().BeginRead());
  CV_TRY_ASSIGN(auto p, txn->GetMeta("erasure_profile"));
  auto parsed = p ? ParseProfile(*p) : std::nullopt;
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
  const json::value params = json::value_from(jobs::DrainParams{disk->position, disk->path});
  // One index transaction: the disk draining, the drain job (409 if one is pending already)
  // and both audit records. A drain job that starts finds the disk draining.
  Response r =
      ChangeDiskState(c, disk->position, storage::DiskState::kDraining,
                      [&](index::WriteTxn& txn, const json::object& after) -> Result<Outcome> {
                        CV_TRY_ASSIGN(auto job, ScheduleOpsJobIn(txn, c, jobs::kDrainJob, params));
                        if (!job) return Outcome(tl::unexpected(job.error()));
                        CV_TRY(AuditNodeAction(txn, c, "disk.drain",
                                               "disk/" + std::to_string(disk->position), after));
                        return Outcome(JobScheduled(*job));
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
          const jobs::RepairParams params{/*include_failed_disks=*/true, std::nullopt,
                                          "disk " + std::to_string(disk->position) + " removed"};
          CV_TRY_ASSIGN(auto job,
                        ScheduleOpsJobIn(txn, c, jobs::kRepairJob, json::value_from(params)));
          if (job) {
            reply["repair"] = jobs::JobJson(*job);
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

}  // namespace cv::admin::internal
