// Scrub (read and verify every shard record, parity and copies too) and repair (rebuild
// damaged or lost shards onto healthy disks).
#include <chrono>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "storage/test_store.h"

namespace cv::storage {
namespace {

// Scrub reads parity and every copy too: 100 flipped bytes in 100 distinct shard records
// (data and parity) are all found, none is data loss, and each damaged stripe is queued.
// The bytes are flipped in the files (not by a FaultEnv): latent damage on disk is what scrub
// is for, and the second scrub proves that repair left none on disk.
TEST_F(StoreTest, ScrubFindsEveryFlippedByteInDataAndParity) {
  OpenStore();
  std::vector<std::pair<ObjectKey, std::string>> objs;
  for (int i = 0; i < 30; ++i) {
    std::string b = Body(3000 + i, 250000);  // 4 stripes each
    objs.emplace_back(PutBody(b), b);
  }
  auto opts = Options();
  std::mt19937_64 rng(100);
  int flipped = 0;
  for (const auto& [key, body] : objs) {
    auto rec = (*store_->Index().BeginRead())->GetObject(key);
    const auto& r = **rec;
    for (size_t st = 0; st < r.shards.size() / 6 && flipped < 100; ++st) {
      FlipPayloadByte(key, r.shards[st * 6 + rng() % 6], rng() % 1000, 0x01);
      ++flipped;
    }
  }
  ASSERT_EQ(flipped, 100);
  OpenStore();
  auto rep = store_->Scrub();
  ASSERT_TRUE(rep.has_value());
  EXPECT_EQ(rep->damaged_shards, 100u);
  EXPECT_EQ(rep->lost_stripes, 0u);
  EXPECT_EQ(rep->objects, objs.size());
  EXPECT_EQ(store_->Stats().pending_repairs, 100u);
  for (const auto& [k, b] : objs) ExpectReads(k, b);

  // Repair heals all of it: a second scrub finds nothing, reads and fsck are clean.
  auto fixed = store_->Repair(false);
  ASSERT_TRUE(fixed.has_value()) << fixed.error().ToString();
  EXPECT_EQ(fixed->stripes_repaired, 100u);
  EXPECT_EQ(fixed->shards_rewritten, 100u);
  EXPECT_EQ(fixed->stripes_lost, 0u);
  EXPECT_EQ(store_->Stats().pending_repairs, 0u);
  auto again = store_->Scrub();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->damaged_shards, 0u);
  for (const auto& [k, b] : objs) ExpectReads(k, b);
  ExpectFsckClean();
}

// A dead disk on a node with a spare: repair rebuilds every shard it held onto the other
// disks (fewest survivors first); afterwards m MORE disks can be lost and all still reads.
TEST_F(StoreTest, RepairAfterDiskLossRestoresFullRedundancy) {
  auto opts = Options();
  opts.disks.push_back((root_ / "d6").string());  // 7 disks for 4+2: room to move shards
  auto s = ObjectStore::Open(opts);
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  store_ = std::move(*s);
  std::vector<std::pair<ObjectKey, std::string>> objs;
  for (size_t size : kSizes) {
    std::string b = Body(size + 123, size);
    objs.emplace_back(PutBody(b), b);
  }
  store_.reset();
  fs::rename(opts.disks[2], opts.disks[2] + ".dead");
  store_ = std::move(*ObjectStore::Open(opts));
  auto rep = store_->Repair(true);
  ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
  EXPECT_GT(rep->stripes_repaired, 0u);
  EXPECT_EQ(rep->stripes_lost, 0u);
  EXPECT_EQ(rep->still_queued, 0u);
  ExpectFsckClean();
  // No shard references the dead disk any more.
  ASSERT_TRUE((*store_->Index().BeginRead())->ForEachObject([&](const ObjectKey&, const index::ObjectRecord& r) {
    for (const auto& loc : r.shards) EXPECT_NE(loc.disk, 2);
    return true;
  }));
  auto second = store_->Repair(true);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->stripes_examined, 0u);
  // Now lose two more disks: still everything reads back.
  store_.reset();
  fs::rename(opts.disks[0], opts.disks[0] + ".dead");
  fs::rename(opts.disks[5], opts.disks[5] + ".dead");
  store_ = std::move(*ObjectStore::Open(opts));
  for (const auto& [k, b] : objs) ExpectReads(k, b);
}

// A scrub can be stopped from its progress callback and resumed after the last object it
// reported; the two parts together check every object once.
TEST_F(StoreTest, ScrubStopsAndResumesWhereItsProgressSays) {
  OpenStore();
  for (int i = 0; i < 300; ++i) PutBody(Body(7000 + i, 100 + i));
  storage::ScrubOptions first;
  std::optional<ObjectKey> last;
  first.progress = [&](const ScrubReport& rep, const ObjectKey& k) {
    last = k;
    return rep.objects < 256;  // stop at the end of the first batch
  };
  auto a = store_->Scrub(first);
  ASSERT_TRUE(a.has_value()) << a.error().ToString();
  EXPECT_FALSE(a->complete);
  ASSERT_TRUE(last.has_value());
  storage::ScrubOptions second;
  second.start_after = last;
  auto b = store_->Scrub(second);
  ASSERT_TRUE(b.has_value());
  EXPECT_TRUE(b->complete);
  EXPECT_EQ(a->objects + b->objects, 300u);
  EXPECT_EQ(a->damaged_shards + b->damaged_shards, 0u);
  // Throttled: 300 small objects at 64 KiB/s take a while; stop it after the first report.
  storage::ScrubOptions slow;
  slow.max_bytes_per_sec = 64 << 10;
  const auto t0 = std::chrono::steady_clock::now();
  auto c = store_->Scrub(ScrubOptions{slow.max_bytes_per_sec, std::nullopt,
                                      [](const ScrubReport&, const ObjectKey&) { return false; }});
  ASSERT_TRUE(c.has_value());
  EXPECT_FALSE(c->complete);
  EXPECT_GE(std::chrono::steady_clock::now() - t0,
            std::chrono::duration<double>(double(c->bytes_checked) / (64 << 10)) * 0.9);
}

}  // namespace
}  // namespace cv::storage
