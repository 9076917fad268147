// storage: the node's object store. ObjectStore keeps immutable objects safe on N data
// disks: each object is cut into stripes of k data + m parity shards (ISA-L, Cauchy) that go
// to k+m distinct disks, or, when that takes fewer disk bytes (small objects), into m+1
// whole copies on distinct disks. Either way any m disks may be lost. Shard records are
// appended to extents (see storage/FORMAT.md), written through io_uring, made durable with
// grouped fdatasyncs, and only then indexed in LMDB.
//
// Thread-safety: ObjectStore is safe to use from many threads. A Writer or Reader belongs to
// one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/common.h"
#include "index/index.h"

namespace cv::storage {

class Env;
class AsyncRing;

// What the operator made of a disk. Only kActive disks receive new shards; a kDraining disk
// is read while its shards move elsewhere; a kRemoved disk is gone for good (its shards are
// rebuilt elsewhere) and is never opened again, even if its directory comes back.
enum class DiskState : uint8_t { kActive = 0, kDraining = 1, kRemoved = 2 };
const char* DiskStateName(DiskState s);
std::optional<DiskState> ParseDiskState(std::string_view name);

struct StoreOptions {
  std::vector<std::string> disks;  // data directories; order is fixed once the node exists
  std::string index_dir;
  int k = 4;
  int m = 2;
  uint32_t shard_unit = 256 * 1024;  // payload bytes per shard of a full stripe
  uint64_t extent_bytes = 256ull << 20;  // preallocated size of one extent file
  bool try_direct = true;                // O_DIRECT where the file system supports it
  uint64_t index_initial_map_bytes = 1ull << 30;
  Env* env = nullptr;  // not owned; nullptr = io_uring if available, else pread/pwrite
  // Bench only (the null-disk node): with env == nullptr, the default Env wrapped in
  // NewDiscardEnv, so that extent data is not kept. Every object written is lost.
  bool discard_data_writes = false;
};

struct ObjectInfo {
  index::ObjectKey key;
  uint64_t size = 0;
  int64_t created_ns = 0;
  Sha256Digest sha256{};
};

// Streams one object in. Append the body in any chunking, then Commit. Destroying a Writer
// without a successful Commit aborts it: nothing becomes visible, its records are garbage.
class Writer {
 public:
  virtual ~Writer() = default;
  // May write full stripes to disk. An error ends the upload (Commit will fail).
  virtual Status Append(std::span<const uint8_t> data) = 0;
  // The same without a copy: Window() is where the next body bytes go, straight into a shard
  // record's payload (empty once `size` bytes arrived, or after an error); the caller fills a
  // prefix of it and reports how much with Appended(n), which hashes those bytes and may
  // write full stripes. Window() is valid until the next call on the Writer.
  virtual std::span<uint8_t> Window() = 0;
  virtual Status Appended(size_t n) = 0;
  // The error that ended the upload, if one did (Window() is empty then).
  virtual Status status() const = 0;
  // For an event loop (as Reader::Prefetch): from now on the Writer writes its stripes on
  // `ring` (from ObjectStore::NewAsyncRing, owned by this thread) without waiting for them.
  // Appended starts a full stripe's writes and returns, and the body goes on into a second
  // stripe buffer meanwhile; the last byte's Appended checks the body against its name and
  // starts the last writes. Window() is empty with status() OK while both buffers wait for
  // the disk: then WhenWritten. Call before the first byte; then use CommitAsync, not Commit
  // (Commit fails while writes are in flight).
  virtual void WriteOn(AsyncRing& ring) = 0;
  // With WriteOn: `done` runs inside the ring's Poll once the Writer can go on: Window() has
  // room again, or (the whole body in) every write has finished, or the upload failed (see
  // status()); through the ring even if it can go on already. Without WriteOn it runs at once.
  // The Writer must outlive `done`'s call (destroying it drops `done`).
  virtual void WhenWritten(std::function<void()> done) = 0;
  // Writes the rest, makes every shard durable, then indexes the object. Fails with
  // kInvalidArgument if fewer/more bytes than announced arrived or (content-addressed types)
  // the name is not the SHA-256 of the body; kConflict if the name exists with other content.
  // If the same content exists already it succeeds and changes nothing.
  virtual Result<ObjectInfo> Commit() = 0;
};

// Streams a byte range of one object out, verifying every shard and rebuilding from parity
// what is missing or corrupt.
class Reader {
 public:
  virtual ~Reader() = default;
  virtual uint64_t length() const = 0;  // bytes this reader returns in total
  // Fills up to out.size() bytes; 0 means the range is done.
  virtual Result<size_t> Read(std::span<uint8_t> out) = 0;
  // For an event loop, so that its thread does not wait for the disk: starts reading, on
  // `ring` (from ObjectStore::NewAsyncRing, owned by this thread), the shard records that
  // the next Read needs (the rest of the current stripe's range), and returns. `done` runs
  // inside ring.Poll on this thread once they are in and verified; then a Read of at most
  // Buffered() bytes needs no disk. What failed is left to Read, which reads the stripe's
  // other shards synchronously and rebuilds it (the rare, degraded case). No Read while a
  // prefetch runs. The Reader may be destroyed before `done` runs: the buffers the kernel
  // writes into live on until the ring has finished with them.
  virtual void Prefetch(AsyncRing& ring, std::function<void()> done) = 0;
  // Bytes from the current position that are in memory and verified.
  virtual uint64_t Buffered() const = 0;
};

struct DiskStatus {
  size_t position = 0;
  std::string path;
  DiskState state = DiskState::kActive;
  bool failed = false;  // failed or removed: not read
  uint64_t live_bytes = 0;  // shard record bytes the index references on this disk
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;
  uint64_t errors = 0;
};

struct StoreStats {
  uint64_t reconstructed_reads = 0;  // shard reads served from parity or another copy
  uint64_t corrupt_shards = 0;       // checksum mismatches found while reading
  uint64_t pending_repairs = 0;      // stripes queued for repair
  std::vector<DiskStatus> disks;
  const char* io_engine = "";
  uint64_t io_requests = 0;             // disk reads and writes since the node started
  uint64_t io_registered_requests = 0;  // of those, through io_uring registered buffers
  uint64_t io_async_requests = 0;       // of those, on an event loop's ring (downloads)
  // The commit thread (CommitAsync, UpdateAsync) since the node started: groups run, jobs
  // in them, and the time its groups spent in fdatasyncs and in index commits.
  uint64_t commit_groups = 0;
  uint64_t commit_jobs = 0;
  uint64_t commit_sync_ns = 0;
  uint64_t commit_index_ns = 0;
};

// What Fsck found: the index against itself (usage counters, extent accounting) and against
// the extent files. Clean when `problems` is empty.
struct FsckReport {
  uint64_t objects = 0;
  uint64_t bytes = 0;
  std::vector<std::string> problems;  // with fix: those that remain (could not be fixed)
  std::vector<std::string> fixed;     // with fix: what was found and corrected
  bool clean() const { return problems.empty(); }
};

// How Scrub walks: throttled, resumable, observable, stoppable.
struct ScrubOptions {
  uint64_t max_bytes_per_sec = 0;                // shard bytes read per second; 0 = unthrottled
  std::optional<index::ObjectKey> start_after;   // resume a pass after this object
  // Called after every batch of objects and at least every second with the report so far
  // and the last object done; returning false stops the walk there (the report is then
  // partial, complete = false).
  std::function<bool(const struct ScrubReport&, const index::ObjectKey& last)> progress;
};

// What Scrub found reading every shard record of every object (parity and every copy too).
struct ScrubReport {
  uint64_t objects = 0;
  uint64_t shards_checked = 0;
  uint64_t bytes_checked = 0;
  uint64_t damaged_shards = 0;  // unreadable, missing or failing their checksum
  uint64_t lost_stripes = 0;    // fewer than k good shards (or no good copy): data loss
  std::vector<std::string> damaged;  // "device/type/name stripe S shard I: why", at most 1000
  bool complete = true;              // false when progress() stopped the walk early
};

struct RepairReport {
  uint64_t stripes_examined = 0;
  uint64_t stripes_repaired = 0;
  uint64_t shards_rewritten = 0;
  uint64_t bytes_rewritten = 0;  // record bytes written
  uint64_t stripes_lost = 0;   // fewer than k good shards: cannot be rebuilt
  uint64_t still_queued = 0;   // could not be repaired now (no room, disks busy): retried later
  std::vector<std::string> lost;  // at most 1000
};

// How Drain walks: like Scrub, resumable and stoppable.
struct DrainOptions {
  std::optional<index::ObjectKey> start_after;
  // Called after every batch of objects and at least every second; false stops the walk.
  std::function<bool(const struct DrainReport&, const index::ObjectKey& last)> progress;
};

struct DrainReport {
  uint64_t objects = 0;         // objects examined
  uint64_t stripes_moved = 0;   // stripes with a shard moved off the disk
  uint64_t shards_moved = 0;
  uint64_t bytes_moved = 0;     // record bytes written elsewhere
  uint64_t stripes_failed = 0;  // could not be moved now (no room, conflicts): drain again
  uint64_t extents_removed = 0; // extent files deleted from the disk once nothing referenced them
  uint64_t remaining_bytes = 0; // record bytes the index still references on the disk
  std::vector<std::string> problems;  // at most 1000
  bool complete = true;               // false when progress() stopped the walk early
};

struct CompactOptions {
  // Extents whose live bytes are at most this share of their size are rewritten (if what is
  // not live in them exceeds the largest record: less is the tail every full extent has).
  double max_live_ratio = 0.5;
  // Throttle for copying live records, so that client traffic keeps the disks (0 = none).
  uint64_t max_bytes_per_sec = 0;
};

struct CompactReport {
  uint64_t extents_examined = 0;
  uint64_t extents_removed = 0;
  uint64_t records_moved = 0;
  uint64_t bytes_moved = 0;
  uint64_t bytes_reclaimed = 0;  // size of the extent files removed
  std::vector<std::string> problems;
};

// One batch of a device purge (PurgeObjects).
struct PurgeBatch {
  uint64_t objects = 0;  // removed by this batch; 0 when the device had none left
  uint64_t bytes = 0;    // their logical bytes
};

struct RebuildReport {
  uint64_t extents_scanned = 0;
  uint64_t records_valid = 0;
  uint64_t records_invalid = 0;  // blocks that looked like a header but failed a check
  uint64_t tombstones = 0;
  uint64_t objects = 0;             // indexed by the rebuild
  uint64_t deleted_instances = 0;   // complete copies dropped because of a tombstone
  uint64_t incomplete_instances = 0;  // never committed, or too damaged to rebuild
  std::vector<std::string> problems;
};

class ObjectStore {
 public:
  // Offline disaster recovery: builds a new index in options.index_dir (which must not hold
  // one) from the shard records in the extents. Accounts, devices and tokens come from
  // `backup_dir`, a copy made by Index::CopyTo (empty: none; objects are still indexed but
  // no device can log in until devices are recreated). Each object gets the earliest copy
  // that is complete and newer than its latest tombstone; usage counters and extent live
  // bytes are recomputed. REQUIRES: no node is running on these disks.
  static Result<RebuildReport> RebuildIndex(const StoreOptions& options,
                                            const std::string& backup_dir);

  // Opens the node, creating disks' layout and the index on first use. A disk directory that
  // is missing or unusable is marked failed and the node serves from the rest.
  static Result<std::unique_ptr<ObjectStore>> Open(const StoreOptions& options);
  virtual ~ObjectStore() = default;

  // `size` is the exact body length (Content-Length). kUnavailable when fewer than the
  // disks a layout needs are healthy; kInvalidArgument for a bad key.
  virtual Result<std::unique_ptr<Writer>> BeginPut(const index::ObjectKey& key, uint64_t size) = 0;
  Result<ObjectInfo> Put(const index::ObjectKey& key, std::string_view body);

  // Commit without waiting, for an event loop: `writer` (whose writes have finished: see
  // Writer::WhenWritten) joins the store's open commit group, which makes every extent the
  // group wrote to durable (one fdatasync each) and then commits the whole group's index
  // records at once; while one group commits, the next fills. `also` (may be empty) runs in
  // the object's own index transaction, before the object's records are written, so that what
  // goes with the upload (a snapshot's last backup) commits with it or not at all, and an
  // error from it fails the upload; like an Update fn, it may run more than once. `done` gets what Commit would have returned; it runs on the store's commit
  // thread, never before the group's sync and index commit have completed, and must not
  // block. The writer is destroyed on that thread after `done`. Without WriteOn, the
  // writer's last writes run here, on the caller's thread.
  virtual void CommitAsync(std::unique_ptr<Writer> writer,
                           std::function<Status(index::WriteTxn&)> also,
                           std::function<void(Result<ObjectInfo>)> done) = 0;
  // An index update in the next commit group, without waiting: fn as Index::Update's, `done`
  // (may be empty) with its result, on the commit thread. Queued in order: an update queued
  // after another sees it committed.
  virtual void UpdateAsync(std::function<Status(index::WriteTxn&)> fn,
                           std::function<void(Status)> done) = 0;
  // Returns once every CommitAsync and UpdateAsync called before has run its `done` (a
  // server calls it before its event loops go, so that no `done` outlives them).
  virtual void WaitForCommits() = 0;

  virtual Result<std::optional<ObjectInfo>> Head(const index::ObjectKey& key) = 0;
  // [offset, offset + length) clipped to the object; kNotFound if absent;
  // kInvalidArgument if offset > size.
  virtual Result<std::unique_ptr<Reader>> Open(const index::ObjectKey& key, uint64_t offset,
                                               uint64_t length) = 0;
  Result<std::string> Get(const index::ObjectKey& key, uint64_t offset = 0,
                          uint64_t length = UINT64_MAX);
  // Removes the index entry (kNotFound if absent); the space is reclaimed by compaction.
  virtual Status Delete(const index::ObjectKey& key) = 0;
  virtual Result<std::vector<ObjectInfo>> List(const index::Id& device,
                                               std::optional<index::ObjectType> type,
                                               std::string_view start_after, size_t limit) = 0;

  // Deleting a whole device (the purge job of admin/). WriteDeviceTombstone writes and syncs
  // m+1 copies of one device tombstone (FORMAT.md) so that an index rebuilt from the extents
  // does not bring the device's objects back; call it before the first PurgeObjects.
  virtual Status WriteDeviceTombstone(const index::Id& device) = 0;
  // Removes up to `limit` objects of `device` (and their usage) in one index transaction,
  // which also runs `also(txn, batch)` so that the caller's progress commits with the batch
  // (it may run more than once: no side effects outside txn). batch.objects == 0: none left.
  virtual Result<PurgeBatch> PurgeObjects(
      const index::Id& device, size_t limit,
      const std::function<Status(index::WriteTxn&, const PurgeBatch&)>& also) = 0;

  // Consistency check over one index snapshot: every device's bytes/objects equal the sum
  // over its objects (durability rule 4), every extent's live bytes equal the records the
  // index references in it, and every referenced extent file exists.
  // With `fix`, in one write transaction (uploads wait for it): usage counters of devices and
  // accounts and extents' live bytes are set to what the objects sum to; what cannot be fixed
  // this way (a wrong number of shard locations, an extent file that cannot be opened:
  // scrub and repair's work) stays in `problems`. `also` (with `fix` only) runs at the end of
  // that transaction with the report so far, so that the caller's record of the fix (an audit
  // record) commits with it; its error rolls the fix back and is returned. It may run more
  // than once: no side effects outside txn.
  virtual Result<FsckReport> Fsck(
      bool fix, const std::function<Status(index::WriteTxn&, const FsckReport&)>& also) = 0;
  Result<FsckReport> Fsck(bool fix) { return Fsck(fix, nullptr); }
  Result<FsckReport> Fsck() { return Fsck(false); }
  // Reads and verifies every shard record; damaged stripes are queued for repair.
  virtual Result<ScrubReport> Scrub(const ScrubOptions& options) = 0;
  Result<ScrubReport> Scrub() { return Scrub(ScrubOptions{}); }
  // Rebuilds damaged stripes from their survivors onto healthy disks (never two shards of a
  // stripe on one disk): the stripes queued by reads and Scrub and, with
  // `include_failed_disks`, every stripe with a shard on a failed disk. Stripes with the
  // fewest surviving shards go first. The index switches to the new shards only after
  // they are durable, and only if the object did not change meanwhile.
  virtual Result<RepairReport> Repair(bool include_failed_disks) = 0;
  // Returns the space of deleted objects to the file system: every extent that is not being
  // appended to and whose live share is at most max_live_ratio has its live records copied
  // (checksums verified) to the same disk's active extent, the index switched atomically,
  // then the extent file removed. Extents with no live bytes need no free space at all, so
  // compaction after a large delete works on a full disk.
  virtual Result<CompactReport> Compact(const CompactOptions& options) = 0;

  // Disk replacement (cvctl disk add|drain|remove). The node's disks and their states are
  // kept in the index (meta "disk_table"); the config's `disks` must be a prefix of them.
  // Each change commits in one index transaction, which also runs the caller's `also` with
  // the disk as the change leaves it (so that, e.g., an audit record commits with the change,
  // or neither does). An error from `also` rolls the change back, in the index and in memory,
  // and is returned. `also` may run more than once: no side effects outside txn.
  using DiskChangeFn = std::function<Status(index::WriteTxn&, const DiskStatus& after)>;
  // AddDisk: a new, empty directory becomes the disk at the next position and receives
  // shards at once (see DiskSet::Add for what is refused, and for the files a failed add
  // leaves).
  virtual Result<size_t> AddDisk(const std::string& path, const DiskChangeFn& also) = 0;
  Result<size_t> AddDisk(const std::string& path) { return AddDisk(path, nullptr); }
  // Records disk d's new state durably and applies it: taking a disk out of placement
  // (draining, removed) stops new shards landing on it before the commit, and is undone if
  // the commit fails; putting it back (active) applies once durable. kNotFound for no such
  // disk, kConflict for a removed disk (removal is final). The same state again changes
  // nothing but still runs `also` in a transaction.
  virtual Status SetDiskState(size_t d, DiskState state, const DiskChangeFn& also) = 0;
  Status SetDiskState(size_t d, DiskState state) { return SetDiskState(d, state, nullptr); }
  // Moves every shard off disk d (which must be kDraining) onto active disks that hold no
  // shard of the same stripe, reading it there or, if that fails, rebuilding it from the
  // other shards; the index switches to each new shard only once it is durable. When a
  // complete pass leaves nothing referenced on d, its extent files are deleted. Shard
  // records a crash left unindexed and tombstone copies are not moved: the other m
  // tombstone copies stay on other disks.
  virtual Result<DrainReport> Drain(size_t d, const DrainOptions& options) = 0;

  // An AsyncRing for the calling thread's event loop, for Reader::Prefetch (see
  // storage/io/io.h); kUnavailable where the I/O engine has none (pread/pwrite, tests' fault
  // injection): Read alone then does the I/O. Destroy it before the store.
  virtual Result<std::unique_ptr<AsyncRing>> NewAsyncRing() = 0;

  // The index the store commits object records to. admin/ and server/ depend on index/
  // openly (DESIGN.md's direction admin -> storage -> index allows it, and their CMake targets
  // link cv_index by name): accounts, devices, jobs and the audit log are theirs to read and
  // write in it. Object records, usage counters and disk states change only through the
  // store's methods, which keep them in step with the extents.
  virtual index::Index& Index() = 0;
  virtual StoreStats Stats() = 0;
  // True when at least k+m disks are healthy (uploads possible) and the index answers.
  virtual bool Ready() = 0;
};

// True when objects of this type are named by the SHA-256 of their body (all but config).
bool IsContentAddressed(index::ObjectType type);
// Validates an object name for a type: content-addressed -> 64 lowercase hex; config -> "".
Status ValidateName(index::ObjectType type, std::string_view name);

}  // namespace cv::storage
