// storage/io/internal.h: INTERNAL to storage/io. What the Env implementations (posix_env.cc,
// uring_env.cc, fault_env.cc, io_common.cc, async_ring.cc) and their tests share: a File on a
// file descriptor, the system calls both fd-based Envs make alike, the registered buffer
// region and the request counters, and the AsyncRing factory that takes them. Nothing
// outside storage/io includes it; callers use storage/io/io.h.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/common.h"
#include "storage/io/io.h"

namespace cv::storage {

namespace detail {
struct IoTally;
}

// kUnavailable when io_uring (or its eventfd registration) is refused here. With `arena`
// (which must outlive the ring), the ring registers it and requests inside it go as
// READ_FIXED/WRITE_FIXED; where the kernel refuses that they go without. With `tally`
// (which must outlive the ring), the ring counts its reads and writes there.
Result<std::unique_ptr<AsyncRing>> NewAsyncRing(unsigned queue_depth = 256,
                                                const detail::IoArena* arena = nullptr,
                                                detail::IoTally* tally = nullptr);

namespace detail {

// A File on a file descriptor, as PosixEnv and UringEnv open them.
class FdFile final : public File {
 public:
  FdFile(int fd, std::string path, bool direct)
      : fd_(fd), path_(std::move(path)), direct_(direct) {}
  ~FdFile() override;
  FdFile(const FdFile&) = delete;
  FdFile& operator=(const FdFile&) = delete;
  const std::string& path() const override { return path_; }
  bool direct() const override { return direct_; }
  int fd() const { return fd_; }

 private:
  int fd_;
  std::string path_;
  bool direct_;
};

// Everything but Execute, on plain system calls; Open tries O_DIRECT and falls back (logged
// once per Env) where the file system refuses it.
class FdEnvBase : public Env {
 public:
  Result<std::unique_ptr<File>> Open(const std::string& path, bool create,
                                     bool want_direct) override;
  Status Allocate(File& file, uint64_t offset, uint64_t len) override;
  Result<uint64_t> Size(File& file) override;
  Status CreateDirs(const std::string& path) override;
  Status SyncDir(const std::string& path) override;
  Status Remove(const std::string& path) override;
  Result<std::vector<std::string>> ListDir(const std::string& path) override;
  Result<FsStats> StatFs(const std::string& path) override;

 private:
  std::atomic<bool> direct_fallback_logged_{false};
};

// A region of memory that buffers are carved from (first fit, kBlockSize units, freed
// ranges merged). Thread-safe. Outlives every IoBuffer taken from it.
class IoArena {
 public:
  // nullptr when the memory cannot be mapped.
  static std::unique_ptr<IoArena> Create(size_t bytes);
  ~IoArena();
  IoArena(const IoArena&) = delete;
  IoArena& operator=(const IoArena&) = delete;

  uint8_t* base() const { return base_; }
  size_t size() const { return size_; }
  // True when [p, p+len) lies inside the region.
  bool Contains(const void* p, size_t len) const;
  // nullptr when no free range is large enough.
  uint8_t* Take(size_t len);
  void Give(uint8_t* p, size_t len);
  size_t free_bytes() const;

 private:
  IoArena(uint8_t* base, size_t size);
  uint8_t* const base_;
  const size_t size_;
  struct Free;
  std::unique_ptr<Free> free_;
};

// IoCounters that threads add to.
struct IoTally {
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> registered_requests{0};
  std::atomic<uint64_t> async_requests{0};
  void Add(uint64_t requests_, uint64_t registered_, uint64_t async_ = 0) {
    requests.fetch_add(requests_, std::memory_order_relaxed);
    registered_requests.fetch_add(registered_, std::memory_order_relaxed);
    async_requests.fetch_add(async_, std::memory_order_relaxed);
  }
  IoCounters Get() const {
    return {requests.load(std::memory_order_relaxed),
            registered_requests.load(std::memory_order_relaxed),
            async_requests.load(std::memory_order_relaxed)};
  }
};

// The FdFile behind a request, or nullptr when it is missing or from another Env.
FdFile* AsFdFile(File* file);

}  // namespace detail
}  // namespace cv::storage
