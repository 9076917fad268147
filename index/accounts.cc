// The account model over LMDB: partners, accounts, add-ons, admin keys, audit, jobs, purged
// devices, their secondary indexes, account usage and upload reservations. See accounts.h.
#include "index/accounts.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>
#include <map>
#include <set>

#include "index/schema.h"

namespace cv::index {

// ---- the public helpers of index.h ----

namespace {
constexpr std::pair<AccountStatus, const char*> kStatusNames[] = {
    {AccountStatus::kTrial, "trial"},
    {AccountStatus::kActive, "active"},
    {AccountStatus::kExpired, "expired"},
    {AccountStatus::kSuspended, "suspended"},
};
}  // namespace

std::optional<AccountStatus> ParseAccountStatus(std::string_view name) {
  for (const auto& [status, status_name] : kStatusNames) {
    if (name == status_name) return status;
  }
  return std::nullopt;
}

const char* AccountStatusName(AccountStatus status) {
  for (const auto& [s, status_name] : kStatusNames) {
    if (s == status) return status_name;
  }
  return "unknown";
}

AccountStatus EffectiveStatus(const Account& account, int64_t now_ns) {
  if (account.status == AccountStatus::kTrial && account.expires_ns != 0 &&
      account.expires_ns <= now_ns) {
    return AccountStatus::kExpired;
  }
  return account.status;
}

uint64_t QuotaBytes(const Account& account, const std::vector<AddOn>& addons, int64_t now_ns) {
  uint64_t quota = account.plan_quota_bytes;
  for (const AddOn& a : addons) {
    if (a.expires_ns == 0 || a.expires_ns > now_ns) quota = internal::SatAdd(quota, a.bytes);
  }
  return quota;
}

std::string AdminRoleName(const AdminKey& key) {
  return key.role == AdminRole::kPartner ? "partner:" + IdToHex(key.partner) : "operator";
}

bool AdminKeyUsable(const AdminKey& key, int64_t now_ns) {
  return !key.disabled && (key.expires_ns == 0 || key.expires_ns > now_ns);
}

namespace internal {
namespace {

constexpr const char* kAuditSeqKey = "audit_last_seq";

tl::unexpected<Error> Prefixed(Error e, std::string_view prefix) {
  e.context = std::string(prefix) + ": " + e.context;
  return tl::unexpected<Error>(std::move(e));
}

tl::unexpected<Error> Corrupt(std::string what) {
  return Err(ErrorKind::kCorruption, std::move(what));
}

std::string_view HashKey(const Sha256Digest& hash) {
  return std::string_view(reinterpret_cast<const char*>(hash.data()), hash.size());
}

// devices_by_token and purged_devices: token hash | device id, so that even equal hashes
// (devices stored without a token have all zeros) never collide.
std::string TokenKey(const Sha256Digest& hash, const Id& device) {
  return std::string(HashKey(hash)) + schema::EncodeIdKey(device);
}
std::string TokenKey(const DeviceRecord& rec) { return TokenKey(rec.token_hash, rec.id); }

// A token hash stored as raw bytes (a key prefix, a value); nullopt if the size is wrong.
std::optional<Sha256Digest> HashFrom(std::string_view bytes) {
  Sha256Digest hash{};
  if (bytes.size() < hash.size()) return std::nullopt;
  std::memcpy(hash.data(), bytes.data(), hash.size());
  return hash;
}

// A purged_devices entry: the value must be the record of the id and hash in its key.
Result<PurgedDevice> DecodePurgedEntry(std::string_view key, std::string_view value) {
  if (key.size() != sizeof(Sha256Digest) + sizeof(Id)) {
    return Corrupt("purged_devices: a key of " + std::to_string(key.size()) + " bytes");
  }
  auto id = schema::DecodeIdKey(key.substr(sizeof(Sha256Digest)));  // its size is checked
  const std::string what = "purged device " + (id ? IdToHex(*id) : std::string("?"));
  auto rec = schema::DecodePurgedDevice(value);
  if (!rec) return Prefixed(rec.error(), what);
  if (TokenKey(rec->token_hash, rec->id) != key) return Corrupt(what + " holds another record");
  return std::move(*rec);
}

// Looks up and decodes one value. `what` names it in errors ("account <hex>").
template <class T>
Result<std::optional<T>> GetValue(MDB_txn* txn, MDB_dbi dbi, std::string_view key,
                                  Result<T> (*decode)(std::string_view), const std::string& what) {
  auto v = mdb::Get(txn, dbi, key);
  if (!v) return Prefixed(v.error(), "get " + what);
  if (!*v) return std::nullopt;
  auto rec = decode(**v);
  if (!rec) return Prefixed(rec.error(), what);
  return std::optional<T>(std::move(*rec));
}

// Calls fn(key, value) for the keys of `dbi` that start with `prefix` and sort after
// `start_after` (a whole key; empty = from the first key with the prefix), in order, until fn
// returns false. The views are valid only during the call.
Status Scan(MDB_txn* txn, MDB_dbi dbi, std::string_view prefix, std::string_view start_after,
            const std::function<Result<bool>(std::string_view, std::string_view)>& fn) {
  CV_TRY_ASSIGN(auto cursor, mdb::Cursor::Open(txn, dbi));
  std::string_view seek = start_after.empty() ? prefix : start_after;
  auto entry = seek.empty() ? cursor.First() : cursor.SeekAtLeast(seek);
  for (; entry && *entry; entry = cursor.Next()) {
    auto [k, v] = **entry;
    if (!k.starts_with(prefix)) break;
    if (!start_after.empty() && k == start_after) continue;  // strictly after
    CV_TRY_ASSIGN(auto more, fn(k, v));
    if (!more) return {};
  }
  CV_TRY(entry);
  return {};
}

// The key that the listing of ids continues after, or "" from the start.
std::string AfterId(const std::optional<Id>& start_after) {
  return start_after ? schema::EncodeIdKey(*start_after) : std::string();
}

template <class Rec>
Status CheckId(const Rec& rec, const Id& id, const char* what) {
  if (rec.id != id) {
    return Corrupt(std::string(what) + " " + IdToHex(id) + " holds the record of " +
                   IdToHex(rec.id));
  }
  return {};
}

}  // namespace

// ---- reads ----

Result<std::optional<Partner>> AccountReads::GetPartner(const Id& id) {
  auto rec = GetValue(txn_, dbis_.partners, schema::EncodeIdKey(id), &schema::DecodePartner,
                      "partner " + IdToHex(id));
  if (rec && *rec) CV_TRY(CheckId(**rec, id, "partner"));
  return rec;
}

Result<std::vector<Partner>> AccountReads::ListPartners(const std::optional<Id>& start_after,
                                                        size_t limit) {
  std::vector<Partner> out;
  if (limit == 0) return out;
  CV_TRY(Scan(txn_, dbis_.partners, "", AfterId(start_after),
              [&](std::string_view k, std::string_view v) -> Result<bool> {
                auto id = schema::DecodeIdKey(k);
                if (!id) return Prefixed(id.error(), "partners");
                auto rec = schema::DecodePartner(v);
                if (!rec) return Prefixed(rec.error(), "partner " + IdToHex(*id));
                CV_TRY(CheckId(*rec, *id, "partner"));
                out.push_back(std::move(*rec));
                return out.size() < limit;
              }));
  return out;
}

Result<std::optional<Account>> AccountReads::GetAccount(const Id& id) {
  auto rec = GetValue(txn_, dbis_.accounts, schema::EncodeIdKey(id), &schema::DecodeAccount,
                      "account " + IdToHex(id));
  if (rec && *rec) CV_TRY(CheckId(**rec, id, "account"));
  return rec;
}

Result<std::vector<Account>> AccountReads::ListAccounts(const AccountQuery& q) {
  std::vector<Account> out;
  if (q.limit == 0) return out;
  auto take = [&](Account&& rec) {
    if (!q.status || EffectiveStatus(rec, q.now_ns) == *q.status) out.push_back(std::move(rec));
    return out.size() < q.limit;
  };
  if (q.partner) {
    const std::string prefix = schema::EncodeIdKey(*q.partner);
    const std::string after =
        q.start_after ? schema::EncodePairKey(*q.partner, *q.start_after) : std::string();
    CV_TRY(Scan(txn_, dbis_.accounts_by_partner, prefix, after,
                [&](std::string_view k, std::string_view) -> Result<bool> {
                  auto pair = schema::DecodePairKey(k);
                  if (!pair) return Prefixed(pair.error(), "accounts_by_partner");
                  CV_TRY_ASSIGN(auto rec, GetAccount(pair->second));
                  if (!rec || rec->partner != q.partner) {
                    return Corrupt("accounts_by_partner lists account " + IdToHex(pair->second) +
                                   " under partner " + IdToHex(*q.partner) + ", but the account " +
                                   (rec ? "belongs elsewhere" : "has no record"));
                  }
                  return take(std::move(*rec));
                }));
    return out;
  }
  CV_TRY(Scan(txn_, dbis_.accounts, "", AfterId(q.start_after),
              [&](std::string_view k, std::string_view v) -> Result<bool> {
                auto id = schema::DecodeIdKey(k);
                if (!id) return Prefixed(id.error(), "accounts");
                auto rec = schema::DecodeAccount(v);
                if (!rec) return Prefixed(rec.error(), "account " + IdToHex(*id));
                CV_TRY(CheckId(*rec, *id, "account"));
                return take(std::move(*rec));
              }));
  return out;
}

Result<std::optional<AddOn>> AccountReads::GetAddOn(const Id& account, const Id& addon) {
  auto rec = GetValue(txn_, dbis_.addons, schema::EncodePairKey(account, addon),
                      &schema::DecodeAddOn, "add-on " + IdToHex(account) + "/" + IdToHex(addon));
  if (rec && *rec && ((*rec)->id != addon || (*rec)->account != account)) {
    return Corrupt("add-on " + IdToHex(account) + "/" + IdToHex(addon) + " holds another record");
  }
  return rec;
}

Result<std::vector<AddOn>> AccountReads::ListAddOns(const Id& account) {
  std::vector<AddOn> out;
  CV_TRY(Scan(txn_, dbis_.addons, schema::EncodeIdKey(account), "",
              [&](std::string_view k, std::string_view v) -> Result<bool> {
                auto pair = schema::DecodePairKey(k);
                if (!pair) return Prefixed(pair.error(), "addons");
                const std::string what =
                    "add-on " + IdToHex(pair->first) + "/" + IdToHex(pair->second);
                auto rec = schema::DecodeAddOn(v);
                if (!rec) return Prefixed(rec.error(), what);
                if (rec->account != pair->first || rec->id != pair->second) {
                  return Corrupt(what + " holds another record");
                }
                out.push_back(std::move(*rec));
                return true;
              }));
  return out;
}

Result<std::optional<DeviceRecord>> AccountReads::GetDevice(const Id& id) {
  auto rec = GetValue(txn_, dbis_.devices, schema::EncodeDeviceKey(id), &schema::DecodeDevice,
                      "device " + IdToHex(id));
  if (rec && *rec) CV_TRY(CheckId(**rec, id, "device"));
  return rec;
}

Result<std::vector<DeviceRecord>> AccountReads::ListDevices(const Id& account) {
  std::vector<DeviceRecord> out;
  CV_TRY(Scan(txn_, dbis_.devices_by_account, schema::EncodeIdKey(account), "",
              [&](std::string_view k, std::string_view) -> Result<bool> {
                auto pair = schema::DecodePairKey(k);
                if (!pair) return Prefixed(pair.error(), "devices_by_account");
                CV_TRY_ASSIGN(auto rec, GetDevice(pair->second));
                if (!rec || rec->account != account) {
                  return Corrupt("devices_by_account lists device " + IdToHex(pair->second) +
                                 " under account " + IdToHex(account) + ", but the device " +
                                 (rec ? "belongs elsewhere" : "has no record"));
                }
                out.push_back(std::move(*rec));
                return true;
              }));
  return out;
}

Result<std::optional<AdminKey>> AccountReads::GetAdminKey(const Id& id) {
  auto rec = GetValue(txn_, dbis_.admin_keys, schema::EncodeIdKey(id), &schema::DecodeAdminKey,
                      "admin key " + IdToHex(id));
  if (rec && *rec) CV_TRY(CheckId(**rec, id, "admin key"));
  return rec;
}

Result<std::optional<AdminKey>> AccountReads::GetAdminKeyBySecretHash(const Sha256Digest& hash) {
  auto v = mdb::Get(txn_, dbis_.admin_keys_by_hash, HashKey(hash));
  if (!v) return Prefixed(v.error(), "get admin key by hash");
  if (!*v) return std::nullopt;
  auto id = schema::DecodeIdKey(**v);
  if (!id) return Prefixed(id.error(), "admin_keys_by_hash");
  auto rec = GetAdminKey(*id);
  CV_TRY(rec);
  if (!*rec || (*rec)->secret_sha256 != hash) {
    return Corrupt("admin_keys_by_hash points at admin key " + IdToHex(*id) + ", which " +
                   (*rec ? "has another secret" : "has no record"));
  }
  return rec;
}

Result<std::optional<DeviceRecord>> AccountReads::GetDeviceByTokenHash(const Sha256Digest& hash) {
  std::optional<DeviceRecord> found;
  CV_TRY(Scan(txn_, dbis_.devices_by_token, HashKey(hash), "",
              [&](std::string_view k, std::string_view) -> Result<bool> {
                auto id = schema::DecodeIdKey(k.substr(hash.size()));
                if (!id) return true;  // malformed: never authenticates; fsck names it
                CV_TRY_ASSIGN(auto rec, GetDevice(*id));
                if (!rec || rec->token_hash != hash) return true;  // a stray: next entry
                found = std::move(rec);
                return false;
              }));
  return found;
}

Status AccountReads::ForEachTokenEntry(
    const std::function<bool(const Sha256Digest&, const std::optional<Id>&)>& fn) {
  return Scan(txn_, dbis_.devices_by_token, "", "",
              [&](std::string_view k, std::string_view) -> Result<bool> {
                auto hash = HashFrom(k);
                if (!hash) return Corrupt("devices_by_token: short key");
                auto id = schema::DecodeIdKey(k.substr(hash->size()));
                return fn(*hash, id ? std::optional<Id>(*id) : std::nullopt);
              });
}

Result<std::optional<PurgedDevice>> AccountReads::GetPurgedDevice(const Sha256Digest& token_hash,
                                                                  const std::optional<Id>& device) {
  std::optional<PurgedDevice> found;
  if (device) {
    const std::string key = TokenKey(token_hash, *device);
    auto v = mdb::Get(txn_, dbis_.purged_devices, key);
    if (!v) return Prefixed(v.error(), "get purged device");
    if (!*v) return found;
    CV_TRY_ASSIGN(auto rec, DecodePurgedEntry(key, **v));
    found = std::move(rec);
    return found;
  }
  CV_TRY(Scan(txn_, dbis_.purged_devices, HashKey(token_hash), "",
              [&](std::string_view k, std::string_view v) -> Result<bool> {
                CV_TRY_ASSIGN(auto rec, DecodePurgedEntry(k, v));
                found = std::move(rec);
                return false;
              }));
  return found;
}

Result<std::vector<PurgedDevice>> AccountReads::ListPurgedDevices(const Id& account) {
  std::vector<PurgedDevice> out;
  CV_TRY(Scan(txn_, dbis_.purged_devices_by_account, schema::EncodeIdKey(account), "",
              [&](std::string_view k, std::string_view v) -> Result<bool> {
                auto pair = schema::DecodePairKey(k);
                if (!pair) return Prefixed(pair.error(), "purged_devices_by_account");
                auto hash = HashFrom(v);
                if (!hash || v.size() != hash->size()) {
                  return Corrupt("purged_devices_by_account: the entry of device " +
                                 IdToHex(pair->second) + " holds " + std::to_string(v.size()) +
                                 " bytes, not a token hash");
                }
                CV_TRY_ASSIGN(auto rec, GetPurgedDevice(*hash, pair->second));
                if (!rec || rec->account != account) {
                  return Corrupt("purged_devices_by_account lists device " + IdToHex(pair->second) +
                                 " under account " + IdToHex(account) + ", but the purged device " +
                                 (rec ? "belongs elsewhere" : "has no record"));
                }
                out.push_back(std::move(*rec));
                return true;
              }));
  return out;
}

Status AccountReads::ForEachPurgedDevice(const std::function<bool(const PurgedDevice&)>& fn) {
  return Scan(txn_, dbis_.purged_devices, "", "",
              [&](std::string_view k, std::string_view v) -> Result<bool> {
                CV_TRY_ASSIGN(auto rec, DecodePurgedEntry(k, v));
                return fn(rec);
              });
}

Result<std::optional<AuditRecord>> AccountReads::GetAudit(uint64_t seq) {
  auto rec = GetValue(txn_, dbis_.audit, schema::EncodeSeqKey(seq), &schema::DecodeAudit,
                      "audit record " + std::to_string(seq));
  if (rec && *rec && (*rec)->seq != seq) {
    return Corrupt("audit record " + std::to_string(seq) + " holds record " +
                   std::to_string((*rec)->seq));
  }
  return rec;
}

Result<std::vector<AuditRecord>> AccountReads::ListAudit(const AuditQuery& q) {
  std::vector<AuditRecord> out;
  if (q.limit == 0 || q.after_seq == std::numeric_limits<uint64_t>::max()) return out;
  if (!q.account && !q.partner) {
    CV_TRY(Scan(txn_, dbis_.audit, "", schema::EncodeSeqKey(q.after_seq),
                [&](std::string_view k, std::string_view v) -> Result<bool> {
                  auto seq = schema::DecodeSeqKey(k);
                  if (!seq) return Prefixed(seq.error(), "audit");
                  auto rec = schema::DecodeAudit(v);
                  if (!rec) return Prefixed(rec.error(), "audit record " + std::to_string(*seq));
                  if (rec->seq != *seq) {
                    return Corrupt("audit record " + std::to_string(*seq) + " holds record " +
                                   std::to_string(rec->seq));
                  }
                  out.push_back(std::move(*rec));
                  return out.size() < q.limit;
                }));
    return out;
  }
  // By account (optionally only while it belonged to q.partner), else by partner.
  const bool by_account = q.account.has_value();
  const Id& owner = by_account ? *q.account : *q.partner;
  const char* db_name = by_account ? "audit_by_account" : "audit_by_partner";
  CV_TRY(Scan(txn_, by_account ? dbis_.audit_by_account : dbis_.audit_by_partner,
              schema::EncodeIdKey(owner), schema::EncodeIdSeqKey(owner, q.after_seq),
              [&](std::string_view k, std::string_view) -> Result<bool> {
                auto key = schema::DecodeIdSeqKey(k);
                if (!key) return Prefixed(key.error(), db_name);
                CV_TRY_ASSIGN(auto rec, GetAudit(key->second));
                if (!rec || (by_account ? rec->account : rec->partner) != owner) {
                  return Corrupt(std::string(db_name) + " lists audit record " +
                                 std::to_string(key->second) + " under " + IdToHex(owner) +
                                 ", but the record " + (rec ? "names another" : "does not exist"));
                }
                if (!q.partner || rec->partner == q.partner) out.push_back(std::move(*rec));
                return out.size() < q.limit;
              }));
  return out;
}

Result<std::optional<Job>> AccountReads::GetJob(const Id& id) {
  auto rec =
      GetValue(txn_, dbis_.jobs, schema::EncodeIdKey(id), &schema::DecodeJob, "job " + IdToHex(id));
  if (rec && *rec) CV_TRY(CheckId(**rec, id, "job"));
  return rec;
}

Result<std::vector<Job>> AccountReads::ListJobs(const JobQuery& q) {
  std::vector<Job> out;
  if (q.limit == 0) return out;
  auto take = [&](Job&& rec) {
    if (!q.state || rec.state == *q.state) out.push_back(std::move(rec));
    return out.size() < q.limit;
  };
  if (q.account) {
    const std::string after =
        q.start_after ? schema::EncodePairKey(*q.account, *q.start_after) : std::string();
    CV_TRY(Scan(txn_, dbis_.jobs_by_account, schema::EncodeIdKey(*q.account), after,
                [&](std::string_view k, std::string_view) -> Result<bool> {
                  auto pair = schema::DecodePairKey(k);
                  if (!pair) return Prefixed(pair.error(), "jobs_by_account");
                  CV_TRY_ASSIGN(auto rec, GetJob(pair->second));
                  if (!rec || rec->account != q.account) {
                    return Corrupt("jobs_by_account lists job " + IdToHex(pair->second) +
                                   " under account " + IdToHex(*q.account) + ", but the job " +
                                   (rec ? "belongs elsewhere" : "has no record"));
                  }
                  return take(std::move(*rec));
                }));
    return out;
  }
  CV_TRY(Scan(txn_, dbis_.jobs, "", AfterId(q.start_after),
              [&](std::string_view k, std::string_view v) -> Result<bool> {
                auto id = schema::DecodeIdKey(k);
                if (!id) return Prefixed(id.error(), "jobs");
                auto rec = schema::DecodeJob(v);
                if (!rec) return Prefixed(rec.error(), "job " + IdToHex(*id));
                CV_TRY(CheckId(*rec, *id, "job"));
                return take(std::move(*rec));
              }));
  return out;
}

Result<bool> AccountReads::AnyWithPrefix(MDB_dbi dbi, std::string_view prefix) {
  bool any = false;
  CV_TRY(Scan(txn_, dbi, prefix, "", [&](std::string_view, std::string_view) -> Result<bool> {
    any = true;
    return false;
  }));
  return any;
}

// ---- writes ----

Status AccountWrites::Put(MDB_dbi dbi, std::string_view key, std::string_view value,
                          std::string_view what) {
  auto put = wtxn_.Put(dbi, key, value);
  if (!put) return Prefixed(put.error(), "put " + std::string(what));
  return {};
}

Result<bool> AccountWrites::Del(MDB_dbi dbi, std::string_view key, std::string_view what) {
  auto del = wtxn_.Del(dbi, key);
  if (!del) return Prefixed(del.error(), "delete " + std::string(what));
  return *del;
}

Status AccountWrites::PutPartner(const Partner& rec) {
  CV_TRY_ASSIGN(auto v, schema::EncodePartner(rec));
  return Put(dbis_.partners, schema::EncodeIdKey(rec.id), v, "partner " + IdToHex(rec.id));
}

Status AccountWrites::DeletePartner(const Id& id) {
  const std::string what = "partner " + IdToHex(id);
  CV_TRY_ASSIGN(auto old, GetPartner(id));
  if (!old) return Err(ErrorKind::kNotFound, what);
  CV_TRY_ASSIGN(auto any, AnyWithPrefix(dbis_.accounts_by_partner, schema::EncodeIdKey(id)));
  if (any) return Err(ErrorKind::kConflict, what + " still has accounts");
  CV_TRY(Del(dbis_.partners, schema::EncodeIdKey(id), what));
  return {};
}

Status AccountWrites::WriteAccount(const Account& rec) {
  Account stored = rec;
  stored.reserved_bytes = 0;  // reservations live in memory (reservations.h), not here
  CV_TRY_ASSIGN(auto v, schema::EncodeAccount(stored));
  return Put(dbis_.accounts, schema::EncodeIdKey(rec.id), v, "account " + IdToHex(rec.id));
}

Status AccountWrites::SetAccountUsage(const Id& account, uint64_t bytes, uint64_t objects) {
  CV_TRY_ASSIGN(auto a, GetAccount(account));
  if (!a) return Err(ErrorKind::kNotFound, "account " + IdToHex(account));
  Account rec = *a;
  rec.bytes = bytes;
  rec.objects = objects;
  return WriteAccount(rec);
}

Status AccountWrites::PutAccount(const Account& rec) {
  CV_TRY_ASSIGN(auto old, GetAccount(rec.id));
  if (rec.partner) {
    CV_TRY_ASSIGN(auto partner, GetPartner(*rec.partner));
    if (!partner) return Err(ErrorKind::kNotFound, "partner " + IdToHex(*rec.partner));
  }
  Account stored = rec;
  if (old) {  // the counters belong to the index
    stored.bytes = old->bytes;
    stored.objects = old->objects;
  }
  CV_TRY(WriteAccount(stored));
  const std::optional<Id> old_partner = old ? old->partner : std::nullopt;
  if (old_partner == rec.partner) return {};
  if (old_partner) {
    CV_TRY(Del(dbis_.accounts_by_partner, schema::EncodePairKey(*old_partner, rec.id),
               "accounts_by_partner"));
  }
  if (rec.partner) {
    CV_TRY(Put(dbis_.accounts_by_partner, schema::EncodePairKey(*rec.partner, rec.id), "",
               "accounts_by_partner"));
  }
  return {};
}

Status AccountWrites::DeleteAccount(const Id& id) {
  const std::string what = "account " + IdToHex(id);
  CV_TRY_ASSIGN(auto old, GetAccount(id));
  if (!old) return Err(ErrorKind::kNotFound, what);
  CV_TRY_ASSIGN(auto any, AnyWithPrefix(dbis_.devices_by_account, schema::EncodeIdKey(id)));
  if (any) return Err(ErrorKind::kConflict, what + " still has devices");
  std::vector<std::string> addon_keys;  // collected first: no writes under an open cursor
  CV_TRY(Scan(txn_, dbis_.addons, schema::EncodeIdKey(id), "",
              [&](std::string_view k, std::string_view) -> Result<bool> {
                addon_keys.emplace_back(k);
                return true;
              }));
  for (const std::string& k : addon_keys) {
    CV_TRY(Del(dbis_.addons, k, "add-on of " + what));
  }
  // Its purged devices are forgotten with it: their agents get 401 from now on.
  CV_TRY_ASSIGN(auto purged, ListPurgedDevices(id));
  for (const PurgedDevice& p : purged) {
    CV_TRY(Del(dbis_.purged_devices, TokenKey(p.token_hash, p.id), "purged device of " + what));
    CV_TRY(Del(dbis_.purged_devices_by_account, schema::EncodePairKey(id, p.id),
               "purged_devices_by_account"));
  }
  if (old->partner) {
    CV_TRY(Del(dbis_.accounts_by_partner, schema::EncodePairKey(*old->partner, id),
               "accounts_by_partner"));
  }
  CV_TRY(Del(dbis_.accounts, schema::EncodeIdKey(id), what));
  return {};
}

Status AccountWrites::PutAddOn(const AddOn& rec) {
  CV_TRY_ASSIGN(auto account, GetAccount(rec.account));
  if (!account) return Err(ErrorKind::kNotFound, "account " + IdToHex(rec.account));
  return Put(dbis_.addons, schema::EncodePairKey(rec.account, rec.id), schema::EncodeAddOn(rec),
             "add-on " + IdToHex(rec.id));
}

Status AccountWrites::DeleteAddOn(const Id& account, const Id& addon) {
  const std::string what = "add-on " + IdToHex(account) + "/" + IdToHex(addon);
  CV_TRY_ASSIGN(auto del, Del(dbis_.addons, schema::EncodePairKey(account, addon), what));
  if (!del) return Err(ErrorKind::kNotFound, what);
  return {};
}

Status AccountWrites::PutAdminKey(const AdminKey& rec) {
  const std::string what = "admin key " + IdToHex(rec.id);
  CV_TRY_ASSIGN(auto v, schema::EncodeAdminKey(rec));
  if (rec.role == AdminRole::kPartner) {
    CV_TRY_ASSIGN(auto partner, GetPartner(rec.partner));
    if (!partner) return Err(ErrorKind::kNotFound, "partner " + IdToHex(rec.partner));
  }
  auto owner = mdb::Get(txn_, dbis_.admin_keys_by_hash, HashKey(rec.secret_sha256));
  if (!owner) return Prefixed(owner.error(), "get admin key by hash");
  if (*owner && **owner != schema::EncodeIdKey(rec.id)) {
    return Err(ErrorKind::kConflict, what + ": another key has the same secret");
  }
  CV_TRY_ASSIGN(auto old, GetAdminKey(rec.id));
  CV_TRY(Put(dbis_.admin_keys, schema::EncodeIdKey(rec.id), v, what));
  if (old && old->secret_sha256 != rec.secret_sha256) {
    CV_TRY(Del(dbis_.admin_keys_by_hash, HashKey(old->secret_sha256), "admin_keys_by_hash"));
  }
  return Put(dbis_.admin_keys_by_hash, HashKey(rec.secret_sha256), schema::EncodeIdKey(rec.id),
             "admin_keys_by_hash");
}

Status AccountWrites::DeleteAdminKey(const Id& id) {
  const std::string what = "admin key " + IdToHex(id);
  CV_TRY_ASSIGN(auto old, GetAdminKey(id));
  if (!old) return Err(ErrorKind::kNotFound, what);
  auto owner = mdb::Get(txn_, dbis_.admin_keys_by_hash, HashKey(old->secret_sha256));
  if (!owner) return Prefixed(owner.error(), "get admin key by hash");
  if (*owner && **owner == schema::EncodeIdKey(id)) {
    CV_TRY(Del(dbis_.admin_keys_by_hash, HashKey(old->secret_sha256), "admin_keys_by_hash"));
  }
  CV_TRY(Del(dbis_.admin_keys, schema::EncodeIdKey(id), what));
  return {};
}

Result<uint64_t> AccountWrites::AppendAudit(const AuditRecord& rec) {
  // The last sequence number lives in meta rather than being read off the last key, so that
  // numbers are never reused even if old records are pruned.
  uint64_t last = 0;
  CV_TRY_ASSIGN(auto stored, GetValue(txn_, dbis_.meta, kAuditSeqKey, &schema::DecodeMeta,
                                      std::string("meta ") + kAuditSeqKey));
  if (stored) {
    const std::string& s = *stored;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), last);
    if (ec != std::errc() || end != s.data() + s.size()) {
      return Corrupt(std::string("meta ") + kAuditSeqKey + " is '" + s + "'");
    }
  }
  if (last == std::numeric_limits<uint64_t>::max()) {
    return Err(ErrorKind::kNoSpace, "audit sequence numbers exhausted");
  }
  AuditRecord numbered = rec;
  numbered.seq = last + 1;
  CV_TRY_ASSIGN(auto v, schema::EncodeAudit(numbered));
  const std::string what = "audit record " + std::to_string(numbered.seq);
  CV_TRY(Put(dbis_.audit, schema::EncodeSeqKey(numbered.seq), v, what));
  if (numbered.account) {
    CV_TRY(Put(dbis_.audit_by_account, schema::EncodeIdSeqKey(*numbered.account, numbered.seq), "",
               "audit_by_account"));
  }
  if (numbered.partner) {
    CV_TRY(Put(dbis_.audit_by_partner, schema::EncodeIdSeqKey(*numbered.partner, numbered.seq), "",
               "audit_by_partner"));
  }
  CV_TRY(Put(dbis_.meta, kAuditSeqKey, schema::EncodeMeta(std::to_string(numbered.seq)),
             std::string("meta ") + kAuditSeqKey));
  return numbered.seq;
}

Status AccountWrites::PutJob(const Job& rec) {
  const std::string what = "job " + IdToHex(rec.id);
  CV_TRY_ASSIGN(auto v, schema::EncodeJob(rec));
  CV_TRY_ASSIGN(auto old, GetJob(rec.id));
  CV_TRY(Put(dbis_.jobs, schema::EncodeIdKey(rec.id), v, what));
  const std::optional<Id> old_account = old ? old->account : std::nullopt;
  if (old_account == rec.account) return {};
  if (old_account) {
    CV_TRY(
        Del(dbis_.jobs_by_account, schema::EncodePairKey(*old_account, rec.id), "jobs_by_account"));
  }
  if (rec.account) {
    CV_TRY(Put(dbis_.jobs_by_account, schema::EncodePairKey(*rec.account, rec.id), "",
               "jobs_by_account"));
  }
  return {};
}

Status AccountWrites::DeleteJob(const Id& id) {
  const std::string what = "job " + IdToHex(id);
  CV_TRY_ASSIGN(auto old, GetJob(id));
  if (!old) return Err(ErrorKind::kNotFound, what);
  if (old->account) {
    CV_TRY(Del(dbis_.jobs_by_account, schema::EncodePairKey(*old->account, id), "jobs_by_account"));
  }
  CV_TRY(Del(dbis_.jobs, schema::EncodeIdKey(id), what));
  return {};
}

Status AccountWrites::PutPurgedDevice(const PurgedDevice& rec) {
  const std::string what = "purged device " + IdToHex(rec.id);
  CV_TRY_ASSIGN(auto account, GetAccount(rec.account));
  if (!account) return Err(ErrorKind::kNotFound, "account " + IdToHex(rec.account));
  CV_TRY_ASSIGN(auto live, GetDevice(rec.id));
  if (live) return Err(ErrorKind::kConflict, what + " is still a device");
  const std::string key = TokenKey(rec.token_hash, rec.id);
  CV_TRY_ASSIGN(auto old, GetPurgedDevice(rec.token_hash, rec.id));
  if (old && old->account != rec.account) {
    CV_TRY(Del(dbis_.purged_devices_by_account, schema::EncodePairKey(old->account, rec.id),
               "purged_devices_by_account"));
  }
  CV_TRY(Put(dbis_.purged_devices, key, schema::EncodePurgedDevice(rec), what));
  return Put(dbis_.purged_devices_by_account, schema::EncodePairKey(rec.account, rec.id),
             HashKey(rec.token_hash), "purged_devices_by_account");
}

Status AccountWrites::AdjustAccount(const Id& account, uint64_t add_bytes, uint64_t add_objects,
                                    uint64_t sub_bytes, uint64_t sub_objects) {
  if (add_bytes == sub_bytes && add_objects == sub_objects) return {};
  CV_TRY_ASSIGN(auto rec, GetAccount(account));
  if (!rec) return {};  // not tracked
  Account& a = *rec;
  // Saturating, as the device counters are: a record created after its usage must not wrap.
  a.bytes = SatAdd(a.bytes - std::min(a.bytes, sub_bytes), add_bytes);
  a.objects = SatAdd(a.objects - std::min(a.objects, sub_objects), add_objects);
  return WriteAccount(a);
}

Status AccountWrites::WriteDevice(const DeviceRecord& rec, const std::optional<DeviceRecord>& old) {
  CV_TRY_ASSIGN(auto v, schema::EncodeDevice(rec));
  CV_TRY(Put(dbis_.devices, schema::EncodeDeviceKey(rec.id), v, "device " + IdToHex(rec.id)));
  if (!old || old->token_hash != rec.token_hash) {
    if (old) {
      CV_TRY(Del(dbis_.devices_by_token, TokenKey(*old), "devices_by_token"));
    }
    CV_TRY(Put(dbis_.devices_by_token, TokenKey(rec), "", "devices_by_token"));
  }
  if (old && old->account == rec.account) {
    return AdjustAccount(rec.account, rec.bytes, rec.objects, old->bytes, old->objects);
  }
  if (old) {
    CV_TRY(Del(dbis_.devices_by_account, schema::EncodePairKey(old->account, rec.id),
               "devices_by_account"));
    CV_TRY(AdjustAccount(old->account, 0, 0, old->bytes, old->objects));
  }
  CV_TRY(Put(dbis_.devices_by_account, schema::EncodePairKey(rec.account, rec.id), "",
             "devices_by_account"));
  return AdjustAccount(rec.account, rec.bytes, rec.objects, 0, 0);
}

Status AccountWrites::RemoveDevice(const DeviceRecord& old) {
  const std::string what = "device " + IdToHex(old.id);
  CV_TRY(Del(dbis_.devices, schema::EncodeDeviceKey(old.id), what));
  CV_TRY(Del(dbis_.devices_by_account, schema::EncodePairKey(old.account, old.id),
             "devices_by_account"));
  CV_TRY(Del(dbis_.devices_by_token, TokenKey(old), "devices_by_token"));
  return AdjustAccount(old.account, 0, 0, old.bytes, old.objects);
}

Status AccountWrites::IndexAllDevices(uint64_t from_format) {
  std::vector<DeviceRecord> devices;  // collected first: no writes under an open cursor
  CV_TRY(Scan(txn_, dbis_.devices, "", "",
              [&](std::string_view k, std::string_view v) -> Result<bool> {
                CV_TRY_ASSIGN(auto id, schema::DecodeDeviceKey(k));
                auto rec = schema::DecodeDevice(v);
                if (!rec) return Prefixed(rec.error(), "device " + IdToHex(id));
                CV_TRY(CheckId(*rec, id, "device"));
                devices.push_back(std::move(*rec));
                return true;
              }));
  for (const DeviceRecord& d : devices) {
    if (from_format < 2) {
      CV_TRY(Put(dbis_.devices_by_account, schema::EncodePairKey(d.account, d.id), "",
                 "devices_by_account"));
    }
    if (from_format < 4) CV_TRY(Put(dbis_.devices_by_token, TokenKey(d), "", "devices_by_token"));
  }
  return {};
}

}  // namespace internal

// ---- CheckAccounts ----

Result<std::vector<std::string>> CheckAccounts(Txn& txn) {
  constexpr size_t kPage = 1000;
  struct Usage {
    uint64_t bytes = 0;
    uint64_t objects = 0;
  };
  std::vector<std::string> problems;

  std::map<Id, Usage> by_device;
  CV_TRY(txn.ForEachObject([&](const ObjectKey& key, const ObjectRecord& rec) {
    Usage& u = by_device[key.device];
    u.bytes += rec.size;
    u.objects += 1;
    return true;
  }));
  std::map<Id, Usage> by_account;
  std::map<Id, std::set<Id>> devices_of;
  std::map<Id, Sha256Digest> token_of;  // every device's token hash (zero: none)
  CV_TRY(txn.ForEachDevice([&](const DeviceRecord& d) {
    token_of[d.id] = d.token_hash;
    auto it = by_device.find(d.id);
    Usage& u = by_account[d.account];
    if (it != by_device.end()) {
      u.bytes += it->second.bytes;
      u.objects += it->second.objects;
    }
    devices_of[d.account].insert(d.id);
    return true;
  }));
  // Every device with a token is found by it (Bearer logins), and every entry of the token
  // index names a device that has that token.
  for (const auto& [id, hash] : token_of) {
    if (hash == Sha256Digest{}) continue;
    auto found = txn.GetDeviceByTokenHash(hash);
    if (!found) {
      problems.push_back("device " + IdToHex(id) + ": token index: " + found.error().ToString());
    } else if (!*found || (*found)->id != id) {
      problems.push_back("device " + IdToHex(id) + ": its token is not in devices_by_token");
    }
  }
  Status entries = txn.ForEachTokenEntry([&](const Sha256Digest& hash, const std::optional<Id>& device) {
    if (!device) {
      problems.push_back("devices_by_token: a malformed entry (its device id does not decode) for token hash " +
                         ToHex(hash).substr(0, 16) + "...");
      return true;
    }
    const Id& id = *device;
    auto it = token_of.find(id);
    if (it == token_of.end() || it->second != hash) {
      problems.push_back("devices_by_token: a stray entry for device " + IdToHex(id) +
                         ", which " + (it != token_of.end() ? "has another token" : "does not exist"));
    }
    return true;
  });
  if (!entries) problems.push_back("devices_by_token: " + entries.error().ToString());

  // Every purged device is no longer a device, and is listed under an account that has a
  // record (DeleteAccount forgets what that listing holds).
  std::map<Id, std::set<Id>> purged_of;  // account -> its purged devices, as their records say
  Status purged = txn.ForEachPurgedDevice([&](const PurgedDevice& p) {
    purged_of[p.account].insert(p.id);
    if (token_of.count(p.id)) {
      problems.push_back("purged device " + IdToHex(p.id) + " is still a device");
    }
    return true;
  });
  if (!purged) problems.push_back("purged_devices: " + purged.error().ToString());

  // The partner index, as its listings see it. A listing that fails is one problem.
  std::set<Id> partners;
  std::map<Id, std::set<Id>> accounts_of;
  std::optional<Id> after_partner;
  for (;;) {
    CV_TRY_ASSIGN(auto page, txn.ListPartners(after_partner, kPage));
    for (const Partner& p : page) {
      partners.insert(p.id);
      AccountQuery q;
      q.partner = p.id;
      q.limit = kPage;
      for (;;) {
        auto accounts = txn.ListAccounts(q);
        if (!accounts) {
          problems.push_back("partner " + IdToHex(p.id) + ": " + accounts.error().ToString());
          break;
        }
        for (const Account& a : *accounts) accounts_of[p.id].insert(a.id);
        if (accounts->size() < kPage) break;
        q.start_after = accounts->back().id;
      }
    }
    if (page.size() < kPage) break;
    after_partner = page.back().id;
  }

  AccountQuery all;
  all.limit = kPage;
  for (;;) {
    CV_TRY_ASSIGN(auto page, txn.ListAccounts(all));
    for (const Account& a : page) {
      const std::string name = "account " + IdToHex(a.id);
      const Usage u = by_account.count(a.id) ? by_account[a.id] : Usage{};
      if (u.bytes != a.bytes || u.objects != a.objects) {
        problems.push_back(name + ": counters say " + std::to_string(a.bytes) + " bytes in " +
                           std::to_string(a.objects) + " objects, its devices' objects sum to " +
                           std::to_string(u.bytes) + " in " + std::to_string(u.objects));
      }
      if (a.partner && !partners.count(*a.partner)) {
        problems.push_back(name + ": partner " + IdToHex(*a.partner) + " has no record");
      } else if (a.partner && !accounts_of[*a.partner].count(a.id)) {
        problems.push_back(name + ": missing from the listing of partner " + IdToHex(*a.partner));
      }
      auto purged_listed = txn.ListPurgedDevices(a.id);
      if (!purged_listed) {
        problems.push_back(name + ": purged devices: " + purged_listed.error().ToString());
      } else {
        std::set<Id> ids;
        for (const PurgedDevice& p : *purged_listed) ids.insert(p.id);
        for (const Id& d : purged_of[a.id]) {
          if (!ids.count(d)) {
            problems.push_back(name + ": purged device " + IdToHex(d) +
                               " missing from its listing");
          }
        }
      }
      purged_of.erase(a.id);
      auto listed = txn.ListDevices(a.id);
      if (!listed) {
        problems.push_back(name + ": devices: " + listed.error().ToString());
        continue;
      }
      std::set<Id> listed_ids;
      for (const DeviceRecord& d : *listed) listed_ids.insert(d.id);
      for (const Id& d : devices_of[a.id]) {
        if (!listed_ids.count(d)) {
          problems.push_back(name + ": device " + IdToHex(d) + " missing from its listing");
        }
      }
    }
    if (page.size() < kPage) break;
    all.start_after = page.back().id;
  }
  for (const auto& [account, devices] : purged_of) {  // accounts without a record
    for (const Id& d : devices) {
      problems.push_back("purged device " + IdToHex(d) + ": its account " + IdToHex(account) +
                         " has no record");
    }
  }
  return problems;
}

}  // namespace cv::index
