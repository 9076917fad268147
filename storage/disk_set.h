// DiskSet: the node's data disks and their extents. Hands out append space in extents,
// opens extent files for reading, groups fdatasyncs across concurrent writers, and tracks
// which disks have failed.
//
// Each disk directory holds:
//   chunkvault-disk        identity: node id and the disk's position (checked at open)
//   extents/XXXXXXXX.ext   extent files, preallocated, records appended (FORMAT.md)
//
// Thread-safety: all methods are safe to call concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "common/common.h"
#include "storage/io.h"

namespace cv::storage {

class Extent {
 public:
  uint16_t disk = 0;
  uint32_t id = 0;
  uint64_t capacity = 0;
  std::unique_ptr<File> file;

  // Group commit: a writer takes a sequence number after its write completes; a sync that
  // starts after write_seq reached n covers every write numbered <= n.
  std::atomic<uint64_t> write_seq{0};
  uint64_t synced_seq = 0;  // guarded by sync_mu
  std::mutex sync_mu;
  std::atomic<bool> poisoned{false};  // a write or sync failed: never append here again
};

struct Placement {
  std::shared_ptr<Extent> extent;
  uint64_t offset = 0;
};

class DiskSet {
 public:
  DiskSet(Env* env, std::vector<std::string> paths, uint64_t extent_bytes, bool try_direct);

  // Checks every disk's identity file against `node_id`. With `create` (a new node) it
  // creates the layout. A disk that is missing, unreadable or belongs to another node or
  // position is marked failed (logged); the rest keep serving.
  void Open(const std::string& node_id, bool create);

  size_t size() const { return disks_.size(); }
  bool healthy(size_t d) const { return !disks_[d]->failed.load(); }
  size_t HealthyCount() const;
  const std::string& path(size_t d) const { return disks_[d]->path; }
  uint64_t errors(size_t d) const { return disks_[d]->errors.load(); }

  // Reserves `len` bytes (a multiple of kRecordAlign) at the end of disk d's active extent,
  // starting a new extent when it is full. kNoSpace when the disk is full.
  Result<Placement> Reserve(size_t d, uint64_t len);
  // The extent for reading; opens the file on first use. kNotFound / kIOError.
  Result<std::shared_ptr<Extent>> Get(size_t d, uint32_t extent_id);

  // Makes every write numbered <= seq on each given extent durable. Concurrent callers share
  // fdatasyncs. On failure the extent is poisoned (after a failed fsync the page cache can no
  // longer be trusted).
  Status Sync(std::span<const std::pair<std::shared_ptr<Extent>, uint64_t>> extents);

  // Extent files present on disk d, by id (from the directory listing).
  Result<std::vector<uint32_t>> ExtentIds(size_t d);
  // True if extent `id` is the one disk d currently appends to.
  bool IsActive(size_t d, uint32_t id);
  // Deletes an extent file and forgets it, unless it is the active extent or someone holds
  // it (an upload whose commit is pending, a reader, a repair): then false, nothing done.
  // REQUIRES: the index references no record in it.
  Result<bool> Retire(size_t d, uint32_t id);

  // I/O outcome reports: kDiskFailAfter consecutive I/O errors mark a disk failed.
  void ReportError(size_t d, const Error& e);
  void ReportSuccess(size_t d);
  void MarkFailed(size_t d, const std::string& why);
  // Re-reads disk d's identity file. A directory that vanished or changed while the node
  // serves (removed, renamed, unmounted) keeps working through the descriptors already open,
  // so only this notices it: the disk is marked failed and kIOError returned. Other I/O
  // errors count like any I/O error. OK for a healthy disk whose identity still matches.
  Status CheckPresent(size_t d);

  uint64_t extent_bytes() const { return extent_bytes_; }
  bool direct_io() const { return try_direct_; }

  static constexpr int kDiskFailAfter = 3;

 private:
  struct Disk {
    std::string path;
    std::string identity;  // expected content of the identity file, set by Open
    std::atomic<bool> failed{false};
    std::atomic<uint64_t> errors{0};
    std::atomic<int> consecutive_errors{0};
    std::mutex mu;  // guards everything below
    std::map<uint32_t, std::shared_ptr<Extent>> open;
    std::shared_ptr<Extent> active;
    uint64_t active_used = 0;
    uint32_t next_id = 1;
  };
  std::string ExtentPath(size_t d, uint32_t id) const;
  Result<std::shared_ptr<Extent>> OpenExtentLocked(Disk& disk, size_t d, uint32_t id, bool create);

  Env* env_;
  uint64_t extent_bytes_;
  bool try_direct_;
  std::vector<std::unique_ptr<Disk>> disks_;
};

}  // namespace cv::storage
