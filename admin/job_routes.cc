// Jobs: the routes that show and cancel them (GET /jobs, GET /jobs/{j}, POST
// /jobs/{j}/cancel), and the rule of who may change a job. The jobs themselves and the runner
// are in admin/jobs/. See "Jobs" in admin.h.
#include "admin/internal.h"
#include "admin/jobs/jobs.h"

namespace cv::admin::internal {

Result<std::optional<index::Job>> VisibleJob(index::Txn& txn, const Caller& caller,
                                             const index::Id& id) {
  auto j = txn.GetJob(id);
  CV_TRY(j);
  if (!*j || caller.is_operator) return j;
  if (!(*j)->account) return std::optional<index::Job>();
  CV_TRY_ASSIGN(auto a, VisibleAccount(txn, caller, *(*j)->account));
  if (!a) return std::optional<index::Job>();
  return j;
}

bool MayChangeJob(const Caller& caller, std::string_view kind) {
  return caller.is_operator || jobs::PartnerMayCreate(kind);
}

Result<Outcome> RefuseJobChange(index::WriteTxn& txn, const Call& c, const index::Job& j,
                                std::string_view action) {
  const ApiError refusal{403,
                         "operator_only",
                         "only the operator may cancel or change this " + j.kind +
                             " job: a partner key may change only the kinds of job it may "
                             "create (device.purge and courier jobs of its own accounts)",
                         {}};
  CV_TRY_ASSIGN(auto partner, jobs::JobPartner(txn, j));
  json::object error;
  error["status"] = refusal.status;
  error["code"] = refusal.code;
  error["message"] = refusal.message;
  json::object after;
  after["refused"] = std::move(error);
  CV_TRY(AppendAudit(txn, c, std::string(action) + ".refused", jobs::JobTarget(j.id), j.account,
                     partner, jobs::JobJson(j), after));
  // An answer, not a refusal of InUpdate's: the transaction commits, with the audit record
  // as its only change.
  return Outcome(FromApiError(refusal));
}

Response ListJobs(Call& c) {
  auto q = Query::Parse(c.query, {"account", "state", "kind", "cursor", "limit"});
  if (!q) return FromApiError(q.error());
  auto account = q->Id("account");
  if (!account) return FromApiError(account.error());
  auto cursor = q->Id("cursor");
  if (!cursor) return FromApiError(cursor.error());
  auto limit = q->Limit();
  if (!limit) return FromApiError(limit.error());
  std::optional<std::string> state = q->Get("state");
  std::optional<std::string> kind = q->Get("kind");
  if (state && *state != "scheduled" && *state != "running" && *state != "done" &&
      *state != "cancelled" && *state != "failed") {
    return FromApiError(
        BadField("state", "must be one of scheduled, running, done, cancelled, failed").value());
  }
  return InRead(c, [&](index::Txn& txn) -> Result<Outcome> {
    if (*account) {
      CV_TRY_ASSIGN(auto a, VisibleAccount(txn, c.caller, **account));
      if (!a) return Outcome(tl::unexpected(NoSuch("account")));
    }
    json::array items;
    std::optional<index::Id> after = *cursor;
    bool more = true;
    // A partner's listing skips the jobs of other partners' accounts: read on until the page
    // is full or the jobs run out.
    while (more && items.size() < *limit) {
      index::JobQuery jq;
      jq.account = *account;
      jq.state = state;
      jq.start_after = after;
      jq.limit = *limit;
      CV_TRY_ASSIGN(auto jobs, txn.ListJobs(jq));
      more = jobs.size() == *limit;
      for (const auto& j : jobs) {
        after = j.id;
        if (kind && j.kind != *kind) continue;
        bool visible = c.caller.is_operator;
        if (!visible && j.account) {
          CV_TRY_ASSIGN(auto a, VisibleAccount(txn, c.caller, *j.account));
          visible = a.has_value();
        }
        if (visible) items.push_back(jobs::JobJson(j));
        if (items.size() == *limit) break;
      }
    }
    std::optional<std::string> next;
    if (items.size() == *limit && more) next = index::IdToHex(*after);
    return Outcome(Reply(200, Page(std::move(items), next)));
  });
}

Response GetJob(Call& c) {
  return InRead(c, [&](index::Txn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto j, VisibleJob(txn, c.caller, *c.job));
    if (!j) return Outcome(tl::unexpected(NoSuch("job")));
    return Outcome(Reply(200, jobs::JobJson(*j)));
  });
}

namespace {

// What a cancelled job leaves to undo outside the index transaction: a running job is told
// to stop now; a cancelled courier job's files go (partial images included: the writer,
// which stops at its next chunk, removes anything it wrote meanwhile too).
Status AfterCancel(Call& c, const Response& r) {
  if (c.runner) c.runner->Cancelled(*c.job);
  if (jobs::FromJsonText<jobs::JobView>(r.body).kind == jobs::kCourierJob) {
    return jobs::RemoveCourierFiles(*c.options, *c.job);
  }
  return {};
}

// The disk that cancelling this job puts back into service: a scheduled or running drain
// job's, while the disk is draining. nullopt for any other job, or one the caller cannot see.
Result<std::optional<size_t>> DiskToReactivate(Call& c) {
  std::optional<index::Job> j;
  {
    CV_TRY_ASSIGN(auto txn, c.store.Index().BeginRead());
    CV_TRY_ASSIGN(auto found, VisibleJob(*txn, c.caller, *c.job));
    j = std::move(found);
  }
  if (!j || j->kind != jobs::kDrainJob || (j->state != "scheduled" && j->state != "running")) {
    return std::optional<size_t>();
  }
  const std::optional<uint64_t> d = jobs::FromJsonText<jobs::DrainParams>(j->params_json).disk;
  if (!d) return std::optional<size_t>();
  const size_t disk = *d;
  const storage::StoreStats stats = c.store.Stats();
  if (disk >= stats.disks.size() || stats.disks[disk].state != storage::DiskState::kDraining) {
    return std::optional<size_t>();  // removed meanwhile (or never drained): nothing to undo
  }
  return std::optional<size_t>(disk);
}

}  // namespace

Response CancelJob(Call& c) {
  auto body = JsonBody::Parse(c.request.body.empty() ? "{}" : c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({}); !ok) return FromApiError(ok.error());
  auto cancel = [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto found, VisibleJob(txn, c.caller, *c.job));
    if (!found) return Outcome(tl::unexpected(NoSuch("job")));
    index::Job j = *found;
    if (!MayChangeJob(c.caller, j.kind)) return RefuseJobChange(txn, c, j, "job.cancel");
    // A scrub, a drain or a courier job stops at its next batch or chunk; other kinds only
    // before they start (a purge that has begun removing objects cannot be undone).
    const bool stoppable =
        j.state == "running" &&
        (j.kind == jobs::kScrubJob || j.kind == jobs::kDrainJob || j.kind == jobs::kCourierJob);
    if (j.state != "scheduled" && !stoppable) {
      return Outcome(tl::unexpected(ApiError{
          409, "not_cancellable",
          "the job is " + j.state +
              ": only a scheduled job (or a running scrub, drain or courier job) can be "
              "cancelled",
          {}}));
    }
    const json::object before = jobs::JobJson(j);
    if (j.kind == jobs::kPurgeDeviceJob || j.kind == jobs::kPurgeAccountJob) {
      // The devices come back exactly as they were: same token, same data.
      std::vector<index::DeviceRecord> closed;
      if (j.kind == jobs::kPurgeDeviceJob && j.device) {
        CV_TRY_ASSIGN(auto d, txn.GetDevice(*j.device));
        if (d) closed.push_back(*d);
      } else if (j.account) {
        CV_TRY_ASSIGN(auto all, txn.ListDevices(*j.account));
        closed = std::move(all);
      }
      for (index::DeviceRecord dev : closed) {
        if (dev.purge_job != j.id) continue;  // closed by a purge of its own, or open
        // A device purge's device may have had its slot taken by a replacement meanwhile.
        if (j.kind == jobs::kPurgeDeviceJob) {
          CV_TRY_ASSIGN(auto full, DeviceLimitReached(txn, dev.account));
          if (full) {
            full->message +=
                "; reopening this device would exceed it (delete a device or "
                "raise the limit first)";
            return Outcome(tl::unexpected(std::move(*full)));
          }
        }
        dev.closed_ns = 0;
        dev.purge_job = index::Id{};
        CV_TRY(txn.PutDevice(dev));
      }
    }
    CV_TRY_ASSIGN(auto partner, jobs::JobPartner(txn, j));
    j.state = "cancelled";
    j.finished_ns = c.now_ns;
    CV_TRY(txn.PutJob(j));
    json::object after = jobs::JobJson(j);
    CV_TRY(AppendAudit(txn, c, "job.cancel", jobs::JobTarget(j.id), j.account, partner, before,
                       after));
    return Outcome(Reply(200, after));
  };
  // A cancelled drain puts its disk back into service (the shards it moved already stay
  // where they are) in the same index transaction as the cancellation and its audit record.
  auto disk = DiskToReactivate(c);
  if (!disk) return FromError(disk.error());
  Response r = *disk ? ChangeDiskState(
                           c, **disk, storage::DiskState::kActive,
                           [&](index::WriteTxn& txn, const json::object&) { return cancel(txn); })
                     : InUpdate(c, cancel);
  if (r.status == 200) {
    if (Status st = AfterCancel(c, r); !st) return FromError(st.error());
  }
  return r;
}

}  // namespace cv::admin::internal
