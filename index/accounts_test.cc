// The account model in the index: records, secondary indexes, account usage, quota
// reservations, audit numbering and CheckAccounts.
#include <gtest/gtest.h>
#include <lmdb.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "index/index.h"
#include "index/schema.h"

namespace cv::index {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMiB = 1 << 20;
const Id kPartnerA = Id{0xa0, 1};
const Id kPartnerB = Id{0xb0, 1};

// The environment opened directly, bypassing Index, to damage or plant values. Only while no
// Index has the directory open.
class RawEnv {
 public:
  explicit RawEnv(const std::string& dir) {
    EXPECT_EQ(mdb_env_create(&env_), 0);
    EXPECT_EQ(mdb_env_set_maxdbs(env_, 32), 0);
    EXPECT_EQ(mdb_env_open(env_, dir.c_str(), MDB_NOTLS, 0600), 0);
  }
  ~RawEnv() { mdb_env_close(env_); }

  // edit(value) for an existing key; the value is nullopt if absent; nullopt out = delete.
  void Edit(const char* db, const std::string& key,
            const std::function<std::optional<std::string>(std::optional<std::string>)>& edit) {
    MDB_txn* txn = nullptr;
    ASSERT_EQ(mdb_txn_begin(env_, nullptr, 0, &txn), 0);
    MDB_dbi dbi = 0;
    ASSERT_EQ(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k{key.size(), const_cast<char*>(key.data())}, v{};
    std::optional<std::string> value;
    if (mdb_get(txn, dbi, &k, &v) == 0)
      value.emplace(static_cast<const char*>(v.mv_data), v.mv_size);
    std::optional<std::string> edited = edit(value);
    if (edited) {
      MDB_val nv{edited->size(), edited->data()};
      ASSERT_EQ(mdb_put(txn, dbi, &k, &nv, 0), 0);
    } else {
      ASSERT_EQ(mdb_del(txn, dbi, &k, nullptr), 0);
    }
    ASSERT_EQ(mdb_txn_commit(txn), 0);
  }
  void Flip(const char* db, const std::string& key) {
    Edit(db, key, [](std::optional<std::string> v) {
      EXPECT_TRUE(v.has_value());
      (*v)[v->size() / 2] ^= 0x04;
      return v;
    });
  }

 private:
  MDB_env* env_ = nullptr;
};

ObjectRecord Obj(uint64_t size) {
  ObjectRecord rec;
  rec.size = size;
  rec.created_ns = 1000;
  rec.layout = Layout::kReplicated;
  rec.k = 1;
  rec.shards = {ShardLoc{0, 0, size}};
  return rec;
}

DeviceRecord Device(const Id& id, const Id& account) {
  DeviceRecord rec;
  rec.id = id;
  rec.account = account;
  rec.name = "dev-" + IdToHex(id).substr(0, 4);
  return rec;
}

Account MakeAccount(const Id& id, std::optional<Id> partner, uint64_t quota = 100 * kMiB) {
  Account rec;
  rec.id = id;
  rec.partner = partner;
  rec.status = AccountStatus::kActive;
  rec.plan_quota_bytes = quota;
  rec.device_limit = 5;
  rec.created_ns = 1;
  return rec;
}

std::vector<Id> Ids(const auto& records) {
  std::vector<Id> out;
  for (const auto& r : records) out.push_back(r.id);
  return out;
}

class AccountsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetLogLevel(LogLevel::kWarn);
    std::string tmpl = ::testing::TempDir() + "cv_accounts_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/index";
    Open();
  }
  void TearDown() override {
    index_.reset();
    fs::remove_all(root_);
  }

  void Open() {
    auto index = Index::Open({dir_, 1 << 20, 1ull << 30});
    ASSERT_TRUE(index) << index.error().ToString();
    index_ = std::move(*index);
  }
  void Close() { index_.reset(); }

  void Do(const std::function<Status(WriteTxn&)>& fn) {
    Status st = index_->Update(fn);
    ASSERT_TRUE(st) << st.error().ToString();
  }
  std::optional<ErrorKind> KindOf(const std::function<Status(WriteTxn&)>& fn) {
    Status st = index_->Update(fn);
    return st ? std::nullopt : std::optional(st.error().kind);
  }
  std::unique_ptr<Txn> Read() {
    auto txn = index_->BeginRead();
    EXPECT_TRUE(txn);
    return std::move(*txn);
  }
  Account GetAccount(const Id& id) {
    auto rec = Read()->GetAccount(id);
    EXPECT_TRUE(rec && *rec);
    return rec && *rec ? **rec : Account{};
  }
  QuotaDecision Reserve(const Id& account, uint64_t bytes, int64_t now_ns) {
    auto d = index_->Reserve(account, bytes, now_ns);
    EXPECT_TRUE(d) << d.error().ToString();
    return d ? *d : QuotaDecision{};
  }
  std::vector<std::string> Check() {
    auto problems = CheckAccounts(*Read());
    EXPECT_TRUE(problems) << problems.error().ToString();
    return problems ? *problems : std::vector<std::string>{"CheckAccounts failed"};
  }
  void PutPartners() {
    Do([](WriteTxn& txn) -> Status {
      CV_TRY(txn.PutPartner(Partner{kPartnerA, "A", 1}));
      return txn.PutPartner(Partner{kPartnerB, "B", 2});
    });
  }

  std::string root_;
  std::string dir_;
  std::unique_ptr<Index> index_;
};

TEST_F(AccountsTest, EveryRecordRoundTripsAndDeletesReportMisses) {
  const Partner partner{kPartnerA, "Acme", 5};
  const Account account = MakeAccount(Id{1}, kPartnerA);
  const AddOn addon{Id{2}, Id{1}, 7 * kMiB, 0, 3};
  AdminKey key{Id{3}, AdminRole::kPartner, kPartnerA, Sha256::Of("secret"), 4, 0, false};
  Job job;
  job.id = Id{4};
  job.kind = "device_delete";
  job.state = "scheduled";
  job.account = Id{1};
  job.params_json = R"({"device":"x"})";
  Do([&](WriteTxn& txn) -> Status {
    CV_TRY(txn.PutPartner(partner));
    CV_TRY(txn.PutAccount(account));
    CV_TRY(txn.PutAddOn(addon));
    CV_TRY(txn.PutAdminKey(key));
    return txn.PutJob(job);
  });
  {
    auto txn = Read();
    EXPECT_EQ(*txn->GetPartner(kPartnerA), partner);
    EXPECT_EQ(*txn->GetAccount(Id{1}), account);
    EXPECT_EQ(*txn->GetAddOn(Id{1}, Id{2}), addon);
    EXPECT_EQ(*txn->ListAddOns(Id{1}), std::vector<AddOn>{addon});
    EXPECT_EQ(*txn->GetAdminKey(Id{3}), key);
    EXPECT_EQ(*txn->GetAdminKeyBySecretHash(Sha256::Of("secret")), key);
    EXPECT_EQ(*txn->GetJob(Id{4}), job);
    EXPECT_EQ(*txn->ListPartners(std::nullopt, 10), std::vector<Partner>{partner});
    EXPECT_EQ(*txn->GetPartner(kPartnerB), std::nullopt);
    EXPECT_EQ(*txn->GetAccount(Id{9}), std::nullopt);
    EXPECT_EQ(*txn->GetAddOn(Id{9}, Id{2}), std::nullopt);
    EXPECT_EQ(*txn->GetAdminKey(Id{9}), std::nullopt);
    EXPECT_EQ(*txn->GetAdminKeyBySecretHash(Sha256::Of("other")), std::nullopt);
    EXPECT_EQ(*txn->GetJob(Id{9}), std::nullopt);
  }
  EXPECT_EQ(KindOf([](WriteTxn& t) { return t.DeleteAddOn(Id{1}, Id{9}); }), ErrorKind::kNotFound);
  EXPECT_EQ(KindOf([](WriteTxn& t) { return t.DeleteAdminKey(Id{9}); }), ErrorKind::kNotFound);
  EXPECT_EQ(KindOf([](WriteTxn& t) { return t.DeleteJob(Id{9}); }), ErrorKind::kNotFound);
  EXPECT_EQ(KindOf([](WriteTxn& t) { return t.DeleteAccount(Id{9}); }), ErrorKind::kNotFound);
  EXPECT_EQ(KindOf([](WriteTxn& t) { return t.DeletePartner(kPartnerB); }), ErrorKind::kNotFound);
  // Referential rules: a partner with accounts stays; records need their owners.
  EXPECT_EQ(KindOf([](WriteTxn& t) { return t.DeletePartner(kPartnerA); }), ErrorKind::kConflict);
  EXPECT_EQ(KindOf([](WriteTxn& t) { return t.PutAccount(MakeAccount(Id{5}, kPartnerB)); }),
            ErrorKind::kNotFound);
  EXPECT_EQ(KindOf([](WriteTxn& t) {
              return t.PutAddOn(AddOn{Id{6}, Id{9}, 1, 0, 0});
            }),
            ErrorKind::kNotFound);
  EXPECT_EQ(KindOf([&](WriteTxn& t) {
              AdminKey k = key;
              k.id = Id{7};
              k.partner = kPartnerB;
              k.secret_sha256 = Sha256::Of("another");
              return t.PutAdminKey(k);
            }),
            ErrorKind::kNotFound);

  Do([](WriteTxn& txn) -> Status {
    CV_TRY(txn.DeleteAccount(Id{1}));  // takes its add-ons along
    CV_TRY(txn.DeletePartner(kPartnerA));
    CV_TRY(txn.DeleteAdminKey(Id{3}));
    return txn.DeleteJob(Id{4});
  });
  auto txn = Read();
  EXPECT_EQ(*txn->GetAccount(Id{1}), std::nullopt);
  EXPECT_TRUE(txn->ListAddOns(Id{1})->empty());
  EXPECT_EQ(*txn->GetPartner(kPartnerA), std::nullopt);
  EXPECT_EQ(*txn->GetAdminKeyBySecretHash(Sha256::Of("secret")), std::nullopt);
  EXPECT_TRUE(txn->ListJobs(JobQuery{})->empty());
}

TEST_F(AccountsTest, FlippedByteInEachNewRecordIsCorruption) {
  Job job;
  job.id = Id{4};
  job.account = Id{1};
  Do([&](WriteTxn& txn) -> Status {
    CV_TRY(txn.PutPartner(Partner{kPartnerA, "Acme", 5}));
    CV_TRY(txn.PutAccount(MakeAccount(Id{1}, kPartnerA)));
    CV_TRY(txn.PutAddOn(AddOn{Id{2}, Id{1}, 1, 0, 0}));
    CV_TRY(
        txn.PutAdminKey(AdminKey{Id{3}, AdminRole::kOperator, {}, Sha256::Of("s"), 0, 0, false}));
    CV_TRY(txn.PutJob(job));
    AuditRecord audit;
    audit.account = Id{1};
    audit.action = "account.create";
    return txn.AppendAudit(audit).map([](uint64_t) {});
  });
  Close();
  {
    RawEnv raw(dir_);
    raw.Flip("partners", schema::EncodeIdKey(kPartnerA));
    raw.Flip("accounts", schema::EncodeIdKey(Id{1}));
    raw.Flip("addons", schema::EncodePairKey(Id{1}, Id{2}));
    raw.Flip("admin_keys", schema::EncodeIdKey(Id{3}));
    raw.Flip("jobs", schema::EncodeIdKey(Id{4}));
    raw.Flip("audit", schema::EncodeSeqKey(1));
  }
  Open();
  auto txn = Read();
  EXPECT_EQ(txn->GetPartner(kPartnerA).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->ListPartners(std::nullopt, 10).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->GetAccount(Id{1}).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->ListAccounts(AccountQuery{}).error().kind, ErrorKind::kCorruption);
  AccountQuery by_partner;
  by_partner.partner = kPartnerA;
  EXPECT_EQ(txn->ListAccounts(by_partner).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->GetAddOn(Id{1}, Id{2}).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->ListAddOns(Id{1}).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->GetAdminKey(Id{3}).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->GetAdminKeyBySecretHash(Sha256::Of("s")).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->GetJob(Id{4}).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->ListJobs(JobQuery{}).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->ListAudit(AuditQuery{}).error().kind, ErrorKind::kCorruption);
  AuditQuery by_account;
  by_account.account = Id{1};
  EXPECT_EQ(txn->ListAudit(by_account).error().kind, ErrorKind::kCorruption);
  txn.reset();
  // Writes that need the old record refuse rather than miscount.
  EXPECT_EQ(KindOf([](WriteTxn& t) { return t.PutAccount(MakeAccount(Id{1}, std::nullopt)); }),
            ErrorKind::kCorruption);
  EXPECT_EQ(index_->Reserve(Id{1}, 1, 0).error().kind, ErrorKind::kCorruption);
}

TEST_F(AccountsTest, SecondaryIndexPointingElsewhereIsCorruption) {
  PutPartners();
  Do([](WriteTxn& txn) -> Status {
    CV_TRY(txn.PutAccount(MakeAccount(Id{1}, kPartnerA)));
    return txn.PutDevice(Device(Id{0xd1}, Id{1}));
  });
  Close();
  {
    RawEnv raw(dir_);
    auto plant = [](std::optional<std::string>) { return std::string(); };
    raw.Edit("accounts_by_partner", schema::EncodePairKey(kPartnerB, Id{1}), plant);
    raw.Edit("devices_by_account", schema::EncodePairKey(Id{2}, Id{0xd1}), plant);
  }
  Open();
  auto txn = Read();
  AccountQuery q;
  q.partner = kPartnerB;
  EXPECT_EQ(txn->ListAccounts(q).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->ListDevices(Id{2}).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->ListDevices(Id{1})->size(), 1u);  // the damage stays local
  auto problems = CheckAccounts(*txn);
  ASSERT_TRUE(problems);
  ASSERT_EQ(problems->size(), 1u);
  EXPECT_NE((*problems)[0].find(IdToHex(kPartnerB)), std::string::npos) << (*problems)[0];
}

TEST_F(AccountsTest, ListAccountsFiltersByPartnerAndStatusAndPagesWithACursor) {
  PutPartners();
  // Ids 1..9: odd ones with A, even with B, 9 released. 3 is a trial that expired at 50.
  Do([](WriteTxn& txn) -> Status {
    for (uint8_t i = 9; i >= 1; --i) {
      Account a =
          MakeAccount(Id{i}, i == 9 ? std::nullopt : std::optional(i % 2 ? kPartnerA : kPartnerB));
      if (i == 3 || i == 5) {
        a.status = AccountStatus::kTrial;
        a.expires_ns = i == 3 ? 50 : 0;
      }
      if (i == 7) a.status = AccountStatus::kSuspended;
      CV_TRY(txn.PutAccount(a));
    }
    return {};
  });
  auto txn = Read();
  auto list = [&](std::optional<Id> partner, std::optional<AccountStatus> status,
                  std::optional<Id> after, size_t limit, int64_t now = 100) {
    AccountQuery q;
    q.partner = partner;
    q.status = status;
    q.now_ns = now;
    q.start_after = after;
    q.limit = limit;
    auto r = txn->ListAccounts(q);
    EXPECT_TRUE(r) << r.error().ToString();
    return r ? Ids(*r) : std::vector<Id>{};
  };
  using V = std::vector<Id>;
  EXPECT_EQ(list(std::nullopt, std::nullopt, std::nullopt, 100),
            (V{Id{1}, Id{2}, Id{3}, Id{4}, Id{5}, Id{6}, Id{7}, Id{8}, Id{9}}));
  EXPECT_EQ(list(kPartnerA, std::nullopt, std::nullopt, 100), (V{Id{1}, Id{3}, Id{5}, Id{7}}));
  EXPECT_EQ(list(kPartnerB, std::nullopt, std::nullopt, 100), (V{Id{2}, Id{4}, Id{6}, Id{8}}));
  // Pages of two with the last id as the cursor.
  EXPECT_EQ(list(kPartnerA, std::nullopt, std::nullopt, 2), (V{Id{1}, Id{3}}));
  EXPECT_EQ(list(kPartnerA, std::nullopt, Id{3}, 2), (V{Id{5}, Id{7}}));
  EXPECT_EQ(list(kPartnerA, std::nullopt, Id{7}, 2), V{});
  EXPECT_EQ(list(std::nullopt, std::nullopt, Id{7}, 100), (V{Id{8}, Id{9}}));
  EXPECT_EQ(list(std::nullopt, std::nullopt, Id{4, 5}, 1), V{Id{5}});  // need not exist
  EXPECT_EQ(list(std::nullopt, std::nullopt, std::nullopt, 0), V{});
  // Status is the effective one: trial 3 expired at 50.
  EXPECT_EQ(list(kPartnerA, AccountStatus::kTrial, std::nullopt, 100), V{Id{5}});
  EXPECT_EQ(list(kPartnerA, AccountStatus::kExpired, std::nullopt, 100), V{Id{3}});
  EXPECT_EQ(list(kPartnerA, AccountStatus::kTrial, std::nullopt, 100, /*now=*/49),
            (V{Id{3}, Id{5}}));
  EXPECT_EQ(list(std::nullopt, AccountStatus::kSuspended, std::nullopt, 100), V{Id{7}});
  EXPECT_EQ(list(std::nullopt, AccountStatus::kActive, Id{2}, 2), (V{Id{4}, Id{6}}));
}

TEST_F(AccountsTest, PartnerListingFollowsPartnerChangesAndRelease) {
  PutPartners();
  Do([](WriteTxn& txn) { return txn.PutAccount(MakeAccount(Id{1}, kPartnerA)); });
  auto ids_of = [&](const Id& partner) {
    AccountQuery q;
    q.partner = partner;
    return Ids(*Read()->ListAccounts(q));
  };
  EXPECT_EQ(ids_of(kPartnerA), std::vector<Id>{Id{1}});
  EXPECT_TRUE(ids_of(kPartnerB).empty());

  Do([](WriteTxn& txn) { return txn.PutAccount(MakeAccount(Id{1}, kPartnerB)); });  // moved
  EXPECT_TRUE(ids_of(kPartnerA).empty());
  EXPECT_EQ(ids_of(kPartnerB), std::vector<Id>{Id{1}});

  Do([](WriteTxn& txn) { return txn.PutAccount(MakeAccount(Id{1}, std::nullopt)); });  // released
  EXPECT_TRUE(ids_of(kPartnerA).empty());
  EXPECT_TRUE(ids_of(kPartnerB).empty());
  EXPECT_EQ(GetAccount(Id{1}).partner, std::nullopt);              // the account itself stays
  Do([](WriteTxn& txn) { return txn.DeletePartner(kPartnerB); });  // no accounts left
  EXPECT_TRUE(Check().empty());
}

TEST_F(AccountsTest, DeviceListingFollowsPutMoveAndDeleteOfDevices) {
  Do([](WriteTxn& txn) -> Status {
    CV_TRY(txn.PutAccount(MakeAccount(Id{1}, std::nullopt)));
    CV_TRY(txn.PutAccount(MakeAccount(Id{2}, std::nullopt)));
    for (uint8_t d : {0xd3, 0xd1, 0xd2}) CV_TRY(txn.PutDevice(Device(Id{d}, Id{1})));
    return txn.PutDevice(Device(Id{0xd4}, Id{2}));
  });
  auto ids_of = [&](const Id& account) { return Ids(*Read()->ListDevices(account)); };
  using V = std::vector<Id>;
  EXPECT_EQ(ids_of(Id{1}), (V{Id{0xd1}, Id{0xd2}, Id{0xd3}}));
  EXPECT_EQ(ids_of(Id{2}), V{Id{0xd4}});
  EXPECT_EQ(KindOf([](WriteTxn& t) { return t.DeleteAccount(Id{2}); }), ErrorKind::kConflict);

  Do([](WriteTxn& txn) -> Status {
    DeviceRecord renamed = Device(Id{0xd1}, Id{1});
    renamed.name = "renamed";
    CV_TRY(txn.PutDevice(renamed));                  // same account: listed once
    CV_TRY(txn.PutDevice(Device(Id{0xd2}, Id{2})));  // moved
    return txn.DeleteDevice(Id{0xd4});
  });
  EXPECT_EQ(ids_of(Id{1}), (V{Id{0xd1}, Id{0xd3}}));
  EXPECT_EQ(ids_of(Id{2}), V{Id{0xd2}});
  EXPECT_EQ(Read()->ListDevices(Id{1})->front().name, "renamed");
  // Devices of an account without a record are listed too.
  Do([](WriteTxn& txn) { return txn.PutDevice(Device(Id{0xd5}, Id{3})); });
  EXPECT_EQ(ids_of(Id{3}), V{Id{0xd5}});
  EXPECT_TRUE(Check().empty());
}

TEST_F(AccountsTest, AddOnExpiryChangesTheQuotaAtAGivenTime) {
  Do([](WriteTxn& txn) -> Status {
    CV_TRY(txn.PutAccount(MakeAccount(Id{1}, std::nullopt, 10 * kMiB)));
    CV_TRY(txn.PutAddOn(AddOn{Id{0xe1}, Id{1}, 5 * kMiB, /*expires_ns=*/1000, 0}));
    return txn.PutAddOn(AddOn{Id{0xe2}, Id{1}, 2 * kMiB, /*expires_ns=*/0, 0});
  });
  EXPECT_EQ(QuotaBytes(GetAccount(Id{1}), *Read()->ListAddOns(Id{1}), 999), 17 * kMiB);
  EXPECT_EQ(QuotaBytes(GetAccount(Id{1}), *Read()->ListAddOns(Id{1}), 1000), 12 * kMiB);

  // Before the expiry, 17 MiB fit; the same request after it does not.
  QuotaDecision before = Reserve(Id{1}, 17 * kMiB, 999);
  EXPECT_TRUE(before.granted);
  EXPECT_EQ(before.quota_bytes, 17 * kMiB);
  index_->Release(Id{1}, 17 * kMiB);
  QuotaDecision after = Reserve(Id{1}, 17 * kMiB, 1000);
  EXPECT_FALSE(after.granted);
  EXPECT_EQ(after.quota_bytes, 12 * kMiB);
  EXPECT_EQ(after.used_bytes, 0u);
  EXPECT_EQ(after.reserved_bytes, 0u);
  EXPECT_TRUE(Reserve(Id{1}, 12 * kMiB, 1000).granted);

  // Deleting the never-expiring add-on lowers the quota at once.
  Do([](WriteTxn& txn) { return txn.DeleteAddOn(Id{1}, Id{0xe2}); });
  // Usage + reservations now exceed the quota: nothing more fits, nothing is taken away.
  QuotaDecision refused = Reserve(Id{1}, 1, 1000);
  EXPECT_FALSE(refused.granted);
  EXPECT_EQ(refused.quota_bytes, 10 * kMiB);
  EXPECT_EQ(refused.reserved_bytes, 12 * kMiB);
}

TEST_F(AccountsTest, ReserveRaceGrantsExactlyTheRoomThereIs) {
  Do([](WriteTxn& txn) -> Status {
    CV_TRY(txn.PutAccount(MakeAccount(Id{1}, std::nullopt, 8 * kMiB)));
    return txn.PutAddOn(AddOn{Id{0xe1}, Id{1}, 2 * kMiB, 0, 0});  // room for exactly 10
  });
  constexpr int kThreads = 32;
  std::atomic<int> granted{0}, refused{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      auto r = index_->Reserve(Id{1}, kMiB, 0);
      if (!r) {
        ++failed;
        return;
      }
      const QuotaDecision d = *r;
      if (d.granted) {
        ++granted;
      } else {
        ++refused;
        EXPECT_EQ(d.quota_bytes, 10 * kMiB);
        EXPECT_EQ(d.reserved_bytes, 10 * kMiB);
        EXPECT_EQ(d.used_bytes, 0u);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(granted.load(), 10);
  EXPECT_EQ(refused.load(), kThreads - 10);
  EXPECT_EQ(GetAccount(Id{1}).reserved_bytes, 10 * kMiB);
}

TEST_F(AccountsTest, ReleaseAndCommitFollowTheQuotaProtocol) {
  Do([](WriteTxn& txn) -> Status {
    CV_TRY(txn.PutAccount(MakeAccount(Id{1}, std::nullopt, 10 * kMiB)));
    return txn.PutDevice(Device(Id{0xd1}, Id{1}));
  });
  ASSERT_TRUE(Reserve(Id{1}, 6 * kMiB, 0).granted);
  ASSERT_TRUE(Reserve(Id{1}, 3 * kMiB, 0).granted);
  EXPECT_FALSE(Reserve(Id{1}, 2 * kMiB, 0).granted);

  // The 6 MiB upload commits, then gives its reservation back. In between, the bytes count
  // twice (usage and reserved): never zero times.
  Do([](WriteTxn& txn) {
    return txn.PutObject(ObjectKey{Id{0xd1}, ObjectType::kData, "a"}, Obj(6 * kMiB));
  });
  EXPECT_FALSE(Reserve(Id{1}, kMiB, 0).granted);
  index_->Release(Id{1}, 6 * kMiB);
  Account a = GetAccount(Id{1});
  EXPECT_EQ(a.bytes, 6 * kMiB);
  EXPECT_EQ(a.objects, 1u);
  EXPECT_EQ(a.reserved_bytes, 3 * kMiB);
  EXPECT_FALSE(Reserve(Id{1}, 2 * kMiB, 0).granted);
  // The 3 MiB upload fails: its reservation goes back.
  index_->Release(Id{1}, 3 * kMiB);
  EXPECT_TRUE(Reserve(Id{1}, 2 * kMiB, 0).granted);

  // Release never goes below zero, and is a no-op for an account that holds nothing.
  index_->Release(Id{1}, 100 * kMiB);
  EXPECT_EQ(GetAccount(Id{1}).reserved_bytes, 0u);
  index_->Release(Id{9}, 1);

  // Zero bytes fit exactly at the quota; nothing fits past it.
  ASSERT_TRUE(Reserve(Id{1}, 4 * kMiB, 0).granted);
  EXPECT_TRUE(Reserve(Id{1}, 0, 0).granted);
  EXPECT_FALSE(Reserve(Id{1}, ~0ull, 0).granted);  // no wrap-around
  EXPECT_EQ(index_->Reserve(Id{9}, 1, 0).error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(GetAccount(Id{1}).reserved_bytes, 4 * kMiB);

  // Reservations are never stored: a write of the account keeps none, and the next process
  // starts with none.
  Do([](WriteTxn& txn) {
    Account changed = MakeAccount(Id{1}, std::nullopt, 10 * kMiB);
    changed.reserved_bytes = 123;
    return txn.PutAccount(changed);
  });
  EXPECT_EQ(GetAccount(Id{1}).reserved_bytes, 4 * kMiB);
  Close();
  Open();
  EXPECT_EQ(GetAccount(Id{1}).reserved_bytes, 0u);
  EXPECT_EQ(GetAccount(Id{1}).bytes, 6 * kMiB);
}

// Uploads on many threads follow the protocol (reserve, commit, release) against a quota
// that fills up: usage never passes it, and it ends nearly full.
TEST_F(AccountsTest, ConcurrentUploadsNeverCommitPastTheQuota) {
  constexpr uint64_t kQuota = 64 * kMiB;
  Do([&](WriteTxn& txn) -> Status {
    CV_TRY(txn.PutAccount(MakeAccount(Id{1}, std::nullopt, kQuota)));
    return txn.PutDevice(Device(Id{0xd1}, Id{1}));
  });
  std::atomic<int> errors{0};
  std::atomic<uint64_t> names{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      uint64_t state = 0x9e3779b97f4a7c15ull * (t + 1);
      for (int refused = 0; refused < 20;) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        const uint64_t size = 1 + state % kMiB;
        auto d = index_->Reserve(Id{1}, size, 0);
        if (!d) {
          ++errors;
          return;
        }
        if (!d->granted) {
          ++refused;
          continue;
        }
        const ObjectKey key{Id{0xd1}, ObjectType::kData, std::to_string(names++)};
        if (!index_->Update([&](WriteTxn& txn) { return txn.PutObject(key, Obj(size)); })) {
          ++errors;
        }
        index_->Release(Id{1}, size);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  const Account a = GetAccount(Id{1});
  EXPECT_LE(a.bytes, kQuota);
  EXPECT_GT(a.bytes, kQuota - 2 * kMiB);
  EXPECT_EQ(a.reserved_bytes, 0u);
  EXPECT_EQ(Check(), std::vector<std::string>{});
}

TEST_F(AccountsTest, AccountCountersFollowObjectsAndDevices) {
  Do([](WriteTxn& txn) -> Status {
    CV_TRY(txn.PutAccount(MakeAccount(Id{1}, std::nullopt)));
    CV_TRY(txn.PutAccount(MakeAccount(Id{2}, std::nullopt)));
    CV_TRY(txn.PutDevice(Device(Id{0xd1}, Id{1})));
    CV_TRY(txn.PutDevice(Device(Id{0xd2}, Id{1})));
    return txn.PutDevice(Device(Id{0xd3}, Id{3}));  // an account without a record
  });
  auto put = [&](uint8_t dev, const char* name, uint64_t size) {
    Do([&](WriteTxn& txn) {
      return txn.PutObject(ObjectKey{Id{dev}, ObjectType::kData, name}, Obj(size));
    });
  };
  auto usage = [&](const Id& account) {
    Account a = GetAccount(account);
    return std::pair{a.bytes, a.objects};
  };
  put(0xd1, "a", 100);
  put(0xd2, "b", 20);
  put(0xd3, "c", 5);
  EXPECT_EQ(usage(Id{1}), (std::pair<uint64_t, uint64_t>{120, 2}));
  put(0xd1, "a", 40);  // replacement: the difference only
  EXPECT_EQ(usage(Id{1}), (std::pair<uint64_t, uint64_t>{60, 2}));
  Do([](WriteTxn& txn) { return txn.DeleteObject(ObjectKey{Id{0xd2}, ObjectType::kData, "b"}); });
  EXPECT_EQ(usage(Id{1}), (std::pair<uint64_t, uint64_t>{40, 1}));
  put(0xd2, "b2", 7);

  // PutAccount keeps the counters the index maintains, whatever the caller passes.
  Do([](WriteTxn& txn) {
    Account a = MakeAccount(Id{1}, std::nullopt, 5);
    a.bytes = 999;
    a.objects = 999;
    return txn.PutAccount(a);
  });
  EXPECT_EQ(usage(Id{1}), (std::pair<uint64_t, uint64_t>{47, 2}));
  EXPECT_EQ(GetAccount(Id{1}).plan_quota_bytes, 5u);

  // A device moved to another account takes its usage along; a deleted one takes it away.
  Do([](WriteTxn& txn) -> Status {
    auto d = txn.GetDevice(Id{0xd1});
    DeviceRecord moved = **d;
    moved.account = Id{2};
    return txn.PutDevice(moved);
  });
  EXPECT_EQ(usage(Id{1}), (std::pair<uint64_t, uint64_t>{7, 1}));
  EXPECT_EQ(usage(Id{2}), (std::pair<uint64_t, uint64_t>{40, 1}));
  EXPECT_TRUE(Check().empty());
  Do([](WriteTxn& txn) -> Status {
    CV_TRY(txn.DeleteObject(ObjectKey{Id{0xd2}, ObjectType::kData, "b2"}));
    return txn.DeleteDevice(Id{0xd2});
  });
  EXPECT_EQ(usage(Id{1}), (std::pair<uint64_t, uint64_t>{0, 0}));
  EXPECT_TRUE(Check().empty());
}

TEST_F(AccountsTest, CheckAccountsIsCleanAfterAMixedWorkloadAndReportsACorruptedCounter) {
  PutPartners();
  Do([](WriteTxn& txn) -> Status {
    for (uint8_t a = 1; a <= 4; ++a) {
      CV_TRY(txn.PutAccount(MakeAccount(Id{a}, a % 2 ? kPartnerA : kPartnerB, 64 * kMiB)));
      for (uint8_t d = 0; d < 3; ++d) {
        CV_TRY(txn.PutDevice(Device(Id{a, static_cast<uint8_t>(0xd0 + d)}, Id{a})));
      }
    }
    return {};
  });
  // Seeded mix of reserved uploads that commit, fail, re-upload, and deletes, from 4 threads.
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      uint64_t state = 0x9e3779b97f4a7c15ull * (t + 1);
      auto next = [&] {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        return state;
      };
      for (int i = 0; i < 60; ++i) {
        const Id account{static_cast<uint8_t>(1 + next() % 4)};
        const Id device{account[0], static_cast<uint8_t>(0xd0 + next() % 3)};
        const ObjectKey key{device, ObjectType::kData, std::to_string(next() % 20)};
        const uint64_t size = 1 + next() % 100000;
        const uint64_t op = next() % 4;
        if (op == 0) {
          Status st = index_->Update([&](WriteTxn& txn) -> Status {
            CV_TRY_ASSIGN(auto old, txn.GetObject(key));
            return old ? txn.DeleteObject(key) : Status{};
          });
          if (!st) ++errors;
          continue;
        }
        auto d = index_->Reserve(account, size, 0);
        if (!d) ++errors;
        if (!d || !d->granted) continue;
        if (op != 1) {  // op 1: the upload failed
          Status st = index_->Update([&](WriteTxn& txn) { return txn.PutObject(key, Obj(size)); });
          if (!st) ++errors;
        }
        index_->Release(account, size);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(Check(), std::vector<std::string>{});
  uint64_t total = 0;
  for (uint8_t a = 1; a <= 4; ++a) {
    EXPECT_EQ(GetAccount(Id{a}).reserved_bytes, 0u);
    total += GetAccount(Id{a}).bytes;
  }
  EXPECT_GT(total, 0u);

  // A counter damaged behind the index's back (a valid, re-sealed value) is reported.
  Close();
  {
    RawEnv raw(dir_);
    raw.Edit("accounts", schema::EncodeIdKey(Id{3}),
             [](std::optional<std::string> v) -> std::optional<std::string> {
               EXPECT_TRUE(v.has_value());
               if (!v) return v;
               Account a = *schema::DecodeAccount(*v);
               a.bytes += 1;
               return *schema::EncodeAccount(a);
             });
  }
  Open();
  auto problems = Check();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find(IdToHex(Id{3})), std::string::npos) << problems[0];
  EXPECT_NE(problems[0].find("counters"), std::string::npos) << problems[0];
}

TEST_F(AccountsTest, AuditSeqIsMonotonicAcrossReopenAndListsByAccountAndPartner) {
  auto append = [&](std::optional<Id> account, std::optional<Id> partner) {
    uint64_t seq = 0;
    Do([&](WriteTxn& txn) -> Status {
      AuditRecord rec;
      rec.seq = 12345;  // ignored
      rec.time_ns = 7;
      rec.role = "operator";
      rec.action = "test";
      rec.account = account;
      rec.partner = partner;
      CV_TRY_ASSIGN(auto s, txn.AppendAudit(rec));
      seq = s;
      return {};
    });
    return seq;
  };
  EXPECT_EQ(append(Id{1}, kPartnerA), 1u);
  EXPECT_EQ(append(Id{2}, kPartnerA), 2u);
  EXPECT_EQ(append(std::nullopt, std::nullopt), 3u);
  // A failed fn takes its number back with it.
  EXPECT_EQ(KindOf([](WriteTxn& t) -> Status {
              CV_TRY(t.AppendAudit(AuditRecord{}));
              return Err(ErrorKind::kConflict, "rolled back");
            }),
            ErrorKind::kConflict);
  Close();
  Open();
  EXPECT_EQ(append(Id{1}, kPartnerB), 4u);  // account 1 released to B
  EXPECT_EQ(append(Id{1}, std::nullopt), 5u);

  auto seqs = [&](std::optional<Id> account, std::optional<Id> partner, uint64_t after,
                  size_t limit = 100) {
    AuditQuery q;
    q.account = account;
    q.partner = partner;
    q.after_seq = after;
    q.limit = limit;
    std::vector<uint64_t> out;
    auto list = Read()->ListAudit(q);
    EXPECT_TRUE(list) << list.error().ToString();
    for (const auto& r : *list) out.push_back(r.seq);
    return out;
  };
  using V = std::vector<uint64_t>;
  EXPECT_EQ(seqs(std::nullopt, std::nullopt, 0), (V{1, 2, 3, 4, 5}));
  EXPECT_EQ(seqs(std::nullopt, std::nullopt, 2, 2), (V{3, 4}));
  EXPECT_EQ(seqs(std::nullopt, std::nullopt, 5), V{});
  EXPECT_EQ(seqs(std::nullopt, std::nullopt, ~0ull), V{});
  EXPECT_EQ(seqs(Id{1}, std::nullopt, 0), (V{1, 4, 5}));
  EXPECT_EQ(seqs(Id{1}, std::nullopt, 1, 1), V{4});
  EXPECT_EQ(seqs(std::nullopt, kPartnerA, 0), (V{1, 2}));
  EXPECT_EQ(seqs(Id{1}, kPartnerA, 0), V{1});  // only while it belonged to A
  EXPECT_EQ(seqs(Id{1}, kPartnerB, 0), V{4});
  auto first = Read()->ListAudit(AuditQuery{});
  ASSERT_TRUE(first);
  EXPECT_EQ((*first)[0].role, "operator");
  EXPECT_EQ((*first)[0].account, Id{1});
}

TEST_F(AccountsTest, AdminKeyBySecretHashFollowsRotationAndDeletion) {
  PutPartners();
  AdminKey key{Id{3}, AdminRole::kPartner, kPartnerA, Sha256::Of("old"), 0, 0, false};
  Do([&](WriteTxn& txn) { return txn.PutAdminKey(key); });
  EXPECT_EQ(AdminRoleName(key), "partner:" + IdToHex(kPartnerA));
  EXPECT_EQ(AdminRoleName(AdminKey{}), "operator");

  key.secret_sha256 = Sha256::Of("new");
  Do([&](WriteTxn& txn) { return txn.PutAdminKey(key); });
  EXPECT_EQ(*Read()->GetAdminKeyBySecretHash(Sha256::Of("old")), std::nullopt);
  EXPECT_EQ(*Read()->GetAdminKeyBySecretHash(Sha256::Of("new")), key);

  AdminKey twin{Id{4}, AdminRole::kOperator, {}, Sha256::Of("new"), 0, 0, false};
  EXPECT_EQ(KindOf([&](WriteTxn& t) { return t.PutAdminKey(twin); }), ErrorKind::kConflict);
  Do([](WriteTxn& txn) { return txn.DeleteAdminKey(Id{3}); });
  EXPECT_EQ(*Read()->GetAdminKeyBySecretHash(Sha256::Of("new")), std::nullopt);
  Do([&](WriteTxn& txn) { return txn.PutAdminKey(twin); });  // the secret is free again
  EXPECT_EQ(*Read()->GetAdminKeyBySecretHash(Sha256::Of("new")), twin);

  EXPECT_TRUE(AdminKeyUsable(twin, 1000));
  twin.expires_ns = 1000;
  EXPECT_TRUE(AdminKeyUsable(twin, 999));
  EXPECT_FALSE(AdminKeyUsable(twin, 1000));
  twin.expires_ns = 0;
  twin.disabled = true;
  EXPECT_FALSE(AdminKeyUsable(twin, 0));
}

TEST_F(AccountsTest, JobsPersistAndListByAccountAndState) {
  Do([](WriteTxn& txn) -> Status {
    for (uint8_t i = 1; i <= 6; ++i) {
      Job job;
      job.id = Id{i};
      job.kind = i == 6 ? "scrub" : "device_delete";
      job.state = i % 2 ? "scheduled" : "done";
      if (i != 6) job.account = Id{static_cast<uint8_t>(0xa0 + i % 2)};
      job.run_after_ns = i;
      CV_TRY(txn.PutJob(job));
    }
    return {};
  });
  auto list = [&](std::optional<Id> account, std::optional<std::string> state,
                  std::optional<Id> after = std::nullopt, size_t limit = 100) {
    JobQuery q;
    q.account = account;
    q.state = state;
    q.start_after = after;
    q.limit = limit;
    return Ids(*Read()->ListJobs(q));
  };
  using V = std::vector<Id>;
  EXPECT_EQ(list(std::nullopt, std::nullopt), (V{Id{1}, Id{2}, Id{3}, Id{4}, Id{5}, Id{6}}));
  EXPECT_EQ(list(Id{0xa1}, std::nullopt), (V{Id{1}, Id{3}, Id{5}}));
  EXPECT_EQ(list(Id{0xa1}, std::nullopt, Id{1}, 1), V{Id{3}});
  EXPECT_EQ(list(std::nullopt, "done"), (V{Id{2}, Id{4}, Id{6}}));
  EXPECT_EQ(list(std::nullopt, "scheduled", Id{3}), (V{Id{5}}));
  // Reassigned and finished: the account listing follows.
  Do([](WriteTxn& txn) -> Status {
    Job job = **txn.GetJob(Id{1});
    job.account = Id{0xa0};
    job.state = "done";
    job.result_json = R"({"ok":true})";
    return txn.PutJob(job);
  });
  EXPECT_EQ(list(Id{0xa1}, std::nullopt), (V{Id{3}, Id{5}}));
  EXPECT_EQ(list(Id{0xa0}, "done"), (V{Id{1}, Id{2}, Id{4}}));
  Close();
  Open();  // jobs survive restarts
  EXPECT_EQ((*Read()->GetJob(Id{1}))->result_json, R"({"ok":true})");
}

TEST(AccountStatusTest, EffectiveStatusExpiresTrialsOnly) {
  Account a;
  a.status = AccountStatus::kTrial;
  a.expires_ns = 100;
  EXPECT_EQ(EffectiveStatus(a, 99), AccountStatus::kTrial);
  EXPECT_EQ(EffectiveStatus(a, 100), AccountStatus::kExpired);
  a.expires_ns = 0;  // never
  EXPECT_EQ(EffectiveStatus(a, INT64_MAX), AccountStatus::kTrial);
  a.expires_ns = 100;
  for (AccountStatus s :
       {AccountStatus::kActive, AccountStatus::kSuspended, AccountStatus::kExpired}) {
    a.status = s;
    EXPECT_EQ(EffectiveStatus(a, 1000), s);
  }
  for (AccountStatus s : {AccountStatus::kTrial, AccountStatus::kActive, AccountStatus::kExpired,
                          AccountStatus::kSuspended}) {
    EXPECT_EQ(ParseAccountStatus(AccountStatusName(s)), s);
  }
  EXPECT_EQ(ParseAccountStatus("Active"), std::nullopt);
  EXPECT_EQ(ParseAccountStatus(""), std::nullopt);
}

TEST_F(AccountsTest, OpenUpgradesFormatOneByIndexingExistingDevices) {
  Do([](WriteTxn& txn) -> Status {
    CV_TRY(txn.PutDevice(Device(Id{0xd1}, Id{1})));
    return txn.PutDevice(Device(Id{0xd2}, Id{1}));
  });
  Close();
  {  // What a format-1 index looks like: no devices_by_account entries.
    RawEnv raw(dir_);
    auto gone = [](std::optional<std::string>) { return std::optional<std::string>(); };
    raw.Edit("devices_by_account", schema::EncodePairKey(Id{1}, Id{0xd1}), gone);
    raw.Edit("devices_by_account", schema::EncodePairKey(Id{1}, Id{0xd2}), gone);
    raw.Edit("meta", "index_format", [](auto) { return schema::EncodeMeta("1"); });
  }
  Open();
  auto txn = Read();
  EXPECT_EQ(Ids(*txn->ListDevices(Id{1})), (std::vector<Id>{Id{0xd1}, Id{0xd2}}));
  EXPECT_EQ(*txn->GetMeta("index_format"), "5");
}

Sha256Digest TokenHash(uint8_t b) {
  Sha256Digest h{};
  h.fill(b);
  return h;
}

TEST_F(AccountsTest, DeviceFoundByTokenHashFollowsTokenChangesAndRemoval) {
  DeviceRecord a = Device(Id{0xd1}, Id{1}), b = Device(Id{0xd2}, Id{1});
  a.token_hash = TokenHash(0xa1);
  b.token_hash = TokenHash(0xb1);
  Do([&](WriteTxn& txn) -> Status {
    CV_TRY(txn.PutDevice(a));
    return txn.PutDevice(b);
  });
  {
    auto txn = Read();
    EXPECT_EQ((*txn->GetDeviceByTokenHash(TokenHash(0xa1)))->id, Id{0xd1});
    EXPECT_EQ((*txn->GetDeviceByTokenHash(TokenHash(0xb1)))->id, Id{0xd2});
    EXPECT_FALSE(*txn->GetDeviceByTokenHash(TokenHash(0xc1)));
  }
  // A counter update keeps the entry; a rotated token moves it; a removal drops it.
  Do([&](WriteTxn& txn) -> Status {
    a.bytes = 10;
    CV_TRY(txn.PutDevice(a));
    a.token_hash = TokenHash(0xa2);
    CV_TRY(txn.PutDevice(a));
    return txn.DeleteDevice(b.id);
  });
  {
    auto txn = Read();
    EXPECT_FALSE(*txn->GetDeviceByTokenHash(TokenHash(0xa1)));
    EXPECT_EQ((*txn->GetDeviceByTokenHash(TokenHash(0xa2)))->id, Id{0xd1});
    EXPECT_FALSE(*txn->GetDeviceByTokenHash(TokenHash(0xb1)));
  }
  EXPECT_EQ(Check(), std::vector<std::string>{});
  // fsck notices a device whose token entry is gone.
  Close();
  {
    RawEnv raw(dir_);
    std::string key(32, char(0xa2));
    key += schema::EncodeIdKey(Id{0xd1});
    raw.Edit("devices_by_token", key, [](auto) { return std::optional<std::string>(); });
  }
  Open();
  auto problems = Check();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("devices_by_token"), std::string::npos) << problems[0];
}

TEST_F(AccountsTest, OpenUpgradesFormatThreeByIndexingTokens) {
  DeviceRecord a = Device(Id{0xd1}, Id{1});
  a.token_hash = TokenHash(0xa1);
  Do([&](WriteTxn& txn) { return txn.PutDevice(a); });
  Close();
  {  // What a format-3 index looks like: no devices_by_token.
    RawEnv raw(dir_);
    std::string key(32, char(0xa1));
    key += schema::EncodeIdKey(Id{0xd1});
    raw.Edit("devices_by_token", key, [](auto) { return std::optional<std::string>(); });
    raw.Edit("meta", "index_format", [](auto) { return schema::EncodeMeta("3"); });
  }
  {
    Open();
    auto txn = Read();
    EXPECT_EQ((*txn->GetDeviceByTokenHash(TokenHash(0xa1)))->id, Id{0xd1});
    EXPECT_EQ(*txn->GetMeta("index_format"), "5");
    txn.reset();
    EXPECT_EQ(Check(), std::vector<std::string>{});
  }
  Close();
  {  // Stray entries: one names a device with another token, one a device that does not exist
     // and sorts before the real entry of its hash; and a malformed one (a device id of one
     // byte), also before the real entry.
    RawEnv raw(dir_);
    std::string key(32, char(0xee));
    key += schema::EncodeIdKey(Id{0xd1});
    raw.Edit("devices_by_token", key, [](auto) { return std::optional<std::string>(""); });
    std::string before_real = std::string(32, char(0xa1)) + schema::EncodeIdKey(Id{0x01});
    raw.Edit("devices_by_token", before_real, [](auto) { return std::optional<std::string>(""); });
    std::string malformed = std::string(32, char(0xa1)) + std::string(1, '\0');
    raw.Edit("devices_by_token", malformed, [](auto) { return std::optional<std::string>(""); });
  }
  Open();
  // Neither a stray nor a malformed entry logs anyone in, or hides the real device behind it.
  auto stray = Read()->GetDeviceByTokenHash(TokenHash(0xee));
  ASSERT_TRUE(stray.has_value()) << stray.error().ToString();
  EXPECT_FALSE(stray->has_value());
  auto real = Read()->GetDeviceByTokenHash(TokenHash(0xa1));
  ASSERT_TRUE(real.has_value()) << real.error().ToString();
  ASSERT_TRUE(real->has_value());
  EXPECT_EQ((*real)->id, Id{0xd1});
  // fsck names all three.
  auto problems = Check();
  ASSERT_EQ(problems.size(), 3u) << ::testing::PrintToString(problems);
  EXPECT_EQ(std::count_if(problems.begin(), problems.end(),
                          [](const std::string& p) { return p.find("stray entry") != std::string::npos; }),
            2);
  EXPECT_EQ(std::count_if(problems.begin(), problems.end(),
                          [](const std::string& p) { return p.find("malformed entry") != std::string::npos; }),
            1);
}

// What a purge does to a device of an account: the device goes, and its agent's old token is
// remembered (admin/jobs/purge.cc).
PurgedDevice Purge(WriteTxn& txn, const DeviceRecord& d, Status* st) {
  PurgedDevice p{d.id, d.account, d.token_hash, 77, Id{0x10, d.id[0]}};
  *st = txn.DeleteDevice(d.id);
  if (*st) *st = txn.PutPurgedDevice(p);
  return p;
}

TEST_F(AccountsTest, PurgedDeviceIsFoundOnlyByItsLastTokenAndForgottenWithItsAccount) {
  PutPartners();
  DeviceRecord gone = Device(Id{0xd1}, Id{1}), kept = Device(Id{0xd2}, Id{1}),
               elsewhere = Device(Id{0xd3}, Id{2});
  gone.token_hash = TokenHash(0xa1);
  kept.token_hash = TokenHash(0xb1);
  elsewhere.token_hash = TokenHash(0xc1);
  Do([&](WriteTxn& txn) -> Status {
    CV_TRY(txn.PutAccount(MakeAccount(Id{1}, kPartnerA)));
    CV_TRY(txn.PutAccount(MakeAccount(Id{2}, kPartnerB)));
    for (const DeviceRecord* d : {&gone, &kept, &elsewhere}) CV_TRY(txn.PutDevice(*d));
    return {};
  });
  PurgedDevice purged, purged_elsewhere;
  Do([&](WriteTxn& txn) -> Status {
    Status st;
    purged = Purge(txn, gone, &st);
    CV_TRY(st);
    purged_elsewhere = Purge(txn, elsewhere, &st);
    return st;
  });
  {
    auto txn = Read();
    EXPECT_EQ(*txn->GetPurgedDevice(TokenHash(0xa1), Id{0xd1}), purged);      // Basic
    EXPECT_EQ(*txn->GetPurgedDevice(TokenHash(0xa1), std::nullopt), purged);  // Bearer
    // Any other token on its id, or its token on another id, finds nothing.
    EXPECT_EQ(*txn->GetPurgedDevice(TokenHash(0xa2), Id{0xd1}), std::nullopt);
    EXPECT_EQ(*txn->GetPurgedDevice(TokenHash(0xb1), Id{0xd1}), std::nullopt);
    EXPECT_EQ(*txn->GetPurgedDevice(TokenHash(0xa2), std::nullopt), std::nullopt);
    EXPECT_EQ(*txn->GetPurgedDevice(TokenHash(0xa1), Id{0xd2}), std::nullopt);
    EXPECT_EQ(*txn->ListPurgedDevices(Id{1}), std::vector<PurgedDevice>{purged});
    EXPECT_EQ(*txn->ListPurgedDevices(Id{2}), std::vector<PurgedDevice>{purged_elsewhere});
    EXPECT_FALSE(*txn->GetDeviceByTokenHash(TokenHash(0xa1)));
  }
  EXPECT_EQ(Check(), std::vector<std::string>{});

  // Only a device that is gone, of an account that will forget it.
  PurgedDevice orphan{Id{0xd9}, Id{9}, TokenHash(0xe1), 1, Id{}};
  EXPECT_EQ(KindOf([&](WriteTxn& t) { return t.PutPurgedDevice(orphan); }), ErrorKind::kNotFound);
  PurgedDevice still_there{Id{0xd2}, Id{1}, TokenHash(0xb1), 1, Id{}};
  EXPECT_EQ(KindOf([&](WriteTxn& t) { return t.PutPurgedDevice(still_there); }),
            ErrorKind::kConflict);
  EXPECT_EQ(*Read()->ListPurgedDevices(Id{1}), std::vector<PurgedDevice>{purged});

  // The account purge: its last device goes (remembered too), then the account, which
  // forgets both; the other account's purged device stays.
  EXPECT_EQ(KindOf([](WriteTxn& t) { return t.DeleteAccount(Id{1}); }), ErrorKind::kConflict);
  EXPECT_EQ(*Read()->GetPurgedDevice(TokenHash(0xa1), Id{0xd1}), purged);
  Do([&](WriteTxn& txn) -> Status {
    Status st;
    Purge(txn, kept, &st);
    CV_TRY(st);
    return txn.DeleteAccount(Id{1});
  });
  {
    auto txn = Read();
    EXPECT_EQ(*txn->GetPurgedDevice(TokenHash(0xa1), Id{0xd1}), std::nullopt);
    EXPECT_EQ(*txn->GetPurgedDevice(TokenHash(0xa1), std::nullopt), std::nullopt);
    EXPECT_EQ(*txn->GetPurgedDevice(TokenHash(0xb1), Id{0xd2}), std::nullopt);
    EXPECT_EQ(*txn->ListPurgedDevices(Id{1}), std::vector<PurgedDevice>{});
    EXPECT_EQ(*txn->GetPurgedDevice(TokenHash(0xc1), Id{0xd3}), purged_elsewhere);
  }
  EXPECT_EQ(Check(), std::vector<std::string>{});
  // And survives a reopen.
  Close();
  Open();
  EXPECT_EQ(*Read()->ListPurgedDevices(Id{2}), std::vector<PurgedDevice>{purged_elsewhere});
}

TEST_F(AccountsTest, CheckAccountsNamesPurgedDevicesItCannotForget) {
  DeviceRecord a = Device(Id{0xd1}, Id{1}), b = Device(Id{0xd2}, Id{1});
  a.token_hash = TokenHash(0xa1);
  b.token_hash = TokenHash(0xb1);
  Do([&](WriteTxn& txn) -> Status {
    CV_TRY(txn.PutAccount(MakeAccount(Id{1}, std::nullopt)));
    CV_TRY(txn.PutDevice(a));
    CV_TRY(txn.PutDevice(b));
    Status st;
    Purge(txn, a, &st);
    CV_TRY(st);
    Purge(txn, b, &st);
    return st;
  });
  EXPECT_EQ(Check(), std::vector<std::string>{});
  const std::string key_a = std::string(32, char(0xa1)) + schema::EncodeIdKey(Id{0xd1});
  const std::string key_b = std::string(32, char(0xb1)) + schema::EncodeIdKey(Id{0xd2});
  Close();
  {  // A record of an account that does not exist, and one missing from its account's listing.
    RawEnv raw(dir_);
    const PurgedDevice stray{Id{0xd9}, Id{9}, TokenHash(0xe1), 1, Id{}};
    raw.Edit("purged_devices", std::string(32, char(0xe1)) + schema::EncodeIdKey(Id{0xd9}),
             [&](auto) { return schema::EncodePurgedDevice(stray); });
    raw.Edit("purged_devices_by_account", schema::EncodePairKey(Id{1}, Id{0xd2}),
             [](auto) { return std::optional<std::string>(); });
  }
  Open();
  auto problems = Check();
  ASSERT_EQ(problems.size(), 2u) << ::testing::PrintToString(problems);
  EXPECT_NE(problems[0].find("missing from its listing"), std::string::npos) << problems[0];
  EXPECT_NE(problems[0].find(IdToHex(Id{0xd2})), std::string::npos) << problems[0];
  EXPECT_NE(problems[1].find("has no record"), std::string::npos) << problems[1];
  EXPECT_NE(problems[1].find(IdToHex(Id{0xd9})), std::string::npos) << problems[1];
  Close();
  {  // A damaged record, and a record under another key than its own.
    RawEnv raw(dir_);
    raw.Flip("purged_devices", key_a);
    const PurgedDevice misfiled{Id{0xd2}, Id{1}, TokenHash(0xb2), 77, Id{}};
    raw.Edit("purged_devices", key_b, [&](auto) { return schema::EncodePurgedDevice(misfiled); });
  }
  Open();
  auto txn = Read();
  EXPECT_EQ(txn->GetPurgedDevice(TokenHash(0xa1), Id{0xd1}).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->GetPurgedDevice(TokenHash(0xa1), std::nullopt).error().kind,
            ErrorKind::kCorruption);
  EXPECT_EQ(txn->GetPurgedDevice(TokenHash(0xb1), Id{0xd2}).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->ListPurgedDevices(Id{1}).error().kind, ErrorKind::kCorruption);
  txn.reset();
  problems = Check();
  EXPECT_FALSE(problems.empty());
  for (const auto& p : problems) EXPECT_NE(p.find("purged"), std::string::npos) << p;
  // The account cannot be removed over damage it would leave behind.
  EXPECT_EQ(KindOf([](WriteTxn& t) { return t.DeleteAccount(Id{1}); }), ErrorKind::kCorruption);
}

}  // namespace
}  // namespace cv::index
