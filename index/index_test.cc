#include "index/index.h"

#include <gtest/gtest.h>
#include <lmdb.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <latch>
#include <map>
#include <set>
#include <thread>

#include "index/schema.h"

namespace cv::index {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

const Id kDevA = Id{0x01};
const Id kDevB = Id{0x02};

ObjectRecord Obj(uint64_t size, size_t shards = 6, int64_t created_ns = 1000) {
  ObjectRecord rec;
  rec.size = size;
  rec.created_ns = created_ns;
  rec.layout = Layout::kErasure;
  rec.k = 4;
  rec.m = 2;
  rec.shard_unit = 4096;
  rec.sha256[0] = static_cast<uint8_t>(size);
  for (size_t i = 0; i < shards; ++i) {
    rec.shards.push_back(
        ShardLoc{static_cast<uint16_t>(i % 6), static_cast<uint32_t>(i), size + i});
  }
  return rec;
}

DeviceRecord Device(const Id& id) {
  DeviceRecord rec;
  rec.id = id;
  rec.account = Id{0xac};
  rec.name = "dev-" + IdToHex(id).substr(0, 4);
  return rec;
}

// Opens the environment directly, bypassing Index: to count commits and to damage values.
// Only while no Index has the directory open.
class RawEnv {
 public:
  explicit RawEnv(const std::string& dir) {
    EXPECT_EQ(mdb_env_create(&env_), 0);
    EXPECT_EQ(mdb_env_set_maxdbs(env_, 32), 0);
    EXPECT_EQ(mdb_env_open(env_, dir.c_str(), MDB_NOTLS, 0600), 0);
  }
  ~RawEnv() { mdb_env_close(env_); }

  uint64_t LastTxnId() {
    MDB_envinfo info{};
    mdb_env_info(env_, &info);
    return info.me_last_txnid;
  }

  void Rewrite(const char* db, const std::string& key,
               const std::function<void(std::string&)>& edit) {
    MDB_txn* txn = nullptr;
    ASSERT_EQ(mdb_txn_begin(env_, nullptr, 0, &txn), 0);
    MDB_dbi dbi = 0;
    ASSERT_EQ(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k{key.size(), const_cast<char*>(key.data())}, v{};
    ASSERT_EQ(mdb_get(txn, dbi, &k, &v), 0);
    std::string value(static_cast<const char*>(v.mv_data), v.mv_size);
    edit(value);
    MDB_val nv{value.size(), value.data()};
    ASSERT_EQ(mdb_put(txn, dbi, &k, &nv, 0), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
  }

 private:
  MDB_env* env_ = nullptr;
};

class IndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetLogLevel(LogLevel::kWarn);  // map growth logs at info
    std::string tmpl = ::testing::TempDir() + "cv_index_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/index";
  }
  void TearDown() override { fs::remove_all(root_); }

  std::unique_ptr<Index> OpenIndex(uint64_t initial = 1 << 20, uint64_t max = 1ull << 30,
                                   std::string dir = "") {
    auto index = Index::Open({dir.empty() ? dir_ : dir, initial, max});
    EXPECT_TRUE(index) << index.error().ToString();
    return index ? std::move(*index) : nullptr;
  }

  static Status Put(Index& index, const ObjectKey& key, const ObjectRecord& rec) {
    return index.Update([&](WriteTxn& txn) { return txn.PutObject(key, rec); });
  }

  static std::optional<ObjectRecord> Get(Index& index, const ObjectKey& key) {
    auto txn = index.BeginRead();
    EXPECT_TRUE(txn);
    auto rec = (*txn)->GetObject(key);
    EXPECT_TRUE(rec) << rec.error().ToString();
    return rec ? *rec : std::nullopt;
  }

  static DeviceRecord GetDevice(Index& index, const Id& id) {
    auto txn = index.BeginRead();
    auto rec = (*txn)->GetDevice(id);
    EXPECT_TRUE(rec && *rec);
    return rec && *rec ? **rec : DeviceRecord{};
  }

  std::string root_;
  std::string dir_;
};

std::vector<std::string> Names(const std::vector<std::pair<ObjectKey, ObjectRecord>>& list) {
  std::vector<std::string> out;
  for (const auto& [key, rec] : list) out.push_back(key.name);
  return out;
}

TEST_F(IndexTest, ListObjectsOrdersByDeviceTypeNameWithStartAfterAndLimit) {
  auto index = OpenIndex();
  ASSERT_TRUE(index->Update([](WriteTxn& txn) -> Status {
    // Inserted out of order, across two devices and three types.
    for (const Id& dev : {kDevB, kDevA}) {
      for (ObjectType type : {ObjectType::kKeys, ObjectType::kData, ObjectType::kConfig}) {
        for (const char* name : {"d", "b", "e", "a", "c", "ab"}) {
          CV_TRY(txn.PutObject(ObjectKey{dev, type, name}, Obj(1)));
        }
      }
    }
    return {};
  }));
  auto txn = *index->BeginRead();
  using V = std::vector<std::string>;

  auto all_data = txn->ListObjects(kDevA, ObjectType::kData, "", 100);
  ASSERT_TRUE(all_data);
  EXPECT_EQ(Names(*all_data), (V{"a", "ab", "b", "c", "d", "e"}));
  for (const auto& [key, rec] : *all_data) {
    EXPECT_EQ(key.device, kDevA);
    EXPECT_EQ(key.type, ObjectType::kData);
  }

  auto page = txn->ListObjects(kDevA, ObjectType::kData, "ab", 2);
  ASSERT_TRUE(page);
  EXPECT_EQ(Names(*page), (V{"b", "c"}));
  // start_after need not be an existing name.
  EXPECT_EQ(Names(*txn->ListObjects(kDevA, ObjectType::kData, "bb", 100)), (V{"c", "d", "e"}));
  EXPECT_TRUE(txn->ListObjects(kDevA, ObjectType::kData, "e", 100)->empty());
  EXPECT_TRUE(txn->ListObjects(kDevA, ObjectType::kData, "", 0)->empty());
  EXPECT_TRUE(txn->ListObjects(kDevA, ObjectType::kLocks, "", 100)->empty());

  // Paging with a small limit yields every name once, in order.
  V paged;
  std::string after;
  for (;;) {
    auto next = txn->ListObjects(kDevB, ObjectType::kKeys, after, 4);
    ASSERT_TRUE(next);
    if (next->empty()) break;
    for (auto& name : Names(*next)) paged.push_back(name);
    after = paged.back();
  }
  EXPECT_EQ(paged, (V{"a", "ab", "b", "c", "d", "e"}));

  // Without a type: every type of the device, config (1) < data (2) < keys (3).
  auto every = txn->ListObjects(kDevA, std::nullopt, "", 100);
  ASSERT_TRUE(every);
  ASSERT_EQ(every->size(), 18u);
  EXPECT_EQ((*every)[0].first.type, ObjectType::kConfig);
  EXPECT_EQ((*every)[6].first.type, ObjectType::kData);
  EXPECT_EQ((*every)[17].first, (ObjectKey{kDevA, ObjectType::kKeys, "e"}));
  EXPECT_EQ(txn->ListObjects(kDevA, std::nullopt, "a", 10).error().kind,
            ErrorKind::kInvalidArgument);

  // ForEachObject: all of device A, then all of device B, each in (type, name) order.
  std::vector<ObjectKey> seen;
  ASSERT_TRUE(txn->ForEachObject([&](const ObjectKey& key, const ObjectRecord&) {
    seen.push_back(key);
    return true;
  }));
  ASSERT_EQ(seen.size(), 36u);
  EXPECT_EQ(seen.front(), (ObjectKey{kDevA, ObjectType::kConfig, "a"}));
  EXPECT_EQ(seen[18], (ObjectKey{kDevB, ObjectType::kConfig, "a"}));
  EXPECT_EQ(seen.back(), (ObjectKey{kDevB, ObjectType::kKeys, "e"}));
  size_t visited = 0;
  ASSERT_TRUE(
      txn->ForEachObject([&](const ObjectKey&, const ObjectRecord&) { return ++visited < 5; }));
  EXPECT_EQ(visited, 5u);
  // Paged: after each key the rest, in order; after a key that is absent, from the next one.
  for (size_t from : {size_t{0}, size_t{17}, size_t{18}, size_t{35}}) {
    std::vector<ObjectKey> rest;
    ASSERT_TRUE(txn->ForEachObjectAfter(&seen[from], [&](const ObjectKey& key, const ObjectRecord&) {
      rest.push_back(key);
      return true;
    }));
    EXPECT_EQ(rest, std::vector<ObjectKey>(seen.begin() + from + 1, seen.end())) << from;
  }
  ObjectKey absent{kDevA, ObjectType::kData, "zz"};
  std::vector<ObjectKey> rest;
  ASSERT_TRUE(txn->ForEachObjectAfter(&absent, [&](const ObjectKey& key, const ObjectRecord&) {
    rest.push_back(key);
    return true;
  }));
  ASSERT_FALSE(rest.empty());
  EXPECT_FALSE(std::tie(rest.front().device, rest.front().type, rest.front().name) <
               std::tie(absent.device, absent.type, absent.name));
}

TEST_F(IndexTest, DeleteDeviceObjectsRemovesABatchAndCountsItOnce) {
  auto index = OpenIndex();
  ASSERT_TRUE(index->Update([&](WriteTxn& txn) -> Status {
    Account acct;
    acct.id = Id{0xac};
    CV_TRY(txn.PutAccount(acct));
    CV_TRY(txn.PutDevice(Device(kDevA)));
    CV_TRY(txn.PutDevice(Device(kDevB)));
    for (int i = 0; i < 10; ++i) {
      CV_TRY(txn.PutObject(ObjectKey{kDevA, ObjectType::kData, "a" + std::to_string(i)}, Obj(100 + i)));
    }
    return txn.PutObject(ObjectKey{kDevB, ObjectType::kData, "b"}, Obj(7));
  }));
  std::vector<std::string> seen;
  uint64_t seen_bytes = 0;
  auto batch = [&](size_t limit) {
    Result<uint64_t> n = 0;
    EXPECT_TRUE(index->Update([&](WriteTxn& txn) -> Status {
      seen.clear();
      seen_bytes = 0;
      n = txn.DeleteDeviceObjects(kDevA, limit, [&](const ObjectKey& k, const ObjectRecord& r) -> Status {
        EXPECT_EQ(k.device, kDevA);
        seen.push_back(k.name);
        seen_bytes += r.size;
        return {};
      });
      return n ? Status{} : tl::unexpected(n.error());
    }));
    return n.value_or(999);
  };
  EXPECT_EQ(batch(4), 4u);
  EXPECT_EQ(seen, (std::vector<std::string>{"a0", "a1", "a2", "a3"}));
  auto txn = *index->BeginRead();
  auto a = **txn->GetDevice(kDevA);
  EXPECT_EQ(a.objects, 6u);
  EXPECT_EQ(a.bytes, 1045u - seen_bytes);
  auto acct = **txn->GetAccount(Id{0xac});
  EXPECT_EQ(acct.objects, 7u);  // the account follows its devices
  txn.reset();
  EXPECT_EQ(batch(100), 6u);
  EXPECT_EQ(batch(100), 0u);
  txn = *index->BeginRead();
  EXPECT_EQ((**txn->GetDevice(kDevA)).objects, 0u);
  EXPECT_EQ((**txn->GetDevice(kDevA)).bytes, 0u);
  EXPECT_EQ((**txn->GetDevice(kDevB)).objects, 1u);  // another device: untouched
  EXPECT_TRUE(txn->GetObject(ObjectKey{kDevB, ObjectType::kData, "b"})->has_value());
  auto problems = CheckAccounts(*txn);
  ASSERT_TRUE(problems.has_value());
  EXPECT_TRUE(problems->empty());
}

TEST_F(IndexTest, RecordsRoundTripAndDeletesReportMisses) {
  auto index = OpenIndex();
  const ObjectKey key{kDevA, ObjectType::kSnapshots, std::string(kMaxNameBytes, 'f')};
  const ObjectRecord object = Obj(77, 30);
  const DeviceRecord device = Device(kDevB);
  ASSERT_TRUE(index->Update([&](WriteTxn& txn) -> Status {
    CV_TRY(txn.PutObject(key, object));
    CV_TRY(txn.PutExtent(2, 1, ExtentRecord{10, 5, 1}));
    CV_TRY(txn.PutExtent(1, 300, ExtentRecord{20, 0, 0}));
    CV_TRY(txn.PutExtent(1, 2, ExtentRecord{30, 0, 0}));
    CV_TRY(txn.PutDevice(device));
    CV_TRY(txn.PutMeta("cluster", "eu-1"));
    // A transaction reads its own writes.
    auto back = txn.GetObject(key);
    if (!back || !*back || **back != object) return Err(ErrorKind::kInternal, "read own write");
    return {};
  }));
  {
    auto txn = *index->BeginRead();
    EXPECT_EQ(*txn->GetObject(key), object);
    EXPECT_EQ(*txn->GetDevice(kDevB), device);
    EXPECT_EQ(*txn->GetMeta("cluster"), "eu-1");
    EXPECT_EQ(*txn->GetMeta("index_format"), "5");
    EXPECT_EQ(*txn->GetExtent(2, 1), (ExtentRecord{10, 5, 1}));
    EXPECT_EQ(*txn->GetObject(ObjectKey{kDevA, ObjectType::kData, "nope"}), std::nullopt);
    EXPECT_EQ(*txn->GetExtent(9, 9), std::nullopt);
    EXPECT_EQ(*txn->GetDevice(kDevA), std::nullopt);
    EXPECT_EQ(*txn->GetMeta("nope"), std::nullopt);
    std::vector<std::pair<uint16_t, uint32_t>> extents;
    ASSERT_TRUE(txn->ForEachExtent([&](uint16_t disk, uint32_t extent, const ExtentRecord&) {
      extents.emplace_back(disk, extent);
      return true;
    }));
    EXPECT_EQ(extents, (std::vector<std::pair<uint16_t, uint32_t>>{{1, 2}, {1, 300}, {2, 1}}));
    std::vector<DeviceRecord> devices;
    ASSERT_TRUE(txn->ForEachDevice([&](const DeviceRecord& d) {
      devices.push_back(d);
      return true;
    }));
    EXPECT_EQ(devices, std::vector<DeviceRecord>{device});
  }

  auto kind_of = [&](const std::function<Status(WriteTxn&)>& fn) {
    Status st = index->Update(fn);
    return st ? std::optional<ErrorKind>() : st.error().kind;
  };
  EXPECT_EQ(kind_of([](WriteTxn& t) {
              return t.DeleteObject({kDevA, ObjectType::kData, "x"});
            }),
            ErrorKind::kNotFound);
  EXPECT_EQ(kind_of([](WriteTxn& t) { return t.DeleteExtent(9, 9); }), ErrorKind::kNotFound);
  EXPECT_EQ(kind_of([](WriteTxn& t) { return t.DeleteDevice(kDevA); }), ErrorKind::kNotFound);
  EXPECT_EQ(
      kind_of([&](WriteTxn& t) {
        return t.PutObject({kDevA, ObjectType::kData, std::string(kMaxNameBytes + 1, 'x')}, Obj(1));
      }),
      ErrorKind::kInvalidArgument);
  EXPECT_EQ(kind_of([](WriteTxn& t) { return t.PutMeta("", "x"); }), ErrorKind::kInvalidArgument);
  EXPECT_EQ(kind_of([&](WriteTxn& t) -> Status {
              CV_TRY(t.DeleteObject(key));
              CV_TRY(t.DeleteExtent(2, 1));
              return t.DeleteDevice(kDevB);
            }),
            std::nullopt);
  auto txn = *index->BeginRead();
  EXPECT_EQ(*txn->GetObject(key), std::nullopt);
  EXPECT_EQ(*txn->GetExtent(2, 1), std::nullopt);
  EXPECT_EQ(*txn->GetDevice(kDevB), std::nullopt);
}

TEST_F(IndexTest, ReadTxnIsASnapshot) {
  auto index = OpenIndex();
  const ObjectKey key{kDevA, ObjectType::kData, "k"};
  ASSERT_TRUE(Put(*index, key, Obj(1)));
  auto before = *index->BeginRead();
  ASSERT_TRUE(Put(*index, key, Obj(2)));
  EXPECT_EQ((*before->GetObject(key))->size, 1u);
  EXPECT_EQ(Get(*index, key)->size, 2u);
}

TEST_F(IndexTest, DataSurvivesCloseAndReopen) {
  const ObjectKey key{kDevA, ObjectType::kIndex, "abc"};
  {
    auto index = OpenIndex();
    ASSERT_TRUE(index->Update([&](WriteTxn& txn) -> Status {
      CV_TRY(txn.PutDevice(Device(kDevA)));
      CV_TRY(txn.PutObject(key, Obj(500)));
      CV_TRY(txn.PutExtent(3, 4, ExtentRecord{1, 2, 3}));
      return txn.PutMeta("m", "v");
    }));
  }
  auto index = OpenIndex();
  EXPECT_EQ(Get(*index, key), Obj(500));
  DeviceRecord device = GetDevice(*index, kDevA);
  EXPECT_EQ(device.bytes, 500u);
  EXPECT_EQ(device.objects, 1u);
  auto txn = *index->BeginRead();
  EXPECT_EQ(*txn->GetExtent(3, 4), (ExtentRecord{1, 2, 3}));
  EXPECT_EQ(*txn->GetMeta("m"), "v");
}

TEST_F(IndexTest, FlippedByteInStoredValueIsCorruption) {
  const ObjectKey key{kDevA, ObjectType::kData, "victim"};
  const ObjectKey other{kDevA, ObjectType::kData, "bystander"};
  {
    auto index = OpenIndex();
    ASSERT_TRUE(Put(*index, key, Obj(10)));
    ASSERT_TRUE(Put(*index, other, Obj(11)));
  }
  RawEnv(dir_).Rewrite("objects", *schema::EncodeObjectKey(key),
                       [](std::string& v) { v[v.size() / 2] ^= 0x10; });
  auto index = OpenIndex();
  auto txn = *index->BeginRead();
  auto got = txn->GetObject(key);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().kind, ErrorKind::kCorruption);
  EXPECT_NE(got.error().context.find("victim"), std::string::npos) << got.error().ToString();
  EXPECT_EQ(txn->ListObjects(kDevA, ObjectType::kData, "", 10).error().kind,
            ErrorKind::kCorruption);
  EXPECT_EQ(txn->ForEachObject([](auto&, auto&) { return true; }).error().kind,
            ErrorKind::kCorruption);
  EXPECT_EQ(*txn->GetObject(other), Obj(11));  // the damage stays local
  // Replacing or deleting needs the old size: refused rather than miscounted.
  EXPECT_EQ(Put(*index, key, Obj(12)).error().kind, ErrorKind::kCorruption);
}

TEST_F(IndexTest, TruncatedStoredValuesAreCorruption) {
  {
    auto index = OpenIndex();
    ASSERT_TRUE(index->Update([](WriteTxn& txn) -> Status {
      CV_TRY(txn.PutDevice(Device(kDevA)));
      CV_TRY(txn.PutExtent(1, 1, ExtentRecord{1, 1, 1}));
      return txn.PutMeta("m", "value");
    }));
  }
  {
    RawEnv raw(dir_);
    auto chop = [](std::string& v) { v.resize(v.size() - 3); };
    raw.Rewrite("devices", schema::EncodeDeviceKey(kDevA), chop);
    raw.Rewrite("extents", schema::EncodeExtentKey(1, 1), chop);
    raw.Rewrite("meta", "m", [](std::string& v) { v.resize(4); });
  }
  auto index = OpenIndex();
  auto txn = *index->BeginRead();
  EXPECT_EQ(txn->GetDevice(kDevA).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->ForEachDevice([](auto&) { return true; }).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->GetExtent(1, 1).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(txn->ForEachExtent([](auto, auto, auto&) { return true; }).error().kind,
            ErrorKind::kCorruption);
  EXPECT_EQ(txn->GetMeta("m").error().kind, ErrorKind::kCorruption);
}

TEST_F(IndexTest, MapGrowsFromTinyInitialSize) {
  auto index = OpenIndex(64 << 10, 1ull << 30);
  EXPECT_EQ(index->MapBytes(), 64u << 10);
  constexpr int kUpdates = 100, kPerUpdate = 20;  // ~3 MB of 1.4 KB values
  for (int u = 0; u < kUpdates; ++u) {
    Status st = index->Update([&](WriteTxn& txn) -> Status {
      for (int i = 0; i < kPerUpdate; ++i) {
        CV_TRY(txn.PutObject(ObjectKey{kDevA, ObjectType::kData, std::to_string(u * 1000 + i)},
                             Obj(u * 1000 + i, 100)));
      }
      return {};
    });
    ASSERT_TRUE(st) << st.error().ToString();
  }
  EXPECT_GE(index->MapBytes(), 2u << 20);
  size_t count = 0;
  ASSERT_TRUE((*index->BeginRead())->ForEachObject([&](const ObjectKey& k, const ObjectRecord& r) {
    EXPECT_EQ(std::to_string(r.size), k.name);
    ++count;
    return true;
  }));
  EXPECT_EQ(count, size_t{kUpdates * kPerUpdate});

  // Reopened with the same tiny setting, the map covers the data and grows again on demand.
  index.reset();
  index = OpenIndex(64 << 10, 1ull << 30);
  EXPECT_GE(index->MapBytes(), 2u << 20);
  ASSERT_TRUE(Put(*index, ObjectKey{kDevA, ObjectType::kData, "after"}, Obj(1, 100)));
}

TEST_F(IndexTest, MaxMapBytesGivesNoSpaceAndKeepsEarlierData) {
  constexpr uint64_t kMax = 256 << 10;
  auto index = OpenIndex(64 << 10, kMax);
  ASSERT_TRUE(index->Update([](WriteTxn& txn) { return txn.PutDevice(Device(kDevA)); }));
  int acked = 0;
  Status st;
  for (; acked < 2000; ++acked) {
    st = Put(*index, ObjectKey{kDevA, ObjectType::kData, std::to_string(acked)}, Obj(1, 100));
    if (!st) break;
  }
  ASSERT_FALSE(st) << "never filled the map";
  EXPECT_EQ(st.error().kind, ErrorKind::kNoSpace) << st.error().ToString();
  // Clients are told it is the index, not a data disk, that is full (a 507 shows this).
  EXPECT_NE(st.error().public_message.find("the node's index is full"), std::string::npos)
      << st.error().public_message;
  EXPECT_NE(st.error().public_message.find(std::to_string(kMax)), std::string::npos);
  EXPECT_EQ(index->MapBytes(), kMax);
  EXPECT_GT(acked, 10);

  auto check = [&](Index& idx) {
    auto txn = *idx.BeginRead();
    auto list = txn->ListObjects(kDevA, ObjectType::kData, "", 10000);
    ASSERT_TRUE(list);
    EXPECT_EQ(list->size(), size_t(acked));
    auto device = *txn->GetDevice(kDevA);
    EXPECT_EQ(device->objects, uint64_t(acked));  // the failed put left no trace
  };
  check(*index);
  index.reset();
  index = OpenIndex(64 << 10, kMax);
  check(*index);
}

TEST_F(IndexTest, AtMaxMapOnlyTheFnThatOverflowsGetsNoSpaceAndItsGroupCommits) {
  auto index = OpenIndex(64 << 10, 256 << 10);
  constexpr int kSmall = 6;
  std::latch started(kSmall + 1);
  std::thread blocker([&] {
    ASSERT_TRUE(index->Update([&](WriteTxn& txn) {
      started.wait();
      std::this_thread::sleep_for(200ms);
      return txn.PutMeta("blocker", "1");
    }));
  });
  std::this_thread::sleep_for(50ms);
  Status big;
  std::vector<Status> small(kSmall);
  std::vector<std::thread> threads;
  threads.emplace_back([&] {
    started.count_down();
    big = index->Update([](WriteTxn& txn) -> Status {  // ~1.4 MB: more than the maximum
      for (int i = 0; i < 1000; ++i) {
        CV_TRY(txn.PutObject(ObjectKey{kDevA, ObjectType::kIndex, std::to_string(i)}, Obj(i, 100)));
      }
      return {};
    });
  });
  for (int i = 0; i < kSmall; ++i) {
    threads.emplace_back([&, i] {
      started.count_down();
      small[i] = Put(*index, ObjectKey{kDevA, ObjectType::kData, std::to_string(i)}, Obj(i));
    });
  }
  blocker.join();
  for (auto& th : threads) th.join();
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().kind, ErrorKind::kNoSpace);
  EXPECT_EQ(index->MapBytes(), 256u << 10);
  auto txn = *index->BeginRead();
  for (int i = 0; i < kSmall; ++i) {
    EXPECT_TRUE(small[i]) << small[i].error().ToString();
    EXPECT_EQ(*txn->GetObject(ObjectKey{kDevA, ObjectType::kData, std::to_string(i)}), Obj(i));
  }
  EXPECT_TRUE(txn->ListObjects(kDevA, ObjectType::kIndex, "", 10)->empty());
}

TEST_F(IndexTest, ConcurrentUpdatesAreAllPresentAndGroupedIntoFewerCommits) {
  OpenIndex().reset();
  const uint64_t txn_before = RawEnv(dir_).LastTxnId();
  constexpr int kThreads = 8, kPerThread = 200;
  {
    auto index = OpenIndex();
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          std::string name = std::to_string(t) + "-" + std::to_string(i);
          if (!Put(*index, ObjectKey{kDevA, ObjectType::kData, name}, Obj(i))) ++failures;
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(failures.load(), 0);
    auto list = (*index->BeginRead())->ListObjects(kDevA, ObjectType::kData, "", 100000);
    ASSERT_TRUE(list);
    EXPECT_EQ(list->size(), size_t{kThreads * kPerThread});
  }
  const uint64_t commits = RawEnv(dir_).LastTxnId() - txn_before;
  std::cout << "[ info ] " << kThreads * kPerThread << " updates, " << commits << " LMDB commits\n";
  EXPECT_LT(commits, uint64_t{kThreads * kPerThread});
  EXPECT_GT(commits, 0u);
}

TEST_F(IndexTest, FailingFnInAGroupRollsBackOnlyItsOwnChanges) {
  {
    auto index = OpenIndex();
    ASSERT_TRUE(index->Update([](WriteTxn& txn) { return txn.PutDevice(Device(kDevA)); }));
  }
  const uint64_t txn_before = RawEnv(dir_).LastTxnId();
  auto index = OpenIndex();
  constexpr int kOthers = 12;
  std::latch started(kOthers);
  std::vector<Status> results(kOthers);
  // The first Update holds the leader inside its fn until the others have queued up behind
  // it, so that they run as one group.
  std::thread blocker([&] {
    ASSERT_TRUE(index->Update([&](WriteTxn& txn) {
      started.wait();
      std::this_thread::sleep_for(200ms);
      return txn.PutObject(ObjectKey{kDevA, ObjectType::kLocks, "blocker"}, Obj(1000));
    }));
  });
  std::this_thread::sleep_for(50ms);
  std::vector<std::thread> threads;
  for (int i = 0; i < kOthers; ++i) {
    threads.emplace_back([&, i] {
      started.count_down();
      results[i] = index->Update([i](WriteTxn& txn) -> Status {
        CV_TRY(txn.PutObject(ObjectKey{kDevA, ObjectType::kData, std::to_string(i)}, Obj(i + 1)));
        CV_TRY(txn.PutMeta("last", std::to_string(i)));
        if (i % 3 == 0) return Err(ErrorKind::kConflict, "deliberate " + std::to_string(i));
        if (i == 4) throw std::runtime_error("thrown");
        return {};
      });
    });
  }
  blocker.join();
  for (auto& th : threads) th.join();

  uint64_t bytes = 1000, objects = 1;
  auto txn = *index->BeginRead();
  for (int i = 0; i < kOthers; ++i) {
    auto rec = *txn->GetObject(ObjectKey{kDevA, ObjectType::kData, std::to_string(i)});
    if (i % 3 == 0) {
      ASSERT_FALSE(results[i]);
      EXPECT_EQ(results[i].error().kind, ErrorKind::kConflict);
      EXPECT_EQ(results[i].error().context, "deliberate " + std::to_string(i));
      EXPECT_EQ(rec, std::nullopt) << i;
    } else if (i == 4) {
      ASSERT_FALSE(results[i]);
      EXPECT_EQ(results[i].error().kind, ErrorKind::kInternal);
      EXPECT_EQ(rec, std::nullopt);
    } else {
      EXPECT_TRUE(results[i]) << i << ": " << results[i].error().ToString();
      EXPECT_EQ(rec, Obj(i + 1)) << i;
      bytes += i + 1;
      ++objects;
    }
  }
  auto device = **txn->GetDevice(kDevA);
  EXPECT_EQ(device.bytes, bytes);  // counters of the failed fns were rolled back too
  EXPECT_EQ(device.objects, objects);
  txn.reset();
  index.reset();
  const uint64_t commits = RawEnv(dir_).LastTxnId() - txn_before;
  std::cout << "[ info ] " << kOthers + 1 << " updates, " << commits << " LMDB commits\n";
  EXPECT_LT(commits, uint64_t{kOthers + 1});
}

TEST_F(IndexTest, DeviceCountersFollowPutReplaceAndDelete) {
  auto index = OpenIndex();
  ASSERT_TRUE(index->Update([](WriteTxn& txn) { return txn.PutDevice(Device(kDevA)); }));
  const ObjectKey k1{kDevA, ObjectType::kData, "one"};
  const ObjectKey k2{kDevA, ObjectType::kSnapshots, "two"};

  ASSERT_TRUE(Put(*index, k1, Obj(100, 6, 5000)));
  DeviceRecord d = GetDevice(*index, kDevA);
  EXPECT_EQ(d.bytes, 100u);
  EXPECT_EQ(d.objects, 1u);
  EXPECT_EQ(d.last_upload_ns, 5000);

  ASSERT_TRUE(Put(*index, k1, Obj(40, 6, 6000)));  // replacement: size difference only
  d = GetDevice(*index, kDevA);
  EXPECT_EQ(d.bytes, 40u);
  EXPECT_EQ(d.objects, 1u);
  EXPECT_EQ(d.last_upload_ns, 5000);

  ASSERT_TRUE(Put(*index, k2, Obj(7, 6, 7000)));
  d = GetDevice(*index, kDevA);
  EXPECT_EQ(d.bytes, 47u);
  EXPECT_EQ(d.objects, 2u);
  EXPECT_EQ(d.last_upload_ns, 7000);

  ASSERT_TRUE(index->Update([&](WriteTxn& txn) { return txn.DeleteObject(k1); }));
  d = GetDevice(*index, kDevA);
  EXPECT_EQ(d.bytes, 7u);
  EXPECT_EQ(d.objects, 1u);
  EXPECT_EQ(index->Update([&](WriteTxn& txn) { return txn.DeleteObject(k1); }).error().kind,
            ErrorKind::kNotFound);
  EXPECT_EQ(GetDevice(*index, kDevA).bytes, 7u);

  // Put and delete in one fn net out.
  ASSERT_TRUE(index->Update([&](WriteTxn& txn) -> Status {
    CV_TRY(txn.PutObject(k1, Obj(1000)));
    return txn.DeleteObject(k1);
  }));
  d = GetDevice(*index, kDevA);
  EXPECT_EQ(d.bytes, 7u);
  EXPECT_EQ(d.objects, 1u);

  // An object of a device without a record creates none.
  ASSERT_TRUE(Put(*index, ObjectKey{kDevB, ObjectType::kData, "x"}, Obj(5)));
  EXPECT_EQ(*(*index->BeginRead())->GetDevice(kDevB), std::nullopt);
}

TEST_F(IndexTest, CopyToWhileOthersWriteGivesAConsistentPrefix) {
  auto index = OpenIndex(64 << 10, 1ull << 30);  // small map: growth may happen mid-copy
  ASSERT_TRUE(index->Update([](WriteTxn& txn) { return txn.PutDevice(Device(kDevA)); }));
  constexpr int kWriters = 4;
  std::atomic<bool> stop{false};
  std::atomic<int> written[kWriters] = {};
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        char name[32];
        snprintf(name, sizeof name, "w%d-%06d", t, i);
        Status st = Put(*index, ObjectKey{kDevA, ObjectType::kData, name}, Obj(i + 1, 20));
        ASSERT_TRUE(st) << st.error().ToString();
        written[t] = i + 1;
      }
    });
  }
  auto min_written = [&] {
    int m = INT32_MAX;
    for (auto& w : written) m = std::min(m, w.load());
    return m;
  };
  while (min_written() < 20) std::this_thread::sleep_for(5ms);
  const std::string copy_dir = root_ + "/copy";
  Status copied = index->CopyTo(copy_dir);
  ASSERT_TRUE(copied) << copied.error().ToString();
  const int floor = min_written();
  std::this_thread::sleep_for(50ms);
  stop = true;
  for (auto& th : writers) th.join();

  EXPECT_EQ(index->CopyTo(copy_dir).error().kind, ErrorKind::kConflict);
  EXPECT_EQ(index->CopyTo(dir_).error().kind, ErrorKind::kConflict);

  auto copy = OpenIndex(1 << 20, 1ull << 30, copy_dir);
  ASSERT_TRUE(copy);
  auto txn = *copy->BeginRead();
  std::map<int, std::vector<int>> seqs;
  uint64_t bytes = 0, objects = 0;
  ASSERT_TRUE(txn->ForEachObject([&](const ObjectKey& key, const ObjectRecord& rec) {
    int t = 0, i = 0;
    EXPECT_EQ(sscanf(key.name.c_str(), "w%d-%d", &t, &i), 2);
    seqs[t].push_back(i);
    bytes += rec.size;
    ++objects;
    return true;
  }));
  for (int t = 0; t < kWriters; ++t) {
    const auto& s = seqs[t];
    EXPECT_GE(s.size(), size_t(std::min(floor, 20))) << t;
    EXPECT_LE(s.size(), size_t(written[t].load())) << t;
    for (size_t i = 0; i < s.size(); ++i) ASSERT_EQ(s[i], int(i)) << "writer " << t;
  }
  auto device = **txn->GetDevice(kDevA);
  EXPECT_EQ(device.bytes, bytes);
  EXPECT_EQ(device.objects, objects);
  EXPECT_EQ(*txn->GetMeta("index_format"), "5");
}

TEST_F(IndexTest, UpdateWaitsForAReadTxnBeforeGrowingTheMap) {
  auto index = OpenIndex(64 << 10, 1ull << 30);
  auto reader = *index->BeginRead();
  std::atomic<bool> done{false};
  Status st;
  std::thread writer([&] {
    st = index->Update([](WriteTxn& txn) -> Status {
      for (int i = 0; i < 300; ++i) {
        CV_TRY(txn.PutObject(ObjectKey{kDevA, ObjectType::kData, std::to_string(i)}, Obj(i, 100)));
      }
      return {};
    });
    done = true;
  });
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(done.load()) << "the map was remapped under an open read transaction";
  EXPECT_EQ(*reader->GetObject(ObjectKey{kDevA, ObjectType::kData, "0"}), std::nullopt);
  reader.reset();
  writer.join();
  ASSERT_TRUE(st) << st.error().ToString();
  EXPECT_GT(index->MapBytes(), 64u << 10);
}

TEST_F(IndexTest, UpdateFromInsideAnUpdateIsRefusedNotDeadlocked) {
  auto index = OpenIndex();
  Status st = index->Update([&](WriteTxn&) {
    return index->Update([](WriteTxn& txn) { return txn.PutMeta("x", "y"); });
  });
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().kind, ErrorKind::kInternal);
  EXPECT_EQ(*(*index->BeginRead())->GetMeta("x"), std::nullopt);
}

TEST_F(IndexTest, OpenRefusesANewerFormatAndAGarbledOne) {
  for (auto [stored, kind] :
       {std::pair{"6", ErrorKind::kInvalidArgument}, std::pair{"one", ErrorKind::kCorruption}}) {
    {
      auto index = OpenIndex();
      ASSERT_TRUE(
          index->Update([&](WriteTxn& txn) { return txn.PutMeta("index_format", stored); }));
    }
    auto reopened = Index::Open({dir_, 1 << 20, 1ull << 30});
    ASSERT_FALSE(reopened);
    EXPECT_EQ(reopened.error().kind, kind) << reopened.error().ToString();
    fs::remove_all(dir_);
  }
}

TEST_F(IndexTest, Format2IsUpgradedInPlaceAndItsDevicesStillRead) {
  DeviceRecord dev;
  dev.id = kDevA;
  dev.name = "kept";
  {
    auto index = OpenIndex();
    ASSERT_TRUE(index->Update([&](WriteTxn& txn) -> Status {
      CV_TRY(txn.PutDevice(dev));
      return txn.PutMeta("index_format", "2");
    }));
  }
  auto index = OpenIndex();
  auto txn = *index->BeginRead();
  EXPECT_EQ(*txn->GetMeta("index_format"), "5");
  EXPECT_EQ(**txn->GetDevice(kDevA), dev);
}

TEST_F(IndexTest, OpenRefusesADirectoryAlreadyOpenInThisProcess) {
  auto index = OpenIndex();
  auto again = Index::Open({dir_, 1 << 20, 1ull << 30});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().kind, ErrorKind::kConflict);
  index.reset();
  EXPECT_TRUE(Index::Open({dir_, 1 << 20, 1ull << 30}));
}

TEST_F(IndexTest, OpenRejectsBadMapSizes) {
  EXPECT_EQ(Index::Open({dir_, 0, 1 << 20}).error().kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(Index::Open({dir_, 1 << 21, 1 << 20}).error().kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(Index::Open({"", 1 << 20, 1 << 21}).error().kind, ErrorKind::kInvalidArgument);
}

TEST(IdTest, IdFromHexAcceptsOnlyThirtyTwoLowercaseHexDigits) {
  const Id id = NewId();
  EXPECT_NE(id, NewId());
  const std::string hex = IdToHex(id);
  ASSERT_EQ(hex.size(), 32u);
  EXPECT_EQ(IdFromHex(hex), id);
  EXPECT_EQ(IdFromHex("000102030405060708090a0b0c0d0eff"),
            (Id{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 255}));
  for (std::string_view bad :
       {"", "00", "000102030405060708090a0b0c0d0ef", "000102030405060708090a0b0c0d0eff0",
        "000102030405060708090A0B0C0D0EFF", "000102030405060708090a0b0c0d0eXf",
        " 00102030405060708090a0b0c0d0eff", "000102030405060708090a0b0c0d0ef\n",
        "0x0102030405060708090a0b0c0d0eff"}) {
    EXPECT_EQ(IdFromHex(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(IdFromHex(std::string_view("000102030405060708090a0b0c0d0e\0f", 32)), std::nullopt);
}

TEST(ObjectTypeTest, ParseObjectTypeAcceptsExactlyTheSixNames) {
  for (ObjectType t : {ObjectType::kConfig, ObjectType::kData, ObjectType::kKeys,
                       ObjectType::kLocks, ObjectType::kSnapshots, ObjectType::kIndex}) {
    EXPECT_EQ(ParseObjectType(ObjectTypeName(t)), t);
  }
  EXPECT_STREQ(ObjectTypeName(ObjectType::kSnapshots), "snapshots");
  for (std::string_view bad :
       {"", "Data", "DATA", "data ", " data", "lock", "snapshot", "indexes", "conf", "unknown"}) {
    EXPECT_EQ(ParseObjectType(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(ParseObjectType(std::string_view("keys\0", 5)), std::nullopt);
  EXPECT_STREQ(ObjectTypeName(static_cast<ObjectType>(0)), "unknown");
}

}  // namespace
}  // namespace cv::index
