// The io_uring Env. Each thread that calls Execute gets its own ring for this Env, made on
// first use, so threads never share a submission queue and need no lock around it.
//
// Ring lifetime: rings live in a thread_local map keyed by a process-unique Env id, never by
// Env address, so a ring outliving its Env is never confused with a later Env's. A ring is
// destroyed by the thread that owns it: when the Env is destroyed on that thread, when that
// thread next makes a ring and finds the Env gone, or when the thread exits. No other
// thread ever touches it, so destroying an Env while other threads hold rings is safe.
#include <liburing.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "storage/io/internal.h"
#include "storage/io/uring_common.h"

namespace cv::storage {
namespace {

constexpr unsigned kMaxQueueDepth = 4096;
// Largest single SQE transfer (the SQE length field is 32 bits; Linux caps I/O at ~2 GiB).
constexpr size_t kMaxTransfer = size_t{1} << 30;
// Marks a request of the running phase that has not finished yet.
constexpr int64_t kInFlight = INT64_MIN;
// One registered buffer (an iovec) may not exceed 1 GiB.
constexpr size_t kMaxRegisteredBytes = size_t{1} << 30;

class Ring {
 public:
  static Result<std::unique_ptr<Ring>> Create(unsigned depth) {
    auto r = std::unique_ptr<Ring>(new Ring(depth));
    int rc = io_uring_queue_init(depth, &r->ring_, 0);
    if (rc < 0) return ErrnoError(-rc, "io_uring_queue_init");
    r->initialized_ = true;
    return r;
  }
  ~Ring() {
    if (initialized_) io_uring_queue_exit(&ring_);
  }
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  io_uring* get() { return &ring_; }
  unsigned depth() const { return depth_; }
  // The region registered as this ring's fixed buffer 0 (nullptr: none).
  const detail::IoArena* registered() const { return registered_; }
  // Registers `arena`; 0, or -errno when the kernel refuses it.
  int Register(const detail::IoArena& arena) {
    const int rc = detail::RegisterArena(&ring_, arena);
    if (rc == 0) registered_ = &arena;
    return rc;
  }

 private:
  explicit Ring(unsigned depth) : depth_(depth) {}
  io_uring ring_{};
  unsigned depth_;
  const detail::IoArena* registered_ = nullptr;
  bool initialized_ = false;
};

// Ids of the UringEnvs alive now. Leaked on purpose: an Env destroyed during static
// destruction may still look here.
struct LiveEnvs {
  std::mutex mu;
  std::unordered_set<uint64_t> ids;
};
LiveEnvs& Live() {
  static auto* live = new LiveEnvs;
  return *live;
}
std::atomic<uint64_t> g_next_env_id{1};

// This thread's rings. The pointer is trivially destructible, so it can be read even while
// the thread exits; the owner's destructor frees the map at thread exit.
using RingMap = std::unordered_map<uint64_t, std::unique_ptr<Ring>>;
thread_local RingMap* t_rings = nullptr;
thread_local bool t_rings_gone = false;
struct RingMapOwner {
  bool armed = false;
  ~RingMapOwner() {
    delete t_rings;
    t_rings = nullptr;
    t_rings_gone = true;
  }
};
thread_local RingMapOwner t_rings_owner;

// Runs the reads and writes (syncs = false) or the syncs (syncs = true) of a batch on
// `ring`, continuing short transfers and requeueing -EAGAIN. Returns 0, or -errno when the
// ring itself failed; requests not finished then still hold kInFlight.
int RunPhase(Ring& ring, std::span<IoRequest> reqs, bool syncs, IoCounters& counters) {
  std::vector<uint32_t> queue;  // request indexes to (re)submit, consumed from `next`
  std::vector<int> fds(reqs.size(), -1);
  std::vector<size_t> done(reqs.size(), 0);
  for (size_t i = 0; i < reqs.size(); ++i) {
    IoRequest& r = reqs[i];
    if ((r.op == IoRequest::Op::kSync) != syncs) continue;
    const detail::FdFile* f = detail::AsFdFile(r.file);
    if (!f) {
      r.result = -EBADF;
    } else if (!syncs && r.len == 0) {
      r.result = 0;
    } else {
      r.result = kInFlight;
      fds[i] = f->fd();
      queue.push_back(static_cast<uint32_t>(i));
    }
  }

  io_uring* ring_ptr = ring.get();
  size_t next = 0;
  unsigned unsubmitted = 0;  // prepared SQEs the kernel has not taken yet
  unsigned in_kernel = 0;    // submitted, completion not yet reaped
  int busy_retries = 0;
  while (next < queue.size() || unsubmitted + in_kernel > 0) {
    // In flight stays within the queue depth, so the completion queue (twice as large)
    // can never overflow.
    while (next < queue.size() && unsubmitted + in_kernel < ring.depth()) {
      io_uring_sqe* sqe = io_uring_get_sqe(ring_ptr);
      if (!sqe) break;
      const uint32_t i = queue[next++];
      IoRequest& r = reqs[i];
      auto* buf = static_cast<uint8_t*>(r.buf) + done[i];
      const unsigned n = static_cast<unsigned>(std::min(r.len - done[i], kMaxTransfer));
      const bool fixed =
          detail::PrepareSqe(sqe, r, fds[i], buf, n, r.offset + done[i], ring.registered());
      if (r.op != IoRequest::Op::kSync) {
        ++counters.requests;
        counters.registered_requests += fixed;
      }
      io_uring_sqe_set_data64(sqe, i);
      ++unsubmitted;
    }

    if (unsubmitted > 0) {
      int s = io_uring_submit(ring_ptr);
      if (s >= 0) {
        unsubmitted -= static_cast<unsigned>(s);
        in_kernel += static_cast<unsigned>(s);
      } else if (s == -EAGAIN || s == -EBUSY || s == -EINTR) {
        // Out of kernel resources for now: reap what is in flight, or wait a little.
        if (in_kernel == 0) {
          if (++busy_retries > 10000) return s;
          std::this_thread::sleep_for(std::chrono::microseconds(100));
          continue;
        }
      } else {
        // The ring is broken. Wait out what the kernel still holds (it points into the
        // callers' buffers) before giving up.
        while (in_kernel > 0) {
          io_uring_cqe* cqe = nullptr;
          int w = io_uring_wait_cqe(ring_ptr, &cqe);
          if (w == -EINTR) continue;
          if (w < 0) break;
          io_uring_cqe_seen(ring_ptr, cqe);
          --in_kernel;
        }
        return s;
      }
    }
    if (in_kernel == 0) continue;

    io_uring_cqe* cqe = nullptr;
    int w = io_uring_wait_cqe(ring_ptr, &cqe);
    if (w == -EINTR || w == -EAGAIN) continue;
    if (w < 0) return w;
    unsigned head;
    unsigned seen = 0;
    io_uring_for_each_cqe(ring_ptr, head, cqe) {
      ++seen;
      const auto i = static_cast<uint32_t>(io_uring_cqe_get_data64(cqe));
      IoRequest& r = reqs[i];
      const int res = cqe->res;
      if (res == -EAGAIN || res == -EINTR) {
        queue.push_back(i);
      } else if (res < 0) {
        r.result = res;
      } else if (r.op == IoRequest::Op::kSync) {
        r.result = 0;
      } else if (res == 0) {
        // A read returning 0 is end of file; a write making no progress never will.
        r.result = r.op == IoRequest::Op::kRead ? static_cast<int64_t>(done[i]) : -EIO;
      } else {
        done[i] += static_cast<size_t>(res);
        const bool direct_eof = r.op == IoRequest::Op::kRead && r.file->direct() &&
                                done[i] % kBlockSize != 0;  // unaligned: only at EOF
        if (done[i] == r.len || direct_eof) {
          r.result = static_cast<int64_t>(done[i]);
        } else {
          queue.push_back(i);  // short transfer: the rest goes in again
        }
      }
    }
    io_uring_cq_advance(ring_ptr, seen);
    in_kernel -= seen;
  }
  return 0;
}

class UringEnv final : public detail::FdEnvBase {
 public:
  UringEnv(unsigned depth, std::unique_ptr<detail::IoArena> arena)
      : id_(g_next_env_id.fetch_add(1)), depth_(depth), arena_(std::move(arena)) {
    std::lock_guard lock(Live().mu);
    Live().ids.insert(id_);
  }
  ~UringEnv() override {
    {
      std::lock_guard lock(Live().mu);
      Live().ids.erase(id_);
    }
    if (t_rings) t_rings->erase(id_);
  }

  uint64_t id() const { return id_; }

  // Makes this thread's ring for this Env the given one (the probe ring of NewUringEnv).
  void AdoptRing(std::unique_ptr<Ring> ring) {
    if (RingMap* map = ThreadMap()) (*map)[id_] = std::move(ring);
  }

  Status Execute(std::span<IoRequest> requests) override {
    std::unique_ptr<Ring> one_off;  // for a thread that is already exiting
    Ring* ring = nullptr;
    RingMap* map = ThreadMap();
    if (map) {
      auto it = map->find(id_);
      if (it != map->end()) ring = it->second.get();
    }
    if (!ring) {
      auto made = MakeRing();
      if (!made) {
        for (IoRequest& r : requests) r.result = -made.error().sys_errno;
        return tl::unexpected(made.error());
      }
      ring = made->get();
      if (map) {
        SweepDeadRings(*map);
        (*map)[id_] = std::move(*made);
      } else {
        one_off = std::move(*made);
      }
    }

    for (IoRequest& r : requests) r.result = kInFlight;
    IoCounters counted;
    const auto add_counts = [&] { tally_.Add(counted.requests, counted.registered_requests); };
    for (bool syncs : {false, true}) {
      int rc = RunPhase(*ring, requests, syncs, counted);
      if (rc < 0) {
        Log(LogLevel::kError, "io_uring_failed", {{"errno", std::to_string(-rc)}});
        for (IoRequest& r : requests) {
          if (r.result == kInFlight) r.result = rc;
        }
        if (map) map->erase(id_);  // a fresh ring next time
        add_counts();
        return ErrnoError(-rc, "io_uring");
      }
    }
    add_counts();
    return detail::BatchStatus(requests);
  }

  const char* Name() const override { return "uring"; }

  IoBuffer AllocateIo(size_t len) override {
    if (arena_) {
      if (uint8_t* p = arena_->Take(len)) return IoBuffer(p, len, arena_.get());
    }
    return Env::AllocateIo(len);
  }

  Result<std::unique_ptr<AsyncRing>> NewAsyncRing(unsigned queue_depth) override {
    return storage::NewAsyncRing(queue_depth, arena_.get(), &tally_);
  }

  IoCounters Counters() const override { return tally_.Get(); }

  // A ring for the calling thread, with the arena registered where the kernel allows it.
  Result<std::unique_ptr<Ring>> MakeRing() {
    auto ring = Ring::Create(depth_);
    if (!ring || !arena_) return ring;
    const int rc = (*ring)->Register(*arena_);
    if (rc != 0 && !unregistered_logged_.exchange(true)) {
      Log(LogLevel::kWarn, "io_uring_buffers_unregistered",
          {{"bytes", std::to_string(arena_->size())},
           {"reason", std::strerror(-rc)},
           {"effect", "reads and writes work, without fixed buffers"}});
    }
    return ring;
  }

 private:
  // This thread's ring map, made on first use; nullptr once the thread is exiting.
  static RingMap* ThreadMap() {
    if (t_rings_gone) return nullptr;
    if (!t_rings) {
      t_rings_owner.armed = true;  // registers the owner's destructor for this thread
      t_rings = new RingMap;
    }
    return t_rings;
  }

  // Frees this thread's rings whose Env is gone (destroyed on another thread).
  static void SweepDeadRings(RingMap& map) {
    std::lock_guard lock(Live().mu);
    std::erase_if(map, [](const auto& kv) { return !Live().ids.contains(kv.first); });
  }

  const uint64_t id_;
  const unsigned depth_;
  // Unmapped with the Env. Other threads' rings of this Env may outlive it (they are swept
  // later by their threads) and still have the region registered: that keeps its pages
  // pinned, not mapped, until then, and nothing submits to those rings any more.
  const std::unique_ptr<detail::IoArena> arena_;
  detail::IoTally tally_;  // Execute's and this Env's AsyncRings' requests
  std::atomic<bool> unregistered_logged_{false};
};

// Checks that the kernel has the opcodes we use and completes a NOP on `ring`.
Status ProbeRing(Ring& ring) {
  io_uring_probe* probe = io_uring_get_probe_ring(ring.get());
  if (!probe) return Err(ErrorKind::kUnavailable, "io_uring: no opcode probe (kernel < 5.6)");
  bool ok = io_uring_opcode_supported(probe, IORING_OP_READ) &&
            io_uring_opcode_supported(probe, IORING_OP_WRITE) &&
            io_uring_opcode_supported(probe, IORING_OP_FSYNC);
  io_uring_free_probe(probe);
  if (!ok) return Err(ErrorKind::kUnavailable, "io_uring: READ/WRITE/FSYNC unsupported");

  io_uring_sqe* sqe = io_uring_get_sqe(ring.get());
  if (!sqe) return Err(ErrorKind::kUnavailable, "io_uring: no SQE for the probe");
  io_uring_prep_nop(sqe);
  int rc = io_uring_submit(ring.get());
  if (rc != 1) return Err(ErrorKind::kUnavailable, "io_uring_submit (probe)", rc < 0 ? -rc : 0);
  io_uring_cqe* cqe = nullptr;
  do {
    rc = io_uring_wait_cqe(ring.get(), &cqe);
  } while (rc == -EINTR);
  if (rc < 0) return Err(ErrorKind::kUnavailable, "io_uring_wait_cqe (probe)", -rc);
  const int res = cqe->res;
  io_uring_cqe_seen(ring.get(), cqe);
  if (res < 0) return Err(ErrorKind::kUnavailable, "io_uring NOP (probe)", -res);
  return {};
}

}  // namespace

Result<std::unique_ptr<Env>> NewUringEnv(unsigned queue_depth, size_t registered_bytes) {
  const unsigned depth = std::clamp(queue_depth, 1u, kMaxQueueDepth);
  std::unique_ptr<detail::IoArena> arena;
  if (registered_bytes > 0) {
    arena = detail::IoArena::Create(std::min(registered_bytes, kMaxRegisteredBytes));
    if (!arena) {
      Log(LogLevel::kWarn, "io_uring_buffers_unregistered",
          {{"bytes", std::to_string(registered_bytes)}, {"reason", "mmap failed"}});
    }
  }
  auto env = std::make_unique<UringEnv>(depth, std::move(arena));
  auto ring = env->MakeRing();
  if (!ring) {
    return Err(ErrorKind::kUnavailable, "io_uring_queue_init: " + ring.error().ToString(),
               ring.error().sys_errno);
  }
  CV_TRY(ProbeRing(**ring));
  env->AdoptRing(std::move(*ring));
  return std::unique_ptr<Env>(std::move(env));
}

std::unique_ptr<Env> NewDefaultEnv() {
  auto uring = NewUringEnv();
  if (uring) {
    Log(LogLevel::kInfo, "io_env_selected", {{"env", "uring"}});
    return std::move(*uring);
  }
  Log(LogLevel::kWarn, "io_env_selected", {{"env", "posix"}, {"reason", uring.error().ToString()}});
  return NewPosixEnv();
}

}  // namespace cv::storage
