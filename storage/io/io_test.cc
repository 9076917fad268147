// Tests of storage/io: the posix and io_uring Envs (parameterised; the uring ones skip where
// the kernel or sandbox refuses io_uring) and the fault-injecting FaultEnv.
#include "storage/io/io.h"
#include "storage/io/internal.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/vfs.h>

#include <barrier>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/test_temp_dir.h"

namespace cv::storage {
namespace {

using Op = IoRequest::Op;
constexpr long kTmpfsMagic = 0x01021994;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Bytes that say which (tag, position) they belong to, so misplaced data shows.
void FillPattern(uint8_t* p, size_t len, uint64_t tag) {
  for (size_t i = 0; i < len; ++i) p[i] = static_cast<uint8_t>((tag * 131 + i * 7 + (i >> 8)) | 1);
}
std::string Pattern(size_t len, uint64_t tag) {
  std::string s(len, '\0');
  FillPattern(reinterpret_cast<uint8_t*>(s.data()), len, tag);
  return s;
}

IoRequest Read(File* f, uint64_t offset, void* buf, size_t len) {
  return {.op = Op::kRead, .file = f, .offset = offset, .buf = buf, .len = len};
}
IoRequest Write(File* f, uint64_t offset, const void* buf, size_t len) {
  return {.op = Op::kWrite, .file = f, .offset = offset, .buf = const_cast<void*>(buf), .len = len};
}
IoRequest Sync(File* f) { return {.op = Op::kSync, .file = f}; }

// Executes and expects success.
void ApplyOk(Env& env, std::span<IoRequest> reqs) {
  auto st = env.Execute(reqs);
  EXPECT_TRUE(st) << st.error().ToString();
}

std::unique_ptr<File> MustOpen(Env& env, const std::string& path, bool direct = false) {
  auto f = env.Open(path, /*create=*/true, direct);
  EXPECT_TRUE(f) << f.error().ToString();
  return f ? std::move(*f) : nullptr;
}

// ---------------------------------------------------------------------------------------
// Posix and io_uring Envs.

struct EnvKind {
  const char* name;
  bool uring;
  unsigned depth;
};

Result<std::unique_ptr<Env>> MakeEnv(const EnvKind& kind) {
  if (!kind.uring) return NewPosixEnv();
  return NewUringEnv(kind.depth);
}

class EnvTest : public ::testing::TestWithParam<EnvKind> {
 protected:
  void SetUp() override {
    auto env = MakeEnv(GetParam());
    if (!env) GTEST_SKIP() << "io_uring unavailable here: " << env.error().ToString();
    env_ = std::move(*env);
  }

  TempDir dir_{"io_test"};
  std::unique_ptr<Env> env_;
};

TEST_P(EnvTest, BatchOfManyRequestsOverSeveralFilesRoundTrips) {
  constexpr int kFiles = 4;
  constexpr int kBlocksPerFile = 40;  // 160 writes, far past the small queue depths
  std::vector<std::unique_ptr<File>> files;
  for (int f = 0; f < kFiles; ++f) files.push_back(MustOpen(*env_, dir_ / std::to_string(f), true));
  AlignedBuffer out = AllocateAligned(kFiles * kBlocksPerFile * kBlockSize);
  AlignedBuffer in = AllocateAligned(kFiles * kBlocksPerFile * kBlockSize);
  std::vector<IoRequest> writes;
  for (int f = 0; f < kFiles; ++f)
    writes.push_back(Sync(files[f].get()));  // listed first on purpose
  for (int b = 0; b < kBlocksPerFile; ++b) {
    for (int f = 0; f < kFiles; ++f) {
      uint8_t* p = out.get() + (f * kBlocksPerFile + b) * kBlockSize;
      FillPattern(p, kBlockSize, f * 1000 + b);
      writes.push_back(Write(files[f].get(), b * kBlockSize, p, kBlockSize));
    }
  }
  ASSERT_TRUE(env_->Execute(writes));
  for (const IoRequest& r : writes) {
    EXPECT_EQ(r.result, r.op == Op::kSync ? 0 : static_cast<int64_t>(kBlockSize));
  }

  std::vector<IoRequest> reads;
  for (int f = 0; f < kFiles; ++f) {
    for (int b = kBlocksPerFile - 1; b >= 0; --b) {
      reads.push_back(Read(files[f].get(), b * kBlockSize,
                           in.get() + (f * kBlocksPerFile + b) * kBlockSize, kBlockSize));
    }
  }
  ASSERT_TRUE(env_->Execute(reads));
  for (const IoRequest& r : reads) EXPECT_EQ(r.result, static_cast<int64_t>(kBlockSize));
  EXPECT_EQ(std::memcmp(in.get(), out.get(), kFiles * kBlocksPerFile * kBlockSize), 0);
  // And the bytes are really in the files, where a plain reader sees them.
  EXPECT_EQ(ReadFile(dir_ / "2"),
            std::string(reinterpret_cast<char*>(out.get()) + 2 * kBlocksPerFile * kBlockSize,
                        kBlocksPerFile * kBlockSize));
}

TEST_P(EnvTest, ReadPastEndOfFileIsShortNotAnError) {
  WriteFile(dir_ / "f", Pattern(5000, 1));
  auto file = MustOpen(*env_, dir_ / "f");
  std::string a(8192, 'x'), b(100, 'x');
  IoRequest reqs[] = {Read(file.get(), 0, a.data(), a.size()),
                      Read(file.get(), 10000, b.data(), b.size())};
  ASSERT_TRUE(env_->Execute(reqs));
  EXPECT_EQ(reqs[0].result, 5000);
  EXPECT_EQ(reqs[1].result, 0);
  EXPECT_EQ(a.substr(0, 5000), Pattern(5000, 1));
}

TEST_P(EnvTest, DirectReadOfUnalignedTailStopsAtEndOfFile) {
  WriteFile(dir_ / "f", Pattern(5000, 2));
  auto file = MustOpen(*env_, dir_ / "f", /*direct=*/true);
  AlignedBuffer buf = AllocateAligned(3 * kBlockSize);
  IoRequest r = Read(file.get(), 0, buf.get(), 3 * kBlockSize);
  ASSERT_TRUE(env_->Execute({&r, 1}));
  EXPECT_EQ(r.result, 5000);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(buf.get()), 5000), Pattern(5000, 2));
}

TEST_P(EnvTest, SyncsAndWritesInOneBatchAllSucceed) {
  auto a = MustOpen(*env_, dir_ / "a");
  auto b = MustOpen(*env_, dir_ / "b");
  std::string da = Pattern(3000, 3), db = Pattern(7000, 4);
  IoRequest reqs[] = {Sync(a.get()), Write(a.get(), 0, da.data(), da.size()), Sync(b.get()),
                      Write(b.get(), 100, db.data(), db.size())};
  ASSERT_TRUE(env_->Execute(reqs));
  EXPECT_EQ(reqs[0].result, 0);
  EXPECT_EQ(reqs[1].result, 3000);
  EXPECT_EQ(reqs[2].result, 0);
  EXPECT_EQ(reqs[3].result, 7000);
  EXPECT_EQ(ReadFile(dir_ / "a"), da);
  EXPECT_EQ(ReadFile(dir_ / "b"), std::string(100, '\0') + db);
}

TEST_P(EnvTest, FailedRequestsAreReportedEachAndTheRestOfTheBatchRuns) {
  auto file = MustOpen(*env_, dir_ / "f", /*direct=*/true);
  if (!file->direct()) GTEST_SKIP() << "O_DIRECT refused under " << dir_.path();
  AlignedBuffer buf = AllocateAligned(kBlockSize);
  FillPattern(buf.get(), kBlockSize, 5);
  IoRequest reqs[] = {
      Write(nullptr, 0, buf.get(), kBlockSize),  // no file
      Write(file.get(), 0, buf.get(), 100),      // unaligned length on a direct file
      Write(file.get(), kBlockSize, buf.get(), kBlockSize),
  };
  auto st = env_->Execute(reqs);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().sys_errno, EBADF);  // the first failure in span order
  EXPECT_EQ(reqs[0].result, -EBADF);
  EXPECT_EQ(reqs[1].result, -EINVAL);
  EXPECT_EQ(reqs[2].result, static_cast<int64_t>(kBlockSize));
  EXPECT_EQ(ReadFile(dir_ / "f").substr(kBlockSize), Pattern(kBlockSize, 5));
}

TEST_P(EnvTest, ZeroLengthTransfersAndEmptyBatchesSucceed) {
  auto file = MustOpen(*env_, dir_ / "f");
  ASSERT_TRUE(env_->Execute({}));
  IoRequest reqs[] = {Write(file.get(), 0, nullptr, 0), Read(file.get(), 0, nullptr, 0)};
  ASSERT_TRUE(env_->Execute(reqs));
  EXPECT_EQ(reqs[0].result, 0);
  EXPECT_EQ(reqs[1].result, 0);
}

TEST_P(EnvTest, OpenWithoutCreateOfMissingFileIsNotFound) {
  auto f = env_->Open(dir_ / "missing", /*create=*/false, /*want_direct=*/true);
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().kind, ErrorKind::kNotFound);
}

TEST_P(EnvTest, AllocateExtendsTheFileAndSizeSeesIt) {
  auto file = MustOpen(*env_, dir_ / "f", true);
  ASSERT_TRUE(env_->Allocate(*file, 0, 1 << 20));
  auto size = env_->Size(*file);
  ASSERT_TRUE(size);
  EXPECT_EQ(*size, 1u << 20);
}

TEST_P(EnvTest, DirectoryOperationsCreateListSyncAndRemove) {
  const std::string deep = dir_ / "a/b/c";
  ASSERT_TRUE(env_->CreateDirs(deep));
  ASSERT_TRUE(env_->CreateDirs(deep));  // existing is fine
  ASSERT_TRUE(env_->CreateDirs(dir_ / "a/b/d/"));
  WriteFile(dir_ / "a/b/file", "x");
  auto names = env_->ListDir(dir_ / "a/b");
  ASSERT_TRUE(names);
  EXPECT_EQ(*names, (std::vector<std::string>{"c", "d", "file"}));
  EXPECT_TRUE(env_->SyncDir(dir_ / "a/b"));
  EXPECT_TRUE(env_->Remove(dir_ / "a/b/file"));
  EXPECT_TRUE(env_->Remove(dir_ / "a/b/c"));  // an empty directory
  names = env_->ListDir(dir_ / "a/b");
  ASSERT_TRUE(names);
  EXPECT_EQ(*names, std::vector<std::string>{"d"});
  EXPECT_EQ(env_->ListDir(dir_ / "nope").error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(env_->Remove(dir_ / "nope").error().kind, ErrorKind::kNotFound);
  WriteFile(dir_ / "plain", "x");
  EXPECT_FALSE(env_->CreateDirs(dir_ / "plain"));  // a file is in the way
  auto stats = env_->StatFs(dir_.path());
  ASSERT_TRUE(stats);
  EXPECT_GT(stats->total_bytes, 0u);
  EXPECT_LE(stats->free_bytes, stats->total_bytes);
}

TEST_P(EnvTest, ConcurrentExecuteFromManyThreadsKeepsEachThreadsData) {
  constexpr int kThreads = 4;
  constexpr int kRounds = 30;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto file = env_->Open(dir_ / ("t" + std::to_string(t)), true, true);
      if (!file) {
        ++failures;
        return;
      }
      AlignedBuffer out = AllocateAligned(4 * kBlockSize);
      AlignedBuffer in = AllocateAligned(4 * kBlockSize);
      for (int round = 0; round < kRounds; ++round) {
        std::vector<IoRequest> reqs;
        for (int b = 0; b < 4; ++b) {
          FillPattern(out.get() + b * kBlockSize, kBlockSize, t * 10000 + round * 10 + b);
          reqs.push_back(Write(file->get(), (round * 4 + b) * kBlockSize,
                               out.get() + b * kBlockSize, kBlockSize));
        }
        if (!env_->Execute(reqs)) ++failures;
        for (int b = 0; b < 4; ++b) {
          reqs[b] = Read(file->get(), (round * 4 + b) * kBlockSize, in.get() + b * kBlockSize,
                         kBlockSize);
        }
        if (!env_->Execute(reqs) || std::memcmp(in.get(), out.get(), 4 * kBlockSize) != 0) {
          ++failures;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

// The Env goes away while other threads still hold their (thread_local) rings for it; they
// then make a new Env and exit. ASan reports any use of a freed ring or Env.
TEST_P(EnvTest, DestroyingEnvWhileOtherThreadsHoldRingsIsSafe) {
  constexpr int kThreads = 3;
  std::barrier sync_point(kThreads + 1);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      {
        auto file = env_->Open(dir_ / ("t" + std::to_string(t)), true, false);
        std::string data = Pattern(1000, t);
        IoRequest w = Write(file ? file->get() : nullptr, 0, data.data(), data.size());
        if (!env_->Execute({&w, 1})) ++failures;
      }
      sync_point.arrive_and_wait();  // holds a ring for env_
      sync_point.arrive_and_wait();  // env_ is gone now
      auto env = MakeEnv(GetParam());
      if (!env) {
        ++failures;
        return;
      }
      auto file = (*env)->Open(dir_ / ("t" + std::to_string(t)), false, false);
      std::string back(1000, '\0');
      IoRequest r = Read(file ? file->get() : nullptr, 0, back.data(), back.size());
      if (!(*env)->Execute({&r, 1}) || back != Pattern(1000, t)) ++failures;
    });
  }
  sync_point.arrive_and_wait();
  env_.reset();
  sync_point.arrive_and_wait();
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

// AllocateIo: on io_uring the buffers come from the registered region and every read and
// write into them (whole, or from the middle of one) goes through it; elsewhere they are
// plain buffers. Data round-trips either way, on direct and buffered files.
TEST_P(EnvTest, AllocateIoBuffersRoundTripThroughRegisteredBuffersOnUring) {
  const bool uring = GetParam().uring;
  for (bool direct : {true, false}) {
    auto file = MustOpen(*env_, dir_ / (direct ? "d" : "b"), direct);
    IoBuffer out = env_->AllocateIo(8 * kBlockSize);
    IoBuffer in = env_->AllocateIo(8 * kBlockSize);
    ASSERT_NE(out.get(), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(out.get()) % kBlockSize, 0u);
    EXPECT_EQ(out.registered(), uring);
    EXPECT_EQ(in.registered(), uring);
    FillPattern(out.get(), out.size(), direct);
    std::memset(in.get(), 0, in.size());
    const IoCounters before = env_->Counters();
    std::vector<IoRequest> w = {Write(file.get(), 0, out.get(), 4 * kBlockSize),
                                Write(file.get(), 4 * kBlockSize, out.get() + 4 * kBlockSize,
                                      4 * kBlockSize),
                                Sync(file.get())};
    ASSERT_TRUE(env_->Execute(w));
    std::vector<IoRequest> r = {Read(file.get(), kBlockSize, in.get() + kBlockSize, 7 * kBlockSize)};
    ASSERT_TRUE(env_->Execute(r));
    EXPECT_EQ(r[0].result, int64_t(7 * kBlockSize));
    EXPECT_EQ(std::memcmp(in.get() + kBlockSize, out.get() + kBlockSize, 7 * kBlockSize), 0);
    const IoCounters after = env_->Counters();
    if (uring) {
      EXPECT_GE(after.requests - before.requests, 3u);
      EXPECT_EQ(after.registered_requests - before.registered_requests,
                after.requests - before.requests);
    } else {
      EXPECT_EQ(after.registered_requests, 0u);
    }
    // A plain buffer works too, and is not counted as registered.
    AlignedBuffer plain = AllocateAligned(kBlockSize);
    std::vector<IoRequest> p = {Read(file.get(), 0, plain.get(), kBlockSize)};
    ASSERT_TRUE(env_->Execute(p));
    EXPECT_EQ(std::memcmp(plain.get(), out.get(), kBlockSize), 0);
    EXPECT_EQ(env_->Counters().registered_requests, after.registered_requests);
  }
}

INSTANTIATE_TEST_SUITE_P(AllEnvs, EnvTest,
                         ::testing::Values(EnvKind{"posix", false, 0}, EnvKind{"uring", true, 256},
                                           EnvKind{"uring_depth4", true, 4}),
                         [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------
// Opening with O_DIRECT, and the default Env.

bool IsTmpfs(const std::string& path) {
  struct statfs st {};
  return statfs(path.c_str(), &st) == 0 && st.f_type == kTmpfsMagic;
}

TEST(OpenDirectTest, FallsBackToBufferedWhereODirectIsRefusedAndWarnsOncePerEnv) {
  // tmpfs refuses O_DIRECT before Linux 6.6; character devices such as /dev/null always do.
  std::string path = "/dev/null";
  std::unique_ptr<TempDir> shm;
  if (IsTmpfs("/dev/shm")) {
    shm = std::make_unique<TempDir>("io_test", "/dev/shm");
    auto env = NewPosixEnv();
    auto probe = env->Open(*shm / "probe", true, true);
    ASSERT_TRUE(probe);
    if (!(*probe)->direct()) path = *shm / "probe";
  }
  auto env = NewPosixEnv();
  ::testing::internal::CaptureStderr();
  auto first = env->Open(path, /*create=*/false, /*want_direct=*/true);
  auto second = env->Open(path, false, true);
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(first) << first.error().ToString();
  ASSERT_TRUE(second);
  EXPECT_FALSE((*first)->direct());
  const size_t at = log.find("o_direct_unavailable");
  EXPECT_NE(at, std::string::npos) << log;
  EXPECT_EQ(log.find("o_direct_unavailable", at + 1), std::string::npos) << log;

  // The buffered file works: for /dev/null writes vanish and reads see end of file.
  std::string data = Pattern(1234, 6), back(1234, '\0');
  IoRequest w = Write(first->get(), 0, data.data(), data.size());
  ASSERT_TRUE(env->Execute({&w, 1}));
  IoRequest r = Read(first->get(), 0, back.data(), back.size());
  ASSERT_TRUE(env->Execute({&r, 1}));
  EXPECT_EQ(w.result, 1234);
  EXPECT_EQ(r.result, path == "/dev/null" ? 0 : 1234);
}

TEST(OpenDirectTest, FileOnTmpfsWorksWithOrWithoutODirect) {
  if (!IsTmpfs("/dev/shm")) GTEST_SKIP() << "no tmpfs at /dev/shm";
  TempDir dir("io_test", "/dev/shm");
  auto env = NewPosixEnv();
  auto file = MustOpen(*env, dir / "f", /*direct=*/true);
  RecordProperty("tmpfs_o_direct", file->direct() ? "yes" : "no (fell back)");
  AlignedBuffer out = AllocateAligned(2 * kBlockSize), in = AllocateAligned(2 * kBlockSize);
  FillPattern(out.get(), 2 * kBlockSize, 7);
  IoRequest reqs[] = {Write(file.get(), 0, out.get(), 2 * kBlockSize), Sync(file.get())};
  ASSERT_TRUE(env->Execute(reqs));
  IoRequest r = Read(file.get(), 0, in.get(), 2 * kBlockSize);
  ASSERT_TRUE(env->Execute({&r, 1}));
  EXPECT_EQ(std::memcmp(in.get(), out.get(), 2 * kBlockSize), 0);
}

TEST(DefaultEnvTest, PicksAWorkingEnvAndSaysWhich) {
  auto env = NewDefaultEnv();
  const std::string name = env->Name();
  EXPECT_TRUE(name == "uring" || name == "posix") << name;
  if (NewUringEnv()) {
    EXPECT_EQ(name, "uring");
  }
  TempDir dir{"io_test"};
  auto file = MustOpen(*env, dir / "f");
  std::string data = Pattern(100, 8), back(100, '\0');
  IoRequest w = Write(file.get(), 0, data.data(), data.size());
  ASSERT_TRUE(env->Execute({&w, 1}));
  IoRequest r = Read(file.get(), 0, back.data(), back.size());
  ASSERT_TRUE(env->Execute({&r, 1}));
  EXPECT_EQ(back, data);
}

TEST(DiscardEnvTest, ExtentFilesKeepNothingAndOtherFilesPassThrough) {
  auto env = NewDiscardEnv(NewPosixEnv());
  EXPECT_STREQ(env->Name(), "discard");
  TempDir dir{"io_test"};
  ASSERT_TRUE(env->CreateDirs(dir / "extents"));
  auto extent = MustOpen(*env, dir / "extents/00000001");
  auto identity = MustOpen(*env, dir / "chunkvault-disk");
  ASSERT_TRUE(extent && identity);
  ASSERT_TRUE(env->Allocate(*extent, 0, 1 << 20));  // takes no space
  const std::string data = Pattern(4096, 3);
  std::string back(4096, 'x');
  std::vector<IoRequest> batch = {Write(extent.get(), 8192, data.data(), data.size()),
                                  Write(identity.get(), 0, data.data(), data.size()),
                                  Sync(extent.get()), Sync(identity.get())};
  ApplyOk(*env, batch);
  for (const IoRequest& r : batch) {
    EXPECT_EQ(r.result, r.op == Op::kWrite ? static_cast<int64_t>(data.size()) : 0);
  }
  EXPECT_EQ(*env->Size(*extent), 0u);  // nothing reached the extent file
  EXPECT_EQ(ReadFile(dir / "chunkvault-disk"), data);
  IoRequest r = Read(extent.get(), 8192, back.data(), back.size());
  ApplyOk(*env, {&r, 1});
  EXPECT_EQ(r.result, 4096);
  EXPECT_EQ(back, std::string(4096, '\0'));
  EXPECT_EQ(env->NewAsyncRing().error().kind, ErrorKind::kUnavailable);
}

TEST(AllocateAlignedTest, BuffersAreBlockAligned) {
  for (size_t len : {size_t{0}, size_t{1}, kBlockSize, 3 * kBlockSize + 5}) {
    AlignedBuffer b = AllocateAligned(len);
    ASSERT_NE(b.get(), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.get()) % kBlockSize, 0u);
  }
}

// ---------------------------------------------------------------------------------------
// The registered region: how buffers are carved from it, and what happens when it is full.

TEST(IoArenaTest, TakesFirstFitInBlocksAndMergesWhatComesBack) {
  auto arena = detail::IoArena::Create(16 * kBlockSize);
  ASSERT_NE(arena, nullptr);
  ASSERT_EQ(arena->size(), 16 * kBlockSize);
  uint8_t* a = arena->Take(1);  // rounded up to a block
  uint8_t* b = arena->Take(3 * kBlockSize);
  uint8_t* c = arena->Take(2 * kBlockSize + 1);  // three blocks
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(a, arena->base());
  EXPECT_EQ(b, a + kBlockSize);
  EXPECT_EQ(c, b + 3 * kBlockSize);
  EXPECT_EQ(arena->free_bytes(), 9 * kBlockSize);
  EXPECT_EQ(arena->Take(10 * kBlockSize), nullptr);  // no room: nothing taken
  EXPECT_EQ(arena->free_bytes(), 9 * kBlockSize);
  arena->Give(b, 3 * kBlockSize);
  EXPECT_EQ(arena->Take(2 * kBlockSize), b);  // the first hole that fits
  arena->Give(b, 2 * kBlockSize);
  arena->Give(a, 1);
  arena->Give(c, 2 * kBlockSize + 1);
  EXPECT_EQ(arena->free_bytes(), 16 * kBlockSize);
  EXPECT_EQ(arena->Take(16 * kBlockSize), arena->base());  // merged back into one range

  EXPECT_TRUE(arena->Contains(arena->base(), arena->size()));
  EXPECT_TRUE(arena->Contains(arena->base() + arena->size(), 0));
  EXPECT_FALSE(arena->Contains(arena->base() + 1, arena->size()));  // runs past the end
  EXPECT_FALSE(arena->Contains(arena->base() - 1, 1));
  EXPECT_FALSE(arena->Contains(arena->base() + kBlockSize, SIZE_MAX));
}

TEST(RegisteredBuffersTest, AFullRegionFallsBackToPlainBuffersThatStillWork) {
  auto made = NewUringEnv(8, 4 * kBlockSize);
  if (!made) GTEST_SKIP() << "io_uring unavailable here: " << made.error().ToString();
  Env& env = **made;
  TempDir dir("io_test");
  auto file = MustOpen(env, dir / "f", true);
  std::vector<IoBuffer> bufs;
  for (int i = 0; i < 5; ++i) bufs.push_back(env.AllocateIo(kBlockSize));
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(bufs[i].registered()) << i;
  EXPECT_FALSE(bufs[4].registered());  // the region is used up
  std::vector<IoRequest> w;
  for (int i = 0; i < 5; ++i) {
    FillPattern(bufs[i].get(), kBlockSize, i);
    w.push_back(Write(file.get(), i * kBlockSize, bufs[i].get(), kBlockSize));
  }
  ASSERT_TRUE(env.Execute(w));
  EXPECT_EQ(env.Counters().requests, 5u);
  EXPECT_EQ(env.Counters().registered_requests, 4u);
  std::string want;
  for (int i = 0; i < 5; ++i) want += Pattern(kBlockSize, i);
  EXPECT_EQ(ReadFile(dir / "f"), want);
  bufs[1] = IoBuffer();  // returns its block to the region
  EXPECT_TRUE(env.AllocateIo(kBlockSize).registered());
}

// Every thread's ring registers the region: registered I/O from many threads at once.
TEST(RegisteredBuffersTest, EveryThreadsRingUsesTheRegion) {
  auto made = NewUringEnv(16, 1 << 20);
  if (!made) GTEST_SKIP() << "io_uring unavailable here: " << made.error().ToString();
  Env& env = **made;
  TempDir dir("io_test");
  constexpr int kThreads = 4;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto file = env.Open(dir / ("t" + std::to_string(t)), true, true);
      IoBuffer buf = env.AllocateIo(16 * kBlockSize);
      if (!file || !buf.registered()) {
        ++failures;
        return;
      }
      FillPattern(buf.get(), buf.size(), t);
      std::vector<IoRequest> w = {Write(file->get(), 0, buf.get(), buf.size())};
      if (!env.Execute(w)) ++failures;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(env.Counters().registered_requests, env.Counters().requests);
  EXPECT_GE(env.Counters().requests, size_t{kThreads});
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(ReadFile(dir / ("t" + std::to_string(t))), Pattern(16 * kBlockSize, t)) << t;
  }
}

TEST(RegisteredBuffersTest, NoRegionMeansPlainBuffers) {
  auto made = NewUringEnv(8, 0);
  if (!made) GTEST_SKIP() << "io_uring unavailable here: " << made.error().ToString();
  EXPECT_FALSE((*made)->AllocateIo(kBlockSize).registered());
  EXPECT_FALSE(NewPosixEnv()->AllocateIo(kBlockSize).registered());
}

// ---------------------------------------------------------------------------------------
// FaultEnv over the posix Env.

class FaultEnvTest : public ::testing::Test {
 protected:
  // A file of `size` bytes of 0xEE, opened through `env`.
  std::unique_ptr<File> Prefilled(FaultEnv& env, const std::string& name, size_t size,
                                  bool direct = false) {
    WriteFile(dir_ / name, std::string(size, '\xEE'));
    return MustOpen(env, dir_ / name, direct);
  }

  TempDir dir_{"io_test"};
  std::unique_ptr<Env> base_ = NewPosixEnv();
};

TEST_F(FaultEnvTest, FailNthEioFailsExactlyThatRequestAndWritesNothing) {
  FaultEnv env(base_.get(), 1);
  auto file = Prefilled(env, "f", 4000);
  std::string data = Pattern(1000, 9);
  env.FailNth(2, FaultEnv::Fault::kEio);
  std::vector<IoRequest> reqs;
  for (int i = 0; i < 4; ++i) reqs.push_back(Write(file.get(), i * 1000, data.data(), 1000));
  auto st = env.Execute(reqs);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().kind, ErrorKind::kIOError);
  EXPECT_EQ(st.error().sys_errno, EIO);
  EXPECT_EQ(reqs[0].result, 1000);
  EXPECT_EQ(reqs[1].result, 1000);
  EXPECT_EQ(reqs[2].result, -EIO);
  EXPECT_EQ(reqs[3].result, 1000);
  EXPECT_EQ(ReadFile(dir_ / "f"), data + data + std::string(1000, '\xEE') + data);
  EXPECT_EQ(env.ops(), 4u);
  // A fault fires once.
  ASSERT_TRUE(env.Execute(reqs));
}

TEST_F(FaultEnvTest, FailNthEnospcIsNoSpaceForWritesReadsAndSyncs) {
  FaultEnv env(base_.get(), 1);
  auto file = Prefilled(env, "f", 1000);
  std::string data = Pattern(100, 10), back(100, '\0');
  for (Op op : {Op::kWrite, Op::kRead, Op::kSync}) {
    env.FailNth(0, FaultEnv::Fault::kEnospc);
    IoRequest r = op == Op::kWrite  ? Write(file.get(), 0, data.data(), 100)
                  : op == Op::kRead ? Read(file.get(), 0, back.data(), 100)
                                    : Sync(file.get());
    auto st = env.Execute({&r, 1});
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().kind, ErrorKind::kNoSpace);
    EXPECT_EQ(r.result, -ENOSPC);
  }
  EXPECT_EQ(ReadFile(dir_ / "f"), std::string(1000, '\xEE'));
  EXPECT_EQ(back, std::string(100, '\0'));
}

TEST_F(FaultEnvTest, ShortWritePersistsHalfRoundedDownToABlockOnDirectFiles) {
  FaultEnv env(base_.get(), 1);
  auto buffered = Prefilled(env, "buffered", 2000);
  auto direct = Prefilled(env, "direct", 4 * kBlockSize, /*direct=*/true);
  AlignedBuffer data = AllocateAligned(3 * kBlockSize);
  FillPattern(data.get(), 3 * kBlockSize, 11);
  const std::string pattern(reinterpret_cast<char*>(data.get()), 3 * kBlockSize);
  env.FailNth(0, FaultEnv::Fault::kShortWrite);
  env.FailNth(1, FaultEnv::Fault::kShortWrite);
  IoRequest reqs[] = {Write(buffered.get(), 0, data.get(), 1001),
                      Write(direct.get(), 0, data.get(), 3 * kBlockSize)};
  auto st = env.Execute(reqs);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().sys_errno, EIO);
  EXPECT_EQ(reqs[0].result, -EIO);
  EXPECT_EQ(reqs[1].result, -EIO);
  EXPECT_EQ(ReadFile(dir_ / "buffered"), pattern.substr(0, 500) + std::string(1500, '\xEE'));
  // Half of 3 blocks is 1.5 blocks: a direct file keeps 1 block, a buffered one all 1.5.
  const size_t kept = direct->direct() ? kBlockSize : 3 * kBlockSize / 2;
  EXPECT_EQ(ReadFile(dir_ / "direct"),
            pattern.substr(0, kept) + std::string(4 * kBlockSize - kept, '\xEE'));
}

TEST_F(FaultEnvTest, TornWriteKeepsThePrefixAndGarblesTheRestOfTheRange) {
  FaultEnv env(base_.get(), 42);
  auto file = Prefilled(env, "f", 3 * kBlockSize, /*direct=*/true);
  AlignedBuffer data = AllocateAligned(2 * kBlockSize);
  FillPattern(data.get(), 2 * kBlockSize, 12);
  const std::string pattern(reinterpret_cast<char*>(data.get()), 2 * kBlockSize);
  env.FailNth(0, FaultEnv::Fault::kTornWrite);
  IoRequest w = Write(file.get(), 0, data.get(), 2 * kBlockSize);
  auto st = env.Execute({&w, 1});
  ASSERT_FALSE(st);
  EXPECT_EQ(w.result, -EIO);
  const std::string got = ReadFile(dir_ / "f");
  ASSERT_EQ(got.size(), 3 * kBlockSize);
  EXPECT_EQ(got.substr(0, kBlockSize), pattern.substr(0, kBlockSize));  // the prefix
  const std::string tail = got.substr(kBlockSize, kBlockSize);
  EXPECT_NE(tail, pattern.substr(kBlockSize));
  EXPECT_NE(tail, std::string(kBlockSize, '\xEE'));
  EXPECT_EQ(got.substr(2 * kBlockSize), std::string(kBlockSize, '\xEE'));  // past the range

  // The same seed and operation number give the same garbage.
  TempDir other{"io_test"};
  WriteFile(other / "f", std::string(3 * kBlockSize, '\xEE'));
  FaultEnv again(base_.get(), 42);
  auto file2 = MustOpen(again, other / "f", true);
  again.FailNth(0, FaultEnv::Fault::kTornWrite);
  IoRequest w2 = Write(file2.get(), 0, data.get(), 2 * kBlockSize);
  ASSERT_FALSE(again.Execute({&w2, 1}));
  EXPECT_EQ(ReadFile(other / "f"), got);
}

TEST_F(FaultEnvTest, WriteFaultsOnReadsAndSyncsActAsEio) {
  FaultEnv env(base_.get(), 1);
  auto file = Prefilled(env, "f", 100);
  std::string back(100, '\0');
  env.FailNth(0, FaultEnv::Fault::kTornWrite);
  env.FailNth(1, FaultEnv::Fault::kShortWrite);
  IoRequest reqs[] = {Read(file.get(), 0, back.data(), 100), Sync(file.get())};
  ASSERT_FALSE(env.Execute(reqs));
  EXPECT_EQ(reqs[0].result, -EIO);
  EXPECT_EQ(reqs[1].result, -EIO);
}

TEST_F(FaultEnvTest, OpsCountEveryRequestAndFailNthCountsFromNow) {
  FaultEnv env(base_.get(), 1);
  auto file = Prefilled(env, "f", 100);
  std::string buf(10, '\0');
  auto batch = [&](int n) {
    std::vector<IoRequest> reqs(n, Read(file.get(), 0, buf.data(), buf.size()));
    (void)env.Execute(reqs);
    return reqs;
  };
  EXPECT_EQ(env.ops(), 0u);
  batch(3);
  EXPECT_EQ(env.ops(), 3u);
  (void)env.Open(dir_ / "g", true, false);  // not an operation
  EXPECT_EQ(env.ops(), 3u);
  env.FailNth(4, FaultEnv::Fault::kEio);  // op number 7
  auto first = batch(2);                  // ops 3, 4
  EXPECT_EQ(first[0].result, 10);
  EXPECT_EQ(first[1].result, 10);
  auto second = batch(5);  // ops 5..9
  for (int i = 0; i < 5; ++i) EXPECT_EQ(second[i].result, i == 2 ? -EIO : 10) << i;
  EXPECT_EQ(env.ops(), 10u);
}

TEST_F(FaultEnvTest, FailPathBreaksOnlyThatPrefixUntilCleared) {
  FaultEnv env(base_.get(), 1);
  ASSERT_TRUE(env.CreateDirs(dir_ / "disk1"));
  ASSERT_TRUE(env.CreateDirs(dir_ / "disk2"));
  auto f1 = Prefilled(env, "disk1/f", 100);
  auto f2 = Prefilled(env, "disk2/f", 100);
  env.FailPath(dir_ / "disk1");

  std::string data = Pattern(50, 13);
  IoRequest reqs[] = {Write(f1.get(), 0, data.data(), 50), Write(f2.get(), 0, data.data(), 50),
                      Sync(f1.get()), Sync(f2.get())};
  auto st = env.Execute(reqs);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().sys_errno, EIO);
  EXPECT_EQ(reqs[0].result, -EIO);
  EXPECT_EQ(reqs[1].result, 50);
  EXPECT_EQ(reqs[2].result, -EIO);
  EXPECT_EQ(reqs[3].result, 0);
  EXPECT_EQ(ReadFile(dir_ / "disk1/f"), std::string(100, '\xEE'));

  EXPECT_FALSE(env.Open(dir_ / "disk1/g", true, false));
  EXPECT_FALSE(env.Allocate(*f1, 0, 4096));
  EXPECT_FALSE(env.Size(*f1));
  EXPECT_FALSE(env.CreateDirs(dir_ / "disk1/sub"));
  EXPECT_FALSE(env.ListDir(dir_ / "disk1"));
  EXPECT_FALSE(env.SyncDir(dir_ / "disk1"));
  EXPECT_FALSE(env.StatFs(dir_ / "disk1"));
  EXPECT_EQ(env.Remove(dir_ / "disk1/f").error().sys_errno, EIO);
  EXPECT_TRUE(env.Open(dir_ / "disk2/g", true, false));
  EXPECT_TRUE(env.Allocate(*f2, 0, 4096));
  EXPECT_TRUE(env.ListDir(dir_ / "disk2"));
  EXPECT_TRUE(env.ListDir(dir_.path()));  // the parent is not under the prefix

  env.Heal();
  IoRequest again = Write(f1.get(), 0, data.data(), 50);
  EXPECT_TRUE(env.Execute({&again, 1}));
  EXPECT_TRUE(env.ListDir(dir_ / "disk1"));
}

// Two FailPath calls are two dead disks (regression: the second call replaced the first, so
// a test that meant to fail two disks failed one); Heal revives both.
TEST_F(FaultEnvTest, FailPathPrefixesAccumulateUntilHealed) {
  FaultEnv env(base_.get(), 1);
  std::vector<std::unique_ptr<File>> files;
  for (const char* d : {"disk1", "disk2", "disk3"}) {
    ASSERT_TRUE(env.CreateDirs(dir_ / d));
    files.push_back(Prefilled(env, std::string(d) + "/f", 100));
  }
  env.FailPath(dir_ / "disk1");
  env.FailPath(dir_ / "disk3");
  env.NoSpaceUnder(dir_ / "disk1");
  env.NoSpaceUnder(dir_ / "disk2");
  std::string back(10, '\0');
  auto reads = [&] {
    std::vector<IoRequest> reqs;
    for (auto& f : files) reqs.push_back(Read(f.get(), 0, back.data(), back.size()));
    (void)env.Execute(reqs);
    return std::vector<int64_t>{reqs[0].result, reqs[1].result, reqs[2].result};
  };
  EXPECT_EQ(reads(), (std::vector<int64_t>{-EIO, 10, -EIO}));
  EXPECT_EQ(env.StatFs(dir_ / "disk2")->free_bytes, 0u);  // the second NoSpaceUnder holds too
  EXPECT_FALSE(env.Open(dir_ / "disk3/g", true, false));
  env.Heal();
  EXPECT_EQ(reads(), (std::vector<int64_t>{10, 10, 10}));
  EXPECT_GT(env.StatFs(dir_ / "disk2")->free_bytes, 0u);
}

// kBitFlip: the operation succeeds, but one bit of what a read returns, or of what a write
// stores, is flipped; a sync is unaffected. Which bit depends only on the seed and the
// operation number.
TEST_F(FaultEnvTest, BitFlipCorruptsOneBitOfTheNthReadOrWriteSilently) {
  const std::string data = Pattern(1000, 24);
  auto bits_differing = [](const std::string& a, const std::string& b) {
    int n = 0;
    for (size_t i = 0; i < a.size(); ++i) n += __builtin_popcount(uint8_t(a[i] ^ b[i]));
    return n;
  };
  auto flipped_read = [&](uint64_t seed) {
    FaultEnv env(base_.get(), seed);
    WriteFile(dir_ / "r", data);
    auto f = MustOpen(env, dir_ / "r");
    std::string back(1000, '\0');
    env.FailNth(1, FaultEnv::Fault::kBitFlip);
    IoRequest reqs[] = {Read(f.get(), 0, back.data(), 1000), Read(f.get(), 0, back.data(), 1000)};
    ApplyOk(env, reqs);
    EXPECT_EQ(reqs[1].result, 1000);
    EXPECT_EQ(bits_differing(back, data), 1) << "seed " << seed;
    EXPECT_EQ(ReadFile(dir_ / "r"), data) << "a read flip must not reach the file";
    return back;
  };
  const std::string once = flipped_read(3);
  EXPECT_EQ(flipped_read(3), once);  // the same seed flips the same bit
  EXPECT_NE(flipped_read(4), once);

  FaultEnv env(base_.get(), 3);
  auto f = Prefilled(env, "w", 1000);
  const std::string sent = data;
  env.FailNth(0, FaultEnv::Fault::kBitFlip);
  env.FailNth(1, FaultEnv::Fault::kBitFlip);
  IoRequest reqs[] = {Write(f.get(), 0, sent.data(), 1000), Sync(f.get())};
  ApplyOk(env, reqs);
  EXPECT_EQ(reqs[0].result, 1000);
  EXPECT_EQ(reqs[1].result, 0);
  EXPECT_EQ(sent, data);  // the caller's buffer is untouched
  EXPECT_EQ(bits_differing(ReadFile(dir_ / "w"), data), 1);
}

// FlipOnRead: bit rot at one offset of one file, seen by every read that covers it and by
// no other read; the file is not changed; Heal clears it.
TEST_F(FaultEnvTest, FlipOnReadDamagesEveryReadOfThatByteUntilHealed) {
  FaultEnv env(base_.get(), 1);
  const std::string data = Pattern(8192, 25);
  WriteFile(dir_ / "f", data);
  WriteFile(dir_ / "other", data);
  auto f = MustOpen(env, dir_ / "f");
  auto other = MustOpen(env, dir_ / "other");
  env.FlipOnRead(dir_ / "f", 5000, 0x21);
  env.FlipOnRead(dir_ / "f", 7000, 0x04);
  env.FlipOnRead(dir_ / "f", 7000, 0x04);  // flipped twice: back as it was
  std::string expect = data;
  expect[5000] ^= 0x21;
  for (uint64_t off : {0, 4096, 4999}) {
    std::string back(2000, '\0');
    IoRequest r = Read(f.get(), off, back.data(), back.size());
    ASSERT_TRUE(env.Execute({&r, 1}));
    EXPECT_EQ(back.substr(0, r.result), expect.substr(off, r.result)) << off;
  }
  std::string whole(8192, '\0'), other_back(8192, '\0');
  IoRequest both[] = {Read(f.get(), 0, whole.data(), 8192),
                      Read(other.get(), 0, other_back.data(), 8192)};
  ASSERT_TRUE(env.Execute(both));
  EXPECT_EQ(whole, expect);
  EXPECT_EQ(other_back, data);
  EXPECT_EQ(ReadFile(dir_ / "f"), data);
  env.Heal();
  ASSERT_TRUE(env.Execute({both, 1}));
  EXPECT_EQ(whole, data);
}

// Latency: each request waits a seeded time in [min, max] before it runs, the requests of a
// batch concurrently; the wait is really spent (the clock says so) and reported by delayed().
TEST_F(FaultEnvTest, LatencyIsSeededBoundedAndReallySpent) {
  using std::chrono::microseconds;
  const microseconds lo(2000), hi(4000);
  auto run = [&](uint64_t seed) {
    FaultEnv env(base_.get(), seed);
    auto f = Prefilled(env, "f", 4096);
    env.SetLatency(lo, hi);
    std::string back(100, '\0');
    std::vector<microseconds> waits;
    for (int batch : {1, 8, 1, 8}) {
      std::vector<IoRequest> reqs(batch, Read(f.get(), 0, back.data(), back.size()));
      const microseconds before = env.delayed();
      const auto t0 = std::chrono::steady_clock::now();
      ApplyOk(env, reqs);
      const auto took = std::chrono::steady_clock::now() - t0;
      const microseconds waited = env.delayed() - before;
      EXPECT_GE(waited, lo) << "seed " << seed;
      EXPECT_LE(waited, hi) << "seed " << seed << ": a batch waits as long as its slowest";
      EXPECT_GE(took, waited) << "seed " << seed << ": the latency was counted, not spent";
      waits.push_back(waited);
    }
    env.SetLatency(microseconds(0), microseconds(0));
    const microseconds before = env.delayed();
    IoRequest r = Read(f.get(), 0, back.data(), back.size());
    ApplyOk(env, {&r, 1});
    EXPECT_EQ(env.delayed(), before);
    return waits;
  };
  const auto first = run(9);
  EXPECT_EQ(run(9), first);  // reproducible from the seed
  EXPECT_NE(run(10), first);
}

TEST_F(FaultEnvTest, NoSpaceUnderFailsAllocateAndGrowingWritesOnly) {
  FaultEnv env(base_.get(), 1);
  ASSERT_TRUE(env.CreateDirs(dir_ / "full"));
  auto full = Prefilled(env, "full/f", 8192);
  auto other = Prefilled(env, "other", 100);
  env.NoSpaceUnder(dir_ / "full");

  std::string data = Pattern(4096, 14);
  IoRequest reqs[] = {Write(full.get(), 4096, data.data(), 4096),  // ends at the size: fine
                      Write(full.get(), 6000, data.data(), 4096),  // grows the file
                      Write(other.get(), 100, data.data(), 4096)};
  auto st = env.Execute(reqs);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().kind, ErrorKind::kNoSpace);
  EXPECT_EQ(reqs[0].result, 4096);
  EXPECT_EQ(reqs[1].result, -ENOSPC);
  EXPECT_EQ(reqs[2].result, 4096);
  EXPECT_EQ(ReadFile(dir_ / "full/f").size(), 8192u);

  auto alloc = env.Allocate(*full, 0, 1 << 20);
  ASSERT_FALSE(alloc);
  EXPECT_EQ(alloc.error().kind, ErrorKind::kNoSpace);
  EXPECT_TRUE(env.Allocate(*other, 0, 1 << 20));
  EXPECT_EQ(env.StatFs(dir_ / "full")->free_bytes, 0u);

  env.Heal();
  EXPECT_TRUE(env.Allocate(*full, 0, 1 << 20));
}

// Writes a known mix of synced and unsynced ranges under `dir` through `env`, closes the
// files and drops the unsynced data.
void WriteMixAndDrop(FaultEnv& env, const TempDir& dir) {
  auto a = MustOpen(env, dir / "a");
  auto b = MustOpen(env, dir / "b");
  auto c = MustOpen(env, dir / "c");
  const std::string p16 = Pattern(16384, 20);
  const std::string p4 = Pattern(4096, 21);
  // a: 16K synced, then [4K,8K) and [20K,24K) rewritten without a sync.
  IoRequest first[] = {Write(a.get(), 0, p16.data(), 16384), Sync(a.get())};
  ASSERT_TRUE(env.Execute(first));
  IoRequest second[] = {Write(a.get(), 4096, p4.data(), 4096),
                        Write(a.get(), 20480, p4.data(), 4096),
                        // b: never synced, two touching writes that merge into one range.
                        Write(b.get(), 0, p4.data(), 4096), Write(b.get(), 4096, p4.data(), 4096),
                        // c: written and synced in one batch, the sync listed first.
                        Sync(c.get()), Write(c.get(), 0, p16.data(), 16384)};
  ASSERT_TRUE(env.Execute(second));
  // A failed sync forgets nothing: a's unsynced ranges stay.
  env.FailNth(0, FaultEnv::Fault::kEio);
  IoRequest failed_sync = Sync(a.get());
  ASSERT_FALSE(env.Execute({&failed_sync, 1}));
  a.reset();
  b.reset();
  c.reset();
  ASSERT_TRUE(env.DropUnsynced());
}

TEST_F(FaultEnvTest, DropUnsyncedReplacesExactlyTheUnsyncedRanges) {
  FaultEnv env(base_.get(), 7);
  WriteMixAndDrop(env, dir_);
  const std::string p16 = Pattern(16384, 20);
  const std::string p4 = Pattern(4096, 21);

  const std::string a = ReadFile(dir_ / "a");
  ASSERT_EQ(a.size(), 24576u);
  EXPECT_EQ(a.substr(0, 4096), p16.substr(0, 4096));          // synced, intact
  EXPECT_NE(a.substr(4096, 4096), p4);                        // unsynced, replaced
  EXPECT_EQ(a.substr(8192, 8192), p16.substr(8192));          // synced, intact
  EXPECT_EQ(a.substr(16384, 4096), std::string(4096, '\0'));  // a hole nobody wrote
  EXPECT_NE(a.substr(20480, 4096), p4);                       // unsynced, replaced
  const std::string b = ReadFile(dir_ / "b");
  ASSERT_EQ(b.size(), 8192u);
  EXPECT_NE(b.substr(0, 4096), p4);
  EXPECT_NE(b.substr(4096), p4);
  EXPECT_EQ(ReadFile(dir_ / "c"), p16);  // synced in its own batch

  // Dropped data counts as on disk now: a second drop changes nothing.
  ASSERT_TRUE(env.DropUnsynced());
  EXPECT_EQ(ReadFile(dir_ / "a"), a);
  EXPECT_EQ(ReadFile(dir_ / "b"), b);
}

// A sync still running when the power fails (DropUnsynced, from another thread) never
// reports success: the data it was to make durable is gone (regression: it returned OK, and a
// test's crash could acknowledge garbage).
TEST_F(FaultEnvTest, ASyncRunningAcrossDropUnsyncedFails) {
  FaultEnv env(base_.get(), 8);
  auto f = MustOpen(env, dir_ / "f");
  const std::string p4 = Pattern(4096, 30);
  IoRequest write = Write(f.get(), 0, p4.data(), 4096);
  ASSERT_TRUE(env.Execute({&write, 1}));
  env.SetLatency(std::chrono::seconds(1), std::chrono::seconds(1));  // the sync waits 1 s
  IoRequest sync = Sync(f.get());
  Status synced;
  std::thread t([&] { synced = env.Execute({&sync, 1}); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_TRUE(env.DropUnsynced());  // while the sync waits
  t.join();
  EXPECT_FALSE(synced);
  EXPECT_EQ(sync.result, -EIO);
  f.reset();
  EXPECT_NE(ReadFile(dir_ / "f"), p4);  // the unsynced write was dropped
}

TEST_F(FaultEnvTest, DropUnsyncedGarbageDependsOnlyOnTheSeed) {
  auto contents = [&](uint64_t seed) {
    TempDir dir{"io_test"};
    FaultEnv env(base_.get(), seed);
    WriteMixAndDrop(env, dir);
    return ReadFile(dir / "a") + ReadFile(dir / "b") + ReadFile(dir / "c");
  };
  const std::string first = contents(7);
  EXPECT_EQ(contents(7), first);
  EXPECT_NE(contents(8), first);
}

TEST_F(FaultEnvTest, RemovedFilesAreNotResurrectedByDropUnsynced) {
  FaultEnv env(base_.get(), 3);
  {
    auto f = MustOpen(env, dir_ / "f");
    std::string data = Pattern(100, 22);
    IoRequest w = Write(f.get(), 0, data.data(), 100);
    ASSERT_TRUE(env.Execute({&w, 1}));
  }
  ASSERT_TRUE(env.Remove(dir_ / "f"));
  ASSERT_TRUE(env.DropUnsynced());
  EXPECT_FALSE(std::filesystem::exists(dir_ / "f"));
}

TEST_F(FaultEnvTest, FaultEnvOverUringBehavesTheSame) {
  auto uring = NewUringEnv(8);
  if (!uring) GTEST_SKIP() << "io_uring unavailable here: " << uring.error().ToString();
  FaultEnv env(uring->get(), 5);
  auto file = Prefilled(env, "f", 4000);
  std::string data = Pattern(1000, 23);
  env.FailNth(1, FaultEnv::Fault::kShortWrite);
  std::vector<IoRequest> reqs;
  for (int i = 0; i < 4; ++i) reqs.push_back(Write(file.get(), i * 1000, data.data(), 1000));
  ASSERT_FALSE(env.Execute(reqs));
  EXPECT_EQ(reqs[1].result, -EIO);
  EXPECT_EQ(ReadFile(dir_ / "f"),
            data + data.substr(0, 500) + std::string(500, '\xEE') + data + data);
}

}  // namespace
}  // namespace cv::storage
