// What PosixEnv and UringEnv share: aligned buffers, opening with O_DIRECT or without, and
// the calls that are plain system calls in both (fallocate, fstat, directories, statvfs).
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <mutex>
#include <utility>

#include "storage/io/internal.h"

namespace cv::storage {

void AlignedFree::operator()(void* p) const { std::free(p); }

AlignedBuffer AllocateAligned(size_t len) {
  void* p = nullptr;
  // posix_memalign(0) may return nullptr; ask for one block so the result is always usable.
  if (posix_memalign(&p, kBlockSize, std::max<size_t>(len, 1)) != 0) std::abort();
  return AlignedBuffer(static_cast<uint8_t*>(p));
}

IoBuffer& IoBuffer::operator=(IoBuffer&& o) noexcept {
  if (this != &o) {
    Reset();
    data_ = std::exchange(o.data_, nullptr);
    len_ = std::exchange(o.len_, 0);
    arena_ = std::exchange(o.arena_, nullptr);
  }
  return *this;
}

void IoBuffer::Reset() {
  if (arena_) {
    arena_->Give(data_, len_);
  } else {
    std::free(data_);
  }
  data_ = nullptr;
  len_ = 0;
  arena_ = nullptr;
}

IoBuffer Env::AllocateIo(size_t len) {
  return IoBuffer(AllocateAligned(len).release(), len, nullptr);
}

Result<std::unique_ptr<AsyncRing>> Env::NewAsyncRing(unsigned) {
  return Err(ErrorKind::kUnavailable, std::string("no asynchronous ring for the ") + Name() + " Env");
}

namespace detail {

// Free ranges by offset; neighbours are merged when a range comes back.
struct IoArena::Free {
  mutable std::mutex mu;
  std::map<size_t, size_t> ranges;  // offset -> length
  size_t bytes = 0;
};

IoArena::IoArena(uint8_t* base, size_t size) : base_(base), size_(size), free_(new Free) {
  free_->ranges.emplace(0, size);
  free_->bytes = size;
}

IoArena::~IoArena() { ::munmap(base_, size_); }

std::unique_ptr<IoArena> IoArena::Create(size_t bytes) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  bytes = (std::max<size_t>(bytes, 1) + page - 1) / page * page;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  // A child process must not share these pages copy-on-write with rings that write into them.
  (void)::madvise(p, bytes, MADV_DONTFORK);
  return std::unique_ptr<IoArena>(new IoArena(static_cast<uint8_t*>(p), bytes));
}

bool IoArena::Contains(const void* p, size_t len) const {
  const auto at = reinterpret_cast<uintptr_t>(p), base = reinterpret_cast<uintptr_t>(base_);
  return at >= base && at - base <= size_ && len <= size_ - (at - base);
}

uint8_t* IoArena::Take(size_t len) {
  len = (std::max<size_t>(len, 1) + kBlockSize - 1) / kBlockSize * kBlockSize;
  std::lock_guard lock(free_->mu);
  for (auto it = free_->ranges.begin(); it != free_->ranges.end(); ++it) {
    auto [off, n] = *it;
    if (n < len) continue;
    free_->ranges.erase(it);
    if (n > len) free_->ranges.emplace(off + len, n - len);
    free_->bytes -= len;
    return base_ + off;
  }
  return nullptr;
}

void IoArena::Give(uint8_t* p, size_t len) {
  len = (std::max<size_t>(len, 1) + kBlockSize - 1) / kBlockSize * kBlockSize;
  size_t off = static_cast<size_t>(p - base_);
  std::lock_guard lock(free_->mu);
  free_->bytes += len;
  auto next = free_->ranges.lower_bound(off);
  if (next != free_->ranges.end() && off + len == next->first) {
    len += next->second;
    next = free_->ranges.erase(next);
  }
  if (next != free_->ranges.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == off) {
      prev->second += len;
      return;
    }
  }
  free_->ranges.emplace_hint(next, off, len);
}

size_t IoArena::free_bytes() const {
  std::lock_guard lock(free_->mu);
  return free_->bytes;
}

namespace {

template <class F>
auto RetryEintr(F f) {
  decltype(f()) r;
  do {
    r = f();
  } while (r < 0 && errno == EINTR);
  return r;
}

FdFile* FdOrNull(File& file) { return dynamic_cast<FdFile*>(&file); }

tl::unexpected<Error> NotOurFile(const File& file) {
  return Err(ErrorKind::kInvalidArgument, "file not opened by this env: " + file.path());
}

}  // namespace

FdFile::~FdFile() { ::close(fd_); }

FdFile* AsFdFile(File* file) { return file ? dynamic_cast<FdFile*>(file) : nullptr; }

Status BatchStatus(std::span<const IoRequest> requests) {
  for (const IoRequest& r : requests) {
    if (r.result >= 0) continue;
    const char* what = r.op == IoRequest::Op::kRead    ? "read "
                       : r.op == IoRequest::Op::kWrite ? "write "
                                                       : "sync ";
    std::string path = r.file ? r.file->path() : "(no file)";
    return ErrnoError(static_cast<int>(-r.result),
                      what + path + " @" + std::to_string(r.offset) + "+" + std::to_string(r.len));
  }
  return {};
}

Result<std::unique_ptr<File>> FdEnvBase::Open(const std::string& path, bool create,
                                              bool want_direct) {
  const int flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0);
  if (want_direct) {
    int fd = RetryEintr([&] { return ::open(path.c_str(), flags | O_DIRECT, 0644); });
    if (fd >= 0) return std::make_unique<FdFile>(fd, path, true);
    // tmpfs (before Linux 6.6) and some overlay and FUSE file systems refuse O_DIRECT with
    // EINVAL; buffered I/O still works there, and fdatasync still makes it durable.
    if (errno != EINVAL) return ErrnoError(errno, "open " + path);
    if (!direct_fallback_logged_.exchange(true)) {
      Log(LogLevel::kWarn, "o_direct_unavailable", {{"path", path}});
    }
  }
  int fd = RetryEintr([&] { return ::open(path.c_str(), flags, 0644); });
  if (fd < 0) return ErrnoError(errno, "open " + path);
  return std::make_unique<FdFile>(fd, path, false);
}

Status FdEnvBase::Allocate(File& file, uint64_t offset, uint64_t len) {
  FdFile* f = FdOrNull(file);
  if (!f) return NotOurFile(file);
  if (len == 0) return {};
  int r = RetryEintr(
      [&] { return ::fallocate(f->fd(), 0, static_cast<off_t>(offset), static_cast<off_t>(len)); });
  if (r == 0) return {};
  if (errno == EOPNOTSUPP) {
    // No reservation here; a full disk then shows up as ENOSPC on a write instead.
    static std::atomic<bool> logged{false};
    if (!logged.exchange(true))
      Log(LogLevel::kWarn, "fallocate_unsupported", {{"path", f->path()}});
    return {};
  }
  return ErrnoError(errno, "fallocate " + f->path());
}

Result<uint64_t> FdEnvBase::Size(File& file) {
  FdFile* f = FdOrNull(file);
  if (!f) return NotOurFile(file);
  struct stat st {};
  if (::fstat(f->fd(), &st) != 0) return ErrnoError(errno, "fstat " + f->path());
  return static_cast<uint64_t>(st.st_size);
}

Status FdEnvBase::CreateDirs(const std::string& path) {
  if (path.empty()) return Err(ErrorKind::kInvalidArgument, "create dirs: empty path");
  // Create each prefix ending before a '/', then the whole path; existing ones are fine.
  for (size_t pos = path.find('/', 1);; pos = path.find('/', pos + 1)) {
    std::string prefix = pos == std::string::npos ? path : path.substr(0, pos);
    if (!prefix.empty() && prefix.back() != '/' && ::mkdir(prefix.c_str(), 0755) != 0 &&
        errno != EEXIST) {
      return ErrnoError(errno, "mkdir " + prefix);
    }
    if (pos == std::string::npos) break;
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoError(errno, "stat " + path);
  if (!S_ISDIR(st.st_mode)) return ErrnoError(ENOTDIR, "mkdir " + path);
  return {};
}

Status FdEnvBase::SyncDir(const std::string& path) {
  int fd = RetryEintr([&] { return ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); });
  if (fd < 0) return ErrnoError(errno, "open dir " + path);
  int r = RetryEintr([&] { return ::fsync(fd); });
  int err = errno;
  ::close(fd);
  if (r != 0) return ErrnoError(err, "fsync dir " + path);
  return {};
}

Status FdEnvBase::Remove(const std::string& path) {
  if (::unlink(path.c_str()) == 0) return {};
  if (errno == EISDIR && ::rmdir(path.c_str()) == 0) return {};
  return ErrnoError(errno, "remove " + path);
}

Result<std::vector<std::string>> FdEnvBase::ListDir(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());
  if (!dir) return ErrnoError(errno, "opendir " + path);
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* e = ::readdir(dir)) {
    std::string_view name = e->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
    errno = 0;
  }
  int err = errno;
  ::closedir(dir);
  if (err != 0) return ErrnoError(err, "readdir " + path);
  std::sort(names.begin(), names.end());
  return names;
}

Result<FsStats> FdEnvBase::StatFs(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) return ErrnoError(errno, "statvfs " + path);
  return FsStats{.total_bytes = static_cast<uint64_t>(st.f_blocks) * st.f_frsize,
                 .free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize};
}

}  // namespace detail
}  // namespace cv::storage
