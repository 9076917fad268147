// FaultEnv: a seeded fault-injecting wrapper for tests (see io.h for the contract).
//
// Unsynced tracking: each write that reached the base Env is recorded as a byte range of its
// path, stamped with a sequence number taken when the write had completed. A sync takes a
// sequence number when it is issued and, if it succeeds, forgets the ranges stamped before
// it. A write racing a sync on another thread is therefore kept as unsynced, never wrongly
// forgotten. A sync still running when DropUnsynced runs (the power failed while it ran) fails
// with EIO: it would never have returned. Execute mirrors the base Envs' batch order (reads
// and writes, then syncs) by calling the base Env twice.
//
// Garbage is a pure function of the seed and of where it goes (the operation number of a
// torn write; the drop round and range ordinal in DropUnsynced), never of paths or thread
// timing, so a run is reproducible from its seed even in a fresh temporary directory. So are
// the bit a kBitFlip flips and a request's latency (its operation number); each use of the
// seed has its own tag, so that a torn write's garbage and a flip's position are unrelated.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "storage/io/io.h"

namespace cv::storage {
namespace {

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Mix(uint64_t a, uint64_t b) {
  uint64_t s = a ^ (b * 0x9e3779b97f4a7c15ull);
  return SplitMix64(s);
}

void FillGarbage(uint64_t key, std::span<uint8_t> out) {
  uint64_t state = key;
  size_t i = 0;
  for (; i + 8 <= out.size(); i += 8) {
    uint64_t v = SplitMix64(state);
    std::memcpy(out.data() + i, &v, 8);
  }
  if (i < out.size()) {
    uint64_t v = SplitMix64(state);
    std::memcpy(out.data() + i, &v, out.size() - i);
  }
}

// Tags that keep the seed's uses apart (see the file comment).
constexpr uint64_t kFlipTag = 0xf11bu;
constexpr uint64_t kLatencyTag = 0x1a7eu;

// True when `path` starts with one of `prefixes` (an empty prefix covers every path).
bool Under(const std::string& path, const std::vector<std::string>& prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(),
                     [&](const std::string& p) { return path.starts_with(p); });
}

// Flips one bit of `data` (non-empty), chosen by `key`.
void FlipOneBit(uint64_t key, std::span<uint8_t> data) {
  data[key % data.size()] ^= static_cast<uint8_t>(1u << ((key >> 32) % 8));
}

tl::unexpected<Error> Injected(int err, const std::string& what, const std::string& path) {
  return ErrnoError(err, what + " " + path + " (injected)");
}

class FaultFile final : public File {
 public:
  explicit FaultFile(std::unique_ptr<File> inner) : inner_(std::move(inner)) {}
  const std::string& path() const override { return inner_->path(); }
  bool direct() const override { return inner_->direct(); }
  File& inner() { return *inner_; }

 private:
  std::unique_ptr<File> inner_;
};

FaultFile* AsFaultFile(File* file) { return file ? dynamic_cast<FaultFile*>(file) : nullptr; }

struct Range {
  uint64_t begin = 0;
  uint64_t end = 0;
  uint64_t seq = 0;  // when the write had completed (see the file comment)
};

// Merges overlapping and touching ranges; the result is sorted by begin.
std::vector<Range> Merge(std::vector<Range> ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  std::vector<Range> out;
  for (const Range& r : ranges) {
    if (!out.empty() && r.begin <= out.back().end) {
      out.back().end = std::max(out.back().end, r.end);
      out.back().seq = std::max(out.back().seq, r.seq);
    } else {
      out.push_back(r);
    }
  }
  return out;
}

// Keeps a path's list short when a test writes a lot without syncing; merging keeps the
// newest stamp of what it merges, which can only keep more as unsynced.
constexpr size_t kCompactAt = 4096;

}  // namespace

struct FaultEnv::State {
  Env* base;
  uint64_t seed;
  mutable std::mutex mu;
  uint64_t ops = 0;
  std::map<uint64_t, Fault> planned;  // operation number -> fault
  std::vector<std::string> fail_prefixes;
  std::vector<std::string> nospace_prefixes;
  std::map<std::string, std::map<uint64_t, uint8_t>> read_flips;  // path -> offset -> mask
  std::chrono::microseconds latency_min{0}, latency_max{0};
  std::chrono::microseconds delayed{0};
  uint64_t seq = 0;
  std::map<std::string, std::vector<Range>> unsynced;  // sorted: a stable drop order
  uint64_t drop_round = 0;

  // The latency of operation `op` (see SetLatency).
  std::chrono::microseconds LatencyOf(uint64_t op) const {
    if (latency_max.count() == 0) return {};
    const uint64_t span = static_cast<uint64_t>((latency_max - latency_min).count()) + 1;
    return latency_min + std::chrono::microseconds(Mix(Mix(seed, kLatencyTag), op) % span);
  }

  void Record(const std::string& path, uint64_t begin, uint64_t len) {
    if (len == 0) return;
    std::vector<Range>& v = unsynced[path];
    v.push_back({begin, begin + len, ++seq});
    if (v.size() >= kCompactAt) v = Merge(std::move(v));
  }
};

FaultEnv::FaultEnv(Env* base, uint64_t seed) : state_(std::make_unique<State>()) {
  state_->base = base;
  state_->seed = seed;
}

FaultEnv::~FaultEnv() = default;

void FaultEnv::FailNth(uint64_t n, Fault fault) {
  std::lock_guard lock(state_->mu);
  if (fault == Fault::kNone) {
    state_->planned.clear();
  } else {
    state_->planned[state_->ops + n] = fault;
  }
}

void FaultEnv::FailPath(const std::string& prefix) {
  std::lock_guard lock(state_->mu);
  state_->fail_prefixes.push_back(prefix);
}

void FaultEnv::NoSpaceUnder(const std::string& prefix) {
  std::lock_guard lock(state_->mu);
  state_->nospace_prefixes.push_back(prefix);
}

void FaultEnv::FlipOnRead(const std::string& path, uint64_t offset, uint8_t mask) {
  std::lock_guard lock(state_->mu);
  state_->read_flips[path][offset] ^= mask;  // two flips of one bit cancel, as on a disk
}

void FaultEnv::Heal() {
  std::lock_guard lock(state_->mu);
  state_->fail_prefixes.clear();
  state_->nospace_prefixes.clear();
  state_->read_flips.clear();
}

void FaultEnv::SetLatency(std::chrono::microseconds min, std::chrono::microseconds max) {
  std::lock_guard lock(state_->mu);
  state_->latency_min = std::max(min, std::chrono::microseconds(0));
  state_->latency_max = std::max(max, state_->latency_min);
}

std::chrono::microseconds FaultEnv::delayed() const {
  std::lock_guard lock(state_->mu);
  return state_->delayed;
}

IoBuffer FaultEnv::AllocateIo(size_t len) { return state_->base->AllocateIo(len); }
IoCounters FaultEnv::Counters() const { return state_->base->Counters(); }

uint64_t FaultEnv::ops() const {
  std::lock_guard lock(state_->mu);
  return state_->ops;
}

Status FaultEnv::Execute(std::span<IoRequest> requests) {
  State& s = *state_;
  // What goes to the base Env: its requests, which caller request each stands for, and the
  // result to report instead of the base one (for short and torn writes).
  struct Forward {
    IoRequest req;
    size_t index;
    int64_t forced_result;  // 0: report the base result
    uint64_t op;
    bool flip = false;  // kBitFlip on a read: flip a bit of what it returns
  };
  std::vector<Forward> transfers;
  std::vector<Forward> syncs;
  std::vector<AlignedBuffer> copies;  // torn and flipped writes' data
  std::chrono::microseconds transfer_wait{0}, sync_wait{0};

  {
    std::lock_guard lock(s.mu);
    for (size_t i = 0; i < requests.size(); ++i) {
      IoRequest& r = requests[i];
      const uint64_t op = s.ops++;
      Fault fault = Fault::kNone;
      if (auto it = s.planned.find(op); it != s.planned.end()) {
        fault = it->second;
        s.planned.erase(it);
      }
      FaultFile* f = AsFaultFile(r.file);
      if (!f) {
        r.result = -EBADF;
        continue;
      }
      const bool is_write = r.op == IoRequest::Op::kWrite;
      const bool is_sync = r.op == IoRequest::Op::kSync;
      if (Under(f->path(), s.fail_prefixes) || fault == Fault::kEio ||
          (!is_write && (fault == Fault::kShortWrite || fault == Fault::kTornWrite))) {
        r.result = -EIO;
        continue;
      }
      if (fault == Fault::kEnospc) {
        r.result = -ENOSPC;
        continue;
      }
      if (is_write && Under(f->path(), s.nospace_prefixes)) {
        auto size = s.base->Size(f->inner());
        if (!size) {
          r.result = -(size.error().sys_errno ? size.error().sys_errno : EIO);
          continue;
        }
        if (r.offset + r.len > *size) {
          r.result = -ENOSPC;
          continue;
        }
      }

      Forward fw{r, i, 0, op};
      fw.req.file = &f->inner();
      if (fault == Fault::kShortWrite || fault == Fault::kTornWrite) {
        size_t prefix = r.len / 2;
        if (f->direct()) prefix -= prefix % kBlockSize;
        fw.forced_result = -EIO;
        if (fault == Fault::kShortWrite) {
          fw.req.len = prefix;
        } else {
          // A full-length write whose tail is garbage; aligned, as a direct file needs.
          AlignedBuffer buf = AllocateAligned(r.len);
          if (prefix > 0) std::memcpy(buf.get(), r.buf, prefix);
          FillGarbage(Mix(s.seed, op), {buf.get() + prefix, r.len - prefix});
          fw.req.buf = buf.get();
          copies.push_back(std::move(buf));
        }
        if (fw.req.len == 0) {
          r.result = -EIO;
          continue;
        }
      } else if (fault == Fault::kBitFlip && is_write && r.len > 0) {
        // The caller's buffer stays as it was: the flip happens on the way to the disk.
        AlignedBuffer buf = AllocateAligned(r.len);
        std::memcpy(buf.get(), r.buf, r.len);
        FlipOneBit(Mix(Mix(s.seed, kFlipTag), op), {buf.get(), r.len});
        fw.req.buf = buf.get();
        copies.push_back(std::move(buf));
      } else if (fault == Fault::kBitFlip && r.op == IoRequest::Op::kRead) {
        fw.flip = true;
      }
      auto& wait = is_sync ? sync_wait : transfer_wait;
      wait = std::max(wait, s.LatencyOf(op));
      (is_sync ? syncs : transfers).push_back(fw);
    }
    s.delayed += transfer_wait + sync_wait;
  }

  auto run = [&](std::vector<Forward>& batch, std::chrono::microseconds wait) {
    if (batch.empty()) return;
    if (wait.count() > 0) std::this_thread::sleep_for(wait);
    std::vector<IoRequest> reqs;
    reqs.reserve(batch.size());
    for (const Forward& fw : batch) reqs.push_back(fw.req);
    (void)s.base->Execute(reqs);  // failures are in each result
    for (size_t j = 0; j < batch.size(); ++j) {
      batch[j].req.result = reqs[j].result;
      requests[batch[j].index].result =
          batch[j].forced_result ? batch[j].forced_result : reqs[j].result;
    }
  };

  run(transfers, transfer_wait);
  uint64_t sync_seq, drop_round;
  {
    std::lock_guard lock(s.mu);
    for (const Forward& fw : transfers) {
      if (fw.req.op == IoRequest::Op::kRead) {
        if (fw.req.result <= 0) continue;
        std::span<uint8_t> got(static_cast<uint8_t*>(fw.req.buf),
                               static_cast<size_t>(fw.req.result));
        if (fw.flip) FlipOneBit(Mix(Mix(s.seed, kFlipTag), fw.op), got);
        auto flips = s.read_flips.find(fw.req.file->path());
        if (flips == s.read_flips.end()) continue;
        for (auto it = flips->second.lower_bound(fw.req.offset);
             it != flips->second.end() && it->first - fw.req.offset < got.size(); ++it) {
          got[it->first - fw.req.offset] ^= it->second;
        }
        continue;
      }
      // A failed write may still have changed the file: count all of it as unsynced.
      const uint64_t len = fw.req.result >= 0 ? static_cast<uint64_t>(fw.req.result) : fw.req.len;
      s.Record(fw.req.file->path(), fw.req.offset, len);
    }
    sync_seq = ++s.seq;
    drop_round = s.drop_round;
  }
  run(syncs, sync_wait);
  {
    std::lock_guard lock(s.mu);
    if (s.drop_round != drop_round) {  // the power failed while these syncs ran
      for (const Forward& fw : syncs) requests[fw.index].result = -EIO;
      return detail::BatchStatus(requests);
    }
    for (const Forward& fw : syncs) {
      if (fw.req.result < 0) continue;
      auto it = s.unsynced.find(fw.req.file->path());
      if (it == s.unsynced.end()) continue;
      std::erase_if(it->second, [&](const Range& r) { return r.seq < sync_seq; });
      if (it->second.empty()) s.unsynced.erase(it);
    }
  }
  return detail::BatchStatus(requests);
}

Status FaultEnv::DropUnsynced() {
  State& s = *state_;
  std::lock_guard lock(s.mu);
  const uint64_t round = s.drop_round++;
  uint64_t ordinal = 0;
  for (auto& [path, ranges] : s.unsynced) {
    std::vector<Range> merged = Merge(std::move(ranges));
    auto file = s.base->Open(path, /*create=*/false, /*want_direct=*/false);
    if (!file && file.error().kind == ErrorKind::kNotFound) continue;
    if (!file) return tl::unexpected(file.error());
    for (const Range& r : merged) {
      const uint64_t key = Mix(Mix(s.seed, round), ordinal++);
      const bool zeros = (key & 1) == 0;
      std::vector<uint8_t> junk(r.end - r.begin);
      if (!zeros) FillGarbage(key, junk);
      IoRequest w{.op = IoRequest::Op::kWrite,
                  .file = file->get(),
                  .offset = r.begin,
                  .buf = junk.data(),
                  .len = junk.size()};
      CV_TRY(s.base->Execute({&w, 1}));
    }
  }
  s.unsynced.clear();
  return {};
}

Result<std::unique_ptr<File>> FaultEnv::Open(const std::string& path, bool create,
                                             bool want_direct) {
  {
    std::lock_guard lock(state_->mu);
    if (Under(path, state_->fail_prefixes)) return Injected(EIO, "open", path);
  }
  CV_TRY_ASSIGN(auto inner, state_->base->Open(path, create, want_direct));
  return std::unique_ptr<File>(std::make_unique<FaultFile>(std::move(inner)));
}

Status FaultEnv::Allocate(File& file, uint64_t offset, uint64_t len) {
  FaultFile* f = AsFaultFile(&file);
  if (!f) return Err(ErrorKind::kInvalidArgument, "file not opened by this env: " + file.path());
  {
    std::lock_guard lock(state_->mu);
    if (Under(f->path(), state_->fail_prefixes)) return Injected(EIO, "fallocate", f->path());
    if (Under(f->path(), state_->nospace_prefixes)) return Injected(ENOSPC, "fallocate", f->path());
  }
  return state_->base->Allocate(f->inner(), offset, len);
}

Result<uint64_t> FaultEnv::Size(File& file) {
  FaultFile* f = AsFaultFile(&file);
  if (!f) return Err(ErrorKind::kInvalidArgument, "file not opened by this env: " + file.path());
  {
    std::lock_guard lock(state_->mu);
    if (Under(f->path(), state_->fail_prefixes)) return Injected(EIO, "fstat", f->path());
  }
  return state_->base->Size(f->inner());
}

Status FaultEnv::CreateDirs(const std::string& path) {
  {
    std::lock_guard lock(state_->mu);
    if (Under(path, state_->fail_prefixes)) return Injected(EIO, "mkdir", path);
  }
  return state_->base->CreateDirs(path);
}

Status FaultEnv::SyncDir(const std::string& path) {
  {
    std::lock_guard lock(state_->mu);
    if (Under(path, state_->fail_prefixes)) return Injected(EIO, "fsync dir", path);
  }
  return state_->base->SyncDir(path);
}

Status FaultEnv::Remove(const std::string& path) {
  {
    std::lock_guard lock(state_->mu);
    if (Under(path, state_->fail_prefixes)) return Injected(EIO, "remove", path);
  }
  CV_TRY(state_->base->Remove(path));
  std::lock_guard lock(state_->mu);
  state_->unsynced.erase(path);  // its bytes are gone with it; a new file there starts clean
  return {};
}

Result<std::vector<std::string>> FaultEnv::ListDir(const std::string& path) {
  {
    std::lock_guard lock(state_->mu);
    if (Under(path, state_->fail_prefixes)) return Injected(EIO, "opendir", path);
  }
  return state_->base->ListDir(path);
}

Result<FsStats> FaultEnv::StatFs(const std::string& path) {
  bool full;
  {
    std::lock_guard lock(state_->mu);
    if (Under(path, state_->fail_prefixes)) return Injected(EIO, "statvfs", path);
    full = Under(path, state_->nospace_prefixes);
  }
  auto stats = state_->base->StatFs(path);
  if (stats && full) stats->free_bytes = 0;
  return stats;
}

}  // namespace cv::storage
