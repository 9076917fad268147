// storage/io/io.h, the one public header of storage/io: the only way storage/ touches data
// disks. An Env opens files and executes batches of reads, writes and syncs. Implementations:
//   - NewUringEnv: io_uring, one ring per calling thread, a batch in as few submissions
//     as the queue depth allows;
//   - NewPosixEnv: pread/pwrite/fdatasync, for machines without io_uring;
//   - FaultEnv: wraps another Env and injects faults from a seed (tests);
//   - NewDiscardEnv: wraps another Env and keeps no extent data (the bench's null-disk node).
// Short reads and writes are continued until done, EOF or error; -EAGAIN is retried.
//
// Ordering inside one Execute batch: every read and write runs first (concurrently, in no
// particular order), then every sync. So [write A, sync A] in one batch makes the write
// durable, whatever their order in the span; two writes to overlapping ranges in one batch
// have no defined order.
//
// Thread-safety: an Env is shared by all threads; Execute may be called concurrently. A
// File may be used from several threads at once. Files must be destroyed before their Env.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/common.h"

namespace cv::storage {

inline constexpr size_t kBlockSize = 4096;  // O_DIRECT unit: offsets, lengths and buffers

class File {
 public:
  virtual ~File() = default;
  virtual const std::string& path() const = 0;
  // True when opened with O_DIRECT: every offset, length and buffer address of a request on
  // this file must then be a multiple of kBlockSize.
  virtual bool direct() const = 0;
};

struct IoRequest {
  enum class Op { kRead, kWrite, kSync };  // kSync = fdatasync
  Op op = Op::kRead;
  File* file = nullptr;  // opened by the Env that executes the request
  // kSync ignores offset, buf and len: it syncs the whole file's data.
  uint64_t offset = 0;
  void* buf = nullptr;
  size_t len = 0;
  // Out: bytes transferred (reads may stop short at end of file), or -errno. On a failure
  // part of a write may have reached the file.
  int64_t result = 0;
};

struct FsStats {
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;
};

class AsyncRing;
namespace detail {
class IoArena;  // internal.h
}

// A buffer for requests, from Env::AllocateIo: kBlockSize-aligned, not zeroed, move-only.
// Where the Env has a registered region (io_uring) and room is left in it, the buffer lies
// there and requests into any part of it go as READ_FIXED/WRITE_FIXED; otherwise it is a
// plain aligned allocation and works the same, only without that. Destroy before its Env.
class IoBuffer {
 public:
  IoBuffer() = default;
  IoBuffer(uint8_t* data, size_t len, detail::IoArena* arena)
      : data_(data), len_(len), arena_(arena) {}
  IoBuffer(IoBuffer&& o) noexcept { *this = std::move(o); }
  IoBuffer& operator=(IoBuffer&& o) noexcept;
  IoBuffer(const IoBuffer&) = delete;
  IoBuffer& operator=(const IoBuffer&) = delete;
  ~IoBuffer() { Reset(); }

  uint8_t* get() const { return data_; }
  size_t size() const { return len_; }
  bool registered() const { return arena_ != nullptr; }

 private:
  void Reset();
  uint8_t* data_ = nullptr;
  size_t len_ = 0;
  detail::IoArena* arena_ = nullptr;  // nullptr: from AllocateAligned
};

// What an Env has done since it was made (for status and tests).
struct IoCounters {
  uint64_t requests = 0;             // reads and writes submitted (continuations included)
  uint64_t registered_requests = 0;  // of those, through registered buffers
  uint64_t async_requests = 0;       // of those, through an AsyncRing (event loops)
};

class Env {
 public:
  virtual ~Env() = default;
  // Opens (and with `create`, creates) a file for reading and writing. With `want_direct` it
  // tries O_DIRECT and falls back to buffered I/O where the file system refuses it.
  virtual Result<std::unique_ptr<File>> Open(const std::string& path, bool create,
                                             bool want_direct) = 0;
  // Executes every request, concurrently where possible, and returns when all are done.
  // Each request's `result` tells how it ended; the Status is the first failure, if any.
  // A read that ends short at end of file is not a failure (result < len).
  virtual Status Execute(std::span<IoRequest> requests) = 0;
  // Reserves [offset, offset+len) on disk (fallocate, extending the size); kNoSpace when the
  // disk is full. Where the file system cannot reserve (EOPNOTSUPP) it succeeds without.
  virtual Status Allocate(File& file, uint64_t offset, uint64_t len) = 0;
  virtual Result<uint64_t> Size(File& file) = 0;
  virtual Status CreateDirs(const std::string& path) = 0;
  virtual Status SyncDir(const std::string& path) = 0;  // makes created/removed names durable
  virtual Status Remove(const std::string& path) = 0;   // a file or an empty directory
  // Names only, without "." and "..", sorted.
  virtual Result<std::vector<std::string>> ListDir(const std::string& path) = 0;
  virtual Result<FsStats> StatFs(const std::string& path) = 0;  // free = available to us
  // "uring", "posix" or "fault" (for logs and status).
  virtual const char* Name() const = 0;
  // A buffer for this Env's requests (see IoBuffer). The default is a plain aligned one.
  virtual IoBuffer AllocateIo(size_t len);
  virtual IoCounters Counters() const { return {}; }
  // An AsyncRing (below) for the calling thread's event loop, whose requests may name this
  // Env's Files and use its registered region. kUnavailable where the Env has none (posix,
  // fault): callers then use Execute.
  virtual Result<std::unique_ptr<AsyncRing>> NewAsyncRing(unsigned queue_depth = 256);
};

std::unique_ptr<Env> NewPosixEnv();
// kUnavailable when the kernel or sandbox refuses io_uring. `registered_bytes` (rounded up
// to pages, at most 1 GiB; 0 = none) is a region that AllocateIo carves buffers from and
// that every ring of this Env registers (io_uring_register_buffers), so the kernel need not
// pin and map a request's pages each time. Its pages stay resident. Where registration is
// refused (RLIMIT_MEMLOCK) the Env logs it once and works without.
inline constexpr size_t kDefaultRegisteredBytes = size_t{32} << 20;
Result<std::unique_ptr<Env>> NewUringEnv(unsigned queue_depth = 256,
                                         size_t registered_bytes = kDefaultRegisteredBytes);
// io_uring when it works here, else pread/pwrite; logs which one it chose and why.
std::unique_ptr<Env> NewDefaultEnv();
// The null-disk node's Env (a bench-only setting, [storage] bench_discard_writes): writes
// and syncs of extent files (under a disk's extents/) complete at once and keep nothing,
// their reads return zeros, and their preallocation takes no space; every other file (the
// disks' identity files) goes to `base`. It has no AsyncRing. It measures the node's own CPU
// cost per uploaded byte; every object written through it is lost.
std::unique_ptr<Env> NewDiscardEnv(std::unique_ptr<Env> base);

// Allocates `len` bytes aligned to kBlockSize (for O_DIRECT), not zeroed; freed with free().
// Aborts when memory is exhausted.
struct AlignedFree {
  void operator()(void* p) const;
};
using AlignedBuffer = std::unique_ptr<uint8_t[], AlignedFree>;
AlignedBuffer AllocateAligned(size_t len);

// A fault-injecting wrapper, deterministic from its seed, for tests. Every Execute request
// counts as one operation (numbered from 0 in submission order); Open, Allocate and the
// directory calls do not count. A faulted request does not stop the rest of its batch.
// Garbage, flipped bits and delays depend only on the seed and on operation numbers (and
// what is written where), never on thread timing, so a single-threaded test is reproducible
// from its seed. Thread-safe. Its Files wrap the base Env's Files and only work with this Env.
//
// Two kinds of faults: one-shot faults (FailNth) fire on one operation; standing faults
// (FailPath, NoSpaceUnder, FlipOnRead) hold for every operation they match, accumulate (a
// second FailPath fails a second disk, it does not replace the first) and last until Heal().
class FaultEnv : public Env {
 public:
  enum class Fault {
    kNone,
    kEio,     // the operation fails with EIO, nothing written
    kEnospc,  // the operation fails with ENOSPC, nothing written
    // For a read or a sync these two act as kEio. The prefix is half the request, rounded
    // down to kBlockSize on a direct file.
    kShortWrite,  // a write persists only a prefix and reports -EIO
    kTornWrite,   // a write persists a prefix and garbage after it, and reports -EIO
    // Silent corruption, the operation reports success: a read returns what it read with
    // one bit flipped, a write stores its data with one bit flipped (the byte and bit come
    // from the seed and the operation number); a sync is unaffected.
    kBitFlip,
  };
  // `base` must outlive this Env.
  FaultEnv(Env* base, uint64_t seed);
  ~FaultEnv() override;

  // The operation numbered n (counting from now on, 0 = the next one) gets `fault`; each
  // fault fires once, and several may be pending. kNone cancels every pending fault.
  void FailNth(uint64_t n, Fault fault);
  // A dead disk: every operation on a path starting with `prefix` fails with EIO; so do
  // Open, Allocate, Size and the directory calls. Prefixes accumulate (two calls: two dead
  // disks). Plain string prefixes: "/x/d" covers /x/d0 and /x/d1, "" covers every path.
  void FailPath(const std::string& prefix);
  // A full disk: Allocate under `prefix` fails with ENOSPC, so does every write past the
  // file's current size, and StatFs reports no free bytes. Prefixes accumulate.
  void NoSpaceUnder(const std::string& prefix);
  // Bit rot the disk does not report: every read of the file `path` that covers byte
  // `offset` returns that byte XORed with `mask`; the file itself is not changed. Several
  // flips may be set, on one file or many.
  void FlipOnRead(const std::string& path, uint64_t offset, uint8_t mask);
  // Clears every standing fault (FailPath, NoSpaceUnder, FlipOnRead). Pending FailNth faults
  // and the latency stay.
  void Heal();
  // A slow disk: from now on each request waits a time drawn from [min, max] (from the seed
  // and its operation number) before it reaches the base Env. A batch's reads and writes
  // wait concurrently, as they run: the batch waits for the longest of them, then its syncs
  // likewise. So one Execute waits at most 2 * max. min = max = 0 turns it off; a max
  // below min counts as min.
  void SetLatency(std::chrono::microseconds min, std::chrono::microseconds max);
  // The latency injected so far: the sum of every wait described above.
  std::chrono::microseconds delayed() const;
  // Simulates power loss: every byte written since its file's last successful sync is
  // replaced with garbage from the seed (or zeros), as a crash may leave it. Call it after
  // closing the store that used this Env. Ranges are tracked per path from successful
  // writes and from the whole range of a failed one; a successful sync of a file forgets
  // what was written to it before that sync was issued. Each range gets either seeded
  // garbage or zeros, chosen by the seed. Afterwards nothing counts as unsynced, and a sync
  // that was running meanwhile (on another thread) fails with EIO: the power failed under it.
  Status DropUnsynced();
  uint64_t ops() const;

  Result<std::unique_ptr<File>> Open(const std::string& path, bool create,
                                     bool want_direct) override;
  Status Execute(std::span<IoRequest> requests) override;
  Status Allocate(File& file, uint64_t offset, uint64_t len) override;
  Result<uint64_t> Size(File& file) override;
  Status CreateDirs(const std::string& path) override;
  Status SyncDir(const std::string& path) override;
  Status Remove(const std::string& path) override;
  Result<std::vector<std::string>> ListDir(const std::string& path) override;
  Result<FsStats> StatFs(const std::string& path) override;
  const char* Name() const override { return "fault"; }
  // The base Env's buffers and counters.
  IoBuffer AllocateIo(size_t len) override;
  IoCounters Counters() const override;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Asynchronous I/O for an event loop: one AsyncRing per event-loop thread (from
// Env::NewAsyncRing). Submit starts a
// batch and returns at once; when completions are ready the ring's eventfd becomes readable,
// and the loop calls Poll on the same thread, which continues short transfers, runs a
// batch's syncs after its reads and writes (as Execute does), and calls each finished
// batch's `done` there. So completions run on the thread that issued them and no thread
// waits for the disk. With Asio: watch event_fd() with a posix::stream_descriptor
// (async_wait(wait_read)), then Poll and wait again.
//
// Thread-safety: none; an AsyncRing belongs to one thread.
class AsyncRing {
 public:
  virtual ~AsyncRing() = default;
  // Readable (non-zero counter) when Poll has work; Poll drains it.
  virtual int event_fd() const = 0;
  // Starts the requests. The span and every buffer must stay valid until `done` has run.
  // `done` gets the batch's Status (as Execute returns it) and runs inside Poll, never
  // inside Submit.
  virtual void Submit(std::span<IoRequest> requests, std::function<void(Status)> done) = 0;
  // Reaps what has completed and resubmits what must go on. Never blocks.
  virtual void Poll() = 0;
  // Batches submitted whose `done` has not run yet.
  virtual size_t pending() const = 0;
};

namespace detail {
// Status of a finished batch: the first failed request in span order, if any. (Here rather
// than in internal.h: storage's read path turns a request's result into a Status with it.)
Status BatchStatus(std::span<const IoRequest> requests);
}  // namespace detail

}  // namespace cv::storage
