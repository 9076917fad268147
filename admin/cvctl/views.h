// cvctl/views: the readable forms of the node's JSON answers (with --json cvctl prints the
// answers unchanged instead), and the verdicts behind exit code 4. Views tolerate missing or
// extra fields: a newer node may answer more.
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace cv::cvctl {

namespace json = boost::json;

// 1536 -> "1.5 KiB".
std::string HumanBytes(uint64_t n);
// Columns padded to their widest cell; to stdout.
void PrintTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows);

// Verdicts: true when the answer reports a problem (exit code 4).
bool StatusHasProblems(const json::object& status);  // degraded or lost stripes, repairs pending
bool FsckHasProblems(const json::object& fsck);      // not clean
bool ScrubHasProblems(const json::object& scrub);    // damaged shards or lost stripes
bool RepairHasProblems(const json::object& repair);  // lost stripes or work left queued
bool DrainHasProblems(const json::object& drain);    // shards left on the disk

void ShowStatus(const json::object& status);
void ShowFsck(const json::object& fsck);
void ShowScrub(const json::object& scrub);
void ShowRepair(const json::object& repair);
void ShowIndexBackup(const json::object& backup);
// The disks of GET /status or GET /disks, as a table.
void ShowDisks(const json::object& status_or_page);
void ShowDrain(const json::object& drain);
// GET /cluster: "single node", or the cluster's live nodes as a table.
void ShowCluster(const json::object& cluster);
// Pages {"items":[...],"next_cursor"} as tables.
void ShowAccounts(const json::object& page);
void ShowDevices(const json::object& page);
void ShowJobs(const json::object& page);
// One record as "key: value" lines.
void ShowRecord(const json::object& record);

// The progress line of a job being followed (on a terminal only): kind, state, percent,
// done/total (bytes when the job reports bytes, else objects), rate and ETA from the
// change between two calls. Rewrites itself in place on stderr.
class ProgressLine {
 public:
  explicit ProgressLine(bool enabled) : enabled_(enabled) {}
  void Show(const json::object& job);
  void Clear();

 private:
  bool enabled_;
  bool shown_ = false;
  double last_done_ = -1;
  double last_time_ = 0;
  double rate_ = 0;
};
// "1:02:03" / "2:03" for a number of seconds.
std::string HumanDuration(double seconds);

}  // namespace cv::cvctl
