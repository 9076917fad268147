// Writing and reading objects through the real ObjectStore on real files: every size and
// range, the replicated and striped layouts, the content-address rules, the announced size,
// windowed appends, streaming in bounded memory, reopening, and the profile a store keeps.
#include <algorithm>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "storage/test_store.h"

namespace cv::storage {
namespace {

TEST_F(StoreTest, PutGetRoundTripsEverySizeAndRange) {
  OpenStore();
  std::mt19937_64 rng(1);
  for (size_t size : kSizes) {
    std::string body = Body(size, size);
    ObjectKey key = PutBody(body);
    ExpectReads(key, body);
    auto head = store_->Head(key);
    ASSERT_TRUE(head.has_value() && head->has_value());
    EXPECT_EQ((*head)->size, size);
    for (int i = 0; i < 20 && size > 0; ++i) {
      uint64_t off = rng() % size, len = rng() % (size - off + 1);
      auto part = store_->Get(key, off, len);
      ASSERT_TRUE(part.has_value()) << part.error().ToString();
      EXPECT_TRUE(*part == body.substr(off, len)) << size << " " << off << " " << len;
    }
    auto past = store_->Get(key, size + 1, 1);
    EXPECT_FALSE(past.has_value());
  }
}

TEST_F(StoreTest, SmallObjectsAreReplicatedLargeOnesStriped) {
  OpenStore();
  ObjectKey small = PutBody(Body(1, 700));
  ObjectKey large = PutBody(Body(2, 300000));
  auto txn = store_->Index().BeginRead();
  ASSERT_TRUE(txn.has_value());
  auto s = (*txn)->GetObject(small);
  auto l = (*txn)->GetObject(large);
  ASSERT_TRUE(s.has_value() && s->has_value() && l.has_value() && l->has_value());
  EXPECT_EQ((*s)->layout, index::Layout::kReplicated);
  EXPECT_EQ((*s)->shards.size(), 3u);  // m + 1 copies
  EXPECT_EQ((*l)->layout, index::Layout::kErasure);
  EXPECT_EQ((*l)->shards.size() % 6, 0u);
  for (const auto& rec : {**s, **l}) {
    // Every stripe (or every copy set) sits on distinct disks.
    const size_t w = rec.layout == index::Layout::kErasure ? 6 : rec.shards.size();
    for (size_t st = 0; st < rec.shards.size(); st += w) {
      std::set<uint16_t> disks;
      for (size_t i = st; i < st + w; ++i) disks.insert(rec.shards[i].disk);
      EXPECT_EQ(disks.size(), w);
    }
  }
}

TEST_F(StoreTest, ContentAddressRulesHashMismatchSameAndConflict) {
  OpenStore();
  std::string body = Body(3, 10000);
  ObjectKey wrong{device_, ObjectType::kData, ToHex(Sha256::Of("other"))};
  auto r = store_->Put(wrong, body);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_FALSE(store_->Head(wrong)->has_value());

  ObjectKey key = PutBody(body);
  EXPECT_TRUE(store_->Put(key, body).has_value());  // same again: no-op

  ObjectKey cfg{device_, ObjectType::kConfig, ""};
  ASSERT_TRUE(store_->Put(cfg, "config-one").has_value());
  auto c = store_->Put(cfg, "config-two");
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().kind, ErrorKind::kConflict);
  EXPECT_EQ(*store_->Get(cfg), "config-one");

  EXPECT_FALSE(store_->Put(ObjectKey{device_, ObjectType::kData, "../x"}, "x").has_value());
  EXPECT_FALSE(store_->Put(ObjectKey{device_, ObjectType::kData, std::string(64, 'A')}, "x").has_value());
}

TEST_F(StoreTest, BodyLengthMustMatchAnnouncedSize) {
  OpenStore();
  std::string body = Body(4, 70000);
  ObjectKey key = DataKey(device_, body);
  {
    auto w = store_->BeginPut(key, body.size() + 1);
    ASSERT_TRUE(w.has_value());
    ASSERT_TRUE((*w)->Append(std::span(reinterpret_cast<const uint8_t*>(body.data()), body.size())));
    EXPECT_FALSE((*w)->Commit().has_value());
  }
  {
    auto w = store_->BeginPut(key, body.size() - 1);
    ASSERT_TRUE(w.has_value());
    EXPECT_FALSE((*w)->Append(std::span(reinterpret_cast<const uint8_t*>(body.data()), body.size())));
  }
  EXPECT_FALSE(store_->Head(key)->has_value());
}

// The copy-free way in: the body written straight into the Writer's windows, in pieces that
// cross shard and stripe boundaries and end short of a window, reads back as the same object;
// a window never reaches past the announced size, and reporting more than the window is an
// error that ends the upload.
TEST_F(StoreTest, WindowedAppendsStoreTheSameBytes) {
  OpenStore();
  for (size_t size : {size_t{100}, size_t{70000}, size_t{5 * 64 * 1024 + 12345}}) {
    std::string body = Body(size, size);
    ObjectKey key = DataKey(device_, body);
    auto w = store_->BeginPut(key, body.size());
    ASSERT_TRUE(w.has_value());
    size_t at = 0, step = 1;
    while (at < body.size()) {
      std::span<uint8_t> win = (*w)->Window();
      ASSERT_FALSE(win.empty()) << at;
      ASSERT_LE(win.size(), body.size() - at);
      const size_t n = std::min(win.size(), step);
      std::memcpy(win.data(), body.data() + at, n);
      ASSERT_TRUE((*w)->Appended(n));
      at += n;
      step = step * 3 + 1;  // 1, 4, 13, 40, ... bytes: every kind of boundary
    }
    EXPECT_TRUE((*w)->Window().empty());
    EXPECT_TRUE((*w)->status());  // empty because the body is complete, not because it failed
    auto info = (*w)->Commit();
    ASSERT_TRUE(info.has_value()) << info.error().ToString();
    ExpectReads(key, body);
  }
  std::string body = Body(9, 70000);
  ObjectKey key = DataKey(device_, body);
  auto w = store_->BeginPut(key, body.size());
  ASSERT_TRUE(w.has_value());
  const size_t win = (*w)->Window().size();
  EXPECT_TRUE((*w)->status());
  EXPECT_FALSE((*w)->Appended(win + 1));
  EXPECT_TRUE((*w)->Window().empty());  // failed: no more windows
  ASSERT_FALSE((*w)->status());
  EXPECT_EQ((*w)->status().error().kind, ErrorKind::kInvalidArgument);
  EXPECT_FALSE((*w)->Commit().has_value());
  EXPECT_FALSE(store_->Head(key)->has_value());
}

uint64_t PeakRssBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

// A large object streams through in bounded memory (a few stripes, whatever its size), and
// streams back out byte-exact. 1 GiB in the Release suite, 128 MiB under sanitizers.
TEST_F(StoreTest, LargeObjectStreamsThroughInBoundedMemory) {
#ifdef CV_SANITIZE
  const uint64_t size = 128ull << 20;
#else
  const uint64_t size = 1ull << 30;
#endif
  auto opts = Options();
  opts.shard_unit = 256 * 1024;  // the production stripe size
  opts.extent_bytes = 64ull << 20;
  auto s = ObjectStore::Open(opts);
  ASSERT_TRUE(s.has_value());
  store_ = std::move(*s);
  // The body is a seeded stream, produced and hashed chunk by chunk: never held whole.
  auto chunk_of = [](uint64_t i) { return Body(i, 1 << 20); };
  Sha256 h;
  for (uint64_t i = 0; i < size >> 20; ++i) h.Update(chunk_of(i));
  const ObjectKey key{device_, ObjectType::kData, ToHex(h.Final())};
  const uint64_t rss_before = PeakRssBytes();
  {
    auto w = store_->BeginPut(key, size);
    ASSERT_TRUE(w.has_value());
    for (uint64_t i = 0; i < size >> 20; ++i) {
      std::string c = chunk_of(i);
      ASSERT_TRUE((*w)->Append(std::span(reinterpret_cast<const uint8_t*>(c.data()), c.size())));
    }
    auto info = (*w)->Commit();
    ASSERT_TRUE(info.has_value()) << info.error().ToString();
    EXPECT_EQ(info->size, size);
  }
  auto r = store_->Open(key, 0, size);
  ASSERT_TRUE(r.has_value());
  std::string buf(1 << 20, '\0');
  for (uint64_t i = 0; i < size >> 20; ++i) {
    size_t got = 0;
    while (got < buf.size()) {
      auto n = (*r)->Read(std::span(reinterpret_cast<uint8_t*>(buf.data()) + got, buf.size() - got));
      ASSERT_TRUE(n.has_value() && *n > 0);
      got += *n;
    }
    ASSERT_TRUE(buf == chunk_of(i)) << "chunk " << i;
  }
#ifndef CV_SANITIZE  // ASan's quarantine keeps freed chunks resident: RSS says nothing there
  const uint64_t grew = PeakRssBytes() - rss_before;
  EXPECT_LT(grew, 64ull << 20) << "peak RSS grew by " << grew << " bytes";
#else
  (void)rss_before;
#endif
}

TEST_F(StoreTest, ReopenAfterCleanCloseKeepsEverything) {
  OpenStore();
  std::vector<std::pair<ObjectKey, std::string>> objs;
  for (size_t size : kSizes) {
    std::string b = Body(size + 5, size);
    objs.emplace_back(PutBody(b), b);
  }
  OpenStore();
  for (const auto& [k, b] : objs) ExpectReads(k, b);
}

TEST_F(StoreTest, RefusesProfileOrDiskCountChanges) {
  OpenStore();
  store_.reset();
  auto o = Options();
  o.k = 3;
  o.m = 3;
  auto s = ObjectStore::Open(o);
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().kind, ErrorKind::kInvalidArgument);
  o = Options();
  o.disks.pop_back();
  o.k = 3;
  o.m = 2;
  EXPECT_FALSE(ObjectStore::Open(o).has_value());
  o = Options();
  o.disks.resize(5);
  EXPECT_FALSE(ObjectStore::Open(o).has_value());  // 4+2 needs 6 disks
}

// The bench's null-disk node: uploads are acknowledged and indexed, the extent files keep no
// byte, and the store says which engine it runs on.
TEST_F(StoreTest, DiscardDataWritesKeepsNoExtentBytes) {
  StoreOptions o = Options();
  o.discard_data_writes = true;
  auto s = ObjectStore::Open(o);
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  store_ = std::move(*s);
  EXPECT_STREQ(store_->Stats().io_engine, "discard");
  const std::string body = Body(7, 300000);
  const ObjectKey key = PutBody(body);
  ASSERT_TRUE(store_->Head(key)->has_value());
  uintmax_t extent_bytes = 0;
  for (const std::string& d : o.disks) {
    for (const auto& e : fs::directory_iterator(d + "/extents")) extent_bytes += fs::file_size(e);
  }
  EXPECT_EQ(extent_bytes, 0u);
}

}  // namespace
}  // namespace cv::storage
