// accounts: the account model inside one LMDB transaction (internal to index/; the public
// contract is in index.h, the layout in FORMAT.md).
//
// Secondary indexes are key-only databases whose values are empty; each is changed in the
// same transaction as the record it points at:
//
//   accounts_by_partner  partner | account   PutAccount, DeleteAccount
//   devices_by_account   account | device    WriteDevice, RemoveDevice (PutDevice, PutObject)
//   devices_by_token     sha256 | device     WriteDevice, RemoveDevice (only when the token
//                                            changes: not on every object's counter update)
//   admin_keys_by_hash   sha256 -> key id    PutAdminKey, DeleteAdminKey
//   audit_by_account     account | seq       AppendAudit
//   audit_by_partner     partner | seq       AppendAudit
//   jobs_by_account      account | job       PutJob, DeleteJob
//   purged_devices_by_account                PutPurgedDevice, DeleteAccount (the value is
//                        account | device    the token hash that keys purged_devices)
//
// Account usage follows device counters: every device write passes the old and the new
// record to WriteDevice, which moves the difference onto the account (if it has a record).
#pragma once

#include <lmdb.h>

#include <limits>
#include <optional>
#include <vector>

#include "common/common.h"
#include "index/index.h"
#include "index/lmdb_env.h"

namespace cv::index::internal {

inline uint64_t SatAdd(uint64_t a, uint64_t b) {
  return a > std::numeric_limits<uint64_t>::max() - b ? std::numeric_limits<uint64_t>::max()
                                                      : a + b;
}

struct Dbis {
  MDB_dbi objects = 0;
  MDB_dbi extents = 0;
  MDB_dbi devices = 0;
  MDB_dbi meta = 0;
  MDB_dbi partners = 0;
  MDB_dbi accounts = 0;
  MDB_dbi accounts_by_partner = 0;
  MDB_dbi addons = 0;
  MDB_dbi devices_by_account = 0;
  MDB_dbi admin_keys = 0;
  MDB_dbi admin_keys_by_hash = 0;
  MDB_dbi audit = 0;
  MDB_dbi audit_by_account = 0;
  MDB_dbi audit_by_partner = 0;
  MDB_dbi jobs = 0;
  MDB_dbi jobs_by_account = 0;
  MDB_dbi devices_by_token = 0;
  MDB_dbi purged_devices = 0;
  MDB_dbi purged_devices_by_account = 0;
};

// Every named database and where its handle goes; Index::Open opens (creates) them all.
inline constexpr std::pair<const char*, MDB_dbi Dbis::*> kDatabases[] = {
    {"objects", &Dbis::objects},
    {"extents", &Dbis::extents},
    {"devices", &Dbis::devices},
    {"meta", &Dbis::meta},
    {"partners", &Dbis::partners},
    {"accounts", &Dbis::accounts},
    {"accounts_by_partner", &Dbis::accounts_by_partner},
    {"addons", &Dbis::addons},
    {"devices_by_account", &Dbis::devices_by_account},
    {"admin_keys", &Dbis::admin_keys},
    {"admin_keys_by_hash", &Dbis::admin_keys_by_hash},
    {"audit", &Dbis::audit},
    {"audit_by_account", &Dbis::audit_by_account},
    {"audit_by_partner", &Dbis::audit_by_partner},
    {"jobs", &Dbis::jobs},
    {"jobs_by_account", &Dbis::jobs_by_account},
    {"devices_by_token", &Dbis::devices_by_token},
    {"purged_devices", &Dbis::purged_devices},
    {"purged_devices_by_account", &Dbis::purged_devices_by_account},
};

// The read methods of Txn for the account model, over a read or a write transaction.
class AccountReads {
 public:
  AccountReads(const Dbis& dbis, MDB_txn* txn) : dbis_(dbis), txn_(txn) {}

  Result<std::optional<Partner>> GetPartner(const Id& id);
  Result<std::vector<Partner>> ListPartners(const std::optional<Id>& start_after, size_t limit);
  Result<std::optional<Account>> GetAccount(const Id& id);
  Result<std::vector<Account>> ListAccounts(const AccountQuery& query);
  Result<std::optional<AddOn>> GetAddOn(const Id& account, const Id& addon);
  Result<std::vector<AddOn>> ListAddOns(const Id& account);
  Result<std::vector<DeviceRecord>> ListDevices(const Id& account);
  Result<std::optional<AdminKey>> GetAdminKey(const Id& id);
  Result<std::optional<AdminKey>> GetAdminKeyBySecretHash(const Sha256Digest& hash);
  Result<std::optional<DeviceRecord>> GetDeviceByTokenHash(const Sha256Digest& hash);
  Status ForEachTokenEntry(
      const std::function<bool(const Sha256Digest&, const std::optional<Id>&)>& fn);
  Result<std::optional<PurgedDevice>> GetPurgedDevice(const Sha256Digest& token_hash,
                                                      const std::optional<Id>& device);
  Result<std::vector<PurgedDevice>> ListPurgedDevices(const Id& account);
  Status ForEachPurgedDevice(const std::function<bool(const PurgedDevice&)>& fn);
  Result<std::vector<AuditRecord>> ListAudit(const AuditQuery& query);
  Result<std::optional<Job>> GetJob(const Id& id);
  Result<std::vector<Job>> ListJobs(const JobQuery& query);

 protected:
  Result<std::optional<DeviceRecord>> GetDevice(const Id& id);
  Result<std::optional<AuditRecord>> GetAudit(uint64_t seq);
  // True if some key of `dbi` starts with `prefix`.
  Result<bool> AnyWithPrefix(MDB_dbi dbi, std::string_view prefix);

  const Dbis& dbis_;
  MDB_txn* const txn_;
};

// The write methods of WriteTxn for the account model, plus the device hooks.
class AccountWrites : public AccountReads {
 public:
  AccountWrites(const Dbis& dbis, mdb::WriteTxn& txn) : AccountReads(dbis, txn.get()), wtxn_(txn) {}

  Status PutPartner(const Partner& rec);
  Status DeletePartner(const Id& id);
  Status PutAccount(const Account& rec);
  Status DeleteAccount(const Id& id);
  Status PutAddOn(const AddOn& rec);
  Status DeleteAddOn(const Id& account, const Id& addon);
  Status PutAdminKey(const AdminKey& rec);
  Status DeleteAdminKey(const Id& id);
  Result<uint64_t> AppendAudit(const AuditRecord& rec);
  Status PutJob(const Job& rec);
  Status DeleteJob(const Id& id);
  Status PutPurgedDevice(const PurgedDevice& rec);
  Status SetAccountUsage(const Id& account, uint64_t bytes, uint64_t objects);

  // Stores `rec`, which replaces `old` (nullopt: a new device), and follows the change in
  // devices_by_account and in the counters of the account(s) concerned.
  Status WriteDevice(const DeviceRecord& rec, const std::optional<DeviceRecord>& old);
  // Removes the device `old` likewise.
  Status RemoveDevice(const DeviceRecord& old);
  // Upgrades from an older index format: builds devices_by_account (format 1 had none)
  // and devices_by_token (formats before 4) from the devices.
  Status IndexAllDevices(uint64_t from_format);

 private:
  Status WriteAccount(const Account& rec);  // as given, counters included; no index changes
  // Saturating: account.bytes += add_bytes - sub_bytes, likewise objects.
  Status AdjustAccount(const Id& account, uint64_t add_bytes, uint64_t add_objects,
                       uint64_t sub_bytes, uint64_t sub_objects);
  Status Put(MDB_dbi dbi, std::string_view key, std::string_view value, std::string_view what);
  Result<bool> Del(MDB_dbi dbi, std::string_view key, std::string_view what);

  mdb::WriteTxn& wtxn_;
};

}  // namespace cv::index::internal
