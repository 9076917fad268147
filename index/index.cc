// The Index over LMDB: transactions, group commit and map growth.
//
// Group commit. LMDB has one writer at a time and every durable commit costs an fdatasync,
// so Update() queues its fn and waits. Whichever waiting caller finds no leader becomes the
// leader: it takes the queue (up to kMaxGroup fns), runs
//
//   parent = begin write txn
//   for each fn:  child = begin txn nested in parent
//                 fn(child) ok ? commit child : abort child     (a failure undoes only itself)
//   commit parent (one fdatasync)  ->  wake every waiter with its own result
//
// and hands leadership to the next waiter. A fn thus runs on the leader's thread, not
// necessarily its caller's.
//
// Map growth. MDB_MAP_FULL anywhere in a group (a put in some fn, or the parent's commit)
// aborts the parent, doubles the map (up to max_map_bytes) and re-runs the whole group.
// mdb_env_set_mapsize remaps the file, so no transaction of this process may be open:
// every transaction holds `gate_` shared for its lifetime (read transactions from
// BeginRead until the Txn is destroyed, the leader's write transaction, CopyTo's snapshot)
// and growth takes it exclusively. A long-lived read transaction or a long CopyTo therefore
// delays growth and, with it, every Update that needs it; growth gives up after kGrowWait.
// Once the map is at max_map_bytes, a fn that hits MDB_MAP_FULL gets kNoSpace and the rest
// of its group still commits (a failed child leaves its parent intact in LMDB); if the
// parent's commit itself hits it, the whole group gets kNoSpace.
#include "index/index.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <filesystem>
#include <mutex>
#include <set>
#include <shared_mutex>

#include "index/accounts.h"
#include "index/lmdb_env.h"
#include "index/reservations.h"
#include "index/schema.h"

namespace cv::index {

// ---- ids and object types ----

Id NewId() {
  Id id{};
  RandomBytes(id);
  return id;
}

std::string IdToHex(const Id& id) { return ToHex(id); }

std::string PurgedDeviceMetaKey(const Id& device) { return "purged_device/" + IdToHex(device); }

std::optional<Id> IdFromHex(std::string_view hex) {
  Id id{};
  if (hex.size() != 2 * id.size() || !IsLowerHex(hex) || !FromHex(hex, id)) return std::nullopt;
  return id;
}

namespace {
constexpr std::pair<ObjectType, const char*> kTypeNames[] = {
    {ObjectType::kConfig, "config"},       {ObjectType::kData, "data"},
    {ObjectType::kKeys, "keys"},           {ObjectType::kLocks, "locks"},
    {ObjectType::kSnapshots, "snapshots"}, {ObjectType::kIndex, "index"},
};
}  // namespace

std::optional<ObjectType> ParseObjectType(std::string_view name) {
  for (const auto& [type, type_name] : kTypeNames) {
    if (name == type_name) return type;
  }
  return std::nullopt;
}

const char* ObjectTypeName(ObjectType type) {
  for (const auto& [t, type_name] : kTypeNames) {
    if (t == type) return type_name;
  }
  return "unknown";
}

namespace {

namespace fs = std::filesystem;

constexpr const char* kFormatKey = "index_format";
// 2: the account model's databases (format 1 had objects, extents, devices and meta only;
// Open upgrades it by building devices_by_account).
// 3: device values may end with closed_ns and purge_job (format 2 values, without them, still
// decode: the upgrade only records the new number, so that an older build refuses the index).
// 4: devices_by_token, so that a Bearer token names its device (Open builds it).
// 5: purged_devices and purged_devices_by_account (new and empty: nothing to convert; the
// number makes an older build, which would not forget them with their account, refuse it).
constexpr uint64_t kFormatVersion = 5;
constexpr unsigned kMaxDbs = 32;  // named databases: internal::kDatabases, with room to grow

// The map cannot grow any more. Said apart from a full data disk: adding disks does not help.
Error MapFullError(uint64_t max_map_bytes) {
  Error e{ErrorKind::kNoSpace, 0,
          "index map is full at its maximum of " + std::to_string(max_map_bytes) + " bytes"};
  e.public_message = "the node's index is full (its map reached its maximum of " +
                     std::to_string(max_map_bytes) +
                     " bytes): new objects cannot be recorded until data is deleted (devices, "
                     "pruned snapshots); adding data disks does not help";
  return e;
}
constexpr unsigned kMaxReaders = 512;
// Bounds the dirty pages of one LMDB transaction (MDB_TXN_FULL) and the work lost to a
// re-run after growth.
constexpr size_t kMaxGroup = 128;
constexpr auto kGrowWait = std::chrono::seconds(60);

// A shared/exclusive lock that prefers the exclusive side: once growth waits, new
// transactions wait behind it, so a steady stream of short readers cannot starve growth
// (glibc's rwlock, under std::shared_mutex, prefers readers). Meets SharedLockable and
// TimedLockable for the calls we use (std::shared_lock, std::unique_lock with a timeout).
class MapGate {
 public:
  void lock_shared() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !exclusive_ && exclusive_waiting_ == 0; });
    ++shared_;
  }
  void unlock_shared() {
    std::lock_guard lock(mu_);
    if (--shared_ == 0) cv_.notify_all();
  }
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> timeout) {
    std::unique_lock lock(mu_);
    ++exclusive_waiting_;
    bool ok = cv_.wait_for(lock, timeout, [&] { return !exclusive_ && shared_ == 0; });
    --exclusive_waiting_;
    if (ok) {
      exclusive_ = true;
    } else {
      cv_.notify_all();  // let the readers we held back in
    }
    return ok;
  }
  void unlock() {
    std::lock_guard lock(mu_);
    exclusive_ = false;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int shared_ = 0;
  int exclusive_waiting_ = 0;
  bool exclusive_ = false;
};

// LMDB must not open one environment twice in a process (closing either drops the other's
// POSIX locks), so Open refuses a directory that is already open.
class OpenDirRegistry {
 public:
  static bool Add(const std::string& dir) {
    std::lock_guard lock(Mu());
    return Dirs().insert(dir).second;
  }
  static void Remove(const std::string& dir) {
    std::lock_guard lock(Mu());
    Dirs().erase(dir);
  }

 private:
  static std::mutex& Mu() {
    static std::mutex mu;
    return mu;
  }
  static std::set<std::string>& Dirs() {
    static std::set<std::string> dirs;
    return dirs;
  }
};

struct Registration {
  explicit Registration(std::string registered) : dir(std::move(registered)) {}
  std::string dir;
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;
  ~Registration() {
    if (!dir.empty()) OpenDirRegistry::Remove(dir);
  }
};

using internal::Dbis;
using internal::Reservations;

// Set while the leader runs fns: an Update from inside a fn would wait for itself.
thread_local bool t_in_update_fn = false;

tl::unexpected<Error> Prefixed(Error e, std::string_view prefix) {
  e.context = std::string(prefix) + ": " + e.context;
  return tl::unexpected<Error>(std::move(e));
}

std::string KeyText(const ObjectKey& key) {
  return IdToHex(key.device) + "/" + ObjectTypeName(key.type) + "/" + key.name;
}

std::string ExtentText(uint16_t disk, uint32_t extent) {
  return "extent " + std::to_string(disk) + "/" + std::to_string(extent);
}

Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "open directory " + dir);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoError(err, "fsync directory " + dir);
  return {};
}

uint64_t RoundUp(uint64_t v, uint64_t unit) { return v % unit == 0 ? v : v + (unit - v % unit); }

// The read methods, shared by read and write transactions. `Interface` is Txn or WriteTxn.
template <class Interface>
class TxnReads : public Interface {
 public:
  Result<std::optional<ObjectRecord>> GetObject(const ObjectKey& key) final {
    CV_TRY_ASSIGN(auto k, schema::EncodeObjectKey(key));
    auto v = mdb::Get(txn_, dbis_.objects, k);
    if (!v) return Prefixed(v.error(), "get object " + KeyText(key));
    if (!*v) return std::nullopt;
    auto rec = schema::DecodeObject(**v);
    if (!rec) return Prefixed(rec.error(), "object " + KeyText(key));
    return std::move(*rec);
  }

  Result<std::vector<std::pair<ObjectKey, ObjectRecord>>> ListObjects(
      const Id& device, std::optional<ObjectType> type, std::string_view start_after,
      size_t limit) final {
    if (!type && !start_after.empty()) {
      return Err(ErrorKind::kInvalidArgument, "start_after needs an object type");
    }
    if (type && !schema::EncodeObjectKey(ObjectKey{device, *type, ""})) {
      return Err(ErrorKind::kInvalidArgument,
                 "object type " + std::to_string(static_cast<int>(*type)));
    }
    if (start_after.size() > kMaxNameBytes) {
      return Err(ErrorKind::kInvalidArgument, "start_after is longer than any object name");
    }
    std::vector<std::pair<ObjectKey, ObjectRecord>> out;
    if (limit == 0) return out;
    const std::string prefix = schema::ObjectKeyPrefix(device, type);
    const std::string seek = prefix + std::string(start_after);
    CV_TRY_ASSIGN(auto cursor, mdb::Cursor::Open(txn_, dbis_.objects));
    auto entry = cursor.SeekAtLeast(seek);
    for (; entry && *entry; entry = cursor.Next()) {
      auto [k, v] = **entry;
      if (!k.starts_with(prefix)) break;
      if (!start_after.empty() && k == seek) continue;  // strictly after
      CV_TRY_ASSIGN(auto key, schema::DecodeObjectKey(k));
      auto rec = schema::DecodeObject(v);
      if (!rec) return Prefixed(rec.error(), "object " + KeyText(key));
      out.emplace_back(std::move(key), std::move(*rec));
      if (out.size() >= limit) return out;
    }
    if (!entry) return Prefixed(entry.error(), "list objects");
    return out;
  }

  Status ForEachObject(const std::function<bool(const ObjectKey&, const ObjectRecord&)>& fn) final {
    return ForEachObjectAfter(nullptr, fn);
  }
  Status ForEachObjectAfter(const ObjectKey* start_after,
                            const std::function<bool(const ObjectKey&, const ObjectRecord&)>& fn) final {
    CV_TRY_ASSIGN(auto cursor, mdb::Cursor::Open(txn_, dbis_.objects));
    std::string after;
    if (start_after) {
      CV_TRY_ASSIGN(auto k, schema::EncodeObjectKey(*start_after));
      after = std::move(k);
    }
    auto entry = start_after ? cursor.SeekAtLeast(after) : cursor.First();
    if (start_after && entry && *entry && (*entry)->first == after) entry = cursor.Next();
    for (; entry && *entry; entry = cursor.Next()) {
      CV_TRY_ASSIGN(auto key, schema::DecodeObjectKey((*entry)->first));
      auto rec = schema::DecodeObject((*entry)->second);
      if (!rec) return Prefixed(rec.error(), "object " + KeyText(key));
      if (!fn(key, *rec)) return {};
    }
    if (!entry) return Prefixed(entry.error(), "scan objects");
    return {};
  }

  Result<std::optional<ExtentRecord>> GetExtent(uint16_t disk, uint32_t extent) final {
    auto v = mdb::Get(txn_, dbis_.extents, schema::EncodeExtentKey(disk, extent));
    if (!v) return Prefixed(v.error(), "get " + ExtentText(disk, extent));
    if (!*v) return std::nullopt;
    auto rec = schema::DecodeExtent(**v);
    if (!rec) return Prefixed(rec.error(), ExtentText(disk, extent));
    return *rec;
  }

  Status ForEachExtent(
      const std::function<bool(uint16_t disk, uint32_t extent, const ExtentRecord&)>& fn) final {
    CV_TRY_ASSIGN(auto cursor, mdb::Cursor::Open(txn_, dbis_.extents));
    auto entry = cursor.First();
    for (; entry && *entry; entry = cursor.Next()) {
      CV_TRY_ASSIGN(auto key, schema::DecodeExtentKey((*entry)->first));
      auto rec = schema::DecodeExtent((*entry)->second);
      if (!rec) return Prefixed(rec.error(), ExtentText(key.disk, key.extent));
      if (!fn(key.disk, key.extent, *rec)) return {};
    }
    if (!entry) return Prefixed(entry.error(), "scan extents");
    return {};
  }

  Result<std::optional<DeviceRecord>> GetDevice(const Id& id) final {
    auto v = mdb::Get(txn_, dbis_.devices, schema::EncodeDeviceKey(id));
    if (!v) return Prefixed(v.error(), "get device " + IdToHex(id));
    if (!*v) return std::nullopt;
    CV_TRY_ASSIGN(auto rec, DecodeDeviceFor(id, **v));
    return rec;
  }

  Status ForEachDevice(const std::function<bool(const DeviceRecord&)>& fn) final {
    CV_TRY_ASSIGN(auto cursor, mdb::Cursor::Open(txn_, dbis_.devices));
    auto entry = cursor.First();
    for (; entry && *entry; entry = cursor.Next()) {
      CV_TRY_ASSIGN(auto id, schema::DecodeDeviceKey((*entry)->first));
      CV_TRY_ASSIGN(auto rec, DecodeDeviceFor(id, (*entry)->second));
      if (!fn(rec)) return {};
    }
    if (!entry) return Prefixed(entry.error(), "scan devices");
    return {};
  }

  Result<std::optional<std::string>> GetMeta(std::string_view key) final {
    if (key.empty() || key.size() > schema::kMaxMetaKeyBytes) {
      return Err(ErrorKind::kInvalidArgument,
                 "meta key of " + std::to_string(key.size()) + " bytes");
    }
    auto v = mdb::Get(txn_, dbis_.meta, key);
    if (!v) return Prefixed(v.error(), "get meta " + std::string(key));
    if (!*v) return std::nullopt;
    auto value = schema::DecodeMeta(**v);
    if (!value) return Prefixed(value.error(), "meta " + std::string(key));
    return std::move(*value);
  }

  // The account model: accounts.cc.
  Result<std::optional<Partner>> GetPartner(const Id& id) final {
    return accounts_.GetPartner(id);
  }
  Result<std::vector<Partner>> ListPartners(const std::optional<Id>& start_after,
                                            size_t limit) final {
    return accounts_.ListPartners(start_after, limit);
  }
  // reserved_bytes is the uploads' in flight, from memory (index/reservations.h).
  Result<std::optional<Account>> GetAccount(const Id& id) final {
    CV_TRY_ASSIGN(auto rec, accounts_.GetAccount(id));
    if (rec) rec->reserved_bytes = reservations_.Of(id);
    return rec;
  }
  Result<std::vector<Account>> ListAccounts(const AccountQuery& query) final {
    CV_TRY_ASSIGN(auto page, accounts_.ListAccounts(query));
    for (Account& a : page) a.reserved_bytes = reservations_.Of(a.id);
    return page;
  }
  Result<std::optional<AddOn>> GetAddOn(const Id& account, const Id& addon) final {
    return accounts_.GetAddOn(account, addon);
  }
  Result<std::vector<AddOn>> ListAddOns(const Id& account) final {
    return accounts_.ListAddOns(account);
  }
  Result<std::vector<DeviceRecord>> ListDevices(const Id& account) final {
    return accounts_.ListDevices(account);
  }
  Result<std::optional<AdminKey>> GetAdminKey(const Id& id) final {
    return accounts_.GetAdminKey(id);
  }
  Result<std::optional<AdminKey>> GetAdminKeyBySecretHash(const Sha256Digest& hash) final {
    return accounts_.GetAdminKeyBySecretHash(hash);
  }
  Result<std::optional<DeviceRecord>> GetDeviceByTokenHash(const Sha256Digest& hash) final {
    return accounts_.GetDeviceByTokenHash(hash);
  }
  Status ForEachTokenEntry(
      const std::function<bool(const Sha256Digest&, const std::optional<Id>&)>& fn) final {
    return accounts_.ForEachTokenEntry(fn);
  }
  Result<std::optional<PurgedDevice>> GetPurgedDevice(const Sha256Digest& token_hash,
                                                      const std::optional<Id>& device) final {
    return accounts_.GetPurgedDevice(token_hash, device);
  }
  Result<std::vector<PurgedDevice>> ListPurgedDevices(const Id& account) final {
    return accounts_.ListPurgedDevices(account);
  }
  Status ForEachPurgedDevice(const std::function<bool(const PurgedDevice&)>& fn) final {
    return accounts_.ForEachPurgedDevice(fn);
  }
  Result<std::vector<AuditRecord>> ListAudit(const AuditQuery& query) final {
    return accounts_.ListAudit(query);
  }
  Result<std::optional<Job>> GetJob(const Id& id) final { return accounts_.GetJob(id); }
  Result<std::vector<Job>> ListJobs(const JobQuery& query) final {
    return accounts_.ListJobs(query);
  }

 protected:
  TxnReads(const Dbis& dbis, const Reservations& reservations, MDB_txn* txn)
      : dbis_(dbis), reservations_(reservations), txn_(txn), accounts_(dbis, txn) {}

  // The id is stored in both key and value; they must agree.
  static Result<DeviceRecord> DecodeDeviceFor(const Id& id, std::string_view bytes) {
    auto rec = schema::DecodeDevice(bytes);
    if (!rec) return Prefixed(rec.error(), "device " + IdToHex(id));
    if (rec->id != id) {
      return Err(ErrorKind::kCorruption,
                 "device " + IdToHex(id) + " holds the record of " + IdToHex(rec->id));
    }
    return rec;
  }

  const Dbis& dbis_;
  const Reservations& reservations_;
  MDB_txn* const txn_;
  internal::AccountReads accounts_;
};

class ReadTxnImpl final : public TxnReads<Txn> {
 public:
  ReadTxnImpl(const Dbis& dbis, const Reservations& reservations,
              std::shared_lock<MapGate> hold, mdb::ReadTxn txn)
      : TxnReads(dbis, reservations, txn.get()), hold_(std::move(hold)), txn_(std::move(txn)) {}

 private:
  // Declared in this order so that the transaction ends before the gate is released.
  std::shared_lock<MapGate> hold_;
  mdb::ReadTxn txn_;
};

// What a fn sees: a nested transaction owned by the leader.
class WriteTxnImpl final : public TxnReads<WriteTxn> {
 public:
  WriteTxnImpl(const Dbis& dbis, const Reservations& reservations, mdb::WriteTxn& txn)
      : TxnReads(dbis, reservations, txn.get()), txn_(txn), writes_(dbis, txn) {}

  Status PutObject(const ObjectKey& key, const ObjectRecord& rec) override {
    CV_TRY_ASSIGN(auto k, schema::EncodeObjectKey(key));
    CV_TRY_ASSIGN(auto v, schema::EncodeObject(rec));
    // The old record (for the counters) must decode: a corrupt one is not overwritten
    // silently; rebuilding the index from the extents is the remedy.
    CV_TRY_ASSIGN(auto old, GetObject(key));
    CV_TRY_ASSIGN(auto device, GetDevice(key.device));
    auto put = txn_.Put(dbis_.objects, k, v);
    if (!put) return Prefixed(put.error(), "put object " + KeyText(key));
    if (!device) return {};
    DeviceRecord d = *device;
    if (old) {
      d.bytes = d.bytes - std::min(d.bytes, old->size) + rec.size;
    } else {
      d.bytes += rec.size;
      d.objects += 1;
      // The object's own time, not the clock: a rebuild from the extents re-puts old
      // objects and must not make the device look recently active.
      d.last_upload_ns = std::max(d.last_upload_ns, rec.created_ns);
    }
    return writes_.WriteDevice(d, device);  // and so the account's counters
  }

  Status DeleteObject(const ObjectKey& key) override {
    CV_TRY_ASSIGN(auto k, schema::EncodeObjectKey(key));
    CV_TRY_ASSIGN(auto old, GetObject(key));
    if (!old) return Err(ErrorKind::kNotFound, "object " + KeyText(key));
    CV_TRY_ASSIGN(auto device, GetDevice(key.device));
    auto del = txn_.Del(dbis_.objects, k);
    if (!del) return Prefixed(del.error(), "delete object " + KeyText(key));
    if (!device) return {};
    DeviceRecord d = *device;
    // Saturating: counters of a device record created after its objects must not wrap.
    d.bytes -= std::min(d.bytes, old->size);
    d.objects -= std::min<uint64_t>(d.objects, 1);
    return writes_.WriteDevice(d, device);  // and so the account's counters
  }

  Result<uint64_t> DeleteDeviceObjects(
      const Id& device, size_t limit,
      const std::function<Status(const ObjectKey&, const ObjectRecord&)>& each) override {
    CV_TRY_ASSIGN(auto rows, ListObjects(device, std::nullopt, "", limit));
    if (rows.empty()) return uint64_t{0};
    CV_TRY_ASSIGN(auto dev, GetDevice(device));
    uint64_t bytes = 0;
    for (const auto& [key, rec] : rows) {
      CV_TRY_ASSIGN(auto k, schema::EncodeObjectKey(key));
      auto del = txn_.Del(dbis_.objects, k);
      if (!del) return Prefixed(del.error(), "delete object " + KeyText(key));
      bytes += rec.size;
      CV_TRY(each(key, rec));
    }
    if (dev) {  // the device's (and so its account's) counters, once for the batch
      DeviceRecord d = *dev;
      d.bytes -= std::min(d.bytes, bytes);
      d.objects -= std::min<uint64_t>(d.objects, rows.size());
      CV_TRY(writes_.WriteDevice(d, dev));
    }
    return static_cast<uint64_t>(rows.size());
  }

  Status PutExtent(uint16_t disk, uint32_t extent, const ExtentRecord& rec) override {
    auto put =
        txn_.Put(dbis_.extents, schema::EncodeExtentKey(disk, extent), schema::EncodeExtent(rec));
    if (!put) return Prefixed(put.error(), "put " + ExtentText(disk, extent));
    return {};
  }

  Status DeleteExtent(uint16_t disk, uint32_t extent) override {
    auto del = txn_.Del(dbis_.extents, schema::EncodeExtentKey(disk, extent));
    if (!del) return Prefixed(del.error(), "delete " + ExtentText(disk, extent));
    if (!*del) return Err(ErrorKind::kNotFound, ExtentText(disk, extent));
    return {};
  }

  Status PutDevice(const DeviceRecord& rec) override {
    // The old record says which account loses what; a corrupt one is not overwritten.
    CV_TRY_ASSIGN(auto old, GetDevice(rec.id));
    return writes_.WriteDevice(rec, old);
  }

  Status DeleteDevice(const Id& id) override {
    CV_TRY_ASSIGN(auto old, GetDevice(id));
    if (!old) return Err(ErrorKind::kNotFound, "device " + IdToHex(id));
    return writes_.RemoveDevice(*old);
  }

  Status PutMeta(std::string_view key, std::string_view value) override {
    if (key.empty() || key.size() > schema::kMaxMetaKeyBytes) {
      return Err(ErrorKind::kInvalidArgument,
                 "meta key of " + std::to_string(key.size()) + " bytes");
    }
    if (value.size() > UINT32_MAX) return Err(ErrorKind::kInvalidArgument, "meta value too long");
    auto put = txn_.Put(dbis_.meta, key, schema::EncodeMeta(value));
    if (!put) return Prefixed(put.error(), "put meta " + std::string(key));
    return {};
  }

  // The account model: accounts.cc.
  Status PutPartner(const Partner& rec) override { return writes_.PutPartner(rec); }
  Status DeletePartner(const Id& id) override { return writes_.DeletePartner(id); }
  Status PutAccount(const Account& rec) override { return writes_.PutAccount(rec); }
  Status SetAccountUsage(const Id& account, uint64_t bytes, uint64_t objects) override {
    return writes_.SetAccountUsage(account, bytes, objects);
  }
  Status DeleteAccount(const Id& id) override { return writes_.DeleteAccount(id); }
  Status PutAddOn(const AddOn& rec) override { return writes_.PutAddOn(rec); }
  Status DeleteAddOn(const Id& account, const Id& addon) override {
    return writes_.DeleteAddOn(account, addon);
  }
  Status PutAdminKey(const AdminKey& rec) override { return writes_.PutAdminKey(rec); }
  Status DeleteAdminKey(const Id& id) override { return writes_.DeleteAdminKey(id); }
  Result<uint64_t> AppendAudit(const AuditRecord& rec) override {
    return writes_.AppendAudit(rec);
  }
  Status PutJob(const Job& rec) override { return writes_.PutJob(rec); }
  Status DeleteJob(const Id& id) override { return writes_.DeleteJob(id); }
  Status PutPurgedDevice(const PurgedDevice& rec) override { return writes_.PutPurgedDevice(rec); }

  // Upgrades an older format: builds the device indexes it lacked.
  Status IndexAllDevices(uint64_t from_format) { return writes_.IndexAllDevices(from_format); }

 private:
  mdb::WriteTxn& txn_;
  internal::AccountWrites writes_;
};

class IndexImpl final : public Index {
 public:
  IndexImpl(const Options& options, uint64_t max_map_bytes, std::string registered_dir,
            mdb::Env env)
      : options_(options),
        max_map_bytes_(max_map_bytes),
        registration_{std::move(registered_dir)},
        env_(std::move(env)),
        map_bytes_(env_.MapSize()) {}

  Status OpenDatabases();
  Status CheckFormat();

  Result<std::unique_ptr<Txn>> BeginRead() override;
  Status Update(const std::function<Status(WriteTxn&)>& fn) override;
  std::vector<Status> UpdateMany(std::span<const std::function<Status(WriteTxn&)>> fns) override;
  Status CopyTo(const std::string& dest_dir) override;
  uint64_t MapBytes() const override { return map_bytes_.load(); }
  Result<QuotaDecision> Reserve(const Id& account, uint64_t bytes, int64_t now_ns) override;
  void Release(const Id& account, uint64_t bytes) override {
    reservations_.Release(account, bytes);
  }

 private:
  struct Pending {
    const std::function<Status(WriteTxn&)>* fn;
    Status result;
    bool done = false;
  };
  enum class Outcome { kDone, kGrow };

  void RunGroup(const std::vector<Pending*>& group);
  Outcome TryGroup(const std::vector<Pending*>& group);
  Status GrowMap();

  const Options options_;
  const uint64_t max_map_bytes_;
  Registration registration_;  // released after env_ is closed
  mdb::Env env_;
  Dbis dbis_;
  Reservations reservations_;
  MapGate gate_;
  std::atomic<uint64_t> map_bytes_;

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<Pending*> queue_;
  bool leader_active_ = false;
};

Status IndexImpl::OpenDatabases() {
  for (;;) {
    CV_TRY_ASSIGN(auto txn, mdb::WriteTxn::Begin(env_));
    Status st;
    for (auto [name, member] : internal::kDatabases) {
      auto opened = txn.OpenDb(name);
      if (!opened) {
        st = tl::unexpected(opened.error());
        break;
      }
      dbis_.*member = *opened;
    }
    if (st) st = txn.Commit();
    if (st) return {};
    if (!txn.map_full()) return st;
    txn.Abort();
    CV_TRY(GrowMap());
  }
}

Status IndexImpl::CheckFormat() {
  std::optional<std::string> stored;
  {
    CV_TRY_ASSIGN(auto txn, BeginRead());
    CV_TRY_ASSIGN(auto value, txn->GetMeta(kFormatKey));
    stored = std::move(value);
  }
  if (!stored) {
    return Update(
        [](WriteTxn& txn) { return txn.PutMeta(kFormatKey, std::to_string(kFormatVersion)); });
  }
  uint64_t version = 0;
  auto [end, ec] = std::from_chars(stored->data(), stored->data() + stored->size(), version);
  if (ec != std::errc() || end != stored->data() + stored->size() || version == 0) {
    return Err(ErrorKind::kCorruption, "index format '" + *stored + "' in " + options_.dir);
  }
  if (version > kFormatVersion) {
    return Err(ErrorKind::kInvalidArgument, "index in " + options_.dir + " has format " + *stored +
                                                ", newer than this build understands (" +
                                                std::to_string(kFormatVersion) + ")");
  }
  if (version == kFormatVersion) return {};
  // 1 -> 2: the new databases exist (OpenDatabases created them) and are empty but for
  // devices_by_account, which must list the existing devices. 2 -> 3: nothing to convert.
  // 3 -> 4: devices_by_token must list the existing devices. 4 -> 5: nothing to convert.
  CV_TRY(Update([version](WriteTxn& txn) -> Status {
    if (version < 4) CV_TRY(static_cast<WriteTxnImpl&>(txn).IndexAllDevices(version));
    return txn.PutMeta(kFormatKey, std::to_string(kFormatVersion));
  }));
  Log(LogLevel::kInfo, "index_format_upgraded",
      {{"dir", options_.dir}, {"from", *stored}, {"to", std::to_string(kFormatVersion)}});
  return {};
}

Result<std::unique_ptr<Txn>> IndexImpl::BeginRead() {
  std::shared_lock hold(gate_);
  CV_TRY_ASSIGN(auto txn, mdb::ReadTxn::Begin(env_));
  return std::make_unique<ReadTxnImpl>(dbis_, reservations_, std::move(hold), std::move(txn));
}

Result<QuotaDecision> IndexImpl::Reserve(const Id& account, uint64_t bytes, int64_t now_ns) {
  // The gate before the ledger's lock: a Txn holds the gate while it reads an account
  // (Reservations::Of takes the ledger's lock), so taking them in the other order could wait
  // in a cycle with a map growth queued for the gate.
  std::shared_lock hold(gate_);
  return reservations_.Reserve(account, bytes, [&]() -> Result<Reservations::Usage> {
    CV_TRY_ASSIGN(auto txn, mdb::ReadTxn::Begin(env_));
    internal::AccountReads reads(dbis_, txn.get());  // the stored record, without reservations
    CV_TRY_ASSIGN(auto rec, reads.GetAccount(account));
    if (!rec) return Err(ErrorKind::kNotFound, "account " + IdToHex(account));
    CV_TRY_ASSIGN(auto addons, reads.ListAddOns(account));
    return Reservations::Usage{rec->bytes, QuotaBytes(*rec, addons, now_ns)};
  });
}

Status IndexImpl::Update(const std::function<Status(WriteTxn&)>& fn) {
  return std::move(UpdateMany(std::span(&fn, 1))[0]);
}

std::vector<Status> IndexImpl::UpdateMany(std::span<const std::function<Status(WriteTxn&)>> fns) {
  std::vector<Pending> mine(fns.size());
  for (size_t i = 0; i < fns.size(); ++i) {
    mine[i].fn = &fns[i];
    if (!fns[i]) {
      mine[i].result = Err(ErrorKind::kInvalidArgument, "Index::Update without a function");
      mine[i].done = true;
    } else if (t_in_update_fn) {
      mine[i].result = Err(ErrorKind::kInternal, "Index::Update called from inside an Update function");
      mine[i].done = true;
    }
  }
  const auto all_done = [&] {
    return std::all_of(mine.begin(), mine.end(), [](const Pending& p) { return p.done; });
  };
  std::unique_lock lock(queue_mu_);
  for (Pending& p : mine) {
    if (!p.done) queue_.push_back(&p);
  }
  while (!all_done()) {
    if (leader_active_) {
      queue_cv_.wait(lock);
      continue;
    }
    leader_active_ = true;
    std::vector<Pending*> group;
    while (!queue_.empty() && group.size() < kMaxGroup) {
      group.push_back(queue_.front());
      queue_.pop_front();
    }
    lock.unlock();
    RunGroup(group);
    lock.lock();
    for (Pending* p : group) p->done = true;
    leader_active_ = false;
    queue_cv_.notify_all();
  }
  std::vector<Status> out;
  out.reserve(mine.size());
  for (Pending& p : mine) out.push_back(std::move(p.result));
  return out;
}

void IndexImpl::RunGroup(const std::vector<Pending*>& group) {
  while (TryGroup(group) == Outcome::kGrow) {
    Status grown = GrowMap();
    if (!grown) {
      for (Pending* p : group) p->result = grown;
      return;
    }
  }
}

IndexImpl::Outcome IndexImpl::TryGroup(const std::vector<Pending*>& group) {
  std::shared_lock hold(gate_);
  const bool can_grow = map_bytes_.load() < max_map_bytes_;
  const auto no_space = [&] { return tl::unexpected(MapFullError(max_map_bytes_)); };
  for (Pending* p : group) p->result = {};

  auto parent = mdb::WriteTxn::Begin(env_);
  if (!parent) {
    for (Pending* p : group) p->result = tl::unexpected(parent.error());
    return Outcome::kDone;
  }
  for (Pending* p : group) {
    auto child = mdb::WriteTxn::BeginNested(*parent);
    if (!child) {
      p->result = tl::unexpected(child.error());
      continue;
    }
    Status st;
    {
      WriteTxnImpl txn(dbis_, reservations_, *child);
      t_in_update_fn = true;
      try {
        st = (*p->fn)(txn);
      } catch (const std::exception& e) {
        st = Err(ErrorKind::kInternal, std::string("Update function threw: ") + e.what());
      } catch (...) {
        st = Err(ErrorKind::kInternal, "Update function threw");
      }
      t_in_update_fn = false;
    }
    if (child->map_full()) {
      child->Abort();
      if (can_grow) return Outcome::kGrow;  // `parent` aborts on return
      p->result = no_space();
      continue;
    }
    if (!st) {
      p->result = std::move(st);
      continue;  // `child` aborts at the end of this iteration
    }
    if (child->failed()) {
      // fn ignored a failed write; LMDB refuses to commit the child (and would poison the
      // parent if we tried).
      p->result = tl::unexpected(*child->failed());
      continue;
    }
    if (Status committed = child->Commit(); !committed) {
      // Rare (out of memory while merging into the parent); the parent may be half-merged,
      // so nothing of this group is committed.
      if (child->map_full() && can_grow) return Outcome::kGrow;
      for (Pending* q : group) q->result = committed;
      return Outcome::kDone;
    }
  }
  if (Status committed = parent->Commit(); !committed) {
    if (parent->map_full() && can_grow) return Outcome::kGrow;
    Status error = parent->map_full() ? Status(no_space()) : committed;
    for (Pending* p : group) {
      if (p->result) p->result = error;
    }
  }
  return Outcome::kDone;
}

Status IndexImpl::GrowMap() {
  std::unique_lock<MapGate> exclusive(gate_, kGrowWait);
  if (!exclusive.owns_lock()) {
    Log(LogLevel::kWarn, "index_map_growth_blocked", {{"dir", options_.dir}});
    return Err(ErrorKind::kUnavailable, "index map growth waited " +
                                            std::to_string(kGrowWait.count()) +
                                            " s for read transactions to end");
  }
  const uint64_t current = env_.MapSize();
  if (current >= max_map_bytes_) return tl::unexpected(MapFullError(max_map_bytes_));
  const uint64_t next = current > max_map_bytes_ / 2 ? max_map_bytes_ : current * 2;
  CV_TRY(env_.SetMapSize(next));
  map_bytes_.store(env_.MapSize());
  Log(LogLevel::kInfo, "index_map_grown",
      {{"dir", options_.dir}, {"from", std::to_string(current)}, {"to", std::to_string(next)}});
  return {};
}

Status IndexImpl::CopyTo(const std::string& dest_dir) {
  if (dest_dir.empty()) return Err(ErrorKind::kInvalidArgument, "CopyTo without a directory");
  std::error_code ec;
  fs::create_directories(dest_dir, ec);
  if (ec) return ErrnoError(ec.value(), "create directory " + dest_dir);
  const std::string final_path = (fs::path(dest_dir) / "data.mdb").string();
  const std::string partial_path = final_path + ".partial";
  if (fs::exists(final_path, ec)) {
    return Err(ErrorKind::kConflict, dest_dir + " already holds an index (data.mdb)");
  }
  // Copy under another name and link it into place once synced: a crash or failure never
  // leaves a data.mdb that looks like a finished copy.
  int fd = ::open(partial_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError(errno, "create " + partial_path);
  Status st;
  {
    std::shared_lock hold(gate_);  // the copy reads the map through its own snapshot
    st = env_.CopyCompactTo(fd);
  }
  if (st && ::fsync(fd) != 0) st = ErrnoError(errno, "fsync " + partial_path);
  if (::close(fd) != 0 && st) st = ErrnoError(errno, "close " + partial_path);
  if (st && ::link(partial_path.c_str(), final_path.c_str()) != 0) {
    st = errno == EEXIST
             ? Status(Err(ErrorKind::kConflict, dest_dir + " already holds an index (data.mdb)"))
             : Status(ErrnoError(errno, "link " + final_path));
  }
  ::unlink(partial_path.c_str());
  if (!st) return st;
  return SyncDir(dest_dir);
}

}  // namespace

Result<std::unique_ptr<Index>> Index::Open(const Options& options) {
  if (options.dir.empty()) return Err(ErrorKind::kInvalidArgument, "index directory not set");
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t initial = RoundUp(options.initial_map_bytes, page);
  const uint64_t max = RoundUp(options.max_map_bytes, page);
  if (initial == 0 || max < initial) {
    return Err(ErrorKind::kInvalidArgument, "index map sizes: initial " +
                                                std::to_string(options.initial_map_bytes) +
                                                ", max " + std::to_string(options.max_map_bytes));
  }
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec) return ErrnoError(ec.value(), "create index directory " + options.dir);
  std::string canonical = fs::canonical(options.dir, ec).string();
  if (ec) return ErrnoError(ec.value(), "resolve index directory " + options.dir);
  if (!OpenDirRegistry::Add(canonical)) {
    return Err(ErrorKind::kConflict, "index " + canonical + " is already open in this process");
  }
  auto env = mdb::Env::Open({options.dir, initial, kMaxDbs, kMaxReaders});
  if (!env) {
    OpenDirRegistry::Remove(canonical);
    return Prefixed(env.error(), "open index " + options.dir);
  }
  auto index = std::make_unique<IndexImpl>(options, max, std::move(canonical), std::move(*env));
  CV_TRY(index->OpenDatabases());
  CV_TRY(index->CheckFormat());
  CV_TRY(SyncDir(options.dir));  // make data.mdb's directory entry durable
  return std::unique_ptr<Index>(std::move(index));
}

}  // namespace cv::index
