// Reads when disks are lost, fail or return damaged bytes: rebuilt from parity or another
// copy, counted, never wrong data; and the event loop's prefetched reads on the io_uring ring.
#include <filesystem>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "storage/test_store.h"

namespace cv::storage {
namespace {

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

}  // namespace
}  // namespace cv::storage
