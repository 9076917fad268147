// Sinks: the default zero writer and the file-descriptor sink.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "courier/courier.h"

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
    : fd_(fd), regular_(regular_file), sync_(sync), pos_(start), flushed_(start) {}

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
  // Start writing back what is written so far, so that the disk works while the image is
  // produced and Finish's fsync has little left to do. Advisory: fsync reports errors.
  if (sync_ && pos_ - flushed_ >= kFlushBytes) {
    sync_file_range(fd_, off_t(flushed_), off_t(pos_ - flushed_), SYNC_FILE_RANGE_WRITE);
    flushed_ = pos_;
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

struct PipelinedSink::State {
  enum class Kind { kWrite, kZeros, kSkip };
  struct Op {
    Kind kind;
    uint64_t n;
    std::unique_ptr<uint8_t[]> buf;
  };
  explicit State(Sink& s) : inner(s) {}

  // The thread: runs queued operations in order; after an error only recycles buffers.
  void Loop() {
    std::unique_lock lock(mu);
    while (true) {
      cv.wait(lock, [&] { return stop || !queue.empty(); });
      if (queue.empty()) return;  // stop, and nothing left
      Op op = std::move(queue.front());
      queue.pop_front();
      busy = true;
      bool failed = !error.has_value();
      lock.unlock();
      Status st;
      if (!failed) {
        switch (op.kind) {
          case Kind::kWrite:
            st = inner.Write({op.buf.get(), op.n});
            break;
          case Kind::kZeros:
            st = inner.WriteZeros(op.n);
            break;
          case Kind::kSkip:
            st = inner.Skip(op.n);
            break;
        }
      }
      lock.lock();
      if (!st && error.has_value()) error = st;
      if (op.buf) free.push_back(std::move(op.buf));
      busy = false;
      cv.notify_all();
    }
  }

  // A free buffer, once one is back from the thread; nothing after an error of `inner`.
  Result<std::unique_ptr<uint8_t[]>> TakeFree() {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return !free.empty() || !error; });
    if (!error) return tl::unexpected(error.error());
    std::unique_ptr<uint8_t[]> buf = std::move(free.back());
    free.pop_back();
    return buf;
  }

  Status Push(Op op) {
    std::lock_guard lock(mu);
    if (!error) return error;
    queue.push_back(std::move(op));
    cv.notify_all();
    return {};
  }

  Sink& inner;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Op> queue;
  std::vector<std::unique_ptr<uint8_t[]>> free;
  Status error;  // the first failure of `inner`
  bool busy = false, stop = false;
  std::thread thread;
};

PipelinedSink::PipelinedSink(Sink& inner, size_t depth) : state_(new State(inner)) {
  for (size_t i = 0; i < std::max<size_t>(depth, 1); ++i)
    state_->free.emplace_back(new uint8_t[kWriteBufferBytes]);
  state_->thread = std::thread([s = state_.get()] { s->Loop(); });
}

PipelinedSink::~PipelinedSink() {
  {
    std::lock_guard lock(state_->mu);
    state_->stop = true;
  }
  state_->cv.notify_all();
  state_->thread.join();
}

Status PipelinedSink::Write(std::span<const uint8_t> data) {
  State& s = *state_;
  while (!data.empty()) {
    CV_TRY_ASSIGN(auto buf, s.TakeFree());
    size_t n = std::min(data.size(), kWriteBufferBytes);
    memcpy(buf.get(), data.data(), n);
    CV_TRY(s.Push({State::Kind::kWrite, n, std::move(buf)}));
    data = data.subspan(n);
  }
  return {};
}

Status PipelinedSink::Hand(std::unique_ptr<uint8_t[]>& buf, size_t n) {
  State& s = *state_;
  CV_TRY_ASSIGN(auto spare, s.TakeFree());
  Status pushed = s.Push({State::Kind::kWrite, n, std::move(buf)});
  buf = std::move(spare);  // the caller always keeps a buffer, even after an error
  return pushed;
}

Status PipelinedSink::WriteZeros(uint64_t n) {
  return state_->Push({State::Kind::kZeros, n, nullptr});
}
Status PipelinedSink::Skip(uint64_t n) { return state_->Push({State::Kind::kSkip, n, nullptr}); }

Status PipelinedSink::Finish() {
  State& s = *state_;
  {
    std::unique_lock lock(s.mu);
    s.cv.wait(lock, [&] { return s.queue.empty() && !s.busy; });
    if (!s.error) return s.error;
  }
  return s.inner.Finish();
}

}  // namespace cv::courier
