// Listing and deleting objects, the usage counters and extent accounting that follow them
// (fsck reports and fixes drift), and purging a whole device.
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "storage/test_store.h"

namespace cv::storage {
namespace {

TEST_F(StoreTest, ListDeleteAndUsageCounters) {
  OpenStore();
  ASSERT_TRUE(store_->Index().Update([&](index::WriteTxn& t) {
    index::DeviceRecord d;
    d.id = device_;
    return t.PutDevice(d);
  }));
  std::map<std::string, std::string> bodies;
  for (int i = 0; i < 30; ++i) {
    std::string b = Body(100 + i, 1000 + i * 3000);
    bodies[PutBody(b).name] = b;
  }
  auto all = store_->List(device_, ObjectType::kData, "", 1000);
  ASSERT_TRUE(all.has_value());
  ASSERT_EQ(all->size(), bodies.size());
  size_t i = 0;
  for (const auto& [name, b] : bodies) {
    EXPECT_EQ((*all)[i].key.name, name);
    EXPECT_EQ((*all)[i].size, b.size());
    ++i;
  }
  auto page = store_->List(device_, ObjectType::kData, (*all)[9].key.name, 5);
  ASSERT_EQ(page->size(), 5u);
  EXPECT_EQ((*page)[0].key.name, (*all)[10].key.name);

  uint64_t total = 0;
  for (const auto& [n, b] : bodies) total += b.size();
  auto dev = (*store_->Index().BeginRead())->GetDevice(device_);
  EXPECT_EQ((*dev)->bytes, total);
  EXPECT_EQ((*dev)->objects, bodies.size());

  const ObjectKey victim{device_, ObjectType::kData, bodies.begin()->first};
  ASSERT_TRUE(store_->Delete(victim));
  EXPECT_FALSE(store_->Head(victim)->has_value());
  EXPECT_EQ(store_->Delete(victim).error().kind, ErrorKind::kNotFound);
  dev = (*store_->Index().BeginRead())->GetDevice(device_);
  EXPECT_EQ((*dev)->bytes, total - bodies.begin()->second.size());

  // Extent accounting: the deleted object's records are now dead bytes.
  uint64_t live = 0, dead = 0;
  ASSERT_TRUE((*store_->Index().BeginRead())->ForEachExtent([&](uint16_t, uint32_t, const index::ExtentRecord& e) {
    live += e.live_bytes;
    dead += e.dead_bytes;
    return true;
  }));
  EXPECT_GT(live, total);
  EXPECT_GT(dead, bodies.begin()->second.size());
  ExpectFsckClean();
}

TEST_F(StoreTest, FsckReportsUsageCountersThatDisagreeWithObjects) {
  OpenStore();
  index::DeviceRecord d;
  d.id = device_;
  ASSERT_TRUE(store_->Index().Update([&](index::WriteTxn& t) { return t.PutDevice(d); }));
  PutBody(Body(1, 5000));
  ExpectFsckClean();
  ASSERT_TRUE(store_->Index().Update([&](index::WriteTxn& t) -> Status {
    auto cur = t.GetDevice(device_);
    index::DeviceRecord bad = **cur;
    bad.bytes += 1;
    return t.PutDevice(bad);
  }));
  auto rep = store_->Fsck();
  ASSERT_TRUE(rep.has_value());
  ASSERT_EQ(rep->problems.size(), 1u);
  EXPECT_NE(rep->problems[0].find("counters"), std::string::npos) << rep->problems[0];
  EXPECT_TRUE(rep->fixed.empty());
}

// fsck --fix: device counters and extent live bytes that drifted are set to what the objects
// sum to; what it cannot fix stays a problem; a second pass finds nothing.
TEST_F(StoreTest, FsckFixSetsCountersAndExtentAccountingToWhatTheObjectsSumTo) {
  OpenStore();
  index::DeviceRecord d;
  d.id = device_;
  ASSERT_TRUE(store_->Index().Update([&](index::WriteTxn& t) { return t.PutDevice(d); }));
  for (size_t size : {100, 70000, 300000}) PutBody(Body(size, size + 3));
  ExpectFsckClean();
  uint16_t disk = 0;
  uint32_t ext = 0;
  ASSERT_TRUE(store_->Index().Update([&](index::WriteTxn& t) -> Status {
    auto cur = t.GetDevice(device_);
    index::DeviceRecord bad = **cur;
    bad.bytes += 7;
    bad.objects += 2;
    CV_TRY(t.PutDevice(bad));
    index::ExtentRecord e;
    bool first = true;
    CV_TRY(t.ForEachExtent([&](uint16_t dd, uint32_t id, const index::ExtentRecord& r) {
      if (!first) return false;
      first = false;
      disk = dd;
      ext = id;
      e = r;
      return true;
    }));
    e.live_bytes += 4096;
    CV_TRY(t.PutExtent(disk, ext, e));
    return t.PutExtent(disk, 999, index::ExtentRecord{1 << 20, 8192, 0});  // nothing in it
  }));
  auto found = store_->Fsck();
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->problems.size(), 3u);
  auto fixed = store_->Fsck(true);
  ASSERT_TRUE(fixed.has_value()) << fixed.error().ToString();
  EXPECT_TRUE(fixed->problems.empty());
  ASSERT_EQ(fixed->fixed.size(), 3u);
  ExpectFsckClean();
  auto txn = store_->Index().BeginRead();
  auto dev = (*txn)->GetDevice(device_);
  EXPECT_EQ((*dev)->objects, 3u);
  auto dead = (*txn)->GetExtent(disk, 999);
  ASSERT_TRUE(dead.has_value() && dead->has_value());
  EXPECT_EQ((*dead)->live_bytes, 0u);
  EXPECT_EQ((*dead)->dead_bytes, 8192u);  // compaction may drop it
  txn->reset();
  auto again = store_->Fsck(true);
  ASSERT_TRUE(again.has_value());
  EXPECT_TRUE(again->fixed.empty());
}

// A purge removes a device's objects in batches with their usage, keeps the others, and its
// device tombstone keeps them removed through an index rebuild; an upload that was in flight
// when the device was closed (or after it was purged) is refused at commit.
TEST_F(StoreTest, PurgeRemovesADeviceInBatchesAndStaysRemovedThroughRebuild) {
  OpenStore();
  const index::Id other = index::NewId();
  index::DeviceRecord victim, keeper;
  victim.id = device_;
  victim.name = "victim";
  keeper.id = other;
  keeper.name = "keeper";
  ASSERT_TRUE(store_->Index().Update([&](index::WriteTxn& t) -> Status {
    CV_TRY(t.PutDevice(victim));
    return t.PutDevice(keeper);
  }));
  const std::string backup = (root_ / "index-backup").string();
  ASSERT_TRUE(store_->Index().CopyTo(backup));
  std::vector<std::pair<ObjectKey, std::string>> kept;
  uint64_t victim_bytes = 0;
  for (int i = 0; i < 25; ++i) {
    std::string b = Body(900 + i, i % 5 == 0 ? 150000 : 3000 + i);
    victim_bytes += b.size();
    PutBody(b);
    std::string k = Body(1900 + i, 2000 + i);
    ObjectKey kk = DataKey(other, k);
    ASSERT_TRUE(store_->Put(kk, k));
    kept.emplace_back(kk, k);
  }
  ObjectKey cfg{device_, ObjectType::kConfig, ""};
  ASSERT_TRUE(store_->Put(cfg, "victim config"));
  victim_bytes += std::string("victim config").size();
  // An upload that started before the device was closed.
  std::string late = Body(4242, 100000);
  auto in_flight = store_->BeginPut(DataKey(device_, late), late.size());
  ASSERT_TRUE(in_flight.has_value());
  ASSERT_TRUE((*in_flight)->Append(std::span(reinterpret_cast<const uint8_t*>(late.data()), late.size())));
  ASSERT_TRUE(store_->Index().Update([&](index::WriteTxn& t) {
    victim.closed_ns = 1;
    victim.objects = 26;
    victim.bytes = victim_bytes;
    return t.PutDevice(victim);
  }));
  auto refused = (*in_flight)->Commit();
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().kind, ErrorKind::kGone);
  in_flight->reset();

  ASSERT_TRUE(store_->WriteDeviceTombstone(device_));
  uint64_t objects = 0, bytes = 0, batches = 0, calls = 0;
  while (true) {
    auto b = store_->PurgeObjects(device_, 4, [&](index::WriteTxn& t, const PurgeBatch& pb) -> Status {
      ++calls;
      if (pb.objects == 0) {
        CV_TRY(t.DeleteDevice(device_));
        return t.PutMeta(index::PurgedDeviceMetaKey(device_), "job");
      }
      return {};
    });
    ASSERT_TRUE(b.has_value()) << b.error().ToString();
    ASSERT_LE(b->objects, 4u);
    objects += b->objects;
    bytes += b->bytes;
    if (b->objects == 0) break;
    ++batches;
  }
  EXPECT_EQ(objects, 26u);
  EXPECT_EQ(bytes, victim_bytes);
  EXPECT_EQ(batches, 7u);
  EXPECT_EQ(calls, batches + 1);
  EXPECT_TRUE(store_->List(device_, std::nullopt, "", 100)->empty());
  for (const auto& [k, b] : kept) ExpectReads(k, b);
  ExpectFsckClean();
  // Purged: a late upload still cannot land, even with no device record left.
  EXPECT_EQ(store_->Put(DataKey(device_, late), late).error().kind, ErrorKind::kGone);

  // Lose the index: the rebuild brings back the keeper's objects and none of the victim's.
  store_.reset();
  fs::remove_all(root_ / "index");
  auto rep = ObjectStore::RebuildIndex(Options(), backup);
  ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
  EXPECT_EQ(rep->objects, kept.size());
  OpenStore();
  auto back = store_->List(device_, std::nullopt, "", 100);
  ASSERT_TRUE(back.has_value());
  for (const auto& o : *back) {
    ADD_FAILURE() << "came back: " << index::ObjectTypeName(o.key.type) << "/" << o.key.name
                  << " size " << o.size;
  }
  // The backup still had the victim's device record: it is not restored.
  EXPECT_FALSE((*store_->Index().BeginRead())->GetDevice(device_)->has_value());
  EXPECT_TRUE((*store_->Index().BeginRead())->GetDevice(other)->has_value());
  EXPECT_EQ(store_->Put(DataKey(device_, late), late).error().kind, ErrorKind::kGone);
  for (const auto& [k, b] : kept) ExpectReads(k, b);
}

}  // namespace
}  // namespace cv::storage
