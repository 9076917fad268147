// The durability rules of DESIGN.md, each proved through the real ObjectStore on real files.
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#ifdef CV_SANITIZE
#include <sanitizer/lsan_interface.h>
#endif

#include "common/test_temp_dir.h"
#include "storage/io/io.h"
#include "storage/record.h"
#include "storage/storage.h"

namespace cv::storage {
namespace {

namespace fs = std::filesystem;
using index::ObjectKey;
using index::ObjectType;

std::string Body(uint64_t seed, size_t size) {
  std::string s(size, '\0');
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < size; i += 8) {
    uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<size_t>(8, size - i));
  }
  return s;
}

ObjectKey DataKey(const index::Id& dev, const std::string& body) {
  return ObjectKey{dev, ObjectType::kData, ToHex(Sha256::Of(body))};
}

const char* FaultName(FaultEnv::Fault f) {
  switch (f) {
    case FaultEnv::Fault::kNone: return "none";
    case FaultEnv::Fault::kEio: return "EIO";
    case FaultEnv::Fault::kEnospc: return "ENOSPC";
    case FaultEnv::Fault::kShortWrite: return "short write";
    case FaultEnv::Fault::kTornWrite: return "torn write";
    case FaultEnv::Fault::kBitFlip: return "bit flip";
  }
  return "?";
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

// The maintenance operations under every single I/O failure (SweepEveryIo): each may stop
// half-way, but the index stays consistent, nothing acknowledged is lost, and the operation
// run again finishes the work. Seeds are printed with every failure.
class FaultSweepTest : public StoreTest {
 protected:
  // A sweep tests the store's logic under faults, not the file system: on tmpfs an
  // fdatasync costs nothing, so the hundreds of runs of a sweep take a second or two instead
  // of a minute of waiting for the disk. (The Put sweep, the power-loss and kill -9 tests
  // keep the real file system.) tmpfs takes O_DIRECT on current kernels; where it does not,
  // the store falls back to buffered I/O, as on any such file system.
  std::string TempBase() const override {
    std::error_code ec;
    if (fs::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0) return "/dev/shm";
    return StoreTest::TempBase();
  }

  using Objects = std::vector<std::pair<ObjectKey, std::string>>;
  struct Sweep {
    // Builds the scenario on store_ (fault-free); objects that must survive every fault go to
    // `kept`, objects the operation may remove (a purge's) to `doomed`.
    std::function<void(Objects& kept, Objects& doomed)> setup;
    // Standing faults for the whole run (a dead disk), set before the store opens.
    std::function<void(FaultEnv&)> prepare;
    // The operation on store_; OK only when it completed (its report names no problem).
    std::function<Status()> op;
    // What a completed operation leaves behind (checked after the fault-free rerun).
    std::function<void()> done;
    // The kinds of fault, each swept over every I/O. ENOSPC and short writes add little to
    // EIO and torn writes (on a read or a sync all four are EIO); the Put sweep has them all.
    std::vector<FaultEnv::Fault> faults = {FaultEnv::Fault::kEio, FaultEnv::Fault::kTornWrite,
                                           FaultEnv::Fault::kBitFlip};
  };
  // Small stripes and extents so that a sweep is a few hundred I/Os: 2+1 on 4 disks (a spare
  // for repair and drain), 4 KiB shard units, 256 KiB extents.
  StoreOptions SweepOptions(Env* env) {
    StoreOptions o = Options(env);
    o.disks.resize(4);
    o.k = 2;
    o.m = 1;
    o.shard_unit = 4096;
    o.extent_bytes = 256 << 10;
    return o;
  }
  // Puts a replicated object, a two-stripe and a three-stripe one (SweepOptions) into `out`.
  void PutMix(uint64_t seed, Objects& out) {
    for (size_t size : {size_t{100}, size_t{12000}, size_t{20000}}) {
      std::string b = Body(seed + size, size);
      out.emplace_back(PutBody(b), b);
    }
  }
  // For each fault kind and N = 0, 1, 2, ...: on a fresh copy of the scenario, the Nth I/O
  // of sw.op gets the fault; then fsck and scrub are clean and every kept object reads back
  // exactly (a doomed one is absent or exact); then the operation, run again without faults,
  // completes and all of that holds again. A kind is done when the operation did no more than N
  // I/Os: each of them has failed once. The FaultEnv's seed is `seed` + the fault kind, or
  // CV_FAULT_SEED + the kind when that is set (to try other garbage and flipped bits); a
  // failure names its seed, fault and N, and stops the sweep.
  void SweepEveryIo(const Sweep& sw, uint64_t seed) {
    if (const char* s = std::getenv("CV_FAULT_SEED")) seed = std::strtoull(s, nullptr, 0);
    Objects kept, doomed;
    {
      auto s = ObjectStore::Open(SweepOptions(posix_.get()));
      ASSERT_TRUE(s.has_value()) << s.error().ToString();
      store_ = std::move(*s);
      sw.setup(kept, doomed);
      store_.reset();
      ASSERT_FALSE(HasFailure()) << "the scenario could not be set up";
    }
    const TempDir scenario("cvsweep", TempBase());  // the store setup left, copied for each N
    fs::copy(root_, scenario.path(), fs::copy_options::recursive);
    // Rule 3 too: scrub reads every shard the index references, parity included (reads
    // alone do not notice a lost parity shard). Only the shards on failed disks (or lost in
    // a rebuild) may be damaged, and one more after a bit flipped on its way to the disk.
    auto check = [&](const char* when, FaultEnv::Fault fault) {
      SCOPED_TRACE(when);
      ExpectFsckClean();
      for (const auto& [k, b] : kept) ExpectReads(k, b);
      for (const auto& [k, b] : doomed) {
        if (store_->Head(k)->has_value()) ExpectReads(k, b);
      }
      const StoreStats st = store_->Stats();
      uint64_t on_failed = 0;  // or lost: a rebuild found no valid record for them
      ASSERT_TRUE((*store_->Index().BeginRead())
                      ->ForEachObject([&](const ObjectKey&, const index::ObjectRecord& r) {
                        for (const auto& loc : r.shards) {
                          on_failed +=
                              loc.disk >= st.disks.size() || st.disks[loc.disk].failed ? 1 : 0;
                        }
                        return true;
                      }));
      auto scrub = store_->Scrub();
      ASSERT_TRUE(scrub.has_value()) << scrub.error().ToString();
      std::string damaged;
      for (const auto& d : scrub->damaged) damaged += "\n  " + d;
      EXPECT_EQ(scrub->lost_stripes, 0u) << damaged;
      EXPECT_GE(scrub->damaged_shards, on_failed);
      EXPECT_LE(scrub->damaged_shards, on_failed + (fault == FaultEnv::Fault::kBitFlip ? 1 : 0))
          << "the index references shards that are not what was written:" << damaged;
    };
    int incomplete = 0;
    for (FaultEnv::Fault fault : sw.faults) {
      const uint64_t env_seed = seed + static_cast<uint64_t>(fault);
      for (uint64_t n = 0;; ++n) {
        SCOPED_TRACE("fault sweep: seed " + std::to_string(env_seed) + ", fault " +
                     FaultName(fault) + " on I/O number " + std::to_string(n));
        fs::remove_all(root_);
        fs::copy(scenario.path(), root_, fs::copy_options::recursive);
        FaultEnv env(posix_.get(), env_seed);
        if (sw.prepare) sw.prepare(env);
        auto s = ObjectStore::Open(SweepOptions(&env));
        ASSERT_TRUE(s.has_value()) << s.error().ToString();
        store_ = std::move(*s);
        const uint64_t before = env.ops();
        env.FailNth(n, fault);
        const Status faulted = sw.op();
        const bool fired = env.ops() > before + n;
        env.FailNth(0, FaultEnv::Fault::kNone);
        if (!faulted) ++incomplete;
        check("after the faulted run", fault);
        const Status again = sw.op();
        EXPECT_TRUE(again) << "the rerun without faults: " << again.error().ToString();
        if (again && sw.done) sw.done();
        check("after the rerun", fault);
        store_.reset();
        if (HasFailure()) return;
        if (!fired) break;
        ASSERT_LT(n, 1000u);
      }
    }
    EXPECT_GT(incomplete, 0) << "no fault stopped the operation: does it do any I/O? seed " << seed;
  }

  // Under every store of a sweep (plain pread/pwrite: no io_uring region to register for
  // each of the hundreds of stores). TearDown closes the store before it goes.
  std::unique_ptr<Env> posix_ = NewPosixEnv();
};

// What an operation's report says when it did not finish its work (for Sweep::op).
Status Incomplete(const std::string& what) { return Err(ErrorKind::kIOError, what); }

// Rule 2 under every single I/O failure: a Put that fails leaves no object, the objects
// stored before are untouched, and the Put retried without faults stores its object.
TEST_F(FaultSweepTest, PutFailsCleanlyWhicheverIoFails) {
  const std::string small = Body(6000, 100), large = Body(6001, 20000);  // 2 copies; 3 stripes
  Sweep sw;
  sw.setup = [&](Objects& kept, Objects&) {
    for (size_t size : {size_t{100}, size_t{20000}}) {
      std::string b = Body(6002 + size, size);
      kept.emplace_back(PutBody(b), b);
    }
  };
  sw.op = [&]() -> Status {
    for (const std::string* body : {&small, &large}) {
      const ObjectKey key = DataKey(device_, *body);
      auto r = store_->Put(key, *body);
      if (!r) {
        EXPECT_FALSE(store_->Head(key)->has_value()) << "a failed Put left its object";
        return tl::unexpected(r.error());
      }
    }
    return {};
  };
  sw.done = [&] {
    ExpectReads(DataKey(device_, small), small);
    ExpectReads(DataKey(device_, large), large);
  };
  sw.faults = {FaultEnv::Fault::kEio, FaultEnv::Fault::kEnospc, FaultEnv::Fault::kShortWrite,
               FaultEnv::Fault::kTornWrite, FaultEnv::Fault::kBitFlip};
  SweepEveryIo(sw, 6000);
}

// Compaction: extents with deleted objects and tombstones are rewritten and removed.
TEST_F(FaultSweepTest, CompactionLosesNothingWhicheverIoFails) {
  Sweep sw;
  sw.setup = [&](Objects& kept, Objects&) {
    for (int i = 0; i < 4; ++i) {
      std::string b = Body(6100 + i, i % 2 ? 100 : 12000);  // replicated and striped
      ObjectKey k = PutBody(b);
      if (i < 2) {
        kept.emplace_back(k, b);
      } else {
        ASSERT_TRUE(store_->Delete(k));  // dead records and tombstones
      }
    }
  };
  sw.op = [&]() -> Status {
    CompactOptions co;
    co.max_live_ratio = 0.9;
    auto rep = store_->Compact(co);
    if (!rep) return tl::unexpected(rep.error());
    if (!rep->problems.empty()) return Incomplete(rep->problems.front());
    return {};
  };
  sw.done = [&] {
    auto rep = store_->Compact(CompactOptions{0.9, 0});
    ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
    EXPECT_EQ(rep->records_moved, 0u) << "a completed compaction left work behind";
  };
  SweepEveryIo(sw, 6100);
}

// Repair: a dead disk's shards are rebuilt onto the spare.
TEST_F(FaultSweepTest, RepairLosesNothingWhicheverIoFails) {
  Sweep sw;
  sw.setup = [&](Objects& kept, Objects&) { PutMix(6200, kept); };
  const std::string dead = SweepOptions(nullptr).disks[3];
  sw.prepare = [&](FaultEnv& env) { env.FailPath(dead); };
  sw.op = [&]() -> Status {
    auto rep = store_->Repair(true);
    if (!rep) return tl::unexpected(rep.error());
    if (rep->stripes_lost > 0 || rep->still_queued > 0) {
      return Incomplete(std::to_string(rep->stripes_lost) + " lost, " +
                        std::to_string(rep->still_queued) + " still queued");
    }
    return {};
  };
  sw.done = [&] { EXPECT_EQ(store_->Stats().disks[3].live_bytes, 0u) << "still on the dead disk"; };
  SweepEveryIo(sw, 6200);
}

// Drain: every shard moves off a draining disk, whose extent files are then deleted.
TEST_F(FaultSweepTest, DrainLosesNothingWhicheverIoFails) {
  Sweep sw;
  sw.setup = [&](Objects& kept, Objects&) {
    PutMix(6300, kept);
    ASSERT_TRUE(store_->SetDiskState(0, DiskState::kDraining));
  };
  sw.op = [&]() -> Status {
    auto rep = store_->Drain(0, {});
    if (!rep) return tl::unexpected(rep.error());
    if (rep->stripes_failed > 0 || rep->remaining_bytes > 0) {
      return Incomplete(rep->problems.empty() ? "bytes remain" : rep->problems.front());
    }
    return {};
  };
  sw.done = [&] {
    EXPECT_EQ(store_->Stats().disks[0].live_bytes, 0u);
    EXPECT_TRUE(fs::is_empty(SweepOptions(nullptr).disks[0] + "/extents"));
  };
  SweepEveryIo(sw, 6300);
}

// A device purge as the purge job runs it (admin/jobs/purge.cc): the device tombstone, the index
// batches, then compaction. The other device's objects are kept; the purged device's are
// either still whole or gone, and after the rerun gone for good, an index rebuild included.
TEST_F(FaultSweepTest, DevicePurgeLosesNothingWhicheverIoFails) {
  const index::Id victim = index::NewId();
  Sweep sw;
  sw.setup = [&](Objects& kept, Objects& doomed) {
    for (int i = 0; i < 2; ++i) {
      std::string b = Body(6400 + i, i % 2 ? 100 : 12000);
      ObjectKey k = DataKey(victim, b);
      ASSERT_TRUE(store_->Put(k, b));
      doomed.emplace_back(k, b);
      std::string c = Body(6500 + i, i % 2 ? 12000 : 100);
      kept.emplace_back(PutBody(c), c);
    }
  };
  sw.op = [&]() -> Status {
    CV_TRY(store_->WriteDeviceTombstone(victim));
    while (true) {
      auto b =
          store_->PurgeObjects(victim, 2, [&](index::WriteTxn& t, const PurgeBatch& pb) -> Status {
            return pb.objects == 0 ? t.PutMeta(index::PurgedDeviceMetaKey(victim), "sweep")
                                   : Status{};
          });
      if (!b) return tl::unexpected(b.error());
      if (b->objects == 0) break;
    }
    auto rep = store_->Compact(CompactOptions{});
    if (!rep) return tl::unexpected(rep.error());
    if (!rep->problems.empty()) return Incomplete(rep->problems.front());
    return {};
  };
  sw.done = [&] {
    EXPECT_TRUE(store_->List(victim, std::nullopt, "", 100)->empty());
    const std::string late = Body(6499, 100);
    EXPECT_EQ(store_->Put(DataKey(victim, late), late).error().kind, ErrorKind::kGone);
    // ...and stays purged in an index rebuilt from the extents, whatever the faulted run
    // left in them (the device tombstone).
    store_.reset();
    fs::remove_all(root_ / "index");
    auto rebuilt = ObjectStore::RebuildIndex(SweepOptions(posix_.get()), "");
    ASSERT_TRUE(rebuilt.has_value()) << rebuilt.error().ToString();
    auto s = ObjectStore::Open(SweepOptions(posix_.get()));
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    store_ = std::move(*s);
    auto back = store_->List(victim, std::nullopt, "", 100);
    ASSERT_TRUE(back.has_value()) << back.error().ToString();
    for (const auto& o : *back) ADD_FAILURE() << "purged, came back in the rebuild: " << o.key.name;
  };
  SweepEveryIo(sw, 6400);
}

// Rule 1 for power loss: after acknowledged Puts every byte not yet synced is lost; every
// acknowledged object still reads back, and an unfinished upload is not visible.
TEST_F(StoreTest, PowerLossKeepsEveryAcknowledgedObject) {
  auto base = NewPosixEnv();
  FaultEnv env(base.get(), 99);
  OpenStore(&env);
  std::vector<std::pair<ObjectKey, std::string>> acked;
  for (int i = 0; i < 20; ++i) {
    std::string b = Body(500 + i, 1000 + i * 17000);
    acked.emplace_back(PutBody(b), b);
  }
  std::string pending = Body(7777, 200000);
  ObjectKey pending_key = DataKey(device_, pending);
  {
    auto w = store_->BeginPut(pending_key, pending.size());
    ASSERT_TRUE(w.has_value());
    ASSERT_TRUE((*w)->Append(std::span(reinterpret_cast<const uint8_t*>(pending.data()), 150000)));
    store_.reset();  // the "crash": the writer never commits
    // Leak on purpose: a crashed process runs no destructors.
    Writer* leaked = w->release();
#ifdef CV_SANITIZE
    __lsan_ignore_object(leaked);
#else
    (void)leaked;
#endif
  }
  ASSERT_TRUE(env.DropUnsynced());
  OpenStore(&env);
  for (const auto& [k, b] : acked) ExpectReads(k, b);
  EXPECT_FALSE(store_->Head(pending_key)->has_value());
  ExpectFsckClean();
}

// Rule 1 and 2 for a real crash: a child process puts objects and logs each acknowledged
// key; it is SIGKILLed at seeded random moments; after each restart every acknowledged
// object verifies and everything listed is complete.
TEST_F(StoreTest, KillNineAtRandomMomentsLosesNothingAcknowledged) {
  const std::string ack_log = (root_ / "acked.log").string();
  std::mt19937_64 rng(20261126);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  int rounds = 0;
  for (; rounds < 20 && std::chrono::steady_clock::now() < deadline; ++rounds) {
    const uint64_t child_seed = rng();
    const int kill_after_ms = 30 + static_cast<int>(rng() % 250);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto s = ObjectStore::Open(Options());
      if (!s) ::_exit(3);
      int fd = ::open(ack_log.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
      std::mt19937_64 crng(child_seed);
      for (int i = 0; i < 100000; ++i) {
        const uint64_t seed = crng();
        std::string body = Body(seed, crng() % 300000);
        ObjectKey key = DataKey(device_, body);
        if (!(*s)->Put(key, body)) ::_exit(4);
        std::string line = std::to_string(seed) + " " + std::to_string(body.size()) + "\n";
        if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) ::_exit(5);
        ::fdatasync(fd);
      }
      ::_exit(0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kill_after_ms));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status) || WEXITSTATUS(status) == 0) << "child failed: " << status;

    OpenStore();
    std::ifstream in(ack_log);
    uint64_t seed = 0;
    size_t size = 0;
    size_t checked = 0;
    std::set<std::string> acked_names;
    while (in >> seed >> size) {
      std::string body = Body(seed, size);
      ObjectKey key = DataKey(device_, body);
      acked_names.insert(key.name);
      ExpectReads(key, body);
      ++checked;
    }
    auto listed = store_->List(device_, ObjectType::kData, "", 1000000);
    ASSERT_TRUE(listed.has_value());
    for (const auto& info : *listed) {
      auto got = store_->Get(info.key);
      ASSERT_TRUE(got.has_value()) << "listed object unreadable: " << info.key.name;
      EXPECT_EQ(ToHex(Sha256::Of(*got)), info.key.name) << "partial object listed";
    }
    ExpectFsckClean();
    store_.reset();
  }
#ifdef CV_SANITIZE
  EXPECT_GE(rounds, 5);  // sanitizers slow each round; the Release suite runs all 20
#else
  EXPECT_EQ(rounds, 20);
#endif
}

// Rule 1 for disk loss: with 4+2, any 2 of the 6 disk directories may vanish and every
// object reads back; a third loss is a clear error, never wrong data.
TEST_F(StoreTest, AnyTwoDisksLostEveryObjectReadsBackThirdIsAnError) {
  OpenStore();
  std::vector<std::pair<ObjectKey, std::string>> objs;
  for (size_t size : kSizes) {
    std::string b = Body(size + 11, size);
    objs.emplace_back(PutBody(b), b);
  }
  store_.reset();
  auto opts = Options();
  for (size_t a = 0; a < 6; ++a) {
    for (size_t b = a + 1; b < 6; ++b) {
      fs::rename(opts.disks[a], opts.disks[a] + ".gone");
      fs::rename(opts.disks[b], opts.disks[b] + ".gone");
      OpenStore();
      EXPECT_FALSE(store_->Ready());  // fewer than k+m disks: no new uploads
      for (const auto& [k, body] : objs) ExpectReads(k, body);
      // A third loss, while serving: reads of striped objects fail cleanly.
      const size_t c = (b + 1) % 6 == a ? (b + 2) % 6 : (b + 1) % 6;
      fs::rename(opts.disks[c], opts.disks[c] + ".gone");
      OpenStore();
      const auto& [big_key, big_body] = objs.back();
      auto got = store_->Get(big_key);
      if (got.has_value()) {
        EXPECT_TRUE(*got == big_body);  // the lost disks held none of its stripes' shards
      } else {
        EXPECT_EQ(got.error().kind, ErrorKind::kUnavailable) << got.error().ToString();
      }
      store_.reset();
      for (size_t d : {a, b, c}) fs::rename(opts.disks[d] + ".gone", opts.disks[d]);
    }
  }
  OpenStore();
  EXPECT_TRUE(store_->Ready());
}

// Rule 1 for disks that fail while the node serves: with 4+2, two disks that start failing
// every I/O (two FailPath calls: two dead disks) cost no object; the reads that needed them
// are rebuilt from parity or another copy, and the errors are counted on those two disks
// only.
TEST_F(StoreTest, TwoDisksFailingWhileServingAreReconstructedAndCounted) {
  auto base = NewPosixEnv();
  FaultEnv env(base.get(), 5);
  OpenStore(&env);
  std::vector<std::pair<ObjectKey, std::string>> objs;
  for (size_t size : kSizes) {
    std::string b = Body(size + 77, size);
    objs.emplace_back(PutBody(b), b);
  }
  auto opts = Options();
  env.FailPath(opts.disks[1]);
  env.FailPath(opts.disks[4]);
  for (const auto& [k, b] : objs) ExpectReads(k, b);
  const StoreStats st = store_->Stats();
  EXPECT_GT(st.reconstructed_reads, 0u);
  for (size_t d = 0; d < st.disks.size(); ++d) {
    if (d == 1 || d == 4) {
      EXPECT_GT(st.disks[d].errors, 0u) << "disk " << d << " was never failed";
    } else {
      EXPECT_EQ(st.disks[d].errors, 0u) << "disk " << d;
    }
  }
  // The 1 MiB object's every stripe spans all six disks: each lost two shards and was
  // rebuilt from the four left, m = 2 at work.
  env.Heal();
}

// Reads for an event loop: every range of every layout comes back through Prefetch on the
// Env's ring (registered buffers), and a Read of at most Buffered() bytes does no I/O.
TEST_F(StoreTest, PrefetchedReadsReturnEveryRangeAndBufferedReadsDoNoIo) {
  if (!OpenUringStore()) GTEST_SKIP() << "io_uring unavailable here";
  auto ring = store_->NewAsyncRing();
  ASSERT_TRUE(ring.has_value()) << ring.error().ToString();
  const uint64_t sb = 4 * 16 * 1024;
  for (size_t size : {size_t{1}, size_t{100}, size_t{5000}, size_t{3 * sb + 1234}, size_t{1} << 20}) {
    const std::string body = Body(size, size);
    const ObjectKey key = PutBody(body);
    const uint64_t ranges[][2] = {{0, size}, {size / 3, size / 2 + 1}, {size - 1, 1}};
    for (const auto& r : ranges) {
      for (size_t chunk : {size_t{7000}, size_t{256 * 1024}}) {
        const uint64_t before = uring_->Counters().registered_requests;
        EXPECT_EQ(ReadPrefetched(**ring, key, r[0], r[1], chunk), body.substr(r[0], r[1]))
            << "size " << size << " range " << r[0] << "+" << r[1] << " chunk " << chunk;
        EXPECT_GT(uring_->Counters().registered_requests, before) << "the ring read nothing";
      }
    }
  }
  EXPECT_EQ(store_->Stats().corrupt_shards, 0u);
  EXPECT_EQ((*ring)->pending(), 0u);
}

// A prefetched shard that fails its checksum is left to Read, which rebuilds the stripe
// from parity; a damaged copy of a small object is read from the next copy. (The damage is
// on disk: the ring reads the files directly, past any Env wrapper.)
TEST_F(StoreTest, PrefetchedDamagedShardsAreRebuiltByRead) {
  if (!OpenUringStore()) GTEST_SKIP() << "io_uring unavailable here";
  const uint64_t sb = 4 * 16 * 1024;
  const std::string body = Body(5, 4 * sb + 99), small = Body(6, 300);
  const ObjectKey key = PutBody(body), small_key = PutBody(small);
  {
    auto rec = (*store_->Index().BeginRead())->GetObject(key);
    FlipPayloadByte(key, (**rec).shards[1 * 6 + 2], 10, 0x11);  // stripe 1, data shard 2
    auto srec = (*store_->Index().BeginRead())->GetObject(small_key);
    FlipPayloadByte(small_key, (**srec).shards[0], 10, 0x11);   // the first copy
  }
  store_.reset();
  OpenStore(uring_.get());
  auto ring = store_->NewAsyncRing();
  ASSERT_TRUE(ring.has_value());
  int unbuffered = 0;
  EXPECT_EQ(ReadPrefetched(**ring, key, 0, body.size(), 256 * 1024, &unbuffered), body);
  EXPECT_EQ(ReadPrefetched(**ring, small_key, 0, small.size(), 256 * 1024, &unbuffered), small);
  EXPECT_EQ(unbuffered, 2);  // one synchronous Read per damaged stripe or copy
  const StoreStats st = store_->Stats();
  EXPECT_EQ(st.corrupt_shards, 2u);
  EXPECT_EQ(st.reconstructed_reads, 2u);
  EXPECT_GT(st.pending_repairs, 0u);
}

// A Reader destroyed while its prefetch is in the kernel: the buffers live on until the ring
// is done with them, and `done` still runs.
TEST_F(StoreTest, ReaderDestroyedWhileItsPrefetchRunsIsSafe) {
  if (!OpenUringStore()) GTEST_SKIP() << "io_uring unavailable here";
  auto ring = store_->NewAsyncRing();
  ASSERT_TRUE(ring.has_value());
  const std::string body = Body(9, 1 << 20);
  const ObjectKey key = PutBody(body);
  for (int i = 0; i < 20; ++i) {
    auto reader = store_->Open(key, 0, body.size());
    ASSERT_TRUE(reader.has_value());
    bool done = false;
    (*reader)->Prefetch(**ring, [&] { done = true; });
    reader->reset();
    PollUntil(**ring, done);
    EXPECT_TRUE(done);
  }
  EXPECT_EQ((*ring)->pending(), 0u);
  ExpectReads(key, body);
}

// Bit rot: random bytes flipped in shard payloads are caught by XXH3, reads return correct
// data rebuilt from parity, and the damage is reported.
TEST_F(StoreTest, FlippedPayloadBytesAreDetectedAndRebuilt) {
  auto base = NewPosixEnv();
  FaultEnv env(base.get(), 42);
  OpenStore(&env);
  std::vector<std::pair<ObjectKey, std::string>> objs;
  for (int i = 0; i < 10; ++i) {
    std::string b = Body(900 + i, 100000 + i * 1000);
    objs.emplace_back(PutBody(b), b);
  }
  std::mt19937_64 rng(42);
  int flipped = 0;
  for (const auto& [key, body] : objs) {
    auto rec = (*store_->Index().BeginRead())->GetObject(key);
    const auto& r = **rec;
    // One data shard per stripe at most, so every stripe stays rebuildable. (Parity shards
    // are not read on the normal read path; scrub finds damage there.)
    for (size_t st = 0; st < r.shards.size() / 6; ++st) {
      FlipPayloadByteOnRead(env, key, r.shards[st * 6 + rng() % 4], rng() % 1000, 0x5a);
      ++flipped;
    }
  }
  for (const auto& [k, b] : objs) ExpectReads(k, b);
  auto st = store_->Stats();
  EXPECT_EQ(st.corrupt_shards, static_cast<uint64_t>(flipped));
  EXPECT_GT(st.pending_repairs, 0u);
}

// A stripe's data shards are read in one batch: a damaged one is counted once, the stripe is
// rebuilt from parity once, and ranges that start or stop mid-stripe read exactly their bytes.
TEST_F(StoreTest, BatchedStripeReadsRebuildEachDamagedStripeOnce) {
  auto base = NewPosixEnv();
  FaultEnv env(base.get(), 77);
  OpenStore(&env);
  const uint64_t sb = 4 * 16 * 1024;  // stripe bytes: k = 4 shards of 16 KiB
  const std::string body = Body(77, 5 * sb + 1234);
  ObjectKey key = PutBody(body);
  auto rec = **(*store_->Index().BeginRead())->GetObject(key);
  ASSERT_EQ(rec.shards.size(), 6u * 6);
  FlipPayloadByteOnRead(env, key, rec.shards[1 * 6 + 2], 10, 0x40);  // stripe 1, data shard 2
  FlipPayloadByteOnRead(env, key, rec.shards[3 * 6 + 0], 99, 0x40);  // stripe 3, data shard 0
  ExpectReads(key, body);
  auto st = store_->Stats();
  EXPECT_EQ(st.corrupt_shards, 2u);
  EXPECT_EQ(st.reconstructed_reads, 2u);
  for (auto [off, len] : {std::pair<uint64_t, uint64_t>{sb - 5, 10}, {sb / 2, sb},
                          {3 * sb - 1, 2}, {sb + 1, 3 * sb}, {4 * sb, sb + 1234}}) {
    auto part = store_->Get(key, off, len);
    ASSERT_TRUE(part.has_value()) << part.error().ToString();
    EXPECT_TRUE(*part == body.substr(off, len)) << off << " " << len;
  }
}

// A stripe with more damage than parity fails the read, and so does a retry of the same
// Reader: it must not hand out the bytes of the shards that failed their checks.
TEST_F(StoreTest, UnreadableStripeFailsEveryRetryOfTheReader) {
  auto base = NewPosixEnv();
  FaultEnv env(base.get(), 78);
  OpenStore(&env);
  const std::string body = Body(78, 3 * 4 * 16 * 1024);
  ObjectKey key = PutBody(body);
  auto rec = **(*store_->Index().BeginRead())->GetObject(key);
  for (size_t shard : {0, 1, 4}) FlipPayloadByteOnRead(env, key, rec.shards[shard], 5, 0x01);
  auto reader = store_->Open(key, 0, body.size());
  ASSERT_TRUE(reader.has_value()) << reader.error().ToString();
  std::string out(1000, '\0');
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto n = (*reader)->Read(std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), out.size()));
    EXPECT_FALSE(n.has_value()) << "attempt " << attempt << " read " << *n << " bytes";
  }
  // The damage is in what the disk returns, not in the store: healed, the object reads.
  env.Heal();
  ExpectReads(key, body);
}

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

// Disk replacement in the engine: a disk added while serving takes shards and is in the
// node's disk table after a reopen (the options still list 6 disks); a drained disk holds
// nothing and no extent file; a removed disk is never opened again; the config must list
// the node's disks in order.
TEST_F(StoreTest, AddDrainRemoveDisksAndTheTableSurvivesReopen) {
  OpenStore();
  std::vector<std::pair<ObjectKey, std::string>> objs;
  for (size_t size : kSizes) {
    std::string b = Body(size + 77, size);
    objs.emplace_back(PutBody(b), b);
  }
  const std::string added = (root_ / "d6").string();
  EXPECT_EQ(store_->AddDisk("relative").error().kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(store_->AddDisk(Options().disks[1]).error().kind, ErrorKind::kConflict);
  auto pos = store_->AddDisk(added);
  ASSERT_TRUE(pos.has_value()) << pos.error().ToString();
  EXPECT_EQ(*pos, 6u);
  EXPECT_EQ(store_->AddDisk(added).error().kind, ErrorKind::kConflict);
  for (int i = 0; i < 20; ++i) {
    std::string b = Body(70000 + i, 900 + i);
    objs.emplace_back(PutBody(b), b);
  }
  EXPECT_GT(store_->Stats().disks.at(6).live_bytes, 0u);

  // Drain disk 0: only a draining disk can be drained.
  EXPECT_EQ(store_->Drain(0, {}).error().kind, ErrorKind::kConflict);
  ASSERT_TRUE(store_->SetDiskState(0, DiskState::kDraining).has_value());
  auto rep = store_->Drain(0, {});
  ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
  EXPECT_TRUE(rep->complete);
  EXPECT_GT(rep->stripes_moved, 0u);
  EXPECT_EQ(rep->stripes_failed, 0u);
  EXPECT_EQ(rep->remaining_bytes, 0u);
  EXPECT_TRUE(fs::is_empty(Options().disks[0] + "/extents"));
  ExpectFsckClean();
  for (const auto& [k, b] : objs) ExpectReads(k, b);
  std::string late = Body(30000, 5);
  objs.emplace_back(PutBody(late), late);  // goes elsewhere
  EXPECT_TRUE(fs::is_empty(Options().disks[0] + "/extents"));

  ASSERT_TRUE(store_->SetDiskState(0, DiskState::kRemoved).has_value());
  EXPECT_EQ(store_->SetDiskState(0, DiskState::kActive).error().kind, ErrorKind::kConflict);
  store_.reset();

  // Reopen with the original 6 disks listed: the table brings back the 7th and the states.
  OpenStore();
  auto st = store_->Stats();
  ASSERT_EQ(st.disks.size(), 7u);
  EXPECT_EQ(st.disks[6].path, added);
  EXPECT_EQ(st.disks[0].state, DiskState::kRemoved);
  EXPECT_TRUE(st.disks[0].failed);
  EXPECT_FALSE(st.disks[6].failed);
  for (const auto& [k, b] : objs) ExpectReads(k, b);
  ExpectFsckClean();
  store_.reset();

  auto swapped = Options();
  std::swap(swapped.disks[1], swapped.disks[2]);
  auto refused = ObjectStore::Open(swapped);
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().context.find("order of disks"), std::string::npos)
      << refused.error().ToString();
  auto more = Options();
  more.disks.push_back(added);
  more.disks.push_back((root_ / "d7").string());
  EXPECT_FALSE(ObjectStore::Open(more).has_value());
  more.disks.pop_back();  // the config may list the added disk too
  auto same = ObjectStore::Open(more);
  ASSERT_TRUE(same.has_value()) << same.error().ToString();
}

// A disk change and fsck's fix commit in one index transaction with the caller's `also` (the
// admin module's audit record): when `also` fails, nothing changed, in memory (the disk is
// placeable and read as before) or after a reopen, and a failed add leaves its directory as it
// was given; when it succeeds, both are durable and `also` saw the disk as the change left it.
TEST_F(StoreTest, DiskChangesAndFsckFixCommitWithTheCallersRecordOrRollBack) {
  OpenStore();
  std::vector<std::pair<ObjectKey, std::string>> objs;
  for (size_t size : kSizes) {
    std::string b = Body(size + 31, size);
    objs.emplace_back(PutBody(b), b);
  }
  ASSERT_TRUE(store_->Index().Update([&](index::WriteTxn& txn) {  // counters fsck will fix
    index::DeviceRecord d;
    d.id = device_;
    d.account = index::NewId();
    d.bytes = 1;
    return txn.PutDevice(d);
  }));
  int failed_calls = 0;
  auto fails = [&](index::WriteTxn& txn, const auto&) -> Status {
    ++failed_calls;
    CV_TRY(txn.PutMeta("test/record", "written, then rolled back"));
    return Err(ErrorKind::kIOError, "the caller's record failed");
  };
  const std::string fresh = (root_ / "d6").string();
  const std::string given = (root_ / "d7").string();
  fs::create_directories(given);
  for (const std::string& path : {fresh, given}) {
    auto added = store_->AddDisk(path, fails);
    ASSERT_FALSE(added.has_value());
    EXPECT_EQ(added.error().context, "the caller's record failed");
  }
  EXPECT_FALSE(fs::exists(fresh));
  EXPECT_TRUE(fs::is_directory(given) && fs::is_empty(given));
  for (DiskState s : {DiskState::kDraining, DiskState::kRemoved}) {
    EXPECT_FALSE(store_->SetDiskState(0, s, fails).has_value());
  }
  EXPECT_FALSE(store_->Fsck(true, fails).has_value());
  EXPECT_EQ(failed_calls, 5);
  auto unchanged = [&] {
    auto st = store_->Stats();
    ASSERT_EQ(st.disks.size(), 6u);
    EXPECT_EQ(st.disks[0].state, DiskState::kActive);
    EXPECT_FALSE(st.disks[0].failed);
    auto txn = store_->Index().BeginRead();
    ASSERT_TRUE(txn);
    auto record = (*txn)->GetMeta("test/record");
    ASSERT_TRUE(record);
    EXPECT_FALSE(record->has_value());
    txn->reset();
    auto rep = store_->Fsck();
    ASSERT_TRUE(rep);
    EXPECT_EQ(rep->problems.size(), 1u);
    for (const auto& [k, b] : objs) ExpectReads(k, b);
  };
  unchanged();
  // Disk 0 still takes new shards: a stripe of 4+2 on 6 disks needs every one of them.
  std::string late = Body(200000, 77);
  objs.emplace_back(PutBody(late), late);
  OpenStore();
  unchanged();

  // Without the fault: the change and the record, each `also` seeing the disk as it is now.
  std::vector<DiskStatus> seen;
  auto records = [&](index::WriteTxn& txn, const DiskStatus& after) -> Status {
    seen.push_back(after);
    return txn.PutMeta(
        "test/disk" + std::to_string(after.position) + "/" + DiskStateName(after.state),
        after.path);
  };
  auto pos = store_->AddDisk(fresh, records);
  ASSERT_TRUE(pos.has_value()) << pos.error().ToString();
  EXPECT_EQ(*pos, 6u);
  ASSERT_TRUE(store_->SetDiskState(0, DiskState::kDraining, records).has_value());
  // The same state again changes nothing but still runs the caller's record.
  ASSERT_TRUE(store_->SetDiskState(0, DiskState::kDraining, records).has_value());
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].position, 6u);
  EXPECT_EQ(seen[0].path, fresh);
  EXPECT_EQ(seen[0].state, DiskState::kActive);
  EXPECT_FALSE(seen[0].failed);
  EXPECT_EQ(seen[0].live_bytes, 0u);
  EXPECT_GT(seen[0].total_bytes, 0u);
  EXPECT_EQ(seen[1].position, 0u);
  EXPECT_EQ(seen[1].state, DiskState::kDraining);
  EXPECT_GT(seen[1].live_bytes, 0u);
  std::optional<FsckReport> fixed_seen;
  auto fix = store_->Fsck(true, [&](index::WriteTxn& txn, const FsckReport& rep) {
    fixed_seen = rep;
    return txn.PutMeta("test/fsck", std::to_string(rep.fixed.size()));
  });
  ASSERT_TRUE(fix.has_value()) << fix.error().ToString();
  ASSERT_TRUE(fixed_seen);
  EXPECT_EQ(fixed_seen->fixed, fix->fixed);
  EXPECT_EQ(fix->fixed.size(), 1u);
  OpenStore();
  auto st = store_->Stats();
  ASSERT_EQ(st.disks.size(), 7u);
  EXPECT_EQ(st.disks[0].state, DiskState::kDraining);
  EXPECT_EQ(st.disks[6].path, fresh);
  auto txn = store_->Index().BeginRead();
  ASSERT_TRUE(txn);
  for (const char* key : {"test/disk6/active", "test/disk0/draining", "test/fsck"}) {
    auto v = (*txn)->GetMeta(key);
    ASSERT_TRUE(v);
    EXPECT_TRUE(v->has_value()) << key;
  }
  txn->reset();
  ExpectFsckClean();
  for (const auto& [k, b] : objs) ExpectReads(k, b);
}

// Regression (fault suite, disk loss): a disk directory removed while the node serves kept
// taking writes through the extent already open, so uploads were acknowledged with shards in
// an unlinked file. Now the sync before the index commit notices it: that upload fails and
// nothing is indexed, the disk is failed, and uploads go on with full redundancy elsewhere.
TEST_F(StoreTest, DiskDirectoryRemovedWhileServingFailsTheDiskBeforeAnyAcknowledgement) {
  auto opts = Options();
  opts.disks.push_back((root_ / "d6").string());  // 7 disks: 4+2 still fits after one is lost
  auto s = ObjectStore::Open(opts);
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  store_ = std::move(*s);
  std::vector<std::pair<ObjectKey, std::string>> objs;
  for (int i = 0; i < 7; ++i) {  // every disk gets an active extent
    std::string b = Body(700 + i, 200000);
    objs.emplace_back(PutBody(b), b);
  }
  fs::remove_all(opts.disks[3]);
  int refused = 0;
  for (int i = 0; i < 7; ++i) {
    std::string b = Body(800 + i, 200000);
    ObjectKey key = DataKey(device_, b);
    auto r = store_->Put(key, b);
    if (!r.has_value()) {
      ++refused;
      EXPECT_FALSE(store_->Head(key)->has_value());
      continue;
    }
    objs.emplace_back(key, b);
    ASSERT_TRUE((*store_->Index().BeginRead())->ForEachObject(
        [&](const ObjectKey& k, const index::ObjectRecord& rec) {
          if (k.name == key.name) {
            for (const auto& loc : rec.shards) EXPECT_NE(loc.disk, 3) << "acknowledged on a removed disk";
          }
          return true;
        }));
  }
  EXPECT_EQ(refused, 1);  // the one upload that found the disk gone
  EXPECT_TRUE(store_->Stats().disks[3].failed);
  // Stats (cvctl status) notices a removal with no upload at all.
  fs::rename(opts.disks[5], opts.disks[5] + ".gone");
  EXPECT_TRUE(store_->Stats().disks[5].failed);
  for (const auto& [k, b] : objs) ExpectReads(k, b);
}

// Regression (found by the repair and drain fault sweeps: a bit flip on the identity check
// that follows a sync): the identity file has no checksum, and one damaged read of it failed
// a healthy disk for good (with another disk down the node could then neither repair nor
// drain). A read that differs once counts as an I/O error; only one that differs again is a
// changed disk.
TEST_F(StoreTest, OneDamagedReadOfADisksIdentityIsAnErrorNotAChangedDisk) {
  auto base = NewPosixEnv();
  FaultEnv env(base.get(), 46);
  OpenStore(&env);
  env.FailNth(0, FaultEnv::Fault::kBitFlip);  // Stats checks every disk's identity, d0 first
  StoreStats st = store_->Stats();
  EXPECT_FALSE(st.disks[0].failed);
  EXPECT_EQ(st.disks[0].errors, 1u);
  env.FlipOnRead(Options().disks[2] + "/chunkvault-disk", 3, 0x01);  // every read differs
  st = store_->Stats();
  EXPECT_TRUE(st.disks[2].failed);
  EXPECT_FALSE(st.disks[0].failed);
}

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

// A full data disk gives a clear error, harms nothing stored, and writes resume when space
// returns.
TEST_F(StoreTest, FullDiskIsAClearErrorAndRecovers) {
  auto base = NewPosixEnv();
  FaultEnv env(base.get(), 8);
  OpenStore(&env);
  std::string first = Body(1, 300000);
  ObjectKey k1 = PutBody(first);
  auto opts = Options();
  env.NoSpaceUnder((root_ / "d").string());  // every disk: d0 ... d5
  // Fill until the active extents run out: then a clear kNoSpace.
  Result<ObjectInfo> r;
  for (int i = 0; i < 200; ++i) {
    std::string b = Body(1000 + i, 300000);
    r = store_->Put(DataKey(device_, b), b);
    if (!r) break;
  }
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kNoSpace) << r.error().ToString();
  ExpectReads(k1, first);
  env.Heal();
  std::string later = Body(2, 300000);
  ExpectReads(PutBody(later), later);
}

// The 507 names the full disk by its position (what `cvctl disk list` shows) and says what an
// operator does; the log's context has its path.
TEST_F(StoreTest, FullDiskErrorNamesTheDisk) {
  auto base = NewPosixEnv();
  FaultEnv env(base.get(), 9);
  OpenStore(&env);
  const std::string full_path = Options().disks[3];
  env.NoSpaceUnder(full_path);
  Result<ObjectInfo> r;
  for (int i = 0; i < 200; ++i) {
    std::string b = Body(2000 + i, 300000);
    r = store_->Put(DataKey(device_, b), b);
    if (!r) break;
  }
  ASSERT_FALSE(r.has_value()) << "disk 3 never filled up";
  const Error& e = r.error();
  EXPECT_EQ(e.kind, ErrorKind::kNoSpace) << e.ToString();
  EXPECT_NE(e.public_message.find("data disk 3 of this node is full"), std::string::npos)
      << e.public_message;
  EXPECT_NE(e.public_message.find("cvctl disk add"), std::string::npos) << e.public_message;
  EXPECT_EQ(e.public_message.find(full_path), std::string::npos) << "no paths for clients";
  EXPECT_NE(e.context.find(full_path), std::string::npos) << e.context;
  env.Heal();
}

// A slow disk slows a Put down and nothing else: with a seeded latency on every I/O the Put
// succeeds and reads back, the Put took at least the latency injected (it was spent, not
// just counted), and that latency is within the bounds: at least one wait, and at most the
// maximum per I/O.
TEST_F(StoreTest, PutOnSlowDisksSucceedsAndTakesTheLatency) {
  using std::chrono::microseconds;
  auto base = NewPosixEnv();
  const uint64_t seed = 31;
  FaultEnv env(base.get(), seed);
  OpenStore(&env);
  const microseconds lo(500), hi(3000);
  env.SetLatency(lo, hi);
  const std::string body = Body(31, 150000);  // 3 stripes of 4 x 16 KiB
  const uint64_t ops = env.ops();
  const microseconds before = env.delayed();
  const auto t0 = std::chrono::steady_clock::now();
  const ObjectKey key = PutBody(body);
  const auto took = std::chrono::steady_clock::now() - t0;
  const microseconds waited = env.delayed() - before;
  const uint64_t did = env.ops() - ops;
  EXPECT_GE(took, waited) << "seed " << seed;
  EXPECT_GE(waited, lo) << "seed " << seed;
  EXPECT_LE(waited, hi * did) << "seed " << seed << ", " << did << " I/Os";
  env.SetLatency(microseconds(0), microseconds(0));
  ExpectReads(key, body);
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

}  // namespace
}  // namespace cv::storage
