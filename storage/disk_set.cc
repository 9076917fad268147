#include "storage/disk_set.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace cv::storage {
namespace {

namespace fs = std::filesystem;

constexpr char kIdentityFile[] = "chunkvault-disk";

std::string IdentityText(const std::string& node_id, size_t d) {
  return "chunkvault-disk v1\nnode " + node_id + "\nposition " + std::to_string(d) + "\n";
}

Status WriteSmallFile(Env* env, const std::string& path, const std::string& text) {
  CV_TRY_ASSIGN(auto file, env->Open(path, /*create=*/true, /*want_direct=*/false));
  IoBuffer buf = env->AllocateIo(text.size());
  std::memcpy(buf.get(), text.data(), text.size());
  IoRequest reqs[2];
  reqs[0] = {IoRequest::Op::kWrite, file.get(), 0, buf.get(), text.size()};
  CV_TRY(env->Execute(std::span(reqs, 1)));
  reqs[1] = {IoRequest::Op::kSync, file.get(), 0, nullptr, 0};
  return env->Execute(std::span(reqs + 1, 1));
}

Result<std::string> ReadSmallFile(Env* env, const std::string& path) {
  CV_TRY_ASSIGN(auto file, env->Open(path, /*create=*/false, /*want_direct=*/false));
  IoBuffer buf = env->AllocateIo(4096);
  IoRequest req{IoRequest::Op::kRead, file.get(), 0, buf.get(), buf.size()};
  CV_TRY(env->Execute(std::span(&req, 1)));
  return std::string(reinterpret_cast<const char*>(buf.get()), static_cast<size_t>(req.result));
}

}  // namespace

DiskSet::DiskSet(Env* env, std::vector<std::string> paths, uint64_t extent_bytes, bool try_direct)
    : env_(env), extent_bytes_(extent_bytes), try_direct_(try_direct) {
  for (auto& p : paths) Extend(p);
}

void DiskSet::Extend(const std::string& path) {
  const size_t d = count_.load();
  if (d >= kMaxDisks) return;  // the store refuses more disks before this
  auto disk = std::make_unique<Disk>();
  disk->path = path;
  disks_[d] = std::move(disk);
  count_.store(d + 1, std::memory_order_release);
}

std::string DiskSet::ExtentPath(size_t d, uint32_t id) const {
  char name[32];
  std::snprintf(name, sizeof name, "%08" PRIx32 ".ext", id);
  return disks_[d]->path + "/extents/" + name;
}

void DiskSet::Open(const std::string& node_id, bool create) {
  for (size_t d = 0; d < size(); ++d) {
    if (state(d) == DiskState::kRemoved) {
      disks_[d]->failed = true;  // for good: not even its identity is read
      continue;
    }
    (void)OpenOne(d, node_id, create);
  }
}

std::string DiskSet::OpenOne(size_t d, const std::string& node_id, bool create) {
  Disk& disk = *disks_[d];
  const std::string id_path = disk.path + "/" + kIdentityFile;
  const std::string want = IdentityText(node_id, d);
  disk.identity = want;
  auto fail = [&](const std::string& why) {
    MarkFailed(d, why);
    return why;
  };
  if (create) {
    Status s = env_->CreateDirs(disk.path + "/extents");
    if (s) s = WriteSmallFile(env_, id_path, want);
    if (s) s = env_->SyncDir(disk.path);
    if (!s) return fail("cannot initialise: " + s.error().ToString());
  }
  auto have = ReadSmallFile(env_, id_path);
  if (!have) return fail("identity unreadable: " + have.error().ToString());
  if (*have != want) return fail("identity does not match this node and position");
  auto names = env_->ListDir(disk.path + "/extents");
  if (!names) return fail("extents unreadable: " + names.error().ToString());
  uint32_t max_id = 0;
  for (const auto& n : *names) {
    unsigned id = 0;
    if (std::sscanf(n.c_str(), "%8x.ext", &id) == 1) max_id = std::max<uint32_t>(max_id, id);
  }
  // Never append to an extent from an earlier run: its tail may hold torn records.
  std::lock_guard lock(disk.mu);
  disk.next_id = max_id + 1;
  return "";
}

Result<size_t> DiskSet::Add(const std::string& path, const std::string& node_id,
                            const std::function<Status(size_t, bool& committing)>& persist) {
  std::lock_guard lock(add_mu_);
  const size_t d = size();
  if (d >= kMaxDisks) {
    return Err(ErrorKind::kInvalidArgument,
               "a node has at most " + std::to_string(kMaxDisks) + " disk positions");
  }
  if (path.empty() || path[0] != '/' || path.find_first_of(std::string("\0\n\t", 3)) != std::string::npos) {
    return Err(ErrorKind::kInvalidArgument, "a disk is an absolute directory path");
  }
  std::error_code ec;
  const auto canon = fs::weakly_canonical(path, ec);
  if (ec) return Err(ErrorKind::kInvalidArgument, "cannot resolve " + path + ": " + ec.message());
  for (size_t i = 0; i < d; ++i) {
    std::error_code ec2;
    if (fs::weakly_canonical(disks_[i]->path, ec2) == canon) {
      return Err(ErrorKind::kConflict, path + " is already disk " + std::to_string(i) +
                                           " of this node (" + DiskStateName(state(i)) + ")");
    }
  }
  if (!fs::is_directory(canon.parent_path(), ec)) {
    return Err(ErrorKind::kInvalidArgument,
               "the parent directory " + canon.parent_path().string() + " does not exist");
  }
  const bool dir_existed = fs::exists(canon, ec);
  const bool extents_existed = dir_existed && fs::exists(canon / "extents", ec);
  if (dir_existed) {
    if (!fs::is_directory(canon, ec)) {
      return Err(ErrorKind::kInvalidArgument, path + " exists and is not a directory");
    }
    if (fs::exists(canon / kIdentityFile, ec)) {
      return Err(ErrorKind::kConflict, path + " holds a chunkvault disk already (" +
                                           std::string(kIdentityFile) +
                                           "); wipe it first if it is really free");
    }
    if (fs::exists(canon / "extents", ec) && !fs::is_empty(canon / "extents", ec)) {
      return Err(ErrorKind::kConflict, path + "/extents is not empty");
    }
  }
  auto disk = std::make_unique<Disk>();
  disk->path = path;
  disks_[d] = std::move(disk);
  // Not visible (count_) until its layout exists: a failed add leaves no position behind.
  const std::string why = OpenOne(d, node_id, /*create=*/true);
  if (!why.empty()) {
    disks_[d].reset();
    return Err(ErrorKind::kIOError, "disk " + path + ": " + why);
  }
  bool committing = false;
  if (Status s = persist(d, committing); !s) {
    disks_[d].reset();
    if (committing) {
      // The commit failed, and may still have reached the disk: the next start then lists
      // this disk from the index, and needs its identity file to open it. Leave the layout.
      Log(LogLevel::kError, "disk_add_commit_failed",
          {{"disk", path}, {"position", std::to_string(d)}, {"error", s.error().ToString()},
           {"note", "the index may or may not list the disk after a restart; its layout stays"}});
      return tl::unexpected(s.error());
    }
    // The index does not know the disk, so no run of the node ever opens it. Its layout is
    // taken back too, so that the directory is as it was given and the add can be tried
    // again. A crash between OpenOne and persist's commit leaves the identity file (and
    // extents/) behind instead: harmless to the node, and a retry is refused as "holds a
    // chunkvault disk already" until the operator wipes it.
    const std::string dir = canon.string();
    (void)env_->Remove(dir + "/" + kIdentityFile);
    if (!extents_existed) (void)env_->Remove(dir + "/extents");
    if (!dir_existed) (void)env_->Remove(dir);
    (void)env_->SyncDir(dir_existed ? dir : canon.parent_path().string());
    return tl::unexpected(s.error());
  }
  count_.store(d + 1, std::memory_order_release);
  Log(LogLevel::kInfo, "disk_added", {{"disk", path}, {"position", std::to_string(d)}});
  return d;
}

void DiskSet::SetState(size_t d, DiskState s) {
  Disk& disk = *disks_[d];
  const DiskState before = disk.state.exchange(s);
  if (s == DiskState::kRemoved) MarkFailed(d, "removed by the operator");
  if (s != DiskState::kActive) {  // no more appends: its last extent may be retired too
    std::lock_guard lock(disk.mu);
    disk.active.reset();
  }
  if (before != s) {
    Log(LogLevel::kInfo, "disk_state", {{"disk", disk.path}, {"position", std::to_string(d)},
                                        {"state", DiskStateName(s)}});
  }
}

size_t DiskSet::HealthyCount() const {
  size_t n = 0;
  for (size_t d = 0; d < size(); ++d) n += healthy(d) ? 1 : 0;
  return n;
}

void DiskSet::MarkFailed(size_t d, const std::string& why) {
  if (!disks_[d]->failed.exchange(true)) {
    Log(LogLevel::kError, "disk_failed", {{"disk", disks_[d]->path}, {"reason", why}});
  }
}

Error DiskSet::NameFullDisks(Error e, const std::vector<size_t>& full) const {
  if (e.kind != ErrorKind::kNoSpace || full.empty()) return e;
  std::string positions, paths;
  for (size_t i = 0; i < full.size(); ++i) {
    const std::string p = std::to_string(full[i]);
    positions += i == 0 ? p : (i + 1 == full.size() ? " and " : ", ") + p;
    paths += (i == 0 ? "" : ", ") + p + " (" + path(full[i]) + ")";
  }
  e.context += "; full data disks: " + paths;
  e.public_message =
      (full.size() == 1 ? "data disk " + positions + " of this node is full"
                        : "data disks " + positions + " of this node are full") +
      " (positions as `cvctl disk list` shows them): new data cannot be stored until an "
      "operator frees space on " +
      (full.size() == 1 ? "it" : "them") + " or adds a disk (`cvctl disk add PATH`)";
  return e;
}

void DiskSet::ReportError(size_t d, const Error& e) {
  Disk& disk = *disks_[d];
  disk.errors.fetch_add(1);
  if (e.kind == ErrorKind::kNoSpace) return;  // full is not failed
  Log(LogLevel::kWarn, "disk_io_error", {{"disk", disk.path}, {"error", e.ToString()}});
  if (disk.consecutive_errors.fetch_add(1) + 1 >= kDiskFailAfter) {
    MarkFailed(d, "repeated I/O errors: " + e.ToString());
  }
}

Status DiskSet::CheckPresent(size_t d) {
  Disk& disk = *disks_[d];
  if (disk.failed) return Err(ErrorKind::kIOError, "disk failed: " + disk.path);
  const std::string id_path = disk.path + "/" + kIdentityFile;
  auto have = ReadSmallFile(env_, id_path);
  // The identity file has no checksum: one read that differs cannot tell a bit flipped on the
  // way from another disk mounted here. Only a second read that differs too is a changed
  // disk; the damaged read counts as an I/O error (a disk that keeps returning damaged data
  // is failed by that rule).
  if (have && *have != disk.identity) {
    auto again = ReadSmallFile(env_, id_path);
    if (again && *again == disk.identity) {
      ReportError(d, Error{ErrorKind::kCorruption, 0,
                           "read " + id_path + ": damaged, intact when read again"});
      return {};
    }
    have = std::move(again);
  }
  if (!have) {
    const int e = have.error().sys_errno;
    if (e == ENOENT || e == ENOTDIR) {
      MarkFailed(d, "disk directory gone while serving: " + have.error().ToString());
    } else {
      ReportError(d, have.error());
    }
    return Err(ErrorKind::kIOError, "disk " + disk.path + ": " + have.error().ToString());
  }
  if (*have != disk.identity) {
    MarkFailed(d, "identity changed while serving");
    return Err(ErrorKind::kIOError, "disk " + disk.path + ": identity changed");
  }
  return {};
}

void DiskSet::ReportSuccess(size_t d) { disks_[d]->consecutive_errors.store(0); }

Result<std::shared_ptr<Extent>> DiskSet::OpenExtentLocked(Disk& disk, size_t d, uint32_t id,
                                                          bool create) {
  auto it = disk.open.find(id);
  if (it != disk.open.end()) return it->second;
  CV_TRY_ASSIGN(auto file, env_->Open(ExtentPath(d, id), create, try_direct_));
  auto ext = std::make_shared<Extent>();
  ext->disk = static_cast<uint16_t>(d);
  ext->id = id;
  ext->file = std::move(file);
  if (create) {
    ext->capacity = extent_bytes_;
    Status s = env_->Allocate(*ext->file, 0, extent_bytes_);
    if (!s) {
      (void)env_->Remove(ExtentPath(d, id));
      return tl::unexpected(s.error());
    }
    CV_TRY(env_->SyncDir(disk.path + "/extents"));
  } else {
    CV_TRY_ASSIGN(auto size, env_->Size(*ext->file));
    ext->capacity = size;
  }
  disk.open.emplace(id, ext);
  return ext;
}

Result<Placement> DiskSet::Reserve(size_t d, uint64_t len) {
  Disk& disk = *disks_[d];
  if (disk.failed) return Err(ErrorKind::kIOError, "disk failed: " + disk.path);
  if (disk.state != DiskState::kActive) {
    return Err(ErrorKind::kUnavailable, std::string("disk ") + DiskStateName(disk.state) + ": " +
                                            disk.path);
  }
  if (len > extent_bytes_) return Err(ErrorKind::kInvalidArgument, "record larger than an extent");
  std::lock_guard lock(disk.mu);
  if (!disk.active || disk.active->poisoned || disk.active_used + len > disk.active->capacity) {
    const uint32_t id = disk.next_id;
    CV_TRY_ASSIGN(auto ext, OpenExtentLocked(disk, d, id, /*create=*/true));
    disk.next_id = id + 1;
    disk.active = ext;
    disk.active_used = 0;
  }
  Placement p{disk.active, disk.active_used};
  disk.active_used += len;
  return p;
}

Result<std::vector<uint32_t>> DiskSet::ExtentIds(size_t d) {
  CV_TRY_ASSIGN(auto names, env_->ListDir(disks_[d]->path + "/extents"));
  std::vector<uint32_t> ids;
  for (const auto& n : names) {
    unsigned id = 0;
    char tail = 0;
    if (n.size() == 12 && std::sscanf(n.c_str(), "%8x.ex%c", &id, &tail) == 2 && tail == 't') {
      ids.push_back(id);
    }
  }
  return ids;
}

bool DiskSet::IsActive(size_t d, uint32_t id) {
  Disk& disk = *disks_[d];
  std::lock_guard lock(disk.mu);
  return disk.active && disk.active->id == id;
}

Result<bool> DiskSet::Retire(size_t d, uint32_t id) {
  Disk& disk = *disks_[d];
  {
    std::lock_guard lock(disk.mu);
    if (disk.active && disk.active->id == id) return false;
    auto it = disk.open.find(id);
    if (it != disk.open.end()) {
      // Only the map holds it: nobody can be about to write or read through this handle,
      // and no new reservation can land in a non-active extent.
      if (it->second.use_count() > 1) return false;
      disk.open.erase(it);
    }
    CV_TRY(env_->Remove(ExtentPath(d, id)));
  }
  CV_TRY(env_->SyncDir(disk.path + "/extents"));
  return true;
}

Result<std::shared_ptr<Extent>> DiskSet::Get(size_t d, uint32_t extent_id) {
  if (d >= size()) return Err(ErrorKind::kCorruption, "shard on unknown disk");
  Disk& disk = *disks_[d];
  if (disk.failed) return Err(ErrorKind::kIOError, "disk failed: " + disk.path);
  std::lock_guard lock(disk.mu);
  return OpenExtentLocked(disk, d, extent_id, /*create=*/false);
}

Status DiskSet::Sync(std::span<const std::pair<std::shared_ptr<Extent>, uint64_t>> extents) {
  // Lock in (disk, id) order so that concurrent group syncs cannot deadlock. One entry per
  // extent, with the highest sequence number asked for: the one the sync must cover
  // (regression: keeping whichever came first let a group skip the fdatasync that its later
  // writes on that extent needed, and acknowledge them unsynced).
  std::vector<std::pair<Extent*, uint64_t>> todo;
  for (const auto& [e, seq] : extents) todo.emplace_back(e.get(), seq);
  std::sort(todo.begin(), todo.end(), [](const auto& a, const auto& b) {
    return std::make_tuple(a.first->disk, a.first->id, b.second) <
           std::make_tuple(b.first->disk, b.first->id, a.second);
  });
  todo.erase(std::unique(todo.begin(), todo.end(),
                         [](const auto& a, const auto& b) { return a.first == b.first; }),
             todo.end());
  std::vector<std::unique_lock<std::mutex>> locks;
  locks.reserve(todo.size());
  for (auto& [e, seq] : todo) locks.emplace_back(e->sync_mu);

  std::vector<IoRequest> reqs;
  std::vector<std::pair<Extent*, uint64_t>> targets;
  for (auto& [e, seq] : todo) {
    if (e->synced_seq >= seq) continue;  // another writer's sync already covered us
    if (e->sync_failed) {
      return Err(ErrorKind::kIOError, "fdatasync of extent " + std::to_string(e->id) + " on disk " +
                                          std::to_string(e->disk) + " failed earlier");
    }
    reqs.push_back({IoRequest::Op::kSync, e->file.get(), 0, nullptr, 0});
    targets.emplace_back(e, e->write_seq.load());
  }
  // Even when every write was covered already, the disks are checked below (regression: a
  // group whose check failed after its fdatasyncs had succeeded retried each job's sync, found
  // nothing left to sync and acknowledged the jobs on the vanished disk).
  Status s = reqs.empty() ? Status{} : env_->Execute(reqs);
  std::vector<size_t> full;
  for (size_t i = 0; i < reqs.size(); ++i) {
    Extent* e = targets[i].first;
    if (reqs[i].result < 0) {
      e->poisoned = true;
      e->sync_failed = true;
      const Error err = ErrnoError(static_cast<int>(-reqs[i].result), "fdatasync").value();
      if (err.kind == ErrorKind::kNoSpace) full.push_back(e->disk);
      ReportError(e->disk, err);
    } else {
      e->synced_seq = std::max(e->synced_seq, targets[i].second);
      ReportSuccess(e->disk);
    }
  }
  if (!s) return tl::unexpected(NameFullDisks(s.error(), full));
  // A synced write is durable only if its extent is still where the index will say it is:
  // after a disk directory vanished, writes still succeed through the open descriptor, into
  // a file nobody will find again. Check each disk once per group (regression: uploads were
  // acknowledged with shards on a removed disk, silently short of full redundancy).
  std::vector<uint16_t> disks;
  for (auto& [e, seq] : todo) disks.push_back(e->disk);
  disks.erase(std::unique(disks.begin(), disks.end()), disks.end());  // todo is sorted by disk
  for (uint16_t d : disks) CV_TRY(CheckPresent(d));
  return {};
}

}  // namespace cv::storage
