// The asynchronous write path: a Writer's stripes on an event loop's ring (WriteOn,
// WhenWritten) and the store's group commit (CommitAsync, UpdateAsync).
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "storage/test_store.h"

namespace cv::storage {
namespace {

// CommitAsync as a blocking call, for tests.
Result<ObjectInfo> CommitAndWait(ObjectStore& store, std::unique_ptr<Writer> w,
                                 std::function<Status(index::WriteTxn&)> also = nullptr) {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result<ObjectInfo>> out;
  store.CommitAsync(std::move(w), std::move(also), [&](Result<ObjectInfo> r) {
    std::lock_guard lock(mu);
    out = std::move(r);
    cv.notify_all();
  });
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return out.has_value(); });
  return std::move(*out);
}

// Durability rules 1 and 3 through the commit thread: four threads upload at once; when the
// 25th acknowledgment arrives the node "loses power" right there (every byte written but not
// yet synced is replaced with garbage, and from then on no disk I/O succeeds). Every object
// that was acknowledged, before or in the same group, must read back intact from the disks
// after a restart, with no damaged shard (scrub). An acknowledgment that came before its
// group's fdatasync would have its shards garbled; one before its index commit would be
// missing from the index.
TEST_F(StoreTest, NoUploadIsAcknowledgedBeforeItsGroupIsSyncedAndIndexed) {
  auto base = NewPosixEnv();
  FaultEnv env(base.get(), 4242);
  OpenStore(&env);
  std::mutex mu;
  std::vector<std::pair<ObjectKey, std::string>> acked;
  std::atomic<bool> crashed{false};
  std::atomic<int> failed_after_crash{0};
  auto uploader = [&](int t) {
    for (int i = 0; i < 40 && !crashed; ++i) {
      std::string body = Body(1000 * t + i, 3000 + static_cast<size_t>((t * 7919 + i * 104729) % 150000));
      ObjectKey key = DataKey(device_, body);
      auto w = store_->BeginPut(key, body.size());
      if (!w) {
        ++failed_after_crash;
        continue;
      }
      if (!(*w)->Append(std::span(reinterpret_cast<const uint8_t*>(body.data()), body.size()))) {
        ++failed_after_crash;
        continue;
      }
      std::mutex wait_mu;
      std::condition_variable wait_cv;
      bool done = false;
      store_->CommitAsync(std::move(*w), nullptr, [&, key, body](Result<ObjectInfo> r) {
        if (r) {
          std::lock_guard lock(mu);
          acked.emplace_back(key, body);
          if (acked.size() == 25 && !crashed.exchange(true)) {
            // Power loss, on the commit thread, right after this acknowledgment.
            EXPECT_TRUE(env.DropUnsynced());
            env.FailPath("");
          }
        } else if (crashed) {
          ++failed_after_crash;
        }
        std::lock_guard lock(wait_mu);
        done = true;
        wait_cv.notify_all();
      });
      std::unique_lock lock(wait_mu);
      wait_cv.wait(lock, [&] { return done; });
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(uploader, t);
  for (auto& th : threads) th.join();
  ASSERT_TRUE(crashed);
  store_.reset();
  env.Heal();

  OpenStore(base.get());  // the restart, on healthy disks
  ASSERT_GE(acked.size(), 25u);
  for (const auto& [k, b] : acked) ExpectReads(k, b);
  auto scrub = store_->Scrub();
  ASSERT_TRUE(scrub.has_value()) << scrub.error().ToString();
  EXPECT_EQ(scrub->damaged_shards, 0u);
  for (const auto& d : scrub->damaged) ADD_FAILURE() << d;
  EXPECT_EQ(scrub->objects, acked.size()) << "only acknowledged uploads are in the index";
  ExpectFsckClean();
}

// The same objects through CommitAsync as through Commit: sizes around every boundary, and
// an upload whose name does not match its body fails without being indexed.
TEST_F(StoreTest, CommitAsyncStoresWhatCommitWould) {
  OpenStore();
  for (size_t size : kSizes) {
    std::string body = Body(size + 1, size);
    ObjectKey key = DataKey(device_, body);
    auto w = store_->BeginPut(key, size);
    ASSERT_TRUE(w.has_value());
    ASSERT_TRUE((*w)->Append(std::span(reinterpret_cast<const uint8_t*>(body.data()), size)));
    auto info = CommitAndWait(*store_, std::move(*w));
    ASSERT_TRUE(info.has_value()) << info.error().ToString();
    EXPECT_EQ(info->size, size);
    ExpectReads(key, body);
  }
  std::string body = Body(5, 70000);
  ObjectKey wrong = DataKey(device_, Body(6, 70000));
  auto w = store_->BeginPut(wrong, body.size());
  ASSERT_TRUE(w.has_value());
  ASSERT_TRUE((*w)->Append(std::span(reinterpret_cast<const uint8_t*>(body.data()), body.size())));
  auto info = CommitAndWait(*store_, std::move(*w));
  ASSERT_FALSE(info.has_value());
  EXPECT_EQ(info.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_FALSE(store_->Head(wrong)->has_value());

  // `also` runs in the object's transaction before its records (it sees the object absent),
  // and its error fails the upload with nothing indexed.
  const std::string other = Body(7, 90000);
  const ObjectKey other_key = DataKey(device_, other);
  for (const bool fail : {true, false}) {
    auto w2 = store_->BeginPut(other_key, other.size());
    ASSERT_TRUE(w2.has_value());
    ASSERT_TRUE((*w2)->Append(std::span(reinterpret_cast<const uint8_t*>(other.data()), other.size())));
    bool saw_absent = false;
    auto r = CommitAndWait(*store_, std::move(*w2), [&](index::WriteTxn& txn) -> Status {
      CV_TRY_ASSIGN(auto cur, txn.GetObject(other_key));
      saw_absent = !cur.has_value();
      if (fail) return Err(ErrorKind::kUnavailable, "refused by also");
      return {};
    });
    EXPECT_TRUE(saw_absent);
    EXPECT_EQ(r.has_value(), !fail);
    if (fail) {
      EXPECT_EQ(r.error().kind, ErrorKind::kUnavailable);
    }
    EXPECT_EQ(store_->Head(other_key)->has_value(), !fail);
  }
  ExpectReads(other_key, other);
  ExpectFsckClean();
}

// An event loop's upload: the stripes go to the ring while the body goes on; the Writer
// offers no room only while both stripe buffers are being written, and the upload is
// stored once the ring finished and the group committed. A Writer dropped with writes in
// flight leaves nothing visible and the books straight.
TEST_F(StoreTest, WritesOnTheRingOverlapTheBody) {
  if (!OpenUringStore()) GTEST_SKIP() << "io_uring is not available here";
  auto ring = store_->NewAsyncRing();
  ASSERT_TRUE(ring.has_value()) << ring.error().ToString();
  const IoCounters before = uring_->Counters();
  std::string body = Body(77, 1 << 20);  // 16 stripes of 4 x 16 KiB
  ObjectKey key = DataKey(device_, body);
  auto w = store_->BeginPut(key, body.size());
  ASSERT_TRUE(w.has_value());
  (*w)->WriteOn(**ring);
  size_t fed = 0;
  int waits = 0;
  while (fed < body.size()) {
    std::span<uint8_t> win = (*w)->Window();
    if (win.empty()) {
      ASSERT_TRUE((*w)->status());
      bool ready = false;
      (*w)->WhenWritten([&] { ready = true; });
      EXPECT_FALSE(ready);  // never inside WhenWritten
      PollUntil(**ring, ready);
      ASSERT_TRUE(ready);
      ++waits;
      continue;
    }
    const size_t n = std::min(win.size(), body.size() - fed);
    std::memcpy(win.data(), body.data() + fed, n);
    ASSERT_TRUE((*w)->Appended(n));
    fed += n;
  }
  EXPECT_GT(waits, 0) << "the body never waited for the disk: were the stripes written on the ring?";
  bool written = false;
  (*w)->WhenWritten([&] { written = true; });
  PollUntil(**ring, written);
  ASSERT_TRUE(written);
  EXPECT_GE(uring_->Counters().async_requests - before.async_requests, 16u * 6);
  auto info = CommitAndWait(*store_, std::move(*w));
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  ExpectReads(key, body);

  // An empty body: its copies go on the ring at once, and it commits once they are in.
  std::string empty;
  ObjectKey empty_key = DataKey(device_, empty);
  auto e = store_->BeginPut(empty_key, 0);
  ASSERT_TRUE(e.has_value());
  (*e)->WriteOn(**ring);
  bool empty_written = false;
  (*e)->WhenWritten([&] { empty_written = true; });
  PollUntil(**ring, empty_written);
  ASSERT_TRUE(empty_written);
  auto empty_info = CommitAndWait(*store_, std::move(*e));
  ASSERT_TRUE(empty_info.has_value()) << empty_info.error().ToString();
  ExpectReads(empty_key, empty);
  auto empty_rec = store_->Index().BeginRead();
  ASSERT_TRUE(empty_rec.has_value());
  auto rec = (*empty_rec)->GetObject(empty_key);
  ASSERT_TRUE(rec.has_value() && rec->has_value());
  EXPECT_EQ((*rec)->shards.size(), 3u) << "an empty object is stored as m+1 copies too";
  empty_rec->reset();

  // Dropped mid-body, with a stripe on the ring.
  std::string other = Body(78, 300000);
  ObjectKey other_key = DataKey(device_, other);
  auto d = store_->BeginPut(other_key, other.size());
  ASSERT_TRUE(d.has_value());
  (*d)->WriteOn(**ring);
  std::span<uint8_t> win = (*d)->Window();
  size_t n = 0;
  while (!win.empty() && n < 100000) {
    const size_t take = std::min(win.size(), size_t{100000} - n);
    std::memcpy(win.data(), other.data() + n, take);
    ASSERT_TRUE((*d)->Appended(take));
    n += take;
    win = (*d)->Window();
  }
  ASSERT_GT((*ring)->pending(), 0u);
  d->reset();
  bool drained = false;
  (*ring)->Submit({}, [&](Status) { drained = true; });
  PollUntil(**ring, drained);
  for (int i = 0; i < 200 && (*ring)->pending() > 0; ++i) PollUntil(**ring, drained);
  store_->WaitForCommits();
  EXPECT_FALSE(store_->Head(other_key)->has_value());
  ExpectFsckClean();
}

// UpdateAsync runs in order on the commit thread; a failing update undoes only itself.
TEST_F(StoreTest, UpdateAsyncCommitsInOrderAndAFailureUndoesOnlyItself) {
  OpenStore();
  std::mutex mu;
  std::vector<std::string> order;
  std::vector<Status> results(3);
  for (int i = 0; i < 3; ++i) {
    store_->UpdateAsync(
        [i](index::WriteTxn& txn) -> Status {
          CV_TRY(txn.PutMeta("test_key_" + std::to_string(i), "v"));
          if (i == 1) return Err(ErrorKind::kConflict, "refused on purpose");
          return {};
        },
        [&, i](Status s) {
          std::lock_guard lock(mu);
          order.push_back(std::to_string(i));
          results[i] = std::move(s);
        });
  }
  store_->WaitForCommits();
  ASSERT_EQ(order, (std::vector<std::string>{"0", "1", "2"}));
  EXPECT_TRUE(results[0]);
  ASSERT_FALSE(results[1]);
  EXPECT_EQ(results[1].error().kind, ErrorKind::kConflict);
  EXPECT_TRUE(results[2]);
  auto txn = store_->Index().BeginRead();
  ASSERT_TRUE(txn.has_value());
  EXPECT_TRUE((*txn)->GetMeta("test_key_0")->has_value());
  EXPECT_FALSE((*txn)->GetMeta("test_key_1")->has_value());
  EXPECT_TRUE((*txn)->GetMeta("test_key_2")->has_value());
}

}  // namespace
}  // namespace cv::storage
