// index: the node's metadata in one LMDB environment. Objects, extents and devices live in
// named databases; every value carries an XXH3 checksum that is verified on read.
//
// Keys sort by (device, type, name) so that listing a device's objects of one type is a
// range scan. Commits are durable (fdatasync before Update returns). LMDB has one writer:
// concurrent Update() calls are grouped into one transaction and one commit.
// MDB_MAP_FULL grows the map and retries; callers never see it.
//
// Thread-safety: Index is safe to use from many threads. A ReadTxn or WriteTxn belongs to
// the thread that uses it (a ReadTxn may move between threads but is not shared).
// Growing the map waits until no read Txn is open (up to 60 s, then kUnavailable): keep
// read Txns short, never hold one across an Update on the same thread, and destroy every
// Txn before the Index. On-disk format: index/FORMAT.md.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/common.h"

namespace cv::index {

// Globally unique 128-bit random ids (never per-node counters: accounts move between nodes).
using Id = std::array<uint8_t, 16>;
Id NewId();
std::string IdToHex(const Id& id);
std::optional<Id> IdFromHex(std::string_view hex);  // exactly 32 lowercase hex digits

enum class ObjectType : uint8_t { kConfig = 1, kData = 2, kKeys = 3, kLocks = 4, kSnapshots = 5, kIndex = 6 };
std::optional<ObjectType> ParseObjectType(std::string_view name);  // "data", "keys", ...
const char* ObjectTypeName(ObjectType type);

struct ObjectKey {
  Id device{};
  ObjectType type = ObjectType::kData;
  std::string name;  // <= kMaxNameBytes
  bool operator==(const ObjectKey&) const = default;
};
inline constexpr size_t kMaxNameBytes = 255;

// Where one shard record of an object lives: a record starts at `offset` in extent
// `extent` of disk `disk` (see storage/FORMAT.md).
struct ShardLoc {
  uint16_t disk = 0;
  uint32_t extent = 0;
  uint64_t offset = 0;
  bool operator==(const ShardLoc&) const = default;
};

enum class Layout : uint8_t {
  kReplicated = 1,  // small objects: `copies` whole copies on distinct disks
  kErasure = 2,     // stripes of k data + m parity shards on k+m distinct disks
};

struct ObjectRecord {
  uint64_t size = 0;  // logical bytes
  int64_t created_ns = 0;
  Layout layout = Layout::kErasure;
  uint8_t k = 0;            // erasure: data shards per stripe; replicated: number of copies
  uint8_t m = 0;            // erasure: parity shards per stripe; replicated: 0
  uint32_t shard_unit = 0;  // erasure: payload bytes of each shard of a full stripe
  Sha256Digest sha256{};    // of the whole body
  // Erasure: stripe-major, shards[s * (k + m) + i] is shard i of stripe s.
  // Replicated: shards[c] is copy c.
  std::vector<ShardLoc> shards;
  bool operator==(const ObjectRecord&) const = default;
};

struct ExtentRecord {
  uint64_t capacity = 0;    // preallocated bytes
  uint64_t live_bytes = 0;  // bytes of records referenced by the index
  uint64_t dead_bytes = 0;  // bytes of records whose objects were deleted
  bool operator==(const ExtentRecord&) const = default;
};

enum class DeviceKind : uint8_t { kComputer = 1, kServer = 2 };
struct DeviceRecord {
  Id id{};
  Id account{};
  std::string name;
  DeviceKind kind = DeviceKind::kComputer;
  bool append_only = true;    // agents may delete only `locks`
  Sha256Digest token_hash{};  // SHA-256 of the device's random token
  int64_t created_ns = 0;
  uint64_t bytes = 0;    // maintained by PutObject/DeleteObject
  uint64_t objects = 0;  // maintained by PutObject/DeleteObject
  int64_t last_upload_ns = 0;
  int64_t last_backup_ns = 0;  // time of the last completed `snapshots` upload
  bool operator==(const DeviceRecord&) const = default;
};

// Read methods shared by read and write transactions. Every value is checksum-verified;
// a mismatch is kCorruption. A miss is std::nullopt, not an error.
class Txn {
 public:
  virtual ~Txn() = default;
  virtual Result<std::optional<ObjectRecord>> GetObject(const ObjectKey& key) = 0;
  // Objects of `device` (of `type` if given) in key order, strictly after `start_after`
  // (a name; empty = from the start), at most `limit` (0 yields none). A non-empty
  // `start_after` needs a `type` (kInvalidArgument otherwise).
  virtual Result<std::vector<std::pair<ObjectKey, ObjectRecord>>> ListObjects(
      const Id& device, std::optional<ObjectType> type, std::string_view start_after,
      size_t limit) = 0;
  // Calls fn for every object of every device in key order; stops early if fn returns false.
  virtual Status ForEachObject(const std::function<bool(const ObjectKey&, const ObjectRecord&)>& fn) = 0;
  virtual Result<std::optional<ExtentRecord>> GetExtent(uint16_t disk, uint32_t extent) = 0;
  virtual Status ForEachExtent(const std::function<bool(uint16_t disk, uint32_t extent, const ExtentRecord&)>& fn) = 0;
  virtual Result<std::optional<DeviceRecord>> GetDevice(const Id& id) = 0;
  virtual Status ForEachDevice(const std::function<bool(const DeviceRecord&)>& fn) = 0;
  virtual Result<std::optional<std::string>> GetMeta(std::string_view key) = 0;
};

class WriteTxn : public Txn {
 public:
  // Inserts or replaces. When the key is new and its device has a DeviceRecord, the device's
  // bytes/objects grow by the object's size/1 and last_upload_ns is set; a replacement
  // adjusts bytes by the difference. last_upload_ns becomes max(itself, rec.created_ns).
  // kCorruption if the record it replaces fails its checksum (so does DeleteObject).
  virtual Status PutObject(const ObjectKey& key, const ObjectRecord& rec) = 0;
  // Removes the object (kNotFound if absent) and takes its size off its device's counters.
  virtual Status DeleteObject(const ObjectKey& key) = 0;
  virtual Status PutExtent(uint16_t disk, uint32_t extent, const ExtentRecord& rec) = 0;
  virtual Status DeleteExtent(uint16_t disk, uint32_t extent) = 0;  // kNotFound if absent
  virtual Status PutDevice(const DeviceRecord& rec) = 0;  // as given, counters included
  virtual Status DeleteDevice(const Id& id) = 0;          // kNotFound if absent
  virtual Status PutMeta(std::string_view key, std::string_view value) = 0;
};

class Index {
 public:
  struct Options {
    std::string dir;                       // created if missing
    uint64_t initial_map_bytes = 1ull << 30;  // grows by doubling on MDB_MAP_FULL
    uint64_t max_map_bytes = 1ull << 40;
  };
  // kConflict if `dir` is already open in this process (LMDB forbids it); kInvalidArgument
  // if its index_format is newer than this build's.
  static Result<std::unique_ptr<Index>> Open(const Options& options);
  virtual ~Index() = default;

  // A consistent snapshot for as long as the returned object lives.
  virtual Result<std::unique_ptr<Txn>> BeginRead() = 0;

  // Runs fn in a write transaction. Concurrent calls are grouped into one LMDB transaction
  // and one durable commit; each fn runs in its own nested transaction, so a fn that returns
  // an error rolls back only its own changes and gets that error back. Returns once the
  // commit is durable. fn may be run again if the map had to grow: it must not have side
  // effects outside the transaction. fn runs on whichever caller's thread leads the group,
  // and must not call Update (kInternal). kNoSpace once the map is at max_map_bytes.
  virtual Status Update(const std::function<Status(WriteTxn&)>& fn) = 0;

  // Hot, consistent, compacted copy of the environment into the directory `dest_dir`
  // (LMDB's copy with MDB_CP_COMPACT), while serving. Creates `dest_dir`; kConflict if it
  // already holds a data.mdb. Synced before it returns; delays map growth while it runs.
  virtual Status CopyTo(const std::string& dest_dir) = 0;

  // Current map size in bytes (for tests of map growth and for status).
  virtual uint64_t MapBytes() const = 0;
};

}  // namespace cv::index
