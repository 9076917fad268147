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

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/common.h"
#include "storage/io/io.h"
#include "storage/storage.h"

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
  // An fdatasync failed (guarded by sync_mu): a later one that succeeds proves nothing about
  // the writes before it (the kernel may have dropped those pages), so no write that was not
  // synced before the failure is ever reported durable.
  bool sync_failed = false;
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
  // Disks that are kRemoved are not opened: they are marked failed at once.
  void Open(const std::string& node_id, bool create);

  // Before Open: one more disk at the next position (a disk added while an earlier run
  // served, known from the index), and the state the index recorded for a disk.
  void Extend(const std::string& path);
  void SetInitialState(size_t d, DiskState s) { disks_[d]->state.store(s); }

  // While serving: adds the directory `path` as a disk at position size() and creates its
  // layout and identity. The directory must be empty or absent (its parent must exist), must
  // not be one of the node's disks, and must not hold another chunkvault disk. Positions are
  // never reused. `persist(d, committing)` records the new disk durably (the index's disk
  // table) after its layout exists and before it becomes visible; it sets `committing` once
  // the record is handed to the index's commit, whose failure leaves the outcome unknown (an
  // LMDB commit can fail after its meta page reached the disk). kInvalidArgument / kConflict /
  // kIOError, or persist's error; on error nothing was added to this run's disks. After a
  // failed persist the identity file and the directories Add created are removed again (best
  // effort), unless the commit itself failed: then they stay, since the index may list the
  // disk at the next start, and a disk without its identity file would be failed.
  Result<size_t> Add(const std::string& path, const std::string& node_id,
                     const std::function<Status(size_t, bool& committing)>& persist);
  // Sets disk d's state. kRemoved also marks it failed (for good).
  void SetState(size_t d, DiskState s);
  DiskState state(size_t d) const { return disks_[d]->state.load(); }

  size_t size() const { return count_.load(std::memory_order_acquire); }
  bool healthy(size_t d) const { return !disks_[d]->failed.load(); }
  // Healthy and kActive: may receive new shards.
  bool placeable(size_t d) const { return healthy(d) && state(d) == DiskState::kActive; }
  size_t HealthyCount() const;
  const std::string& path(size_t d) const { return disks_[d]->path; }
  uint64_t errors(size_t d) const { return disks_[d]->errors.load(); }

  // Reserves `len` bytes (a multiple of kRecordAlign) at the end of disk d's active extent,
  // starting a new extent when it is full. kNoSpace when the disk is full.
  Result<Placement> Reserve(size_t d, uint64_t len);
  // The extent for reading; opens the file on first use. kNotFound / kIOError.
  Result<std::shared_ptr<Extent>> Get(size_t d, uint32_t extent_id);

  // Makes every write numbered <= seq on each given extent durable. Concurrent callers share
  // fdatasyncs. An extent whose fdatasync failed once fails every later Sync of writes it
  // did not cover. On failure the extent is poisoned (after a failed fsync the page cache can no
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

  // A kNoSpace error `e` that names the disks `full` (positions) for clients, with what an
  // operator does about it (public_message), and their paths in the context for the log.
  // Anything else, or an empty `full`, comes back unchanged.
  Error NameFullDisks(Error e, const std::vector<size_t>& full) const;

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
  // Positions are uint16_t in shard locations; UINT16_MAX marks a lost shard.
  static constexpr size_t kMaxDisks = 256;

 private:
  struct Disk {
    std::string path;
    std::string identity;  // expected content of the identity file, set by Open
    std::atomic<bool> failed{false};
    std::atomic<DiskState> state{DiskState::kActive};
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
  // Checks (or with `create`, creates) disk d's layout and identity; marks it failed if wrong.
  // Returns why it failed, empty when the disk is fine.
  std::string OpenOne(size_t d, const std::string& node_id, bool create);

  Env* env_;
  uint64_t extent_bytes_;
  bool try_direct_;
  // Fixed slots so that Add never moves a Disk under a concurrent reader: a slot below
  // count_ is set before count_ grows past it and never changes after.
  std::array<std::unique_ptr<Disk>, kMaxDisks> disks_;
  std::atomic<size_t> count_{0};
  std::mutex add_mu_;  // one Add at a time
};

}  // namespace cv::storage
