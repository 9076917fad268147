// The Env for machines without io_uring: each request is a pread/pwrite loop or an
// fdatasync on the calling thread, one after another.
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "storage/io/internal.h"

namespace cv::storage {
namespace {

// Largest single transfer; Linux caps read/write at 0x7ffff000 bytes anyway.
constexpr size_t kMaxTransfer = size_t{1} << 30;

// Runs one read or write to completion, end of file or error; returns bytes or -errno.
int64_t Transfer(const IoRequest& r, const detail::FdFile& f) {
  auto* buf = static_cast<uint8_t*>(r.buf);
  size_t done = 0;
  while (done < r.len) {
    const size_t n = std::min(r.len - done, kMaxTransfer);
    const off_t off = static_cast<off_t>(r.offset + done);
    ssize_t got = r.op == IoRequest::Op::kRead ? ::pread(f.fd(), buf + done, n, off)
                                               : ::pwrite(f.fd(), buf + done, n, off);
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return -errno;
    }
    if (got == 0) {
      if (r.op == IoRequest::Op::kRead) break;  // end of file
      return -EIO;                              // a write that makes no progress never will
    }
    done += static_cast<size_t>(got);
    // A short direct read ends at end of file, and continuing from an unaligned offset
    // would only fail with EINVAL.
    if (r.op == IoRequest::Op::kRead && f.direct() && done % kBlockSize != 0) break;
  }
  return static_cast<int64_t>(done);
}

int64_t Sync(const detail::FdFile& f) {
  while (::fdatasync(f.fd()) != 0) {
    if (errno != EINTR) return -errno;
  }
  return 0;
}

class PosixEnv final : public detail::FdEnvBase {
 public:
  Status Execute(std::span<IoRequest> requests) override {
    // Reads and writes first, then syncs, so that a sync covers the writes of its batch.
    for (IoRequest& r : requests) {
      if (r.op == IoRequest::Op::kSync) continue;
      const detail::FdFile* f = detail::AsFdFile(r.file);
      r.result = f ? Transfer(r, *f) : -EBADF;
    }
    for (IoRequest& r : requests) {
      if (r.op != IoRequest::Op::kSync) continue;
      const detail::FdFile* f = detail::AsFdFile(r.file);
      r.result = f ? Sync(*f) : -EBADF;
    }
    return detail::BatchStatus(requests);
  }

  const char* Name() const override { return "posix"; }
};

}  // namespace

std::unique_ptr<Env> NewPosixEnv() { return std::make_unique<PosixEnv>(); }

}  // namespace cv::storage
