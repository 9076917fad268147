// Jobs: the routes that show and cancel them, and the runner that does the work (device
// purges, background compaction). See "Jobs" in admin.h.
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "admin/internal.h"

namespace cv::admin::internal {

namespace {

json::value ParsedOrNull(const std::string& text) {
  if (text.empty()) return nullptr;
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return nullptr;
  return v;
}



std::string Str(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  return it != o.end() && it->value().is_string() ? std::string(it->value().as_string()) : "";
}

// Each job kind runs on a lane (a thread) of its own kind of work, so that no kind waits for
// another: a purge never waits for a multi-terabyte courier image, a courier image never for
// a purge, and neither for a scrub, a repair or a drain.
enum class Lane { kPurge, kCourier, kMaintenance };
constexpr int kLanes = 3;
constexpr const char* kLaneNames[kLanes] = {"purge", "courier", "maintenance"};

struct KindInfo {
  std::string_view kind;
  Lane lane;
  std::string_view audit_action;  // of the receipt when done
  // Whether a partner key may create a job of this kind (for its own accounts), and so change
  // one (MayChangeJob). The routes that create jobs say the same: DELETE /accounts/{a} (an
  // account.purge), /scrub, /repair and the /disks routes are operator routes in kRoutes
  // (admin.cc); DELETE .../devices/{d} and POST .../devices/{d}/courier are not.
  bool partner_may_create;
  JobResult (*run)(JobContext&);
};
constexpr KindInfo kKinds[] = {
    {kPurgeDeviceJob, Lane::kPurge, "device.purge", true, RunPurgeJob},
    {kPurgeAccountJob, Lane::kPurge, "account.purge", false, RunPurgeJob},
    {kCourierJob, Lane::kCourier, "device.courier", true, RunCourierJob},
    {kScrubJob, Lane::kMaintenance, "node.scrub", false, RunScrubJob},
    {kRepairJob, Lane::kMaintenance, "node.repair", false, RunRepairJob},
    {kDrainJob, Lane::kMaintenance, "disk.drain", false, RunDrainJob},
};
const KindInfo* FindKind(std::string_view kind) {
  for (const auto& k : kKinds) {
    if (k.kind == kind) return &k;
  }
  return nullptr;
}
Lane LaneOf(std::string_view kind) {
  const KindInfo* k = FindKind(kind);
  return k ? k->lane : Lane::kPurge;  // unknown kinds fail on the purge lane
}

}  // namespace

Result<std::optional<index::Job>> VisibleJob(index::Txn& txn, const Caller& caller,
                                             const index::Id& id) {
  auto j = txn.GetJob(id);
  if (!j) return tl::unexpected(j.error());
  if (!*j || caller.is_operator) return j;
  if (!(*j)->account) return std::optional<index::Job>();
  auto a = VisibleAccount(txn, caller, *(*j)->account);
  if (!a) return tl::unexpected(a.error());
  if (!*a) return std::optional<index::Job>();
  return j;
}

Result<std::optional<index::Id>> JobPartner(index::Txn& txn, const index::Job& j) {
  if (!j.account) return std::optional<index::Id>();
  auto a = txn.GetAccount(*j.account);
  if (!a) return tl::unexpected(a.error());
  return *a ? (*a)->partner : std::optional<index::Id>();
}

bool MayChangeJob(const Caller& caller, std::string_view kind) {
  if (caller.is_operator) return true;
  const KindInfo* k = FindKind(kind);
  return k && k->partner_may_create;
}

Result<Outcome> RefuseJobChange(index::WriteTxn& txn, const Call& c, const index::Job& j,
                                std::string_view action) {
  const ApiError refusal{403,
                         "operator_only",
                         "only the operator may cancel or change this " + j.kind +
                             " job: a partner key may change only the kinds of job it may "
                             "create (device.purge and courier jobs of its own accounts)",
                         {}};
  auto partner = JobPartner(txn, j);
  if (!partner) return tl::unexpected(partner.error());
  json::object error;
  error["status"] = refusal.status;
  error["code"] = refusal.code;
  error["message"] = refusal.message;
  json::object after;
  after["refused"] = std::move(error);
  CV_TRY(AppendAudit(txn, c, std::string(action) + ".refused", JobTarget(j.id), j.account, *partner,
                     JobJson(j), after));
  // An answer, not a refusal of InUpdate's: the transaction commits, with the audit record
  // as its only change.
  return Outcome(FromApiError(refusal));
}

uint64_t U64(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) return 0;
  if (it->value().is_uint64()) return it->value().as_uint64();
  if (it->value().is_int64() && it->value().as_int64() >= 0) return it->value().as_int64();
  return 0;
}

bool ProgressSaver::Tick(const std::function<json::object()>& make) {
  if (ctx_.stopping()) {
    cancelled_ = ctx_.cancelled();
    return false;
  }
  const auto now = std::chrono::steady_clock::now();
  if (now - last_ < std::chrono::seconds(1)) return true;
  last_ = now;
  auto saved = ctx_.SaveProgress(make());
  if (!saved) {
    error_ = saved.error();
    return false;
  }
  cancelled_ = !*saved;
  return *saved;
}

Result<uint64_t> CountObjects(storage::ObjectStore& store) {
  uint64_t total = 0;
  auto txn = store.Index().BeginRead();
  if (!txn) return tl::unexpected(txn.error());
  CV_TRY((*txn)->ForEachObject([&](const index::ObjectKey&, const index::ObjectRecord&) {
    ++total;
    return true;
  }));
  return total;
}

json::array AppendCapped(const json::value* base, const std::vector<std::string>& lines,
                         size_t cap) {
  json::array out = base && base->is_array() ? base->as_array() : json::array{};
  for (const auto& line : lines) {
    if (out.size() >= cap) break;
    out.push_back(json::value(line));
  }
  return out;
}

json::object ParsedObjectOrEmpty(const std::string& text) {
  json::value v = ParsedOrNull(text);
  return v.is_object() ? v.as_object() : json::object();
}

std::string JobTarget(const index::Id& job) { return "job/" + index::IdToHex(job); }

index::Job NewJob(std::string_view kind, std::optional<index::Id> account,
                  std::optional<index::Id> device, const json::object& params, int64_t now_ns,
                  int64_t run_after_ns) {
  index::Job j;
  j.id = index::NewId();
  j.kind = std::string(kind);
  j.state = "scheduled";
  j.account = account;
  j.device = device;
  j.params_json = json::serialize(params);
  j.created_ns = now_ns;
  j.run_after_ns = run_after_ns;
  return j;
}

json::object JobJson(const index::Job& j) {
  json::object o;
  o["id"] = index::IdToHex(j.id);
  o["kind"] = j.kind;
  o["state"] = j.state;
  o["account"] = j.account ? json::value(index::IdToHex(*j.account)) : json::value(nullptr);
  o["device"] = j.device ? json::value(index::IdToHex(*j.device)) : json::value(nullptr);
  o["params"] = ParsedOrNull(j.params_json);
  o["progress"] = ParsedOrNull(j.progress_json);
  o["result"] = ParsedOrNull(j.result_json);
  o["created_at"] = TimeOrNull(j.created_ns);
  o["run_after"] = TimeOrNull(j.run_after_ns);
  o["started_at"] = TimeOrNull(j.started_ns);
  o["finished_at"] = TimeOrNull(j.finished_ns);
  return o;
}

// ---- routes ----

ApiResult<int64_t> PurgeGrace(const Call& c) {
  auto q = Query::Parse(c.query, {"grace"});
  if (!q) return tl::unexpected(q.error());
  int64_t grace = c.options->purge_grace_ns;
  if (auto g = q->Get("grace")) {
    auto d = ParseDuration(*g);
    if (!d) {
      return tl::unexpected(ApiError{
          400, "invalid_query",
          "query parameter 'grace' must be a duration such as 7d, 24h or 0s", "grace"});
    }
    if (*d < grace && !c.caller.is_operator) {
      return tl::unexpected(ApiError{403, "operator_only",
                                     "only the operator may shorten the grace period below " +
                                         std::to_string(grace / 1000000000) + " s",
                                     "grace"});
    }
    grace = *d;
  }
  return grace;
}

Status ForEachPendingJob(index::Txn& txn, std::optional<index::Id> account,
                         const std::function<bool(const index::Job&)>& fn) {
  for (const char* state : {"scheduled", "running"}) {
    index::JobQuery q;
    q.account = account;
    q.state = state;
    q.limit = 1000;
    while (true) {
      auto jobs = txn.ListJobs(q);
      if (!jobs) return tl::unexpected(jobs.error());
      for (const auto& j : *jobs) {
        if (!fn(j)) return {};
      }
      if (jobs->size() < q.limit) break;
      q.start_after = jobs->back().id;
    }
  }
  return {};
}

Result<std::optional<index::Id>> PendingAccountPurge(index::Txn& txn, const index::Id& account) {
  std::optional<index::Id> found;
  CV_TRY(ForEachPendingJob(txn, account, [&](const index::Job& j) {
    if (j.kind == kPurgeAccountJob) found = j.id;
    return !found;
  }));
  return found;
}

Response DeleteAccount(Call& c) {
  if (!c.request.body.empty()) {
    return FromApiError(ApiError{400, "unexpected_body", "DELETE takes no body", {}});
  }
  auto grace = PurgeGrace(c);
  if (!grace) return FromApiError(grace.error());
  Response r = InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    auto a = VisibleAccount(txn, c.caller, *c.account);
    if (!a) return tl::unexpected(a.error());
    if (!*a) return Outcome(tl::unexpected(NoSuch("account")));
    auto pending = PendingAccountPurge(txn, *c.account);
    if (!pending) return tl::unexpected(pending.error());
    if (*pending) {
      return Outcome(tl::unexpected(ApiError{
          409, "already_deleted", "the account is already deleted by job " + index::IdToHex(**pending),
          {}}));
    }
    auto devices = txn.ListDevices(*c.account);
    if (!devices) return tl::unexpected(devices.error());
    json::object params;
    params["grace_seconds"] = *grace / 1000000000;
    params["devices"] = devices->size();
    index::Job job = NewJob(kPurgeAccountJob, *c.account, std::nullopt, params, c.now_ns,
                            c.now_ns + *grace);
    for (index::DeviceRecord d : *devices) {
      if (d.closed_ns != 0) continue;  // already closed by a device purge of its own
      d.closed_ns = c.now_ns;
      d.purge_job = job.id;
      CV_TRY(txn.PutDevice(d));
    }
    CV_TRY(txn.PutJob(job));
    json::object after = JobJson(job);
    CV_TRY(AppendAudit(txn, c, "account.delete", "account/" + index::IdToHex(*c.account),
                       *c.account, (*a)->partner, AccountSettingsJson(**a), after));
    Response ok = Reply(202, after);
    ok.headers.emplace_back("Location", "/admin/v1/jobs/" + index::IdToHex(job.id));
    return Outcome(std::move(ok));
  });
  if (r.status == 202 && *grace == 0 && c.runner) c.runner->Wake();
  return r;
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
      auto a = VisibleAccount(txn, c.caller, **account);
      if (!a) return tl::unexpected(a.error());
      if (!*a) return Outcome(tl::unexpected(NoSuch("account")));
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
      auto jobs = txn.ListJobs(jq);
      if (!jobs) return tl::unexpected(jobs.error());
      more = jobs->size() == *limit;
      for (const auto& j : *jobs) {
        after = j.id;
        if (kind && j.kind != *kind) continue;
        bool visible = c.caller.is_operator;
        if (!visible && j.account) {
          auto a = VisibleAccount(txn, c.caller, *j.account);
          if (!a) return tl::unexpected(a.error());
          visible = a->has_value();
        }
        if (visible) items.push_back(JobJson(j));
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
    auto j = VisibleJob(txn, c.caller, *c.job);
    if (!j) return tl::unexpected(j.error());
    if (!*j) return Outcome(tl::unexpected(NoSuch("job")));
    return Outcome(Reply(200, JobJson(**j)));
  });
}

namespace {

// What a cancelled job leaves to undo outside the index transaction: a running job is told
// to stop now; a cancelled courier job's files go (partial images included: the writer,
// which stops at its next chunk, removes anything it wrote meanwhile too).
Status AfterCancel(Call& c, const Response& r) {
  if (c.runner) c.runner->Cancelled(*c.job);
  auto job = json::parse(r.body).as_object();
  if (job.contains("kind") && job.at("kind") == json::value(kCourierJob)) {
    return RemoveCourierFiles(*c.options, *c.job);
  }
  return {};
}

// The disk that cancelling this job puts back into service: a scheduled or running drain
// job's, while the disk is draining. nullopt for any other job, or one the caller cannot see.
Result<std::optional<size_t>> DiskToReactivate(Call& c) {
  std::optional<index::Job> j;
  {
    auto txn = c.store.Index().BeginRead();
    if (!txn) return tl::unexpected(txn.error());
    auto found = VisibleJob(**txn, c.caller, *c.job);
    if (!found) return tl::unexpected(found.error());
    j = std::move(*found);
  }
  if (!j || j->kind != kDrainJob || (j->state != "scheduled" && j->state != "running")) {
    return std::optional<size_t>();
  }
  const json::object params = ParsedObjectOrEmpty(j->params_json);
  const json::value* d = params.if_contains("disk");
  if (!d || !d->is_number()) return std::optional<size_t>();
  const size_t disk = d->to_number<size_t>();
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
    auto found = VisibleJob(txn, c.caller, *c.job);
    if (!found) return tl::unexpected(found.error());
    if (!*found) return Outcome(tl::unexpected(NoSuch("job")));
    index::Job j = **found;
    if (!MayChangeJob(c.caller, j.kind)) return RefuseJobChange(txn, c, j, "job.cancel");
    // A scrub, a drain or a courier job stops at its next batch or chunk; other kinds only
    // before they start (a purge that has begun removing objects cannot be undone).
    const bool stoppable = j.state == "running" &&
                           (j.kind == kScrubJob || j.kind == kDrainJob || j.kind == kCourierJob);
    if (j.state != "scheduled" && !stoppable) {
      return Outcome(tl::unexpected(ApiError{
          409, "not_cancellable",
          "the job is " + j.state +
              ": only a scheduled job (or a running scrub, drain or courier job) can be "
              "cancelled",
          {}}));
    }
    const json::object before = JobJson(j);
    if (j.kind == kPurgeDeviceJob || j.kind == kPurgeAccountJob) {
      // The devices come back exactly as they were: same token, same data.
      std::vector<index::DeviceRecord> closed;
      if (j.kind == kPurgeDeviceJob && j.device) {
        auto d = txn.GetDevice(*j.device);
        if (!d) return tl::unexpected(d.error());
        if (*d) closed.push_back(**d);
      } else if (j.account) {
        auto all = txn.ListDevices(*j.account);
        if (!all) return tl::unexpected(all.error());
        closed = std::move(*all);
      }
      for (index::DeviceRecord dev : closed) {
        if (dev.purge_job != j.id) continue;  // closed by a purge of its own, or open
        // A device purge's device may have had its slot taken by a replacement meanwhile.
        if (j.kind == kPurgeDeviceJob) {
          auto full = DeviceLimitReached(txn, dev.account);
          if (!full) return tl::unexpected(full.error());
          if (*full) {
            (*full)->message +=
                "; reopening this device would exceed it (delete a device or "
                "raise the limit first)";
            return Outcome(tl::unexpected(std::move(**full)));
          }
        }
        dev.closed_ns = 0;
        dev.purge_job = index::Id{};
        CV_TRY(txn.PutDevice(dev));
      }
    }
    auto partner = JobPartner(txn, j);
    if (!partner) return tl::unexpected(partner.error());
    j.state = "cancelled";
    j.finished_ns = c.now_ns;
    CV_TRY(txn.PutJob(j));
    json::object after = JobJson(j);
    CV_TRY(AppendAudit(txn, c, "job.cancel", JobTarget(j.id), j.account, *partner, before, after));
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

// ---- the runner ----

Result<bool> JobContext::SaveProgress(const json::object& progress,
                                      const std::function<Status(index::WriteTxn&)>& also) {
  bool running = false;
  const std::string text = json::serialize(progress);
  Status s = store.Index().Update([&](index::WriteTxn& txn) -> Status {
    running = false;
    auto cur = txn.GetJob(job.id);
    if (!cur) return tl::unexpected(cur.error());
    if (!*cur || (*cur)->state != "running") return {};  // cancelled meanwhile
    running = true;
    index::Job j = **cur;
    j.progress_json = text;
    if (also) CV_TRY(also(txn));
    return txn.PutJob(j);
  });
  if (!s) return tl::unexpected(s.error());
  if (running) job.progress_json = text;
  return running;
}

namespace {

std::string AuditTarget(const index::Job& j) {
  if (!j.device) return "node";
  return "account/" + (j.account ? index::IdToHex(*j.account) : std::string("none")) +
         "/device/" + index::IdToHex(*j.device);
}

}  // namespace

struct JobRunner::State {
  storage::ObjectStore& store;
  const Options& options;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  uint64_t wakes = 0;
  // The job each lane runs now, and whether it was cancelled meanwhile.
  std::optional<index::Id> running[kLanes];
  bool cancelled[kLanes] = {};
  std::thread lanes[kLanes];

  State(storage::ObjectStore& s, const Options& o) : store(s), options(o) {}

  bool Stopping() {
    std::lock_guard lock(mu);
    return stop;
  }
  bool Cancelled(Lane lane) {
    std::lock_guard lock(mu);
    return cancelled[int(lane)];
  }

  void Loop(Lane lane) {
    int64_t last_idle_work = NowNanos();
    std::optional<SteadyTime> last_disk_check;  // by DueMaintenanceJob
    while (true) {
      uint64_t seen;
      {
        std::unique_lock lock(mu);
        if (stop) return;
        seen = wakes;
      }
      auto job = Claim(lane);
      if (!job) {
        Log(LogLevel::kError, "job_claim_failed", {{"error", job.error().ToString()}});
      } else if (*job) {
        Run(**job, lane);
        continue;  // there may be more due
      } else if (lane == Lane::kPurge && options.compact_interval_ns > 0 &&
                 NowNanos() - last_idle_work >= options.compact_interval_ns) {
        // Background compaction runs on the purge lane when it is idle: purges make most of
        // the dead space and end with a compaction pass of their own, so that every pass
        // runs on this one thread, one after the other (never two at once), and no courier
        // image or maintenance job waits for one.
        last_idle_work = NowNanos();
        Compact("background");
      } else if (lane == Lane::kMaintenance) {
        auto due = DueMaintenanceJob(store, options, NowNanos(), last_disk_check);
        if (!due) {
          Log(LogLevel::kError, "maintenance_check_failed", {{"error", due.error().ToString()}});
        } else if (*due) {
          const index::Job j = **due;
          Status s = store.Index().Update([&](index::WriteTxn& txn) -> Status {
            CV_TRY(txn.PutJob(j));
            return AppendSystemAudit(txn, j.created_ns, "job.schedule", JobTarget(j.id), {}, {},
                                     nullptr, JobJson(j));
          });
          if (!s) {
            Log(LogLevel::kError, "maintenance_schedule_failed", {{"error", s.error().ToString()}});
          } else {
            Log(LogLevel::kInfo, "job_scheduled",
                {{"job", index::IdToHex(j.id)}, {"kind", j.kind}, {"params", j.params_json}});
            continue;
          }
        }
      }
      std::unique_lock lock(mu);
      cv.wait_for(lock, std::chrono::nanoseconds(options.job_poll_ns),
                  [&] { return stop || wakes != seen; });
    }
  }

  uint64_t Compact(const char* why) {
    auto rep = store.Compact(options.compact);
    if (!rep) {
      Log(LogLevel::kError, "compaction_failed", {{"why", why}, {"error", rep.error().ToString()}});
      return 0;
    }
    if (rep->extents_removed > 0 || !rep->problems.empty()) {
      Log(LogLevel::kInfo, "compaction",
          {{"why", why},
           {"extents_removed", std::to_string(rep->extents_removed)},
           {"bytes_moved", std::to_string(rep->bytes_moved)},
           {"bytes_reclaimed", std::to_string(rep->bytes_reclaimed)},
           {"problems", std::to_string(rep->problems.size())}});
    }
    return rep->bytes_reclaimed;
  }

  // The next job of this lane to run, marked "running": a running one first (a crash
  // interrupted it), then the scheduled one due first. Looked for in a read transaction, so
  // that an idle poll costs no commit; only a scheduled job found is claimed in a write
  // transaction, which checks that it is still scheduled (it may have been cancelled since).
  Result<std::optional<index::Job>> Claim(Lane lane) {
    const int64_t now = NowNanos();
    // Each retry follows a change made meanwhile by another thread; a poll that gives up
    // leaves the job to the next one.
    for (int attempt = 0; attempt < 3; ++attempt) {
      std::optional<index::Job> found;
      {
        auto txn = store.Index().BeginRead();
        if (!txn) return tl::unexpected(txn.error());
        auto due = NextDue(**txn, lane, now);
        if (!due) return tl::unexpected(due.error());
        found = std::move(*due);
      }
      if (!found || found->state == "running") return found;
      bool claimed = false;
      Status s = store.Index().Update([&](index::WriteTxn& txn) -> Status {
        claimed = false;
        auto cur = txn.GetJob(found->id);
        if (!cur) return tl::unexpected(cur.error());
        if (!*cur || (*cur)->state != "scheduled" || (*cur)->run_after_ns > now) return {};
        index::Job j = std::move(**cur);
        j.state = "running";
        j.started_ns = now;
        CV_TRY(txn.PutJob(j));
        *found = std::move(j);
        claimed = true;
        return {};
      });
      if (!s) return tl::unexpected(s.error());
      if (claimed) return found;
    }
    return std::optional<index::Job>();
  }

  // The job of this lane that Claim should take at `now`, as stored, or nullopt.
  static Result<std::optional<index::Job>> NextDue(index::Txn& txn, Lane lane, int64_t now) {
    std::optional<index::Job> next;
    for (const char* state : {"running", "scheduled"}) {
      std::optional<index::Id> after;
      while (true) {
        index::JobQuery q;
        q.state = state;
        q.start_after = after;
        q.limit = 100;
        auto jobs = txn.ListJobs(q);
        if (!jobs) return tl::unexpected(jobs.error());
        for (const auto& j : *jobs) {
          if (LaneOf(j.kind) == lane && j.run_after_ns <= now &&
              (!next || j.run_after_ns < next->run_after_ns)) {
            next = j;
          }
        }
        if (jobs->size() < q.limit) break;
        after = jobs->back().id;
      }
      if (next) break;
    }
    return next;
  }

  void Run(index::Job job, Lane lane) {
    Log(LogLevel::kInfo, "job_run",
        {{"job", index::IdToHex(job.id)},
         {"kind", job.kind},
         {"lane", kLaneNames[int(lane)]},
         {"progress", job.progress_json}});
    const KindInfo* kind = FindKind(job.kind);
    {
      std::lock_guard lock(mu);
      running[int(lane)] = job.id;
      cancelled[int(lane)] = false;
    }
    JobContext ctx{store, options, job, [this, lane] { return Stopping() || Cancelled(lane); },
                   [this, lane] { return Cancelled(lane); }};
    JobResult r = kind ? kind->run(ctx)
                       : Err(ErrorKind::kInvalidArgument, "unknown job kind '" + job.kind + "'");
    {
      std::lock_guard lock(mu);
      running[int(lane)].reset();
    }
    if (r && !*r) return;  // stopped early: resumed at next start, or cancelled
    if (r) {
      Finish(job, *kind, **r);
      return;
    }
    if (Stopping()) return;  // resumed at the next start
    Failed(job, r.error());
  }

  // Done: the result, and the same receipt in the audit log, in one transaction.
  void Finish(const index::Job& job, const KindInfo& kind, const json::object& result) {
    const int64_t now = NowNanos();
    Status s = store.Index().Update([&](index::WriteTxn& txn) -> Status {
      auto cur = txn.GetJob(job.id);
      if (!cur) return tl::unexpected(cur.error());
      if (!*cur || (*cur)->state != "running") return {};  // cancelled meanwhile
      index::Job j = **cur;
      j.state = "done";
      j.finished_ns = now;
      j.result_json = json::serialize(result);
      CV_TRY(txn.PutJob(j));
      auto partner = JobPartner(txn, j);
      if (!partner) return tl::unexpected(partner.error());
      json::object receipt = result;
      receipt["job"] = index::IdToHex(j.id);
      return AppendSystemAudit(txn, now, kind.audit_action, AuditTarget(j), j.account, *partner,
                               nullptr, receipt);
    });
    if (!s) {
      Log(LogLevel::kError, "job_update_failed", {{"error", s.error().ToString()}});
      return;
    }
    Log(LogLevel::kInfo, "job_done",
        {{"job", index::IdToHex(job.id)}, {"kind", job.kind}, {"result", json::serialize(result)}});
  }

  // An error: retry later (a disk may come back), give up after job_max_attempts.
  void Failed(const index::Job& job, const Error& e) {
    json::object progress = ParsedObjectOrEmpty(job.progress_json);
    const uint64_t attempts = U64(progress, "attempts") + 1;
    progress["attempts"] = attempts;
    progress["last_error"] = e.ToString();
    const bool give_up =
        attempts >= options.job_max_attempts || e.kind == ErrorKind::kInvalidArgument;
    Log(give_up ? LogLevel::kError : LogLevel::kWarn, "job_error",
        {{"job", index::IdToHex(job.id)},
         {"kind", job.kind},
         {"error", e.ToString()},
         {"attempts", std::to_string(attempts)},
         {"gave_up", give_up ? "true" : "false"}});
    const int64_t now = NowNanos();
    Status w = store.Index().Update([&](index::WriteTxn& txn) -> Status {
      auto cur = txn.GetJob(job.id);
      if (!cur) return tl::unexpected(cur.error());
      if (!*cur || (*cur)->state != "running") return {};
      index::Job j = **cur;
      j.progress_json = json::serialize(progress);
      if (give_up) {
        j.state = "failed";
        j.finished_ns = now;
        json::object result;
        result["error"] = e.ToString();
        j.result_json = json::serialize(result);
        CV_TRY(AppendSystemAudit(txn, now, "job.failed", JobTarget(j.id), j.account, {}, nullptr,
                                 JobJson(j)));
      } else {
        j.run_after_ns = now + options.job_retry_ns;
      }
      return txn.PutJob(j);
    });
    if (!w) Log(LogLevel::kError, "job_update_failed", {{"error", w.error().ToString()}});
  }
};

namespace {

// Removes a purged device's record. While its account exists the index remembers it, with its
// last token's hash, so that its old agent hears "deleted" (410) rather than "wrong password".
Status Forget(index::WriteTxn& txn, const index::DeviceRecord& d, const index::Job& job) {
  CV_TRY(txn.DeleteDevice(d.id));
  auto a = txn.GetAccount(d.account);
  if (!a) return tl::unexpected(a.error());
  if (!*a) return {};
  return txn.PutPurgedDevice(
      index::PurgedDevice{d.id, d.account, d.token_hash, NowNanos(), job.id});
}

}  // namespace

// device.purge and account.purge: progress {"phase": "delete" | "compact" | "done",
// devices [ids], device_index, objects_done, bytes_done, objects_total, bytes_total}. A
// device purge has one device; an account purge every device the account had when it
// started, one after the other, and then the account itself. Each batch's progress commits
// with the batch, so a resumed purge removes nothing twice and its counts stay exact.
JobResult RunPurgeJob(JobContext& ctx) {
  index::Job& job = ctx.job;
  const bool whole_account = job.kind == kPurgeAccountJob;
  if (!whole_account && !job.device) {
    return Err(ErrorKind::kInvalidArgument, "purge job without a device");
  }
  if (whole_account && !job.account) {
    return Err(ErrorKind::kInvalidArgument, "account purge job without an account");
  }
  json::object progress = ParsedObjectOrEmpty(job.progress_json);
  if (Str(progress, "phase").empty()) {
    auto txn = ctx.store.Index().BeginRead();
    if (!txn) return tl::unexpected(txn.error());
    std::vector<index::DeviceRecord> devices;
    if (whole_account) {
      auto all = (*txn)->ListDevices(*job.account);
      if (!all) return tl::unexpected(all.error());
      devices = std::move(*all);
    } else {
      auto d = (*txn)->GetDevice(*job.device);
      if (!d) return tl::unexpected(d.error());
      devices.push_back(d->value_or(index::DeviceRecord{*job.device}));
    }
    txn->reset();
    json::array ids;
    uint64_t objects = 0, bytes = 0;
    for (const auto& d : devices) {
      ids.push_back(json::value(index::IdToHex(d.id)));
      objects += d.objects;
      bytes += d.bytes;
    }
    progress["phase"] = "delete";
    progress["devices"] = std::move(ids);
    progress["device_index"] = uint64_t{0};
    progress["objects_done"] = uint64_t{0};
    progress["bytes_done"] = uint64_t{0};
    progress["objects_total"] = objects;
    progress["bytes_total"] = bytes;
  }
  std::vector<index::Id> devices;
  if (const json::value* v = progress.if_contains("devices"); v && v->is_array()) {
    for (const auto& e : v->as_array()) {
      auto id = e.is_string() ? index::IdFromHex(e.as_string()) : std::nullopt;
      if (!id) return Err(ErrorKind::kCorruption, "purge job progress names a bad device id");
      devices.push_back(*id);
    }
  }
  while (Str(progress, "phase") == "delete") {
    const size_t at = U64(progress, "device_index");
    const bool last = at + 1 >= devices.size();
    json::object next;
    if (at >= devices.size()) {  // an account without devices
      next = progress;
      next["phase"] = "compact";
      auto saved = ctx.SaveProgress(next, [&](index::WriteTxn& txn) -> Status {
        return whole_account ? txn.DeleteAccount(*job.account) : Status{};
      });
      if (!saved) return tl::unexpected(saved.error());
      if (!*saved) return std::optional<json::object>();
      progress = std::move(next);
      break;
    }
    const index::Id device = devices[at];
    // Once per device and run: the deletion must survive an index rebuild before anything
    // of the device is removed.
    CV_TRY(ctx.store.WriteDeviceTombstone(device));
    while (true) {
      if (ctx.stopping()) return std::optional<json::object>();
      auto batch = ctx.store.PurgeObjects(
          device, ctx.options.purge_batch_objects,
          [&](index::WriteTxn& txn, const storage::PurgeBatch& b) -> Status {
            next = progress;
            next["objects_done"] = U64(progress, "objects_done") + b.objects;
            next["bytes_done"] = U64(progress, "bytes_done") + b.bytes;
            if (b.objects == 0) {
              // Nothing left: the device goes, and a late upload can no longer land.
              auto d = txn.GetDevice(device);
              if (!d) return tl::unexpected(d.error());
              if (*d) CV_TRY(Forget(txn, **d, job));
              CV_TRY(txn.PutMeta(index::PurgedDeviceMetaKey(device), index::IdToHex(job.id)));
              next["device_index"] = uint64_t{at + 1};
              if (last) {
                next["phase"] = "compact";
                if (whole_account) {
                  auto a = txn.GetAccount(*job.account);
                  if (!a) return tl::unexpected(a.error());
                  if (*a) CV_TRY(txn.DeleteAccount(*job.account));  // and its add-ons
                }
              }
            }
            index::Job j = job;
            j.progress_json = json::serialize(next);
            return txn.PutJob(j);
          });
      if (!batch) return tl::unexpected(batch.error());
      progress = std::move(next);
      job.progress_json = json::serialize(progress);
      if (batch->objects == 0) break;
    }
  }
  // Hand the dead space to compaction; the receipt counts what it returned (other dead space
  // it found on the way included).
  auto rep = ctx.store.Compact(ctx.options.compact);
  if (!rep) return tl::unexpected(rep.error());
  const int64_t now = NowNanos();
  json::object receipt;
  if (whole_account) receipt["devices_removed"] = devices.size();
  receipt["objects_removed"] = U64(progress, "objects_done");
  receipt["bytes_removed"] = U64(progress, "bytes_done");
  receipt["disk_bytes_reclaimed"] = rep->bytes_reclaimed;
  receipt["started_at"] = TimeOrNull(job.started_ns);
  receipt["finished_at"] = TimeOrNull(now);
  progress["phase"] = "done";
  auto saved = ctx.SaveProgress(progress);
  if (!saved) return tl::unexpected(saved.error());
  return std::optional<json::object>(std::move(receipt));
}

JobRunner::JobRunner(storage::ObjectStore& store, const Options& options)
    : s_(std::make_unique<State>(store, options)) {
  for (int lane = 0; lane < kLanes; ++lane) {
    s_->lanes[lane] = std::thread([this, lane] { s_->Loop(Lane(lane)); });
  }
}

JobRunner::~JobRunner() {
  {
    std::lock_guard lock(s_->mu);
    s_->stop = true;
  }
  s_->cv.notify_all();
  for (auto& t : s_->lanes) {
    if (t.joinable()) t.join();
  }
}

void JobRunner::Cancelled(const index::Id& job) {
  std::lock_guard lock(s_->mu);
  for (int lane = 0; lane < kLanes; ++lane) {
    if (s_->running[lane] == job) s_->cancelled[lane] = true;
  }
}

void JobRunner::Wake() {
  {
    std::lock_guard lock(s_->mu);
    ++s_->wakes;
  }
  s_->cv.notify_all();
}

}  // namespace cv::admin::internal
