// index: the node's metadata in one LMDB environment. Objects, extents, devices and the
// account model (partners, accounts, add-ons, admin keys, audit, jobs, purged devices) live
// in named databases; every value carries an XXH3 checksum that is verified on read.
// Account usage and upload reservations are kept here, in the transactions that change them.
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
#include <span>
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
// The meta key that marks a device removed by a purge (index/FORMAT.md).
std::string PurgedDeviceMetaKey(const Id& device);

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
  // Set when the device was deleted through the admin API: closed to its agent at once
  // (410), its data kept until purge_job runs; both zero again if that job is cancelled.
  int64_t closed_ns = 0;
  Id purge_job{};
  bool operator==(const DeviceRecord&) const = default;
};

// A device that a purge removed from an account that still has a record. Its old agent is told
// that the device was deleted (410) rather than that its password is wrong (401), for as long
// as the account exists. Found only by the hash of the device's last token, so nothing but
// that token ever finds it.
struct PurgedDevice {
  Id id{};
  Id account{};
  Sha256Digest token_hash{};  // of the device's token when it was purged
  int64_t purged_ns = 0;
  Id purge_job{};
  bool operator==(const PurgedDevice&) const = default;
};

// ---- accounts, quotas and administration (see "Quota protocol" below) ----

struct Partner {
  Id id{};
  std::string name;
  int64_t created_ns = 0;
  bool operator==(const Partner&) const = default;
};

// expired = read-only (restores work, uploads are refused); suspended = no agent access.
enum class AccountStatus : uint8_t { kTrial = 1, kActive = 2, kExpired = 3, kSuspended = 4 };
std::optional<AccountStatus> ParseAccountStatus(std::string_view name);  // "trial", ...
const char* AccountStatusName(AccountStatus status);

struct Account {
  Id id{};
  std::optional<Id> partner;  // none once released
  AccountStatus status = AccountStatus::kTrial;
  uint64_t plan_quota_bytes = 0;
  uint32_t device_limit = 0;
  int64_t expires_ns = 0;  // 0 = never
  int64_t created_ns = 0;
  // Maintained by the index: the sums of its devices' counters (PutAccount keeps the stored
  // values of an existing account), and, when read, the bytes that uploads in flight hold
  // (Index::Reserve; never stored).
  uint64_t bytes = 0;
  uint64_t objects = 0;
  uint64_t reserved_bytes = 0;
  bool operator==(const Account&) const = default;
};
// The status as of now_ns: a trial whose expiry has passed is kExpired (no writer needed).
AccountStatus EffectiveStatus(const Account& account, int64_t now_ns);

struct AddOn {  // extra quota bytes for one account
  Id id{};
  Id account{};
  uint64_t bytes = 0;
  int64_t expires_ns = 0;  // 0 = never; counts while expires_ns == 0 || expires_ns > now
  int64_t created_ns = 0;
  bool operator==(const AddOn&) const = default;
};
// plan_quota_bytes + the add-ons live at now_ns (saturating).
uint64_t QuotaBytes(const Account& account, const std::vector<AddOn>& addons, int64_t now_ns);

enum class AdminRole : uint8_t { kOperator = 1, kPartner = 2 };
struct AdminKey {
  Id id{};
  AdminRole role = AdminRole::kOperator;
  Id partner{};  // kPartner: the partner whose accounts the key manages; zero otherwise
  Sha256Digest secret_sha256{};
  int64_t created_ns = 0;
  int64_t expires_ns = 0;  // 0 = never
  bool disabled = false;
  bool operator==(const AdminKey&) const = default;
};
std::string AdminRoleName(const AdminKey& key);  // "operator" or "partner:<32 hex>"
bool AdminKeyUsable(const AdminKey& key, int64_t now_ns);  // not disabled, not expired

struct AuditRecord {
  uint64_t seq = 0;  // assigned by AppendAudit: 1, 2, ... per node, never reused
  int64_t time_ns = 0;
  Id key_id{};        // the admin key that acted (zero for cvctl)
  std::string role;   // AdminRoleName of that key, as it was
  std::string action;  // e.g. "account.update"
  std::string target;  // e.g. "account/<hex>"
  std::optional<Id> account;  // the account concerned, for ListAudit by account
  std::optional<Id> partner;  // its partner at the time, for ListAudit by partner
  std::string before_json;
  std::string after_json;
  bool operator==(const AuditRecord&) const = default;
};

struct Job {  // long work (device deletion, courier images, scrub); persisted as given
  Id id{};
  std::string kind;
  std::string state;
  std::optional<Id> account;
  std::optional<Id> device;
  std::string params_json;
  std::string progress_json;
  std::string result_json;
  int64_t created_ns = 0;
  int64_t started_ns = 0;
  int64_t finished_ns = 0;
  int64_t run_after_ns = 0;
  bool operator==(const Job&) const = default;
};

// Listings return at most `limit` records strictly after the cursor `start_after` (the
// last id or seq of the previous page), in key order: ids bytewise, audit by seq.
struct AccountQuery {
  std::optional<Id> partner;            // that partner's accounts (a range scan)
  std::optional<AccountStatus> status;  // compared with EffectiveStatus(account, now_ns)
  int64_t now_ns = 0;
  std::optional<Id> start_after;
  size_t limit = 100;
};
struct AuditQuery {
  std::optional<Id> account;  // records of that account (a range scan)
  std::optional<Id> partner;  // records made while the account belonged to that partner
  uint64_t after_seq = 0;
  size_t limit = 100;
};
struct JobQuery {
  std::optional<Id> account;         // that account's jobs (a range scan)
  std::optional<std::string> state;  // filter
  std::optional<Id> start_after;
  size_t limit = 100;
};

struct QuotaDecision {
  bool granted = false;
  uint64_t quota_bytes = 0;     // plan + live add-ons
  uint64_t used_bytes = 0;      // Account::bytes
  uint64_t reserved_bytes = 0;  // Account::reserved_bytes after the decision
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
  // The same, starting strictly after `start_after` (null: from the start); for paged walks.
  virtual Status ForEachObjectAfter(
      const ObjectKey* start_after,
      const std::function<bool(const ObjectKey&, const ObjectRecord&)>& fn) = 0;
  virtual Result<std::optional<ExtentRecord>> GetExtent(uint16_t disk, uint32_t extent) = 0;
  virtual Status ForEachExtent(const std::function<bool(uint16_t disk, uint32_t extent, const ExtentRecord&)>& fn) = 0;
  virtual Result<std::optional<DeviceRecord>> GetDevice(const Id& id) = 0;
  virtual Status ForEachDevice(const std::function<bool(const DeviceRecord&)>& fn) = 0;
  virtual Result<std::optional<std::string>> GetMeta(std::string_view key) = 0;

  // The account model. Listings that follow a secondary index (accounts of a partner,
  // devices of an account, audit of an account) report kCorruption when the index and the
  // record it points at disagree.
  virtual Result<std::optional<Partner>> GetPartner(const Id& id) = 0;
  virtual Result<std::vector<Partner>> ListPartners(const std::optional<Id>& start_after,
                                                    size_t limit) = 0;
  virtual Result<std::optional<Account>> GetAccount(const Id& id) = 0;
  // A status filter reads past the accounts that do not match.
  virtual Result<std::vector<Account>> ListAccounts(const AccountQuery& query) = 0;
  virtual Result<std::optional<AddOn>> GetAddOn(const Id& account, const Id& addon) = 0;
  virtual Result<std::vector<AddOn>> ListAddOns(const Id& account) = 0;
  virtual Result<std::vector<DeviceRecord>> ListDevices(const Id& account) = 0;  // by id
  virtual Result<std::optional<AdminKey>> GetAdminKey(const Id& id) = 0;
  virtual Result<std::optional<AdminKey>> GetAdminKeyBySecretHash(const Sha256Digest& hash) = 0;
  // The device whose token has this SHA-256 (devices_by_token), for Bearer authentication.
  // An entry that names a device without that token, or whose device id does not decode (a
  // stray or a malformed entry; CheckAccounts reports both), is passed over: it never
  // authenticates anything.
  virtual Result<std::optional<DeviceRecord>> GetDeviceByTokenHash(const Sha256Digest& hash) = 0;
  // Every devices_by_token entry, in key order, until fn returns false (CheckAccounts);
  // `device` is nullopt for an entry whose device id does not decode.
  virtual Status ForEachTokenEntry(
      const std::function<bool(const Sha256Digest& hash, const std::optional<Id>& device)>& fn) = 0;
  // The purged device whose last token has this SHA-256 and, if `device` is given, that id
  // (Basic names the device; a Bearer token alone finds it).
  virtual Result<std::optional<PurgedDevice>> GetPurgedDevice(const Sha256Digest& token_hash,
                                                              const std::optional<Id>& device) = 0;
  virtual Result<std::vector<PurgedDevice>> ListPurgedDevices(const Id& account) = 0;  // by id
  // Every purged device in key order (token hash, id), until fn returns false (CheckAccounts).
  virtual Status ForEachPurgedDevice(const std::function<bool(const PurgedDevice&)>& fn) = 0;
  virtual Result<std::vector<AuditRecord>> ListAudit(const AuditQuery& query) = 0;
  virtual Result<std::optional<Job>> GetJob(const Id& id) = 0;
  virtual Result<std::vector<Job>> ListJobs(const JobQuery& query) = 0;
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
  // Removes up to `limit` objects of `device` (in key order), calling `each` for every one
  // removed, and takes them off the device's (and account's) counters once; returns how many
  // (0: the device has none left). For purges: one pass, no per-object counter writes.
  virtual Result<uint64_t> DeleteDeviceObjects(
      const Id& device, size_t limit,
      const std::function<Status(const ObjectKey&, const ObjectRecord&)>& each) = 0;
  virtual Status PutExtent(uint16_t disk, uint32_t extent, const ExtentRecord& rec) = 0;
  virtual Status DeleteExtent(uint16_t disk, uint32_t extent) = 0;  // kNotFound if absent
  virtual Status PutDevice(const DeviceRecord& rec) = 0;  // as given, counters included
  virtual Status DeleteDevice(const Id& id) = 0;          // kNotFound if absent
  virtual Status PutMeta(std::string_view key, std::string_view value) = 0;

  // Device writes keep the devices-by-account index, and keep each account's bytes/objects
  // equal to the sum of its devices' counters: PutDevice changes the account by the
  // difference of the device's counters (so PutObject/DeleteObject count against the
  // account too), DeleteDevice takes them off, and a device moved to another account takes
  // its usage along. Accounts without a record are not tracked. A corrupt old device record
  // makes PutDevice/DeleteDevice (and so PutObject/DeleteObject) kCorruption.

  virtual Status PutPartner(const Partner& rec) = 0;
  virtual Status DeletePartner(const Id& id) = 0;  // kNotFound; kConflict while it has accounts
  // Inserts or replaces, keeping the stored bytes/objects of an existing account (and never
  // storing reserved_bytes, which live in memory: see "Quota protocol" on Index), and moves the account between partners' listings. kNotFound if rec.partner
  // has no record.
  virtual Status PutAccount(const Account& rec) = 0;
  // Removes the account, its add-ons and its purged devices. kNotFound; kConflict while it
  // has devices.
  virtual Status DeleteAccount(const Id& id) = 0;
  virtual Status PutAddOn(const AddOn& rec) = 0;  // kNotFound if the account has no record
  virtual Status DeleteAddOn(const Id& account, const Id& addon) = 0;  // kNotFound if absent
  // kNotFound if a partner key's partner has no record; kConflict if another key has the
  // same secret hash.
  virtual Status PutAdminKey(const AdminKey& rec) = 0;
  virtual Status DeleteAdminKey(const Id& id) = 0;  // kNotFound if absent
  // Stores `rec` under the next sequence number, which it returns (rec.seq is ignored).
  virtual Result<uint64_t> AppendAudit(const AuditRecord& rec) = 0;
  virtual Status PutJob(const Job& rec) = 0;
  virtual Status DeleteJob(const Id& id) = 0;  // kNotFound if absent
  // Remembers a device that a purge removed (inserts or replaces). kNotFound if its account
  // has no record (nothing would ever forget it); kConflict if a device with that id exists.
  virtual Status PutPurgedDevice(const PurgedDevice& rec) = 0;

  // Sets an account's bytes/objects as given (fsck --fix, after recomputing them from the
  // objects). kNotFound if the account has no record.
  virtual Status SetAccountUsage(const Id& account, uint64_t bytes, uint64_t objects) = 0;
};

// Recomputes every account's bytes/objects from the objects of its devices, and checks the
// partner, device and purged-device indexes against the records; one line per difference
// (`cvctl fsck`).
// Reserved bytes are not checked (uploads may be in flight).
Result<std::vector<std::string>> CheckAccounts(Txn& txn);

class Index {
 public:
  struct Options {
    std::string dir;                       // created if missing
    uint64_t initial_map_bytes = 1ull << 30;  // grows by doubling on MDB_MAP_FULL
    uint64_t max_map_bytes = 1ull << 40;
  };
  // kConflict if `dir` is already open in this process (LMDB forbids it); kInvalidArgument
  // if its index_format is newer than this build's. An older format is upgraded in place.
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
  // The same for several fns at once (the store's commit thread): each runs in its own nested
  // transaction, in order, and gets its own Status back at the same index of the result.
  // They share groups (and so commits) with each other and with concurrent Updates.
  virtual std::vector<Status> UpdateMany(
      std::span<const std::function<Status(WriteTxn&)>> fns) = 0;

  // Hot, consistent, compacted copy of the environment into the directory `dest_dir`
  // (LMDB's copy with MDB_CP_COMPACT), while serving. Creates `dest_dir`; kConflict if it
  // already holds a data.mdb. Synced before it returns; delays map growth while it runs.
  virtual Status CopyTo(const std::string& dest_dir) = 0;

  // Current map size in bytes (for tests of map growth and for status).
  virtual uint64_t MapBytes() const = 0;

  // Quota protocol. An upload of n bytes to a device of `account`:
  //   1. Reserve(account, n, now) before reading the body; refused -> 507, the body is not
  //      read.
  //   2. Success: the Update that does PutObject (or finds the same object already there:
  //      re-uploads cost nothing) commits; then Release(account, n).
  //   3. Failure or a client that goes away: Release(account, n).
  // So usage + reserved never exceeds the quota through uploads, whatever the concurrency:
  // between 2's commit and its Release the bytes count twice, never zero times.
  // Reservations belong to the uploads of the running process, so they are kept in memory
  // (index/reservations.h): neither call writes to LMDB or waits for a commit, and every
  // start begins with none. Reads of an Account through a Txn show them in reserved_bytes.
  //
  // Grants when bytes + reserved + used <= quota (plan + add-ons live at now_ns, used from a
  // snapshot taken after every earlier Release) and then holds the bytes; a refusal is a
  // decision, not an error. Ignores the account's status (the caller checks
  // EffectiveStatus). kNotFound without an account record.
  virtual Result<QuotaDecision> Reserve(const Id& account, uint64_t bytes, int64_t now_ns) = 0;
  // Gives a reservation back (never below 0; nothing for an account that holds none).
  virtual void Release(const Id& account, uint64_t bytes) = 0;
};

}  // namespace cv::index
