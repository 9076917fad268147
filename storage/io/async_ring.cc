// AsyncRing over io_uring: completions are announced on an eventfd registered with the
// ring (io_uring_register_eventfd) and processed by Poll on the owning thread.
#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <climits>
#include <cstring>
#include <string>
#include <deque>
#include <unordered_map>

#include "storage/io/internal.h"
#include "storage/io/uring_common.h"

namespace cv::storage {
namespace {

constexpr int64_t kInFlight = INT64_MIN;
constexpr size_t kMaxTransfer = size_t{1} << 30;
constexpr unsigned kIndexBits = 20;  // requests per batch < 2^20

class UringAsyncRing final : public AsyncRing {
 public:
  UringAsyncRing() = default;
  ~UringAsyncRing() override {
    // The kernel may still write into callers' buffers: wait for it before tearing down.
    while (in_kernel_ > 0) {
      io_uring_cqe* cqe = nullptr;
      int w = io_uring_wait_cqe(&ring_, &cqe);
      if (w == -EINTR) continue;
      if (w < 0) break;
      io_uring_cqe_seen(&ring_, cqe);
      --in_kernel_;
    }
    if (ring_ok_) io_uring_queue_exit(&ring_);
    if (efd_ >= 0) ::close(efd_);
  }

  Status Init(unsigned depth, const detail::IoArena* arena, detail::IoTally* tally) {
    tally_ = tally;
    depth_ = depth;
    // COOP_TASKRUN (Linux 5.19): a completion that arrives while the owning thread runs is
    // finished at its next system call (it makes several per TLS record) instead of through
    // an inter-processor interrupt; a sleeping thread is still woken at once. Older kernels
    // refuse the flag: then without it.
    int rc = io_uring_queue_init(depth, &ring_, IORING_SETUP_COOP_TASKRUN);
    if (rc == -EINVAL) rc = io_uring_queue_init(depth, &ring_, 0);
    if (rc < 0) return Err(ErrorKind::kUnavailable, "io_uring_queue_init", -rc);
    ring_ok_ = true;
    efd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd_ < 0) return Err(ErrorKind::kUnavailable, "eventfd", errno);
    rc = io_uring_register_eventfd(&ring_, efd_);
    if (rc < 0) return Err(ErrorKind::kUnavailable, "io_uring_register_eventfd", -rc);
    if (arena) {
      rc = detail::RegisterArena(&ring_, *arena);
      if (rc == 0) {
        arena_ = arena;
      } else {
        Log(LogLevel::kWarn, "io_uring_buffers_unregistered",
            {{"ring", "event loop"}, {"bytes", std::to_string(arena->size())},
             {"reason", std::strerror(-rc)}, {"effect", "reads work, without fixed buffers"}});
      }
    }
    return {};
  }

  int event_fd() const override { return efd_; }
  // A batch that finished inside Submit or Poll waits in finished_ for its `done`.
  size_t pending() const override { return batches_.size() + finished_.size(); }

  void Submit(std::span<IoRequest> requests, std::function<void(Status)> done) override {
    const uint64_t id = next_id_++;
    auto b = std::make_unique<Batch>();
    b->reqs = requests;
    b->done = std::move(done);
    b->progress.assign(requests.size(), 0);
    Batch& batch = *b;
    batches_.emplace(id, std::move(b));
    if (requests.size() >= (size_t{1} << kIndexBits)) {
      for (IoRequest& r : requests) r.result = -E2BIG;
      Finish(id, batch);
    } else {
      StartPhase(id, batch, /*syncs=*/false);
    }
    Flush();
    if (!finished_.empty()) Wake();  // done must run inside Poll
  }

  void Poll() override {
    uint64_t counter;
    while (::read(efd_, &counter, sizeof counter) > 0) {
    }
    for (;;) {
      io_uring_cqe* cqe = nullptr;
      if (io_uring_peek_cqe(&ring_, &cqe) != 0 || cqe == nullptr) break;
      const uint64_t data = io_uring_cqe_get_data64(cqe);
      const int res = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      --in_kernel_;
      Complete(data >> kIndexBits, static_cast<uint32_t>(data & ((1u << kIndexBits) - 1)), res);
    }
    Flush();
    // Run callbacks last: they may Submit again.
    auto ready = std::move(finished_);
    finished_.clear();
    for (auto& [done, status] : ready) done(std::move(status));
  }

 private:
  struct Batch {
    std::span<IoRequest> reqs;
    std::function<void(Status)> done;
    std::vector<size_t> progress;
    size_t outstanding = 0;
    bool syncs = false;
  };

  void Wake() {
    uint64_t one = 1;
    (void)::write(efd_, &one, sizeof one);
  }

  void StartPhase(uint64_t id, Batch& b, bool syncs) {
    b.syncs = syncs;
    b.outstanding = 0;
    for (size_t i = 0; i < b.reqs.size(); ++i) {
      IoRequest& r = b.reqs[i];
      if ((r.op == IoRequest::Op::kSync) != syncs) continue;
      if (!detail::AsFdFile(r.file)) {
        r.result = -EBADF;
      } else if (!syncs && r.len == 0) {
        r.result = 0;
      } else {
        r.result = kInFlight;
        ++b.outstanding;
        backlog_.emplace_back(id, static_cast<uint32_t>(i));
      }
    }
    if (b.outstanding == 0) PhaseDone(id, b);
  }

  void PhaseDone(uint64_t id, Batch& b) {
    if (!b.syncs) {
      StartPhase(id, b, /*syncs=*/true);  // syncs after every read and write of the batch
    } else {
      Finish(id, b);
    }
  }

  void Finish(uint64_t id, Batch& b) {
    finished_.emplace_back(std::move(b.done), detail::BatchStatus(b.reqs));
    batches_.erase(id);
  }

  // Hands queued requests to the kernel, keeping in-flight within the queue depth.
  void Flush() {
    while (!backlog_.empty() && in_kernel_ + unsubmitted_ < depth_) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      if (!sqe) break;
      auto [id, i] = backlog_.front();
      backlog_.pop_front();
      Batch& b = *batches_.at(id);
      IoRequest& r = b.reqs[i];
      const int fd = detail::AsFdFile(r.file)->fd();
      auto* buf = static_cast<uint8_t*>(r.buf) + b.progress[i];
      const unsigned n = static_cast<unsigned>(std::min(r.len - b.progress[i], kMaxTransfer));
      const bool fixed = detail::PrepareSqe(sqe, r, fd, buf, n, r.offset + b.progress[i], arena_);
      if (tally_ && r.op != IoRequest::Op::kSync) tally_->Add(1, fixed, 1);
      io_uring_sqe_set_data64(sqe, id << kIndexBits | i);
      ++unsubmitted_;
    }
    if (unsubmitted_ == 0) return;
    int s = io_uring_submit(&ring_);
    if (s > 0) {
      in_kernel_ += static_cast<unsigned>(s);
      unsubmitted_ -= static_cast<unsigned>(s);
    }
    // The kernel took fewer (out of resources for now): the rest stays in the submission
    // queue for the next submit; make sure a Poll comes.
    if (unsubmitted_ > 0) Wake();
  }

  void Complete(uint64_t id, uint32_t i, int res) {
    auto it = batches_.find(id);
    if (it == batches_.end()) return;
    Batch& b = *it->second;
    IoRequest& r = b.reqs[i];
    bool finished = true;
    if (res == -EAGAIN || res == -EINTR) {
      backlog_.emplace_back(id, i);
      finished = false;
    } else if (res < 0) {
      r.result = res;
    } else if (r.op == IoRequest::Op::kSync) {
      r.result = 0;
    } else if (res == 0) {
      r.result = r.op == IoRequest::Op::kRead ? static_cast<int64_t>(b.progress[i]) : -EIO;
    } else {
      b.progress[i] += static_cast<size_t>(res);
      const bool direct_eof = r.op == IoRequest::Op::kRead && r.file->direct() &&
                              b.progress[i] % kBlockSize != 0;
      if (b.progress[i] == r.len || direct_eof) {
        r.result = static_cast<int64_t>(b.progress[i]);
      } else {
        backlog_.emplace_back(id, i);  // short transfer: the rest goes in again
        finished = false;
      }
    }
    if (finished && --b.outstanding == 0) PhaseDone(id, b);
  }

  io_uring ring_{};
  const detail::IoArena* arena_ = nullptr;  // registered as buffer 0
  detail::IoTally* tally_ = nullptr;
  bool ring_ok_ = false;
  int efd_ = -1;
  unsigned depth_ = 0;
  unsigned in_kernel_ = 0;    // submitted, completion not reaped
  unsigned unsubmitted_ = 0;  // prepared in the submission queue, not yet taken
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Batch>> batches_;
  std::deque<std::pair<uint64_t, uint32_t>> backlog_;
  std::vector<std::pair<std::function<void(Status)>, Status>> finished_;
};

}  // namespace

Result<std::unique_ptr<AsyncRing>> NewAsyncRing(unsigned queue_depth,
                                                const detail::IoArena* arena,
                                                detail::IoTally* tally) {
  auto ring = std::make_unique<UringAsyncRing>();
  CV_TRY(ring->Init(std::clamp(queue_depth, 1u, 4096u), arena, tally));
  return std::unique_ptr<AsyncRing>(std::move(ring));
}

}  // namespace cv::storage
