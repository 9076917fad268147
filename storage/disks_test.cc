// Disk replacement (add, drain, remove) and the node's disk table; a disk that vanishes or
// reads back a damaged identity.
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "storage/disk_set.h"
#include "storage/test_store.h"

namespace cv::storage {
namespace {

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

// Regression (review of the group commit): an upload whose writes were all covered by
// another upload's fdatasyncs, where that upload then found a disk directory gone, was
// acknowledged without any check of its own (nothing left to sync), with a shard on that disk.
TEST_F(StoreTest, AnUploadWhoseWritesAnotherSyncCoveredStillChecksItsDisks) {
  OpenStore();
  const size_t stripe = 4 * 16 * 1024;  // k * shard_unit: two full stripes are written by Append
  const std::string body = Body(901, 2 * stripe);
  const ObjectKey key = DataKey(device_, body);
  auto w = store_->BeginPut(key, body.size());
  ASSERT_TRUE(w.has_value());
  ASSERT_TRUE((*w)->Append(std::span(reinterpret_cast<const uint8_t*>(body.data()), body.size())));
  fs::remove_all(Options().disks[3]);
  const std::string other = Body(902, 2 * stripe);
  EXPECT_FALSE(store_->Put(DataKey(device_, other), other).has_value());  // its sync notices
  EXPECT_TRUE(store_->Stats().disks[3].failed);
  auto committed = (*w)->Commit();
  EXPECT_FALSE(committed.has_value()) << "acknowledged with a shard on a removed disk";
  EXPECT_FALSE(store_->Head(key)->has_value());
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

// DiskSet::Add after its layout exists: a persist that fails before the commit takes the
// layout back (the add can be tried again); one whose commit itself failed leaves it, since
// that commit may have reached the disk and the next start would then need the identity file.
TEST_F(StoreTest, DiskAddKeepsTheLayoutOnlyWhenTheCommitItselfFailed) {
  std::unique_ptr<Env> env = NewPosixEnv();
  const std::vector<std::string> disks = Options().disks;
  DiskSet set(env.get(), disks, 1 << 20, /*try_direct=*/false);
  set.Open("node-a", /*create=*/true);
  for (bool committing : {false, true}) {
    const std::string path = (root_ / (committing ? "added-commit" : "added-before")).string();
    auto added = set.Add(path, "node-a", [&](size_t d, bool& c) -> Status {
      EXPECT_EQ(d, disks.size());
      c = committing;
      return Err(ErrorKind::kIOError, "persist failed");
    });
    ASSERT_FALSE(added.has_value());
    EXPECT_EQ(added.error().context, "persist failed");
    EXPECT_EQ(set.size(), disks.size());  // not in this run's disks either way
    EXPECT_EQ(fs::exists(fs::path(path) / "chunkvault-disk"), committing) << path;
    EXPECT_EQ(fs::exists(fs::path(path) / "extents"), committing) << path;
  }
}

}  // namespace
}  // namespace cv::storage
