// admin/jobs/job_json: the JSON of jobs as typed structs -- a job as GET /jobs/{j} answers
// it, and each kind's params, progress and result (admin/API.md) -- with Boost.JSON's
// json::value_from / json::value_to (tag_invoke below). The node writes jobs with them and
// cvctl reads them with the same structs: this file depends on Boost.JSON alone (library
// cv_job_json).
//
// Writing gives the fields in a fixed order (one list per struct, job_json.cc). A
// std::optional field is null when nullopt if its comment says "null", else left out.
// Reading never fails: a field that is absent or of another type reads as its default, so
// that progress an older build saved resumes, and an answer of a newer node still reads.
//
// Thread-safety: value types and pure functions.
#pragma once

#include <boost/json/conversion.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cv::admin::jobs {

namespace json = boost::json;

using Time = std::optional<std::string>;  // RFC 3339 UTC; null: never, or not known

// ---- lenient reading of one field (the conversions below; cvctl's other reading too) ----
std::optional<uint64_t> AsUint(const json::value& v);                  // a non-negative integer
uint64_t UintField(const json::object& o, std::string_view key);       // 0 unless AsUint
std::string StringField(const json::object& o, std::string_view key);  // "" unless a string
bool BoolField(const json::object& o, std::string_view key);           // false unless true
// Stored text -> T: T{} when the text is empty or not a JSON object. Text <- T.
json::value ParsedOrNull(std::string_view text);  // null when empty or not JSON
template <class T>
T FromJsonText(std::string_view text) {
  const json::value v = ParsedOrNull(text);
  return v.is_object() ? json::value_to<T>(v) : T{};
}
std::string JsonText(const json::value& v);
template <class T>
std::string ToJsonText(const T& x) {
  return JsonText(json::value_from(x));
}

// ---- every job ----
// A job as the API answers it: params, progress and result as stored (the kind's structs).
struct JobView {
  std::string id, kind, state;
  std::optional<std::string> account, device;  // null: none
  json::value params, progress, result;        // null: none yet
  Time created_at, run_after, started_at, finished_at;
};
// What the runner adds to any kind's progress when a run fails: it retries the job
// (job_retry_ns later) until it has failed job_max_attempts times. Left out while 0.
struct JobAttempts {
  uint64_t attempts = 0;
  std::string last_error;
};
// `progress` (any kind's, as stored) with `attempts` set in it; the kind's fields stay as
// they are.
std::string WithAttempts(std::string_view progress, const JobAttempts& attempts);
// The result of a job that failed for good.
struct JobFailure {
  std::string error;
};
// An object key in the progress of a walk over the index (scrub, drain).
struct ObjectKeyJson {
  std::string device, type, name;  // hex id, restic type name, object name
};

// ---- device.purge, account.purge ----
struct DevicePurgeParams {
  int64_t grace_seconds = 0;
  std::string device_name;
};
struct AccountPurgeParams {
  int64_t grace_seconds = 0;
  uint64_t devices = 0;  // the account's devices when it was deleted
};
struct PurgeProgress {
  std::string phase;                 // "" (not started), "delete", "compact", "done"
  std::vector<std::string> devices;  // hex ids, purged in this order
  uint64_t device_index = 0;         // the device being purged
  uint64_t objects_done = 0, bytes_done = 0, objects_total = 0, bytes_total = 0;
  JobAttempts attempts;
};
struct PurgeReceipt {
  std::optional<uint64_t> devices_removed;  // account.purge only
  uint64_t objects_removed = 0, bytes_removed = 0, disk_bytes_reclaimed = 0;
  Time started_at, finished_at;
};

// ---- courier ----
struct CourierParams {
  uint64_t drive_bytes = 0;  // 0: one drive
  std::string device_name;
  uint64_t needed_bytes = 0;  // the room promised in courier_dir
};
struct CourierImage {
  uint64_t drive = 0;  // 1..drives
  std::string file;    // in courier_dir/<job>/
  uint64_t bytes = 0;
  std::string sha256;  // hex, of the whole image
  uint64_t files = 0;
};
struct CourierProgress {
  std::string phase;  // "writing"
  std::string snapshot_sha256;
  Time snapshot_at;
  std::vector<CourierImage> images;  // the finished ones
  uint64_t objects = 0, bytes_total = 0, drives = 0;
  uint64_t drive = 0, bytes_written = 0;  // the drive being written, bytes of all drives
  JobAttempts attempts;
};
struct CourierResult {
  std::vector<CourierImage> images;  // in drive order
  uint64_t drives = 0, objects = 0, object_bytes = 0;
  Time snapshot_at, started_at, finished_at;
  std::optional<std::string> images_deleted_at;  // once DELETE /jobs/{j}/images removed them
};

// ---- scrub, repair ----
struct ScrubParams {
  bool background = false;         // scheduled by the node itself
  uint64_t max_bytes_per_sec = 0;  // 0: unthrottled
};
// What a scrub pass has done so far (saved about once a second).
struct ScrubCounts {
  uint64_t objects_done = 0, shards_checked = 0, bytes_checked = 0, damaged_shards = 0,
           lost_stripes = 0;
  std::vector<std::string> damaged;   // at most 200
  std::optional<ObjectKeyJson> last;  // the last object done: a resumed pass goes on after it
};
struct ScrubProgress {
  std::optional<uint64_t> objects_total;  // once counted
  std::optional<ScrubCounts> counts;      // once the pass saved progress
  JobAttempts attempts;
};
struct RepairSummary {
  bool complete = false;  // nothing lost, nothing left queued
  bool include_failed_disks = false;
  uint64_t stripes_examined = 0, bytes_rewritten = 0, stripes_repaired = 0, shards_rewritten = 0,
           stripes_lost = 0, still_queued = 0;
  std::vector<std::string> lost;
};
struct ScrubResult {
  bool clean = false, background = false;
  uint64_t objects = 0, shards_checked = 0, bytes_checked = 0, damaged_shards = 0, lost_stripes = 0;
  std::optional<std::vector<std::string>> damaged;  // null when the pass saved no counts
  Time started_at, finished_at;
  std::optional<RepairSummary> repair;  // when auto_repair repaired what the pass found
};
struct RepairParams {
  bool include_failed_disks = false;
  std::optional<bool> automatic;      // true: scheduled by the node itself
  std::optional<std::string> reason;  // why a route scheduled it (a disk's removal)
};
struct RepairResult {
  RepairSummary summary;  // its fields, then the times
  Time started_at, finished_at;
};

// ---- disk.drain ----
struct DrainParams {
  std::optional<uint64_t> disk;  // the position
  std::optional<std::string> path;
};
struct DrainCounts {
  uint64_t objects_done = 0, stripes_moved = 0, shards_moved = 0, bytes_moved = 0,
           stripes_failed = 0;
  std::vector<std::string> problems;  // at most 200
};
struct DrainProgress {
  std::optional<uint64_t> objects_total;  // once counted
  uint64_t pass = 0;                      // 1.., at most 3
  std::optional<DrainCounts> counts;      // once the walk saved progress
  std::optional<ObjectKeyJson> last;      // the last object done in this pass
  JobAttempts attempts;
};
struct DrainResult {
  uint64_t disk = 0;
  std::optional<std::string> path;  // null: not known
  bool complete = false;            // nothing on the disk is referenced any more
  uint64_t objects = 0, stripes_moved = 0, shards_moved = 0, bytes_moved = 0, stripes_failed = 0,
           extents_removed = 0, remaining_bytes = 0;
  std::vector<std::string> problems;
  uint64_t passes = 0;
  Time started_at, finished_at;
  std::string next;  // what the operator does now
};

// What a follower (cvctl's progress line) reads from any kind's progress: work done against a
// total, in bytes where the kind counts bytes, else in objects. Read only.
struct ProgressCounts {
  std::optional<uint64_t> bytes_done;  // bytes_written or bytes_done
  std::optional<uint64_t> bytes_total, objects_done, objects_total;
};

// ---- the conversions ----
#define CV_JOB_JSON(T)                                                       \
  void tag_invoke(const json::value_from_tag&, json::value& jv, const T& x); \
  T tag_invoke(const json::value_to_tag<T>&, const json::value& jv)
CV_JOB_JSON(JobView);
CV_JOB_JSON(JobAttempts);
CV_JOB_JSON(JobFailure);
CV_JOB_JSON(DevicePurgeParams);
CV_JOB_JSON(AccountPurgeParams);
CV_JOB_JSON(PurgeProgress);
CV_JOB_JSON(PurgeReceipt);
CV_JOB_JSON(CourierParams);
CV_JOB_JSON(CourierImage);
CV_JOB_JSON(CourierProgress);
CV_JOB_JSON(CourierResult);
CV_JOB_JSON(ScrubParams);
CV_JOB_JSON(ScrubProgress);
CV_JOB_JSON(RepairSummary);
CV_JOB_JSON(ScrubResult);
CV_JOB_JSON(RepairParams);
CV_JOB_JSON(RepairResult);
CV_JOB_JSON(DrainParams);
CV_JOB_JSON(DrainProgress);
CV_JOB_JSON(DrainResult);
#undef CV_JOB_JSON
ProgressCounts tag_invoke(const json::value_to_tag<ProgressCounts>&, const json::value& jv);

}  // namespace cv::admin::jobs
