// Compaction gives the space of deleted and never-committed records back, and leaves
// alone what it must not touch.
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "storage/test_store.h"

namespace cv::storage {
namespace {

// Bytes the extent files of every disk occupy on the file system.
uint64_t ExtentBytesOnDisk(const std::vector<std::string>& disks) {
  uint64_t total = 0;
  for (const auto& d : disks) {
    for (const auto& e : fs::directory_iterator(d + "/extents")) {
      struct stat st {};
      if (::stat(e.path().c_str(), &st) == 0) total += uint64_t(st.st_blocks) * 512;
    }
  }
  return total;
}

// Deleting a device's objects then compacting gives the disk space back, while the other
// device's objects read back byte-exact and the index stays consistent.
TEST_F(StoreTest, DeleteThenCompactReturnsTheSpace) {
  OpenStore();
  const index::Id other = index::NewId();
  std::vector<std::pair<ObjectKey, std::string>> gone, kept;
  uint64_t gone_bytes = 0;
  for (int i = 0; i < 60; ++i) {
    std::string b = Body(5000 + i, 200000 + i * 100);
    ObjectKey key = DataKey(i % 3 == 0 ? other : device_, b);
    ASSERT_TRUE(store_->Put(key, b).has_value());
    if (i % 3 == 0) {
      kept.emplace_back(key, b);
    } else {
      gone.emplace_back(key, b);
      gone_bytes += b.size();
    }
  }
  const uint64_t before = ExtentBytesOnDisk(Options().disks);
  for (const auto& [k, b] : gone) ASSERT_TRUE(store_->Delete(k));
  CompactOptions co;
  co.max_live_ratio = 0.5;
  auto rep = store_->Compact(co);
  ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
  for (const auto& p : rep->problems) ADD_FAILURE() << p;
  EXPECT_GT(rep->extents_removed, 0u);
  EXPECT_GT(rep->records_moved, 0u);
  const uint64_t after = ExtentBytesOnDisk(Options().disks);
  EXPECT_GE(before - std::min(before, after), gone_bytes * 9 / 10)
      << "before " << before << " after " << after << " deleted " << gone_bytes;
  for (const auto& [k, b] : kept) ExpectReads(k, b);
  for (const auto& [k, b] : gone) EXPECT_FALSE(store_->Head(k)->has_value());
  ExpectFsckClean();
  auto scrub = store_->Scrub();
  ASSERT_TRUE(scrub.has_value());
  EXPECT_EQ(scrub->damaged_shards, 0u);
  // Still fine after a restart (moved records are durable and indexed).
  OpenStore();
  for (const auto& [k, b] : kept) ExpectReads(k, b);
  ExpectFsckClean();
}

// Regression: an extent stops taking records when the next one does not fit, so with records
// of a quarter of an extent, an extent full of live records is only ~76% live. Compaction with
// max_live_ratio 0.9 rewrote every such extent at every pass, forever, freeing nothing.
TEST_F(StoreTest, CompactionLeavesExtentsFullOfLiveRecordsAlone) {
  StoreOptions o = Options();
  o.shard_unit = 256 * 1024;  // 260 KiB records: three fit in a 1 MiB extent
  auto opened = ObjectStore::Open(o);
  ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
  store_ = std::move(*opened);
  std::vector<std::pair<ObjectKey, std::string>> objects;
  for (int i = 0; i < 12; ++i) {
    std::string b = Body(9000 + i, 1 << 20);
    objects.emplace_back(DataKey(device_, b), b);
    ASSERT_TRUE(store_->Put(objects.back().first, b).has_value());
  }
  CompactOptions co;
  co.max_live_ratio = 0.9;
  for (int pass = 0; pass < 2; ++pass) {
    auto rep = store_->Compact(co);
    ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
    EXPECT_EQ(rep->records_moved, 0u) << "pass " << pass;
    EXPECT_EQ(rep->extents_removed, 0u) << "pass " << pass;
  }
  // Dead space still comes back, and the passes come to rest: the extents the copies filled
  // are not rewritten again.
  for (size_t i = 0; i < objects.size(); ++i) {
    if (i % 3 != 0) {
      ASSERT_TRUE(store_->Delete(objects[i].first));
    }
  }
  uint64_t removed = 0;
  bool rest = false;
  for (int pass = 0; pass < 5 && !rest; ++pass) {
    auto rep = store_->Compact(co);
    ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
    removed += rep->extents_removed;
    rest = rep->records_moved == 0 && rep->extents_removed == 0;
  }
  EXPECT_GT(removed, 0u);
  EXPECT_TRUE(rest) << "compaction still rewriting after 5 passes";
  for (size_t i = 0; i < objects.size(); i += 3) ExpectReads(objects[i].first, objects[i].second);
  ExpectFsckClean();
}

// Regression: tombstones are carried forward like live records, but the index does not count
// them; an extent holding nothing but tombstones was copied into a new one, just as full, at
// every pass, forever.
TEST_F(StoreTest, CompactionLeavesExtentsFullOfTombstonesAlone) {
  OpenStore();
  std::vector<ObjectKey> keys;
  for (int i = 0; i < 600; ++i) keys.push_back(PutBody(Body(20000 + i, 100)));
  OpenStore();  // seals the extents the objects went to
  // 3 tombstones per delete over 6 disks: ~300 a disk, more than one 1 MiB extent holds.
  for (const ObjectKey& k : keys) ASSERT_TRUE(store_->Delete(k));
  OpenStore();  // seals the extents full of tombstones
  CompactOptions co;
  co.max_live_ratio = 0.5;
  bool rest = false;
  uint64_t removed = 0;
  for (int pass = 0; pass < 4 && !rest; ++pass) {
    auto rep = store_->Compact(co);
    ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
    for (const auto& p : rep->problems) ADD_FAILURE() << p;
    removed += rep->extents_removed;
    rest = rep->records_moved == 0 && rep->extents_removed == 0;
  }
  EXPECT_GT(removed, 0u) << "the extents of the deleted objects were not reclaimed";
  EXPECT_TRUE(rest) << "compaction still rewriting tombstones after 4 passes";
  const uint64_t on_disk = ExtentBytesOnDisk(Options().disks);
  auto again = store_->Compact(co);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->extents_removed, 0u);
  EXPECT_EQ(ExtentBytesOnDisk(Options().disks), on_disk);
  for (const ObjectKey& k : keys) EXPECT_FALSE(store_->Head(k)->has_value());
  ExpectFsckClean();
}

// Records of uploads that never committed (aborted, or cut by a crash) are reclaimed too.
TEST_F(StoreTest, CompactionReclaimsAbortedUploads) {
  OpenStore();
  for (int i = 0; i < 20; ++i) {
    std::string b = Body(7000 + i, 250000);
    auto w = store_->BeginPut(DataKey(device_, b), b.size());
    ASSERT_TRUE(w.has_value());
    ASSERT_TRUE((*w)->Append(std::span(reinterpret_cast<const uint8_t*>(b.data()), 200000)));
  }  // every writer destroyed without Commit
  std::string keep = Body(1, 300000);
  ObjectKey k = PutBody(keep);
  OpenStore();  // new process: every old extent is sealed
  const uint64_t before = ExtentBytesOnDisk(Options().disks);
  auto rep = store_->Compact(CompactOptions{});
  ASSERT_TRUE(rep.has_value());
  EXPECT_GT(rep->extents_removed, 0u);
  EXPECT_LT(ExtentBytesOnDisk(Options().disks), before);
  ExpectReads(k, keep);
  ExpectFsckClean();
}

// Compaction while other threads upload and read: nothing is lost or misread.
TEST_F(StoreTest, CompactionRunsBesideUploadsAndReads) {
  OpenStore();
  std::vector<std::pair<ObjectKey, std::string>> objs;
  for (int i = 0; i < 40; ++i) {
    std::string b = Body(8000 + i, 150000);
    objs.emplace_back(PutBody(b), b);
  }
  for (int i = 0; i < 40; i += 2) ASSERT_TRUE(store_->Delete(objs[i].first));
  std::atomic<bool> stop{false};
  std::vector<std::pair<ObjectKey, std::string>> added;
  std::thread writer([&] {
    for (int i = 0; !stop && i < 200; ++i) {
      std::string b = Body(9000 + i, 100000);
      auto key = DataKey(device_, b);
      if (store_->Put(key, b)) added.emplace_back(key, b);
    }
  });
  std::thread reader([&] {
    while (!stop) {
      for (size_t i = 1; i < objs.size(); i += 2) {
        auto got = store_->Get(objs[i].first);
        ASSERT_TRUE(got.has_value()) << got.error().ToString();
        ASSERT_TRUE(*got == objs[i].second);
      }
    }
  });
  for (int round = 0; round < 3; ++round) {
    CompactOptions co;
    co.max_live_ratio = 0.9;
    auto rep = store_->Compact(co);
    ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
  }
  stop = true;
  writer.join();
  reader.join();
  for (size_t i = 1; i < objs.size(); i += 2) ExpectReads(objs[i].first, objs[i].second);
  for (const auto& [k, b] : added) ExpectReads(k, b);
  ExpectFsckClean();
}

}  // namespace
}  // namespace cv::storage
