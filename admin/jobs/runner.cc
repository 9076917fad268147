// The job runner: lanes (threads) that claim due jobs, run each kind's function, record the
// result (with its audit receipt), retry a job that failed and give up on it after
// job_max_attempts; and the job records every route and kind uses. See "Jobs" in admin.h.
#include <condition_variable>
#include <mutex>
#include <thread>

#include "admin/internal.h"
#include "admin/jobs/jobs.h"

namespace cv::admin::jobs {

namespace {

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
  // one (MayChangeJob in admin/job_routes.cc). The routes that create jobs say the same: DELETE
  // /accounts/{a} (an account.purge), /scrub, /repair and the /disks routes are operator
  // routes in kRoutes (admin.cc); DELETE .../devices/{d} and POST .../devices/{d}/courier are
  // not.
  bool partner_may_create;
  JobResult (*run)(JobContext&);
};
constexpr KindInfo kKinds[] = {
    {kPurgeDeviceJob, Lane::kPurge, "device.purge", true, RunDevicePurgeJob},
    {kPurgeAccountJob, Lane::kPurge, "account.purge", false, RunAccountPurgeJob},
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

bool PartnerMayCreate(std::string_view kind) {
  const KindInfo* k = FindKind(kind);
  return k && k->partner_may_create;
}

Result<std::optional<index::Id>> JobPartner(index::Txn& txn, const index::Job& j) {
  if (!j.account) return std::optional<index::Id>();
  CV_TRY_ASSIGN(auto a, txn.GetAccount(*j.account));
  return a ? a->partner : std::optional<index::Id>();
}

Time TimeOf(int64_t ns) {
  if (ns == 0) return std::nullopt;
  return FormatRfc3339(ns);
}

std::string JobTarget(const index::Id& job) { return "job/" + index::IdToHex(job); }

index::Job NewJob(std::string_view kind, std::optional<index::Id> account,
                  std::optional<index::Id> device, const json::value& params, int64_t now_ns,
                  int64_t run_after_ns) {
  index::Job j;
  j.id = index::NewId();
  j.kind = std::string(kind);
  j.state = "scheduled";
  j.account = account;
  j.device = device;
  j.params_json = JsonText(params);
  j.created_ns = now_ns;
  j.run_after_ns = run_after_ns;
  return j;
}

json::object JobJson(const index::Job& j) {
  auto hex = [](const std::optional<index::Id>& id) {
    return id ? std::optional<std::string>(index::IdToHex(*id)) : std::nullopt;
  };
  const JobView v{index::IdToHex(j.id),
                  j.kind,
                  j.state,
                  hex(j.account),
                  hex(j.device),
                  ParsedOrNull(j.params_json),
                  ParsedOrNull(j.progress_json),
                  ParsedOrNull(j.result_json),
                  TimeOf(j.created_ns),
                  TimeOf(j.run_after_ns),
                  TimeOf(j.started_ns),
                  TimeOf(j.finished_ns)};
  return json::value_from(v).as_object();
}

Status ForEachPendingJob(index::Txn& txn, std::optional<index::Id> account,
                         const std::function<bool(const index::Job&)>& fn) {
  for (const char* state : {"scheduled", "running"}) {
    index::JobQuery q;
    q.account = account;
    q.state = state;
    q.limit = 1000;
    while (true) {
      CV_TRY_ASSIGN(auto jobs, txn.ListJobs(q));
      for (const auto& j : jobs) {
        if (!fn(j)) return {};
      }
      if (jobs.size() < q.limit) break;
      q.start_after = jobs.back().id;
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

// ---- the runner ----

Result<bool> JobContext::SaveProgressText(const std::string& text,
                                          const std::function<Status(index::WriteTxn&)>& also) {
  bool running = false;
  CV_TRY(store.Index().Update([&](index::WriteTxn& txn) -> Status {
    running = false;
    CV_TRY_ASSIGN(auto cur, txn.GetJob(job.id));
    if (!cur || cur->state != "running") return {};  // cancelled meanwhile
    running = true;
    index::Job j = *cur;
    j.progress_json = text;
    if (also) CV_TRY(also(txn));
    return txn.PutJob(j);
  }));
  if (running) job.progress_json = text;
  return running;
}

namespace {

std::string AuditTarget(const index::Job& j) {
  if (!j.device) return "node";
  return "account/" + (j.account ? index::IdToHex(*j.account) : std::string("none")) + "/device/" +
         index::IdToHex(*j.device);
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
            return internal::AppendSystemAudit(txn, j.created_ns, "job.schedule", JobTarget(j.id),
                                               {}, {}, nullptr, JobJson(j));
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
        CV_TRY_ASSIGN(auto txn, store.Index().BeginRead());
        CV_TRY_ASSIGN(auto due, NextDue(*txn, lane, now));
        found = std::move(due);
      }
      if (!found || found->state == "running") return found;
      bool claimed = false;
      CV_TRY(store.Index().Update([&](index::WriteTxn& txn) -> Status {
        claimed = false;
        CV_TRY_ASSIGN(auto cur, txn.GetJob(found->id));
        if (!cur || cur->state != "scheduled" || cur->run_after_ns > now) return {};
        index::Job j = std::move(*cur);
        j.state = "running";
        j.started_ns = now;
        CV_TRY(txn.PutJob(j));
        *found = std::move(j);
        claimed = true;
        return {};
      }));
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
        CV_TRY_ASSIGN(auto jobs, txn.ListJobs(q));
        for (const auto& j : jobs) {
          if (LaneOf(j.kind) == lane && j.run_after_ns <= now &&
              (!next || j.run_after_ns < next->run_after_ns)) {
            next = j;
          }
        }
        if (jobs.size() < q.limit) break;
        after = jobs.back().id;
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
      CV_TRY_ASSIGN(auto cur, txn.GetJob(job.id));
      if (!cur || cur->state != "running") return {};  // cancelled meanwhile
      index::Job j = *cur;
      j.state = "done";
      j.finished_ns = now;
      j.result_json = JsonText(result);
      CV_TRY(txn.PutJob(j));
      CV_TRY_ASSIGN(auto partner, JobPartner(txn, j));
      json::object receipt = result;
      receipt["job"] = index::IdToHex(j.id);
      return internal::AppendSystemAudit(txn, now, kind.audit_action, AuditTarget(j), j.account,
                                         partner, nullptr, receipt);
    });
    if (!s) {
      Log(LogLevel::kError, "job_update_failed", {{"error", s.error().ToString()}});
      return;
    }
    Log(LogLevel::kInfo, "job_done",
        {{"job", index::IdToHex(job.id)}, {"kind", job.kind}, {"result", JsonText(result)}});
  }

  // An error: retry later (a disk may come back), give up after job_max_attempts.
  void Failed(const index::Job& job, const Error& e) {
    JobAttempts count = FromJsonText<JobAttempts>(job.progress_json);
    const uint64_t attempts = ++count.attempts;
    count.last_error = e.ToString();
    const std::string progress = WithAttempts(job.progress_json, count);
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
      CV_TRY_ASSIGN(auto cur, txn.GetJob(job.id));
      if (!cur || cur->state != "running") return {};
      index::Job j = *cur;
      j.progress_json = progress;
      if (give_up) {
        j.state = "failed";
        j.finished_ns = now;
        j.result_json = ToJsonText(JobFailure{e.ToString()});
        CV_TRY(internal::AppendSystemAudit(txn, now, "job.failed", JobTarget(j.id), j.account, {},
                                           nullptr, JobJson(j)));
      } else {
        j.run_after_ns = now + options.job_retry_ns;
      }
      return txn.PutJob(j);
    });
    if (!w) Log(LogLevel::kError, "job_update_failed", {{"error", w.error().ToString()}});
  }
};

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

}  // namespace cv::admin::jobs
