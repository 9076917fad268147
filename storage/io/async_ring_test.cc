// AsyncRing driven by a real Asio event loop: completions arrive through the ring's eventfd
// and run on the loop's thread; nothing waits for the disk.
#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "storage/io/internal.h"

namespace cv::storage {
namespace {

namespace fs = std::filesystem;
namespace net = boost::asio;

// Watches the ring's eventfd on an io_context and polls it whenever it fires.
class LoopDriver {
 public:
  LoopDriver(net::io_context& io, AsyncRing& ring)
      : ring_(ring), fd_(io, ::dup(ring.event_fd())) {
    Arm();
  }
  void Stop() {
    stopped_ = true;
    fd_.cancel();
  }

 private:
  void Arm() {
    fd_.async_wait(net::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
      if (ec || stopped_) return;
      ring_.Poll();
      if (!stopped_) Arm();
    });
  }
  AsyncRing& ring_;
  net::posix::stream_descriptor fd_;
  bool stopped_ = false;
};

class AsyncRingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("cvasync-" + RandomHex(6));
    fs::create_directories(dir_);
    auto r = NewAsyncRing(8);  // a small queue: batches larger than it must still complete
    if (!r) GTEST_SKIP() << "io_uring unavailable here: " << r.error().ToString();
    ring_ = std::move(*r);
    env_ = NewPosixEnv();
  }
  void TearDown() override {
    ring_.reset();
    fs::remove_all(dir_);
  }
  fs::path dir_;
  std::unique_ptr<AsyncRing> ring_;
  std::unique_ptr<Env> env_;
};

TEST_F(AsyncRingTest, CompletionsRunOnTheLoopThreadThroughTheEventfd) {
  auto file = env_->Open((dir_ / "a").string(), true, true);
  ASSERT_TRUE(file.has_value());
  constexpr size_t kReqs = 100, kLen = 3 * kBlockSize;
  std::vector<AlignedBuffer> out, in;
  std::vector<IoRequest> writes(kReqs + 1), reads(kReqs);
  std::mt19937 rng(3);
  for (size_t i = 0; i < kReqs; ++i) {
    out.push_back(AllocateAligned(kLen));
    in.push_back(AllocateAligned(kLen));
    for (size_t j = 0; j < kLen; ++j) out[i][j] = static_cast<uint8_t>(rng());
    writes[i] = {IoRequest::Op::kWrite, file->get(), i * kLen, out[i].get(), kLen};
    reads[i] = {IoRequest::Op::kRead, file->get(), i * kLen, in[i].get(), kLen};
  }
  writes[kReqs] = {IoRequest::Op::kSync, file->get(), 0, nullptr, 0};

  net::io_context io;
  LoopDriver driver(io, *ring_);
  const auto loop_thread = std::this_thread::get_id();
  bool wrote = false, read = false;
  std::thread::id ran_on;
  ring_->Submit(writes, [&](Status s) {
    ASSERT_TRUE(s) << s.error().ToString();
    wrote = true;
    ran_on = std::this_thread::get_id();
    ring_->Submit(reads, [&](Status s2) {  // submitting from a completion is allowed
      ASSERT_TRUE(s2) << s2.error().ToString();
      read = true;
      driver.Stop();
    });
  });
  EXPECT_FALSE(wrote);  // never inside Submit
  io.run_for(std::chrono::seconds(20));
  ASSERT_TRUE(wrote && read);
  EXPECT_EQ(ran_on, loop_thread);
  EXPECT_EQ(ring_->pending(), 0u);
  for (size_t i = 0; i < kReqs; ++i) {
    EXPECT_EQ(reads[i].result, static_cast<int64_t>(kLen));
    EXPECT_EQ(std::memcmp(in[i].get(), out[i].get(), kLen), 0) << i;
  }
}

TEST_F(AsyncRingTest, FailuresAndEmptyBatchesAreReportedThroughDone) {
  auto file = env_->Open((dir_ / "b").string(), true, false);
  ASSERT_TRUE(file.has_value());
  net::io_context io;
  LoopDriver driver(io, *ring_);
  int calls = 0;
  ring_->Submit({}, [&](Status s) {
    EXPECT_TRUE(s);
    ++calls;
  });
  // Finished inside Submit, but its `done` has not run: still pending, so that a loop that
  // watches the eventfd only while batches are pending (server/disk_ring) does not stall.
  EXPECT_EQ(ring_->pending(), 1u);
  char buf[16];
  std::vector<IoRequest> bad{{IoRequest::Op::kRead, nullptr, 0, buf, sizeof buf}};
  ring_->Submit(bad, [&](Status s) {
    EXPECT_FALSE(s);
    ++calls;
  });
  std::vector<IoRequest> eof{{IoRequest::Op::kRead, file->get(), 0, buf, sizeof buf}};
  ring_->Submit(eof, [&](Status s) {
    EXPECT_TRUE(s);  // a read at end of file is short, not a failure
    EXPECT_EQ(eof[0].result, 0);
    ++calls;
    driver.Stop();
  });
  io.run_for(std::chrono::seconds(10));
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(bad[0].result, -EBADF);
}

// The Env's own ring: its requests use the Env's registered region and count in its
// Counters; the posix Env has no ring.
TEST(EnvAsyncRingTest, TheUringEnvsRingUsesItsRegisteredBuffersAndCountsRequests) {
  EXPECT_FALSE(NewPosixEnv()->NewAsyncRing().has_value());
  auto env = NewUringEnv(8, 1 << 20);
  if (!env) GTEST_SKIP() << "io_uring unavailable here: " << env.error().ToString();
  auto ring = (*env)->NewAsyncRing(8);
  ASSERT_TRUE(ring.has_value()) << ring.error().ToString();
  const fs::path dir = fs::path(::testing::TempDir()) / ("cvasync-" + RandomHex(6));
  fs::create_directories(dir);
  {
    auto file = (*env)->Open((dir / "f").string(), true, true);
    ASSERT_TRUE(file.has_value());
    IoBuffer out = (*env)->AllocateIo(4 * kBlockSize), in = (*env)->AllocateIo(4 * kBlockSize);
    ASSERT_TRUE(out.registered() && in.registered());
    for (size_t i = 0; i < out.size(); ++i) out.get()[i] = static_cast<uint8_t>(i * 7 + 1);
    AlignedBuffer plain = AllocateAligned(kBlockSize);
    std::vector<IoRequest> writes{{IoRequest::Op::kWrite, file->get(), 0, out.get(), out.size()},
                                  {IoRequest::Op::kSync, file->get(), 0, nullptr, 0}};
    std::vector<IoRequest> reads{{IoRequest::Op::kRead, file->get(), 0, in.get(), in.size()},
                                 {IoRequest::Op::kRead, file->get(), 0, plain.get(), kBlockSize}};
    net::io_context io;
    LoopDriver driver(io, **ring);
    bool done = false;
    (*ring)->Submit(writes, [&](Status s) {
      ASSERT_TRUE(s) << s.error().ToString();
      (*ring)->Submit(reads, [&](Status s2) {
        ASSERT_TRUE(s2) << s2.error().ToString();
        done = true;
        driver.Stop();
      });
    });
    io.run_for(std::chrono::seconds(20));
    ASSERT_TRUE(done);
    EXPECT_EQ(std::memcmp(in.get(), out.get(), in.size()), 0);
    EXPECT_EQ(std::memcmp(plain.get(), out.get(), kBlockSize), 0);
    const IoCounters c = (*env)->Counters();
    EXPECT_EQ(c.requests, 3u);  // two reads and a write; syncs are not counted
    EXPECT_EQ(c.registered_requests, 2u);  // not the read into the plain buffer
    EXPECT_EQ(c.async_requests, 3u);
    ring->reset();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace cv::storage
