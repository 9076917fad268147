// For tests only (needs GoogleTest).
// TempStore: a small ObjectStore in a fresh temporary directory, for the unit tests of the
// modules above storage. Three disks, 2+1, 8 MiB extents, a 16 MiB index map; the store is
// closed and the directory removed when the TempStore is destroyed.
// StoreTest: the fixture that storage's own tests (storage/*_test.cc) share, with Body,
// DataKey and kSizes.
#pragma once

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "common/test_temp_dir.h"
#include "storage/io/io.h"
#include "storage/record.h"
#include "storage/storage.h"

namespace cv::storage {

class TempStore {
 public:
  // On failure the test fails and ok() is false.
  explicit TempStore(const std::string& prefix) : dir_(prefix) {
    for (int i = 0; i < 3; ++i) options_.disks.push_back(dir_ / ("d" + std::to_string(i)));
    options_.index_dir = dir_ / "index";
    options_.k = 2;
    options_.m = 1;
    options_.extent_bytes = 8 << 20;
    options_.index_initial_map_bytes = 16 << 20;
    Reopen();
  }

  // Closes the store (REQUIRES: nothing uses it any more) and opens it again from what the
  // disks and the index hold: what a restart of the node sees.
  void Reopen() {
    store_.reset();
    auto s = ObjectStore::Open(options_);
    if (!s) {
      ADD_FAILURE() << "ObjectStore::Open: " << s.error().ToString();
      return;
    }
    store_ = std::move(*s);
  }

  bool ok() const { return store_ != nullptr; }
  ObjectStore& operator*() const { return *store_; }
  ObjectStore* operator->() const { return store_.get(); }
  const TempDir& dir() const { return dir_; }

 private:
  TempDir dir_;                         // declared first: removed after the store is closed
  StoreOptions options_;
  std::unique_ptr<ObjectStore> store_;
};

// ---- the fixture of storage's own tests ----

namespace fs = std::filesystem;
using index::ObjectKey;
using index::ObjectType;

inline std::string Body(uint64_t seed, size_t size) {
  std::string s(size, '\0');
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < size; i += 8) {
    uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<size_t>(8, size - i));
  }
  return s;
}

inline ObjectKey DataKey(const index::Id& dev, const std::string& body) {
  return ObjectKey{dev, ObjectType::kData, ToHex(Sha256::Of(body))};
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(TempBase()) / ("cvstore-" + std::to_string(::getpid()) + "-" + RandomHex(4));
    fs::create_directories(root_);
    device_ = index::NewId();
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  // Where the test's directory goes.
  virtual std::string TempBase() const { return ::testing::TempDir(); }
  StoreOptions Options(Env* env = nullptr) {
    StoreOptions o;
    for (int i = 0; i < 6; ++i) o.disks.push_back((root_ / ("d" + std::to_string(i))).string());
    o.index_dir = (root_ / "index").string();
    o.k = 4;
    o.m = 2;
    o.shard_unit = 16 * 1024;  // small stripes: many stripes per test object
    o.extent_bytes = 1 << 20;
    o.index_initial_map_bytes = 8 << 20;
    o.env = env;
    return o;
  }
  void OpenStore(Env* env = nullptr) {
    store_.reset();
    auto s = ObjectStore::Open(Options(env));
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    store_ = std::move(*s);
  }
  // Puts a content-addressed object and returns its key.
  ObjectKey PutBody(const std::string& body) {
    ObjectKey key = DataKey(device_, body);
    auto r = store_->Put(key, body);
    EXPECT_TRUE(r.has_value()) << r.error().ToString();
    return key;
  }
  void ExpectReads(const ObjectKey& key, const std::string& body) {
    auto got = store_->Get(key);
    ASSERT_TRUE(got.has_value()) << got.error().ToString();
    ASSERT_EQ(got->size(), body.size());
    size_t diff = 0;
    while (diff < body.size() && (*got)[diff] == body[diff]) ++diff;
    EXPECT_EQ(diff, body.size()) << "content differs for " << key.name << " of size "
                                 << body.size() << " first at byte " << diff;
  }

  // The extent file a shard location points into, named as the store names it.
  std::string ExtentPath(const index::ShardLoc& loc) {
    char name[32];
    std::snprintf(name, sizeof name, "%08x.ext", loc.extent);
    return Options().disks[loc.disk] + "/extents/" + name;
  }
  // Bit rot as reads see it: every read through `env` returns byte `at` of the payload of the
  // shard record at `loc` XORed with `mask` (the file is not changed).
  void FlipPayloadByteOnRead(FaultEnv& env, const ObjectKey& key, const index::ShardLoc& loc,
                             uint64_t at, uint8_t mask) {
    env.FlipOnRead(ExtentPath(loc), loc.offset + HeaderBytes(key) + at, mask);
  }
  // The same on disk: XORs `mask` into that byte of the file. For what must be damaged on
  // disk: what the io_uring ring reads (it bypasses any Env wrapper), what scrub and repair
  // find and heal.
  void FlipPayloadByte(const ObjectKey& key, const index::ShardLoc& loc, uint64_t at, char mask) {
    std::fstream f(ExtentPath(loc), std::ios::in | std::ios::out | std::ios::binary);
    const uint64_t pos = loc.offset + HeaderBytes(key) + at;
    char c;
    f.seekg(pos);
    f.read(&c, 1);
    c ^= mask;
    f.seekp(pos);
    f.write(&c, 1);
    ASSERT_TRUE(f.good());
  }

  void ExpectFsckClean() {
    auto rep = store_->Fsck();
    ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
    for (const auto& p : rep->problems) ADD_FAILURE() << "fsck: " << p;
  }

  // A store on a fresh io_uring Env (kept in uring_), or false where io_uring is refused.
  bool OpenUringStore() {
    auto env = NewUringEnv();
    if (!env) return false;
    uring_ = std::move(*env);
    OpenStore(uring_.get());
    return store_ != nullptr;
  }

  // Reads [off, off+len) of `key` as an event loop does: a Prefetch on `ring` before every
  // Read, which then asks for at most Buffered() bytes (or `chunk` when the prefetch left
  // nothing buffered: a failed shard, rebuilt by Read). Checks that such a Read does no I/O.
  std::string ReadPrefetched(AsyncRing& ring, const ObjectKey& key, uint64_t off, uint64_t len,
                             size_t chunk, int* unbuffered = nullptr) {
    auto reader = store_->Open(key, off, len);
    EXPECT_TRUE(reader.has_value()) << reader.error().ToString();
    if (!reader) return {};
    std::string got;
    for (int guard = 0; guard < 100000; ++guard) {
      bool done = false;
      (*reader)->Prefetch(ring, [&] { done = true; });
      EXPECT_FALSE(done);  // never inside Prefetch
      PollUntil(ring, done);
      EXPECT_TRUE(done);
      const uint64_t buffered = (*reader)->Buffered();
      const IoCounters before = uring_->Counters();
      std::string piece(buffered > 0 ? std::min<uint64_t>(buffered, chunk) : chunk, '\0');
      auto n = (*reader)->Read(std::span(reinterpret_cast<uint8_t*>(piece.data()), piece.size()));
      EXPECT_TRUE(n.has_value()) << n.error().ToString();
      if (!n || *n == 0) break;
      if (buffered > 0) {
        EXPECT_EQ(uring_->Counters().requests, before.requests) << "a buffered Read did I/O";
      } else if (unbuffered) {
        ++*unbuffered;
      }
      got.append(piece.data(), *n);
    }
    return got;
  }

  // Polls the ring through its eventfd until `done` (at most ~20 s).
  static void PollUntil(AsyncRing& ring, const bool& done) {
    for (int i = 0; i < 20000 && !done; ++i) {
      pollfd p{ring.event_fd(), POLLIN, 0};
      ::poll(&p, 1, 1);
      ring.Poll();
    }
  }

  fs::path root_;
  index::Id device_{};
  std::unique_ptr<Env> uring_;  // outlives store_ (TearDown resets the store first)
  std::unique_ptr<ObjectStore> store_;
};

// Sizes around every boundary: empty, tiny (replicated), one block, one stripe (4 x 16 KiB),
// several stripes with a short tail.
const size_t kSizes[] = {0, 1, 100, 4095, 4096, 5000, 65535, 65536, 65537, 200000, 1 << 20};

}  // namespace cv::storage
