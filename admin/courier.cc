// Courier recovery (issue 6): the routes that show the node's courier key, start a courier job
// (with the room for its images promised up front), serve its images and delete them once
// shipped (README.md, "Courier recovery"). The job itself is admin/jobs/courier.cc.
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <boost/json/serialize.hpp>
#include <filesystem>
#include <optional>

#include "admin/internal.h"
#include "admin/jobs/jobs.h"
#include "courier/courier.h"

namespace cv::admin::internal {

namespace {

namespace fs = std::filesystem;

// Bytes that the files under `dir` take on their file system (none if it does not exist).
uint64_t AllocatedUnder(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      total += uint64_t(st.st_blocks) * 512;
    }
  }
  return total;
}

// Bytes free for courier images: what statvfs says an unprivileged writer may still use on
// courier_dir's file system (of the nearest folder that exists: the job makes the rest).
Result<uint64_t> CourierBytesFree(const Options& o) {
  fs::path p = o.courier_dir;
  std::error_code ec;
  while (!fs::exists(p, ec) && p.has_parent_path() && p.parent_path() != p) p = p.parent_path();
  struct statvfs st {};
  if (::statvfs(p.c_str(), &st) != 0) return ErrnoError(errno, "statvfs " + p.string());
  return uint64_t(st.f_bavail) * st.f_frsize;
}

}  // namespace

// ---- routes ----

Response CourierPubkey(Call& c) {
  auto pem = jobs::CourierPrivateKey(*c.options);
  if (!pem) return FromError(pem.error());
  auto pub = courier::Ed25519PublicKeyPem(*pem);
  if (!pub) return FromError(pub.error());
  json::object o;
  o["algorithm"] = "ed25519";
  o["public_key_pem"] = *pub;
  return Reply(200, o);
}

Response CreateCourier(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({"drive_bytes"}); !ok) return FromApiError(ok.error());
  // A drive smaller than 16 MiB is refused: the layout's
  // fixed structures alone take about 4 MiB.
  auto drive_bytes = body->Unsigned("drive_bytes", 16ull << 20, 1ull << 60);
  if (!drive_bytes) return FromApiError(drive_bytes.error());
  if (c.options->courier_dir.empty()) {
    return FromApiError(
        ApiError{503, "unavailable", "courier images are not configured on this node", {}});
  }
  Response r = InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto a, VisibleAccount(txn, c.caller, *c.account));
    if (!a) return Outcome(tl::unexpected(NoSuch("device")));
    CV_TRY_ASSIGN(auto d, txn.GetDevice(*c.device));
    if (!d || d->account != *c.account) return Outcome(tl::unexpected(NoSuch("device")));
    // One courier job per device at a time; and the room for the images is promised up
    // front: the bytes the jobs already scheduled or running may still write are held.
    std::optional<index::Job> other;
    uint64_t held = 0;
    CV_TRY(jobs::ForEachPendingJob(txn, std::nullopt, [&](const index::Job& j) {
      if (j.kind != jobs::kCourierJob) return true;
      if (j.device == *c.device) {
        other = j;
        return false;
      }
      const uint64_t promised = jobs::FromJsonText<jobs::CourierParams>(j.params_json).needed_bytes;
      const uint64_t used = AllocatedUnder(jobs::CourierJobDir(*c.options, j.id));
      held += promised > used ? promised - used : 0;
      return true;
    }));
    if (other) {
      ApiError busy{409,
                    "already_running",
                    "a courier job for this device is " + other->state + " already: " +
                        index::IdToHex(other->id) + " (cancel it, or wait until it is done)",
                    {}};
      busy.details["job"] = index::IdToHex(other->id);
      return Outcome(tl::unexpected(std::move(busy)));
    }
    CV_TRY_ASSIGN(auto needed, jobs::CourierBytesNeeded(txn, *d, drive_bytes->value_or(0)));
    CV_TRY_ASSIGN(auto free, CourierBytesFree(*c.options));
    if (held >= free || needed > free - held) {
      ApiError full{507,
                    "insufficient_storage",
                    "the courier images of this device need up to " + std::to_string(needed) +
                        " bytes in courier_dir, which has " + std::to_string(free) + " bytes free" +
                        (held ? " (" + std::to_string(held) +
                                    " of them held for courier jobs scheduled or running)"
                              : std::string()) +
                        ": delete the images of shipped jobs (DELETE /jobs/{j}/images), or "
                        "give courier_dir more room",
                    {}};
      full.details["needed_bytes"] = needed;
      full.details["free_bytes"] = free;
      full.details["held_bytes"] = held;
      return Outcome(tl::unexpected(std::move(full)));
    }
    const jobs::CourierParams params{drive_bytes->value_or(0), d->name, needed};
    index::Job job = jobs::NewJob(jobs::kCourierJob, *c.account, *c.device,
                                  json::value_from(params), c.now_ns, c.now_ns);
    CV_TRY(txn.PutJob(job));
    json::object after = jobs::JobJson(job);
    CV_TRY(AppendAudit(
        txn, c, "device.courier",
        "account/" + index::IdToHex(*c.account) + "/device/" + index::IdToHex(*c.device),
        *c.account, a->partner, nullptr, after));
    Response ok = Reply(202, after);
    ok.headers.emplace_back("Location", "/admin/v1/jobs/" + index::IdToHex(job.id));
    return Outcome(std::move(ok));
  });
  if (r.status == 202 && c.runner) c.runner->Wake();
  return r;
}

Response CourierImage(Call& c) {
  std::string path;
  Response r = InRead(c, [&](index::Txn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto j, VisibleJob(txn, c.caller, *c.job));
    if (!j) return Outcome(tl::unexpected(NoSuch("job")));
    // A cancelled job's images were removed with it; a failed one has none.
    if (j->kind != jobs::kCourierJob || j->state == "cancelled" || j->state == "failed") {
      return Outcome(tl::unexpected(NoSuch("image")));
    }
    if (j->state != "done") {
      return Outcome(tl::unexpected(
          ApiError{409, "not_ready", "the courier job is " + j->state + ", not done", {}}));
    }
    const auto result = jobs::FromJsonText<jobs::CourierResult>(j->result_json);
    if (result.images_deleted_at) {
      return Outcome(tl::unexpected(
          ApiError{404,
                   "not_found",
                   "the images of this job were deleted at " + *result.images_deleted_at,
                   {}}));
    }
    if (c.drive == 0 || c.drive > result.images.size()) {
      return Outcome(tl::unexpected(NoSuch("image")));
    }
    path = jobs::CourierJobDir(*c.options, j->id) + "/" + result.images[c.drive - 1].file;
    return Outcome(Reply(200, json::object()));
  });
  if (r.status != 200) return r;
  if (::access(path.c_str(), R_OK) != 0) {
    return FromApiError(ApiError{410, "gone", "the image file is no longer on the node", {}});
  }
  Response f;
  f.status = 200;
  f.file = path;
  return f;
}

Response DeleteCourierImages(Call& c) {
  if (!c.request.body.empty()) {
    return FromApiError(ApiError{400, "unexpected_body", "DELETE takes no body", {}});
  }
  Response r = InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto found, VisibleJob(txn, c.caller, *c.job));
    if (!found) return Outcome(tl::unexpected(NoSuch("job")));
    index::Job j = *found;
    if (!MayChangeJob(c.caller, j.kind)) {
      return RefuseJobChange(txn, c, j, "courier.images_delete");
    }
    if (j.kind != jobs::kCourierJob || j.state != "done") {
      return Outcome(tl::unexpected(ApiError{
          409, "not_done",
          "only the images of a done courier job can be deleted; this is a " + j.kind +
              " job, " + j.state,
          {}}));
    }
    auto result = jobs::FromJsonText<jobs::CourierResult>(j.result_json);
    // Again: nothing changes (the files are removed again below, should a first try have
    // failed half-way).
    if (result.images_deleted_at) return Outcome(Reply(200, jobs::JobJson(j)));
    const json::object before = jobs::JobJson(j);
    result.images_deleted_at = jobs::TimeOf(c.now_ns);
    j.result_json = jobs::ToJsonText(result);
    CV_TRY(txn.PutJob(j));
    CV_TRY_ASSIGN(auto partner, jobs::JobPartner(txn, j));
    json::object after = jobs::JobJson(j);
    CV_TRY(AppendAudit(txn, c, "courier.images_delete", jobs::JobTarget(j.id), j.account, partner,
                       before, after));
    return Outcome(Reply(200, after));
  });
  if (r.status == 200) {
    if (Status s = jobs::RemoveCourierFiles(*c.options, *c.job); !s) return FromError(s.error());
  }
  return r;
}

}  // namespace cv::admin::internal
