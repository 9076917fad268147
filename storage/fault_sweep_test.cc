// The maintenance operations and Put under every single I/O failure, for every kind of
// fault (FaultSweepTest; see tests/README.md).
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "storage/test_store.h"

namespace cv::storage {
namespace {

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
    CV_TRY_ASSIGN(auto rep, store_->Compact(co));
    if (!rep.problems.empty()) return Incomplete(rep.problems.front());
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
    CV_TRY_ASSIGN(auto rep, store_->Repair(true));
    if (rep.stripes_lost > 0 || rep.still_queued > 0) {
      return Incomplete(std::to_string(rep.stripes_lost) + " lost, " +
                        std::to_string(rep.still_queued) + " still queued");
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
    CV_TRY_ASSIGN(auto rep, store_->Drain(0, {}));
    if (rep.stripes_failed > 0 || rep.remaining_bytes > 0) {
      return Incomplete(rep.problems.empty() ? "bytes remain" : rep.problems.front());
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
      CV_TRY(b);
      if (b->objects == 0) break;
    }
    CV_TRY_ASSIGN(auto rep, store_->Compact(CompactOptions{}));
    if (!rep.problems.empty()) return Incomplete(rep.problems.front());
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

}  // namespace
}  // namespace cv::storage
