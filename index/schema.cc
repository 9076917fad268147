#include "index/schema.h"

#include <xxhash.h>

#include <cstring>
#include <limits>

namespace cv::index::schema {
namespace {

constexpr size_t kChecksumBytes = 8;
constexpr size_t kShardLocBytes = 2 + 4 + 8;

bool ValidType(ObjectType t) {
  auto v = static_cast<uint8_t>(t);
  return v >= static_cast<uint8_t>(ObjectType::kConfig) &&
         v <= static_cast<uint8_t>(ObjectType::kIndex);
}
bool ValidLayout(Layout l) { return l == Layout::kReplicated || l == Layout::kErasure; }
bool ValidKind(DeviceKind k) { return k == DeviceKind::kComputer || k == DeviceKind::kServer; }
bool ValidStatus(AccountStatus s) {
  auto v = static_cast<uint8_t>(s);
  return v >= static_cast<uint8_t>(AccountStatus::kTrial) &&
         v <= static_cast<uint8_t>(AccountStatus::kSuspended);
}
bool ValidRole(AdminRole r) { return r == AdminRole::kOperator || r == AdminRole::kPartner; }
bool FitsU32(std::string_view s) { return s.size() <= std::numeric_limits<uint32_t>::max(); }

tl::unexpected<Error> Corrupt(std::string what) {
  return Err(ErrorKind::kCorruption, std::move(what));
}

// Appends fixed-width little-endian fields, then seals the value with its checksum.
class Writer {
 public:
  Writer() { U8(kValueFormat); }
  void U8(uint8_t v) { buf_.push_back(static_cast<char>(v)); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void I64(int64_t v) { Le(static_cast<uint64_t>(v), 8); }
  void Raw(const void* p, size_t n) { buf_.append(static_cast<const char*>(p), n); }
  // REQUIRES: s.size() fits in 32 bits (checked by the callers that take user input).
  void Str(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    buf_.append(s);
  }
  void IdField(const Id& id) { Raw(id.data(), id.size()); }
  // Present flag (0/1), then the id only if present.
  void OptId(const std::optional<Id>& id) {
    U8(id ? 1 : 0);
    if (id) IdField(*id);
  }
  std::string Seal() && {
    U64(XXH3_64bits(buf_.data(), buf_.size()));
    return std::move(buf_);
  }

 private:
  void Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) buf_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  std::string buf_;
};

// Reads the fields of a value whose checksum and version were verified. Every read is bounds
// checked; after the first short read ok() is false and reads yield zeros.
class Reader {
 public:
  explicit Reader(std::string_view body) : body_(body) {}
  bool ok() const { return ok_; }
  bool AtEnd() const { return ok_ && pos_ == body_.size(); }
  size_t Remaining() const { return ok_ ? body_.size() - pos_ : 0; }

  uint8_t U8() { return static_cast<uint8_t>(Le(1)); }
  uint16_t U16() { return static_cast<uint16_t>(Le(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Le(4)); }
  uint64_t U64() { return Le(8); }
  int64_t I64() { return static_cast<int64_t>(Le(8)); }
  void Raw(void* out, size_t n) {
    if (!Take(n)) {
      std::memset(out, 0, n);
      return;
    }
    std::memcpy(out, body_.data() + pos_ - n, n);
  }
  std::string Str() {
    uint32_t n = U32();
    if (!Take(n)) return {};
    return std::string(body_.substr(pos_ - n, n));
  }
  Id IdField() {
    Id id{};
    Raw(id.data(), id.size());
    return id;
  }
  // A flag other than 0/1 makes the reader fail, as a short read does.
  std::optional<Id> OptId() {
    uint8_t present = U8();
    if (present > 1) ok_ = false;
    if (present != 1 || !ok_) return std::nullopt;
    return IdField();
  }
  bool Bool() {
    uint8_t v = U8();
    if (v > 1) ok_ = false;
    return v == 1;
  }

 private:
  bool Take(size_t n) {
    if (!ok_ || body_.size() - pos_ < n) {
      ok_ = false;
      return false;
    }
    pos_ += n;
    return true;
  }
  uint64_t Le(int n) {
    if (!Take(n)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) {
      v |= static_cast<uint64_t>(static_cast<uint8_t>(body_[pos_ - n + i])) << (8 * i);
    }
    return v;
  }
  std::string_view body_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// Verifies the checksum and the version; returns the fields between them.
Result<std::string_view> Unseal(std::string_view bytes, const char* what) {
  if (bytes.size() < 1 + kChecksumBytes) {
    return Corrupt(std::string(what) + " value truncated to " + std::to_string(bytes.size()) +
                   " bytes");
  }
  size_t body_len = bytes.size() - kChecksumBytes;
  uint64_t stored = 0;
  for (size_t i = 0; i < kChecksumBytes; ++i) {
    stored |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[body_len + i])) << (8 * i);
  }
  if (XXH3_64bits(bytes.data(), body_len) != stored) {
    return Corrupt(std::string(what) + " value checksum mismatch");
  }
  auto version = static_cast<uint8_t>(bytes[0]);
  if (version != kValueFormat) {
    return Corrupt(std::string(what) + " value has unknown format version " +
                   std::to_string(version));
  }
  return bytes.substr(1, body_len - 1);
}

Status Finish(const Reader& r, const char* what) {
  if (!r.ok()) return Corrupt(std::string(what) + " value is shorter than its fields");
  if (!r.AtEnd()) return Corrupt(std::string(what) + " value has trailing bytes");
  return {};
}

}  // namespace

// ---- keys ----

Result<std::string> EncodeObjectKey(const ObjectKey& key) {
  if (!ValidType(key.type)) {
    return Err(ErrorKind::kInvalidArgument,
               "object type " + std::to_string(static_cast<int>(key.type)));
  }
  if (key.name.size() > kMaxNameBytes) {
    return Err(ErrorKind::kInvalidArgument,
               "object name of " + std::to_string(key.name.size()) + " bytes is too long");
  }
  std::string out = ObjectKeyPrefix(key.device, key.type);
  out += key.name;
  return out;
}

std::string ObjectKeyPrefix(const Id& device, std::optional<ObjectType> type) {
  std::string out(reinterpret_cast<const char*>(device.data()), device.size());
  if (type) out.push_back(static_cast<char>(*type));
  return out;
}

Result<ObjectKey> DecodeObjectKey(std::string_view bytes) {
  if (bytes.size() < kObjectKeyPrefixBytes ||
      bytes.size() > kObjectKeyPrefixBytes + kMaxNameBytes) {
    return Corrupt("object key of " + std::to_string(bytes.size()) + " bytes");
  }
  ObjectKey key;
  std::memcpy(key.device.data(), bytes.data(), key.device.size());
  key.type = static_cast<ObjectType>(static_cast<uint8_t>(bytes[16]));
  if (!ValidType(key.type)) {
    return Corrupt("object key with type " + std::to_string(static_cast<int>(key.type)));
  }
  key.name = std::string(bytes.substr(kObjectKeyPrefixBytes));
  return key;
}

std::string EncodeExtentKey(uint16_t disk, uint32_t extent) {
  std::string out(kExtentKeyBytes, '\0');
  out[0] = static_cast<char>(disk >> 8);
  out[1] = static_cast<char>(disk);
  for (int i = 0; i < 4; ++i) out[2 + i] = static_cast<char>(extent >> (24 - 8 * i));
  return out;
}

Result<ExtentKey> DecodeExtentKey(std::string_view bytes) {
  if (bytes.size() != kExtentKeyBytes) {
    return Corrupt("extent key of " + std::to_string(bytes.size()) + " bytes");
  }
  auto b = [&](int i) { return static_cast<uint32_t>(static_cast<uint8_t>(bytes[i])); };
  ExtentKey key;
  key.disk = static_cast<uint16_t>(b(0) << 8 | b(1));
  key.extent = b(2) << 24 | b(3) << 16 | b(4) << 8 | b(5);
  return key;
}

std::string EncodeDeviceKey(const Id& id) {
  return std::string(reinterpret_cast<const char*>(id.data()), id.size());
}

Result<Id> DecodeDeviceKey(std::string_view bytes) {
  Id id{};
  if (bytes.size() != id.size()) {
    return Corrupt("device key of " + std::to_string(bytes.size()) + " bytes");
  }
  std::memcpy(id.data(), bytes.data(), id.size());
  return id;
}

// ---- values ----

Result<std::string> EncodeObject(const ObjectRecord& rec) {
  if (!ValidLayout(rec.layout)) {
    return Err(ErrorKind::kInvalidArgument,
               "object layout " + std::to_string(static_cast<int>(rec.layout)));
  }
  if (rec.shards.size() > std::numeric_limits<uint32_t>::max()) {
    return Err(ErrorKind::kInvalidArgument, "too many shards");
  }
  Writer w;
  w.U64(rec.size);
  w.I64(rec.created_ns);
  w.U8(static_cast<uint8_t>(rec.layout));
  w.U8(rec.k);
  w.U8(rec.m);
  w.U32(rec.shard_unit);
  w.Raw(rec.sha256.data(), rec.sha256.size());
  w.U32(static_cast<uint32_t>(rec.shards.size()));
  for (const ShardLoc& s : rec.shards) {
    w.U16(s.disk);
    w.U32(s.extent);
    w.U64(s.offset);
  }
  return std::move(w).Seal();
}

Result<ObjectRecord> DecodeObject(std::string_view bytes) {
  CV_TRY_ASSIGN(auto body, Unseal(bytes, "object"));
  Reader r(body);
  ObjectRecord rec;
  rec.size = r.U64();
  rec.created_ns = r.I64();
  rec.layout = static_cast<Layout>(r.U8());
  rec.k = r.U8();
  rec.m = r.U8();
  rec.shard_unit = r.U32();
  r.Raw(rec.sha256.data(), rec.sha256.size());
  uint32_t count = r.U32();
  if (!r.ok()) return Corrupt("object value is shorter than its fields");
  // Check the count against the bytes present before allocating for it.
  if (r.Remaining() != static_cast<uint64_t>(count) * kShardLocBytes) {
    return Corrupt("object value claims " + std::to_string(count) + " shards in " +
                   std::to_string(r.Remaining()) + " bytes");
  }
  if (!ValidLayout(rec.layout)) {
    return Corrupt("object value with layout " + std::to_string(static_cast<int>(rec.layout)));
  }
  rec.shards.resize(count);
  for (ShardLoc& s : rec.shards) {
    s.disk = r.U16();
    s.extent = r.U32();
    s.offset = r.U64();
  }
  CV_TRY(Finish(r, "object"));
  return rec;
}

std::string EncodeExtent(const ExtentRecord& rec) {
  Writer w;
  w.U64(rec.capacity);
  w.U64(rec.live_bytes);
  w.U64(rec.dead_bytes);
  return std::move(w).Seal();
}

Result<ExtentRecord> DecodeExtent(std::string_view bytes) {
  CV_TRY_ASSIGN(auto body, Unseal(bytes, "extent"));
  Reader r(body);
  ExtentRecord rec;
  rec.capacity = r.U64();
  rec.live_bytes = r.U64();
  rec.dead_bytes = r.U64();
  CV_TRY(Finish(r, "extent"));
  return rec;
}

Result<std::string> EncodeDevice(const DeviceRecord& rec) {
  if (!ValidKind(rec.kind)) {
    return Err(ErrorKind::kInvalidArgument,
               "device kind " + std::to_string(static_cast<int>(rec.kind)));
  }
  if (rec.name.size() > std::numeric_limits<uint32_t>::max()) {
    return Err(ErrorKind::kInvalidArgument, "device name too long");
  }
  Writer w;
  w.Raw(rec.id.data(), rec.id.size());
  w.Raw(rec.account.data(), rec.account.size());
  w.Str(rec.name);
  w.U8(static_cast<uint8_t>(rec.kind));
  w.U8(rec.append_only ? 1 : 0);
  w.Raw(rec.token_hash.data(), rec.token_hash.size());
  w.I64(rec.created_ns);
  w.U64(rec.bytes);
  w.U64(rec.objects);
  w.I64(rec.last_upload_ns);
  w.I64(rec.last_backup_ns);
  w.I64(rec.closed_ns);
  w.Raw(rec.purge_job.data(), rec.purge_job.size());
  return std::move(w).Seal();
}

Result<DeviceRecord> DecodeDevice(std::string_view bytes) {
  CV_TRY_ASSIGN(auto body, Unseal(bytes, "device"));
  Reader r(body);
  DeviceRecord rec;
  r.Raw(rec.id.data(), rec.id.size());
  r.Raw(rec.account.data(), rec.account.size());
  rec.name = r.Str();
  rec.kind = static_cast<DeviceKind>(r.U8());
  uint8_t append_only = r.U8();
  r.Raw(rec.token_hash.data(), rec.token_hash.size());
  rec.created_ns = r.I64();
  rec.bytes = r.U64();
  rec.objects = r.U64();
  rec.last_upload_ns = r.I64();
  rec.last_backup_ns = r.I64();
  if (!r.AtEnd()) {  // format 3 added the deletion fields; format 2 values end here
    rec.closed_ns = r.I64();
    r.Raw(rec.purge_job.data(), rec.purge_job.size());
  }
  CV_TRY(Finish(r, "device"));
  if (!ValidKind(rec.kind)) {
    return Corrupt("device value with kind " + std::to_string(static_cast<int>(rec.kind)));
  }
  if (append_only > 1)
    return Corrupt("device value with append_only " + std::to_string(append_only));
  rec.append_only = append_only == 1;
  return rec;
}

std::string EncodeMeta(std::string_view value) {
  Writer w;
  w.Str(value);
  return std::move(w).Seal();
}

Result<std::string> DecodeMeta(std::string_view bytes) {
  CV_TRY_ASSIGN(auto body, Unseal(bytes, "meta"));
  Reader r(body);
  std::string value = r.Str();
  CV_TRY(Finish(r, "meta"));
  return value;
}


// ---- the account model: keys ----

namespace {

void PutBe64(std::string& out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetBe64(std::string_view b) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | static_cast<uint8_t>(b[i]);
  return v;
}
Id GetId(std::string_view b) {
  Id id{};
  std::memcpy(id.data(), b.data(), id.size());
  return id;
}
std::string_view IdBytes(const Id& id) {
  return std::string_view(reinterpret_cast<const char*>(id.data()), id.size());
}

}  // namespace

std::string EncodeIdKey(const Id& id) { return std::string(IdBytes(id)); }

Result<Id> DecodeIdKey(std::string_view bytes) {
  if (bytes.size() != sizeof(Id)) return Corrupt("id key of " + std::to_string(bytes.size()) + " bytes");
  return GetId(bytes);
}

std::string EncodePairKey(const Id& first, const Id& second) {
  std::string out(IdBytes(first));
  out += IdBytes(second);
  return out;
}

Result<std::pair<Id, Id>> DecodePairKey(std::string_view bytes) {
  if (bytes.size() != kPairKeyBytes) {
    return Corrupt("pair key of " + std::to_string(bytes.size()) + " bytes");
  }
  return std::pair{GetId(bytes), GetId(bytes.substr(16))};
}

std::string EncodeSeqKey(uint64_t seq) {
  std::string out;
  PutBe64(out, seq);
  return out;
}

Result<uint64_t> DecodeSeqKey(std::string_view bytes) {
  if (bytes.size() != kSeqKeyBytes) return Corrupt("seq key of " + std::to_string(bytes.size()) + " bytes");
  return GetBe64(bytes);
}

std::string EncodeIdSeqKey(const Id& id, uint64_t seq) {
  std::string out(IdBytes(id));
  PutBe64(out, seq);
  return out;
}

Result<std::pair<Id, uint64_t>> DecodeIdSeqKey(std::string_view bytes) {
  if (bytes.size() != kIdSeqKeyBytes) {
    return Corrupt("id-seq key of " + std::to_string(bytes.size()) + " bytes");
  }
  return std::pair{GetId(bytes), GetBe64(bytes.substr(16))};
}

// ---- the account model: values ----

Result<std::string> EncodePartner(const Partner& rec) {
  if (!FitsU32(rec.name)) return Err(ErrorKind::kInvalidArgument, "partner name too long");
  Writer w;
  w.IdField(rec.id);
  w.Str(rec.name);
  w.I64(rec.created_ns);
  return std::move(w).Seal();
}

Result<Partner> DecodePartner(std::string_view bytes) {
  CV_TRY_ASSIGN(auto body, Unseal(bytes, "partner"));
  Reader r(body);
  Partner rec;
  rec.id = r.IdField();
  rec.name = r.Str();
  rec.created_ns = r.I64();
  CV_TRY(Finish(r, "partner"));
  return rec;
}

Result<std::string> EncodeAccount(const Account& rec) {
  if (!ValidStatus(rec.status)) {
    return Err(ErrorKind::kInvalidArgument,
               "account status " + std::to_string(static_cast<int>(rec.status)));
  }
  Writer w;
  w.IdField(rec.id);
  w.OptId(rec.partner);
  w.U8(static_cast<uint8_t>(rec.status));
  w.U64(rec.plan_quota_bytes);
  w.U32(rec.device_limit);
  w.I64(rec.expires_ns);
  w.I64(rec.created_ns);
  w.U64(rec.bytes);
  w.U64(rec.objects);
  w.U64(rec.reserved_bytes);
  return std::move(w).Seal();
}

Result<Account> DecodeAccount(std::string_view bytes) {
  CV_TRY_ASSIGN(auto body, Unseal(bytes, "account"));
  Reader r(body);
  Account rec;
  rec.id = r.IdField();
  rec.partner = r.OptId();
  rec.status = static_cast<AccountStatus>(r.U8());
  rec.plan_quota_bytes = r.U64();
  rec.device_limit = r.U32();
  rec.expires_ns = r.I64();
  rec.created_ns = r.I64();
  rec.bytes = r.U64();
  rec.objects = r.U64();
  rec.reserved_bytes = r.U64();
  CV_TRY(Finish(r, "account"));
  if (!ValidStatus(rec.status)) {
    return Corrupt("account value with status " + std::to_string(static_cast<int>(rec.status)));
  }
  return rec;
}

std::string EncodeAddOn(const AddOn& rec) {
  Writer w;
  w.IdField(rec.id);
  w.IdField(rec.account);
  w.U64(rec.bytes);
  w.I64(rec.expires_ns);
  w.I64(rec.created_ns);
  return std::move(w).Seal();
}

Result<AddOn> DecodeAddOn(std::string_view bytes) {
  CV_TRY_ASSIGN(auto body, Unseal(bytes, "add-on"));
  Reader r(body);
  AddOn rec;
  rec.id = r.IdField();
  rec.account = r.IdField();
  rec.bytes = r.U64();
  rec.expires_ns = r.I64();
  rec.created_ns = r.I64();
  CV_TRY(Finish(r, "add-on"));
  return rec;
}

std::string EncodePurgedDevice(const PurgedDevice& rec) {
  Writer w;
  w.IdField(rec.id);
  w.IdField(rec.account);
  w.Raw(rec.token_hash.data(), rec.token_hash.size());
  w.I64(rec.purged_ns);
  w.IdField(rec.purge_job);
  return std::move(w).Seal();
}

Result<PurgedDevice> DecodePurgedDevice(std::string_view bytes) {
  CV_TRY_ASSIGN(auto body, Unseal(bytes, "purged device"));
  Reader r(body);
  PurgedDevice rec;
  rec.id = r.IdField();
  rec.account = r.IdField();
  r.Raw(rec.token_hash.data(), rec.token_hash.size());
  rec.purged_ns = r.I64();
  rec.purge_job = r.IdField();
  CV_TRY(Finish(r, "purged device"));
  return rec;
}

Result<std::string> EncodeAdminKey(const AdminKey& rec) {
  if (!ValidRole(rec.role)) {
    return Err(ErrorKind::kInvalidArgument,
               "admin role " + std::to_string(static_cast<int>(rec.role)));
  }
  Writer w;
  w.IdField(rec.id);
  w.U8(static_cast<uint8_t>(rec.role));
  w.IdField(rec.partner);
  w.Raw(rec.secret_sha256.data(), rec.secret_sha256.size());
  w.I64(rec.created_ns);
  w.I64(rec.expires_ns);
  w.U8(rec.disabled ? 1 : 0);
  return std::move(w).Seal();
}

Result<AdminKey> DecodeAdminKey(std::string_view bytes) {
  CV_TRY_ASSIGN(auto body, Unseal(bytes, "admin key"));
  Reader r(body);
  AdminKey rec;
  rec.id = r.IdField();
  rec.role = static_cast<AdminRole>(r.U8());
  rec.partner = r.IdField();
  r.Raw(rec.secret_sha256.data(), rec.secret_sha256.size());
  rec.created_ns = r.I64();
  rec.expires_ns = r.I64();
  rec.disabled = r.Bool();
  CV_TRY(Finish(r, "admin key"));
  if (!ValidRole(rec.role)) {
    return Corrupt("admin key value with role " + std::to_string(static_cast<int>(rec.role)));
  }
  return rec;
}

Result<std::string> EncodeAudit(const AuditRecord& rec) {
  for (const std::string* s : {&rec.role, &rec.action, &rec.target, &rec.before_json,
                               &rec.after_json}) {
    if (!FitsU32(*s)) return Err(ErrorKind::kInvalidArgument, "audit field too long");
  }
  Writer w;
  w.U64(rec.seq);
  w.I64(rec.time_ns);
  w.IdField(rec.key_id);
  w.Str(rec.role);
  w.Str(rec.action);
  w.Str(rec.target);
  w.OptId(rec.account);
  w.OptId(rec.partner);
  w.Str(rec.before_json);
  w.Str(rec.after_json);
  return std::move(w).Seal();
}

Result<AuditRecord> DecodeAudit(std::string_view bytes) {
  CV_TRY_ASSIGN(auto body, Unseal(bytes, "audit"));
  Reader r(body);
  AuditRecord rec;
  rec.seq = r.U64();
  rec.time_ns = r.I64();
  rec.key_id = r.IdField();
  rec.role = r.Str();
  rec.action = r.Str();
  rec.target = r.Str();
  rec.account = r.OptId();
  rec.partner = r.OptId();
  rec.before_json = r.Str();
  rec.after_json = r.Str();
  CV_TRY(Finish(r, "audit"));
  return rec;
}

Result<std::string> EncodeJob(const Job& rec) {
  for (const std::string* s : {&rec.kind, &rec.state, &rec.params_json, &rec.progress_json,
                               &rec.result_json}) {
    if (!FitsU32(*s)) return Err(ErrorKind::kInvalidArgument, "job field too long");
  }
  Writer w;
  w.IdField(rec.id);
  w.Str(rec.kind);
  w.Str(rec.state);
  w.OptId(rec.account);
  w.OptId(rec.device);
  w.Str(rec.params_json);
  w.Str(rec.progress_json);
  w.Str(rec.result_json);
  w.I64(rec.created_ns);
  w.I64(rec.started_ns);
  w.I64(rec.finished_ns);
  w.I64(rec.run_after_ns);
  return std::move(w).Seal();
}

Result<Job> DecodeJob(std::string_view bytes) {
  CV_TRY_ASSIGN(auto body, Unseal(bytes, "job"));
  Reader r(body);
  Job rec;
  rec.id = r.IdField();
  rec.kind = r.Str();
  rec.state = r.Str();
  rec.account = r.OptId();
  rec.device = r.OptId();
  rec.params_json = r.Str();
  rec.progress_json = r.Str();
  rec.result_json = r.Str();
  rec.created_ns = r.I64();
  rec.started_ns = r.I64();
  rec.finished_ns = r.I64();
  rec.run_after_ns = r.I64();
  CV_TRY(Finish(r, "job"));
  return rec;
}

}  // namespace cv::index::schema
