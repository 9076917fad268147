// Index rebuild from the extents: the rebuilt index equals the lost one.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "storage/record.h"
#include "storage/test_store.h"

namespace cv::storage {
namespace {

// The object table, with the copies of replicated objects in disk order (they are
// interchangeable; repair may move one to another disk).
std::map<std::string, index::ObjectRecord> ObjectTable(ObjectStore& store) {
  std::map<std::string, index::ObjectRecord> out;
  auto txn = store.Index().BeginRead();
  EXPECT_TRUE(txn.has_value());
  EXPECT_TRUE((*txn)->ForEachObject([&](const ObjectKey& k, const index::ObjectRecord& r) {
    index::ObjectRecord c = r;
    if (c.layout == index::Layout::kReplicated) {
      std::sort(c.shards.begin(), c.shards.end(), [](const auto& a, const auto& b) {
        return std::tie(a.disk, a.extent, a.offset) < std::tie(b.disk, b.extent, b.offset);
      });
    }
    out[index::IdToHex(k.device) + "/" + index::ObjectTypeName(k.type) + "/" + k.name] = c;
    return true;
  }));
  return out;
}

void ExpectSameTables(const std::map<std::string, index::ObjectRecord>& before,
                      const std::map<std::string, index::ObjectRecord>& after) {
  EXPECT_EQ(after.size(), before.size());
  for (const auto& [k, r] : before) {
    auto it = after.find(k);
    if (it == after.end()) {
      ADD_FAILURE() << "lost in the rebuild: " << k;
    } else if (!(it->second == r)) {
      ADD_FAILURE() << "differs after the rebuild: " << k;
    }
  }
  for (const auto& [k, r] : after) {
    if (!before.count(k)) ADD_FAILURE() << "came back in the rebuild: " << k;
  }
}

// Index loss: the index rebuilt from the extents (devices from a backup taken earlier) equals
// the lost one for every object: deleted objects stay deleted (tombstones, also after
// compaction moved things around), re-uploads after a delete, refused conflicts and aborted
// uploads are told apart, and usage counters come out right.
TEST_F(StoreTest, RebuiltIndexEqualsTheLostOne) {
  OpenStore();
  index::DeviceRecord dev;
  dev.id = device_;
  dev.name = "laptop";
  ASSERT_TRUE(store_->Index().Update([&](index::WriteTxn& t) { return t.PutDevice(dev); }));
  const std::string backup = (root_ / "index-backup").string();
  ASSERT_TRUE(store_->Index().CopyTo(backup));  // devices known; no objects yet

  std::vector<std::pair<ObjectKey, std::string>> objs;
  for (size_t size : kSizes) {
    std::string b = Body(size + 4242, size);
    objs.emplace_back(PutBody(b), b);
  }
  ObjectKey cfg{device_, ObjectType::kConfig, ""};
  ASSERT_TRUE(store_->Put(cfg, "the config"));
  ASSERT_FALSE(store_->Put(cfg, "another config"));  // refused: its records are garbage
  for (size_t i = 0; i < objs.size(); i += 3) ASSERT_TRUE(store_->Delete(objs[i].first));
  ASSERT_TRUE(store_->Put(objs[3].first, objs[3].second));  // deleted, then uploaded again
  {
    std::string b = Body(31337, 200000);
    auto w = store_->BeginPut(DataKey(device_, b), b.size());
    ASSERT_TRUE((*w)->Append(std::span(reinterpret_cast<const uint8_t*>(b.data()), 150000)));
  }  // aborted
  auto check = [&](const char* when, RebuildReport* out) {
    SCOPED_TRACE(when);
    const auto before = ObjectTable(*store_);
    const auto dev_before = **(*store_->Index().BeginRead())->GetDevice(device_);
    store_.reset();
    fs::remove_all(root_ / "index");  // the disaster
    auto rep = ObjectStore::RebuildIndex(Options(), backup);
    ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
    EXPECT_EQ(rep->objects, before.size());
    EXPECT_GT(rep->tombstones, 0u);
    OpenStore();
    ExpectSameTables(before, ObjectTable(*store_));
    const auto dev_after = **(*store_->Index().BeginRead())->GetDevice(device_);
    EXPECT_EQ(dev_after.bytes, dev_before.bytes);
    EXPECT_EQ(dev_after.objects, dev_before.objects);
    EXPECT_EQ(dev_after.name, "laptop");
    ExpectFsckClean();
    for (size_t i = 0; i < objs.size(); ++i) {
      if (i % 3 == 0 && i != 3) {
        EXPECT_FALSE(store_->Head(objs[i].first)->has_value()) << "deleted object came back";
      } else {
        ExpectReads(objs[i].first, objs[i].second);
      }
    }
    EXPECT_EQ(*store_->Get(cfg), "the config");
    *out = *rep;
  };
  RebuildReport first, second;
  check("before compaction", &first);
  EXPECT_GT(first.deleted_instances, 0u);     // deleted records still on disk: tombstoned
  EXPECT_GT(first.incomplete_instances, 0u);  // the aborted upload
  CompactOptions co;
  co.max_live_ratio = 0.9;
  ASSERT_TRUE(store_->Compact(co));  // moves live records, carries tombstones forward
  check("after compaction", &second);

  // Refuses to overwrite an index that exists.
  store_.reset();
  EXPECT_EQ(ObjectStore::RebuildIndex(Options(), backup).error().kind, ErrorKind::kConflict);
  // Without a backup the objects still come back (devices must then be recreated).
  OpenStore();
  const auto before = ObjectTable(*store_);
  store_.reset();
  fs::remove_all(root_ / "index");
  auto bare = ObjectStore::RebuildIndex(Options(), "");
  ASSERT_TRUE(bare.has_value()) << bare.error().ToString();
  OpenStore();
  ExpectSameTables(before, ObjectTable(*store_));
}

// Regression (found by the device purge fault sweep, a failed I/O): a compaction that
// wrote a copy of a record and failed (or crashed) before the index switched to it left a
// valid copy beside the original; an index rebuilt from the extents then gave the replicated
// object one copy more than its layout (two on one disk), which fsck reports and nothing
// fixes. Here the copy is put in place by hand, as such a compaction leaves it.
TEST_F(StoreTest, RebuiltIndexKeepsOneCopyPerDiskOfAReplicatedObject) {
  OpenStore();
  const std::string small = Body(44, 300);
  const ObjectKey key = PutBody(small);
  const index::ObjectRecord rec = **(*store_->Index().BeginRead())->GetObject(key);
  ASSERT_EQ(rec.layout, index::Layout::kReplicated);
  ASSERT_EQ(rec.shards.size(), 3u);
  store_.reset();
  {
    const uint64_t len = RecordBytes(key, 300);
    std::string record(len, '\0');
    std::ifstream in(ExtentPath(rec.shards[0]), std::ios::binary);
    in.seekg(static_cast<std::streamoff>(rec.shards[0].offset));
    ASSERT_TRUE(in.read(record.data(), static_cast<std::streamsize>(len)));
    index::ShardLoc copy = rec.shards[0];
    copy.extent = 0xff;
    std::ofstream out(ExtentPath(copy), std::ios::binary);
    out << std::string(8192, '\0') << record
        << std::string(Options().extent_bytes - 8192 - len, '\0');
    ASSERT_TRUE(out.good());
  }
  fs::remove_all(root_ / "index");
  auto rep = ObjectStore::RebuildIndex(Options(), "");
  ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
  OpenStore();
  const index::ObjectRecord now = **(*store_->Index().BeginRead())->GetObject(key);
  ASSERT_EQ(now.shards.size(), 3u);
  std::set<uint16_t> disks;
  for (const auto& loc : now.shards) disks.insert(loc.disk);
  EXPECT_EQ(disks.size(), 3u);
  ExpectFsckClean();
  ExpectReads(key, small);
}

// Regression (found by the device purge fault sweep, a bit flip): an index rebuilt
// around a damaged shard marks it lost (no extent holds it); fsck then looked that marker up
// in the disk table, out of its bounds (a crash), and deleting the object booked the lost
// shard's bytes to an extent of a disk 65535.
TEST_F(StoreTest, IndexRebuiltAroundADamagedShardChecksCleanAndDeletesCleanly) {
  auto base = NewPosixEnv();
  FaultEnv env(base.get(), 45);
  OpenStore(&env);
  const std::string body = Body(45, 100000);  // 2 stripes
  const ObjectKey key = PutBody(body);
  const index::ObjectRecord rec = **(*store_->Index().BeginRead())->GetObject(key);
  store_.reset();
  FlipPayloadByteOnRead(env, key, rec.shards[1], 7, 0x10);  // what the rebuild reads is damaged
  fs::remove_all(root_ / "index");
  auto rep = ObjectStore::RebuildIndex(Options(&env), "");
  ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
  EXPECT_EQ(rep->records_invalid, 1u);
  OpenStore(&env);
  const index::ObjectRecord now = **(*store_->Index().BeginRead())->GetObject(key);
  ASSERT_EQ(now.shards.size(), rec.shards.size());
  EXPECT_EQ(now.shards[1].disk, UINT16_MAX);  // lost: reads rebuild it, repair rewrites it
  ExpectFsckClean();
  ExpectReads(key, body);
  ASSERT_TRUE(store_->Delete(key));
  ExpectFsckClean();
  ASSERT_TRUE((*store_->Index().BeginRead())
                  ->ForEachExtent([&](uint16_t disk, uint32_t, const index::ExtentRecord&) {
                    EXPECT_LT(disk, 6u) << "an extent on a disk the node does not have";
                    return true;
                  }));
}

}  // namespace
}  // namespace cv::storage
