// admin/jobs: long work as jobs (see "Jobs" in admin/admin.h), internal to admin/. The runner
// (runner.cc) keeps jobs in the index, runs the due ones on lanes, saves their progress and
// records their receipts, retries and failures. Each kind of job is one file: device_purge.cc
// and account_purge.cc (with purge.cc, the steps they share), scrub.cc, repair.cc, drain.cc
// and courier.cc; maintenance.cc is what the node schedules by itself, walk.cc what long
// walks share.
//
// This header is what the folder offers the rest of admin -- the kind names, job records,
// the runner, the files of courier jobs -- and what the runner and the kinds give each other
// (JobContext, ProgressSaver, the Run* entry points). Each kind's params, progress and result
// are typed structs in job_json.h, which cvctl reads jobs with too.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "admin/admin.h"
#include "admin/jobs/job_json.h"
#include "index/index.h"
#include "storage/storage.h"

namespace cv::admin::jobs {

namespace json = boost::json;

// ---- kinds ----
inline constexpr std::string_view kPurgeDeviceJob = "device.purge";
inline constexpr std::string_view kPurgeAccountJob = "account.purge";
inline constexpr std::string_view kScrubJob = "scrub";
inline constexpr std::string_view kRepairJob = "repair";
inline constexpr std::string_view kCourierJob = "courier";
inline constexpr std::string_view kDrainJob = "disk.drain";
// Whether a partner key may create a job of this kind (for its own accounts): device.purge
// and courier. The routes that create jobs say the same (kRoutes in admin.cc).
bool PartnerMayCreate(std::string_view kind);

// ---- job records (runner.cc); their params, progress and result are job_json.h's ----
// A new job of `kind` in state "scheduled", due at run_after_ns, with `params` (the kind's
// params struct, json::value_from).
index::Job NewJob(std::string_view kind, std::optional<index::Id> account,
                  std::optional<index::Id> device, const json::value& params, int64_t now_ns,
                  int64_t run_after_ns);
// The job as the API answers it (JobView).
json::object JobJson(const index::Job& j);
std::string JobTarget(const index::Id& job);  // "job/<id>", of audit records
Time TimeOf(int64_t ns);                      // nullopt for 0 ("never")
// The partner of the job's account (for its audit records), if it has one.
Result<std::optional<index::Id>> JobPartner(index::Txn& txn, const index::Job& j);
// Calls fn with every scheduled job and then every running one (of `account` only, if
// given) until fn returns false.
Status ForEachPendingJob(index::Txn& txn, std::optional<index::Id> account,
                         const std::function<bool(const index::Job&)>& fn);
// The scheduled or running account.purge job of the account, if any.
Result<std::optional<index::Id>> PendingAccountPurge(index::Txn& txn, const index::Id& account);

// ---- the runner (runner.cc) ----
// Runs due jobs on three threads ("lanes"), one per kind of work, so that no kind holds up
// another: purges (device.purge, account.purge), courier images (courier) and maintenance
// (scrub, repair, disk.drain). A purge never waits for a multi-terabyte courier image or a
// scrub, a courier image never waits for a purge. Each lane runs its jobs one at a time: jobs
// left "running" by a crash first (resumed where their progress says), then "scheduled" ones
// whose run_after has come. When idle, the purge lane compacts every
// options.compact_interval_ns (so that compaction passes, a purge's own included, never run
// two at once) and the maintenance lane schedules what DueMaintenanceJob says. Stops at the
// next batch boundary when destroyed: a job it was running stays "running" and resumes at
// next start.
class JobRunner {
 public:
  JobRunner(storage::ObjectStore& store, const Options& options);
  ~JobRunner();
  JobRunner(const JobRunner&) = delete;
  JobRunner& operator=(const JobRunner&) = delete;
  void Wake();  // look for due jobs now
  // The job's state is now "cancelled": if a lane is running it, its stopping() and
  // cancelled() turn true at once, so it stops at its next check rather than its next save.
  void Cancelled(const index::Id& job);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// ---- what a kind sees and gives back ----
// What a running job sees.
struct JobContext {
  storage::ObjectStore& store;
  const Options& options;
  index::Job& job;  // as stored; SaveProgress keeps progress_json current
  // The node is stopping (resumed at next start) or the job was cancelled (cancelled() is then
  // true too): return nullopt. Cheap: check it between chunks of work.
  std::function<bool()> stopping;
  std::function<bool()> cancelled;  // POST /jobs/{j}/cancel stopped it: nothing resumes it
  // Commits `progress` (the kind's progress struct) as the job's progress, with `also` in the
  // same transaction. false (not an error) when the job is no longer "running" (cancelled):
  // the job should stop.
  template <class Progress>
  Result<bool> SaveProgress(const Progress& progress,
                            const std::function<Status(index::WriteTxn&)>& also = nullptr) {
    return SaveProgressText(ToJsonText(progress), also);
  }
  Result<bool> SaveProgressText(const std::string& progress,
                                const std::function<Status(index::WriteTxn&)>& also);
};
// A job kind's work: its result when done, nullopt when it stopped early (the node stops, or
// the job was cancelled). The runner then records "done" with the result and an audit record.
using JobResult = Result<std::optional<json::object>>;
template <class T>
JobResult Done(const T& result) {  // the kind's result struct
  return std::optional<json::object>(json::value_from(result).as_object());
}
inline JobResult Stopped() { return std::optional<json::object>(); }

JobResult RunDevicePurgeJob(JobContext& ctx);   // device_purge.cc
JobResult RunAccountPurgeJob(JobContext& ctx);  // account_purge.cc
JobResult RunScrubJob(JobContext& ctx);         // scrub.cc
JobResult RunRepairJob(JobContext& ctx);        // repair.cc
JobResult RunDrainJob(JobContext& ctx);         // drain.cc
JobResult RunCourierJob(JobContext& ctx);       // courier.cc

// The scrub/repair job due now by the node's own policy ([scrub] in the config): a background
// scrub pass when the last full one is older than scrub_interval_ns, a repair when disks have
// failed or damage is queued and auto_repair is on. nullopt: nothing due (maintenance.cc).
// The disks' state comes from store.Stats(), which reads every disk's identity file (and so
// notices a vanished disk): read when a scrub is due, else only if `last_disk_check` is unset
// or kDiskCheckInterval old; it is then set to now.
using SteadyTime = std::chrono::steady_clock::time_point;
inline constexpr std::chrono::seconds kDiskCheckInterval{10};
Result<std::optional<index::Job>> DueMaintenanceJob(storage::ObjectStore& store,
                                                    const Options& options, int64_t now_ns,
                                                    std::optional<SteadyTime>& last_disk_check);

// The index meta key of the rate repair jobs rebuild at, measured by the last one that
// rewrote enough to tell ("<bytes per second> <when ns>"; repair.cc writes it, GET /status
// reads it).
inline constexpr std::string_view kRepairRateMeta = "ops/repair_rate";
// A repair's report as scrub and repair results give it (repair.cc).
RepairSummary Summarize(const storage::RepairReport& rep, bool include_failed);

// ---- what long walks share (walk.cc) ----
// The progress callback of a long walk (scrub, drain): saves what `make()` builds at most
// once a second; false means stop now: the node stops, the job was cancelled (cancelled())
// or saving failed (error()).
class ProgressSaver {
 public:
  explicit ProgressSaver(JobContext& ctx) : ctx_(ctx) {}
  bool Tick(const std::function<json::value()>& make);
  bool cancelled() const { return cancelled_; }
  // The save error, if one stopped the walk.
  std::optional<Error> error() const { return error_; }

 private:
  JobContext& ctx_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  bool cancelled_ = false;
  std::optional<Error> error_;
};
// The objects in the index now: a long job's total.
Result<uint64_t> CountObjects(storage::ObjectStore& store);
// `base` with `lines` appended, at most `cap` items.
std::vector<std::string> AppendCapped(std::vector<std::string> base,
                                      const std::vector<std::string>& lines, size_t cap);
// An object key in job progress, and back (nullopt if none or malformed).
ObjectKeyJson KeyJson(const index::ObjectKey& k);
std::optional<index::ObjectKey> KeyFromJson(const std::optional<ObjectKeyJson>& k);

// ---- the files of courier jobs (courier.cc), for the courier routes ----
// The node's courier key (private PEM), made on first use.
Result<std::string> CourierPrivateKey(const Options& o);
// courier_dir/<job>: the job's snapshot and images.
std::string CourierJobDir(const Options& o, const index::Id& job);
// Removes courier_dir/<job> and everything in it (images, partial images, the snapshot);
// nothing there is fine.
Status RemoveCourierFiles(const Options& o, const index::Id& job);
// At most the bytes a courier job of device d takes in courier_dir (its snapshot and every
// drive image as the writer lays them out), drives of drive_bytes (0: one drive).
Result<uint64_t> CourierBytesNeeded(index::Txn& txn, const index::DeviceRecord& d,
                                    uint64_t drive_bytes);

}  // namespace cv::admin::jobs
