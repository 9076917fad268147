// Sinks: the default zero writer and the file-descriptor sink.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "storage/courier/courier.h"

namespace cv::courier {

namespace {
constexpr size_t kZeroChunk = 256 << 10;
const uint8_t* ZeroBuffer() {
  static const uint8_t* zeros = new uint8_t[kZeroChunk]();
  return zeros;
}
}  // namespace

Status Sink::WriteZeros(uint64_t n) {
  while (n > 0) {
    size_t k = std::min<uint64_t>(n, kZeroChunk);
    CV_TRY(Write({ZeroBuffer(), k}));
    n -= k;
  }
  return {};
}

FdSink::FdSink(int fd, bool regular_file, bool sync, uint64_t start)
    : fd_(fd), regular_(regular_file), sync_(sync), pos_(start) {}

FdSink::~FdSink() {
  if (owned_) close(fd_);
}

Result<std::unique_ptr<FdSink>> FdSink::Open(const std::string& path, bool sync) {
  struct stat st;
  bool exists = stat(path.c_str(), &st) == 0;
  bool block = exists && S_ISBLK(st.st_mode);
  int fd = block ? open(path.c_str(), O_WRONLY | O_CLOEXEC)
                 : open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(errno, "open " + path);
  auto sink = std::make_unique<FdSink>(fd, !block, sync);
  sink->owned_ = true;
  return sink;
}

Status FdSink::Write(std::span<const uint8_t> data) {
  while (!data.empty()) {
    ssize_t n = pwrite(fd_, data.data(), data.size(), off_t(pos_));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "write image at offset " + std::to_string(pos_));
    }
    if (n == 0) return ErrnoError(ENOSPC, "write image at offset " + std::to_string(pos_));
    pos_ += uint64_t(n);
    data = data.subspan(size_t(n));
  }
  return {};
}

Status FdSink::WriteZeros(uint64_t n) {
  if (!regular_) return Sink::WriteZeros(n);
  pos_ += n;  // a hole: the file is empty past the start, Finish sets the size
  return {};
}

Status FdSink::Skip(uint64_t n) {
  pos_ += n;
  return {};
}

Status FdSink::Finish() {
  if (regular_ && ftruncate(fd_, off_t(pos_)) != 0) return ErrnoError(errno, "truncate image");
  if (sync_ && fsync(fd_) != 0) return ErrnoError(errno, "fsync image");
  return {};
}

}  // namespace cv::courier
