// courier: the job that writes a device's backup as drive images for courier recovery
// (README.md, "Courier recovery"), and the files it keeps: the node's courier key, the job's
// folder under courier_dir, and the room its images take there. The routes that start the
// job and serve its images are in admin/courier.cc.
//
// A courier job works on a snapshot: the device's objects (type, name, size, SHA-256) as one
// index read transaction saw them when the job started. The snapshot is saved to
// courier_dir/<job>/snapshot.json and named (by its SHA-256) in the job's progress, so that a
// job a crash interrupted writes the same images again: images are a pure function of the
// snapshot (courier/FORMAT.md). Objects are immutable, so reading them by key gives
// the snapshotted bytes for as long as they exist; each is checked against its snapshotted
// SHA-256 as it streams. An object deleted after the snapshot (restic prune, a purge) fails
// the job loudly with its name; the job then drops its snapshot and, when the runner retries
// it, starts over with a new one.
//
//   courier_dir/<job>/snapshot.json        the objects, as taken
//   courier_dir/<job>/drive-1-of-2.img     finished images (renamed from .tmp when complete)
//
// The folder goes when the job is cancelled (POST /jobs/{j}/cancel, also while it runs) or
// its images are deleted (DELETE /jobs/{j}/images, once they have been shipped).
#include "courier/courier.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "admin/jobs/jobs.h"

namespace cv::admin::jobs {

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kManifest = "SHA256SUMS";
constexpr std::string_view kSignature = "SHA256SUMS.sig";
constexpr std::string_view kReadme = "README.txt";
constexpr std::string_view kLabel = "CHUNKVAULT";
// restic's object types in the order the snapshot lists them; locks are never copied (the
// image gets an empty locks/).
constexpr index::ObjectType kTypes[] = {index::ObjectType::kConfig, index::ObjectType::kKeys,
                                        index::ObjectType::kSnapshots, index::ObjectType::kIndex,
                                        index::ObjectType::kData};

std::mutex key_mu;  // the first use makes the key: one maker at a time

}  // namespace

// The node's courier key (private PEM), made on first use.
Result<std::string> CourierPrivateKey(const Options& o) {
  if (o.courier_key_file.empty()) {
    return Err(ErrorKind::kUnavailable, "courier images are not configured on this node");
  }
  std::lock_guard lock(key_mu);
  if (::access(o.courier_key_file.c_str(), F_OK) == 0) return courier::LoadPem(o.courier_key_file);
  auto pem = courier::GenerateEd25519PrivateKeyPem();
  if (!pem) return pem;
  CV_TRY(courier::SavePrivateKeyPem(o.courier_key_file, *pem));
  Log(LogLevel::kInfo, "courier_key_created", {{"file", o.courier_key_file}});
  return pem;
}

std::string CourierJobDir(const Options& o, const index::Id& job) {
  return o.courier_dir + "/" + index::IdToHex(job);
}

Status RemoveCourierFiles(const Options& o, const index::Id& job) {
  if (o.courier_dir.empty()) return {};
  const std::string dir = CourierJobDir(o, job);
  std::error_code ec;
  // A writer that has not yet seen a cancel may add a file while the folder is emptied (then
  // rmdir fails): try again.
  for (int attempt = 0; attempt < 3; ++attempt) {
    fs::remove_all(dir, ec);
    if (!ec) return {};
  }
  return Err(ErrorKind::kIOError, "remove " + dir + ": " + ec.message());
}

namespace {

std::string ImageName(size_t drive, size_t drives) {
  return "drive-" + std::to_string(drive) + "-of-" + std::to_string(drives) + ".img";
}

// ---- the snapshot ----

struct SnapObject {
  index::ObjectType type;
  std::string name;
  uint64_t size = 0;
  Sha256Digest sha256{};
};

struct Snapshot {
  int64_t taken_ns = 0;
  std::string device_name;
  std::vector<SnapObject> objects;
};

// Where an object goes in the image: restic's local layout under repo/.
std::string RepoPath(const SnapObject& o) {
  if (o.type == index::ObjectType::kConfig) return "repo/config";
  if (o.type == index::ObjectType::kData) return "repo/data/" + o.name.substr(0, 2) + "/" + o.name;
  return "repo/" + std::string(index::ObjectTypeName(o.type)) + "/" + o.name;
}

Result<Snapshot> TakeSnapshot(storage::ObjectStore& store, const index::Id& device) {
  CV_TRY_ASSIGN(auto txn, store.Index().BeginRead());
  Snapshot s;
  s.taken_ns = NowNanos();
  CV_TRY_ASSIGN(auto d, txn->GetDevice(device));
  if (!d) return Err(ErrorKind::kInvalidArgument, "the device no longer exists");
  s.device_name = d->name;
  for (index::ObjectType type : kTypes) {
    std::string after;
    while (true) {
      CV_TRY_ASSIGN(auto page, txn->ListObjects(device, type, after, 1000));
      for (const auto& [key, rec] : page) {
        s.objects.push_back(SnapObject{type, key.name, rec.size, rec.sha256});
      }
      if (page.size() < 1000) break;
      after = page.back().first.name;
    }
  }
  if (s.objects.empty() || s.objects.front().type != index::ObjectType::kConfig) {
    return Err(ErrorKind::kInvalidArgument,
               "the device has no restic repository (no config object): nothing to ship");
  }
  return s;
}

std::string SnapshotText(const Snapshot& s) {
  json::object o;
  o["taken_ns"] = s.taken_ns;
  o["device_name"] = s.device_name;
  json::array items;
  items.reserve(s.objects.size());
  for (const auto& x : s.objects) {
    items.push_back(json::array{index::ObjectTypeName(x.type), x.name, x.size, ToHex(x.sha256)});
  }
  o["objects"] = std::move(items);
  return json::serialize(o);
}

std::optional<Snapshot> ParseSnapshot(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const json::object& o = v.as_object();
  Snapshot s;
  const json::value* t = o.if_contains("taken_ns");
  const json::value* items = o.if_contains("objects");
  if (!t || !t->is_int64() || !items || !items->is_array()) return std::nullopt;
  s.taken_ns = t->as_int64();
  s.device_name = StringField(o, "device_name");
  for (const json::value& it : items->as_array()) {
    const json::array* a = it.if_array();
    if (!a || a->size() != 4 || !(*a)[0].is_string() || !(*a)[1].is_string() ||
        !(*a)[3].is_string()) {
      return std::nullopt;
    }
    auto type = index::ParseObjectType(std::string((*a)[0].as_string()));
    SnapObject x;
    if (!type) return std::nullopt;
    x.type = *type;
    x.name = (*a)[1].as_string();
    if ((*a)[2].is_uint64())
      x.size = (*a)[2].as_uint64();
    else if ((*a)[2].is_int64() && (*a)[2].as_int64() >= 0)
      x.size = (*a)[2].as_int64();
    else
      return std::nullopt;
    if (!FromHex(std::string((*a)[3].as_string()), x.sha256)) return std::nullopt;
    s.objects.push_back(std::move(x));
  }
  return s;
}

Result<std::string> ReadSmallFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "open " + path);
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return ErrnoError(e, "read " + path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// ---- what goes on a drive ----

std::string Rfc3339(int64_t ns) { return TimeOf(ns).value_or(std::string()); }

// The customer's README. Its length depends on drive/drives only through their digits.
std::string Readme(const Snapshot& s, const index::Job& job, size_t drive, size_t drives) {
  const std::string account = job.account ? index::IdToHex(*job.account) : "-";
  const std::string device = job.device ? index::IdToHex(*job.device) : "-";
  std::string r;
  r += "CHUNKVAULT COURIER RECOVERY DRIVE\r\n";
  r += "=================================\r\n\r\n";
  r += "This drive holds a copy of the backups of one computer, in the format of restic\r\n";
  r += "(https://restic.net), made by a chunkvault backup node for courier recovery.\r\n\r\n";
  r += "  Device:    " + s.device_name + " (" + device + ")\r\n";
  r += "  Account:   " + account + "\r\n";
  r += "  Backups as of: " + Rfc3339(s.taken_ns) + " (UTC)\r\n";
  r += "  Job:       " + index::IdToHex(job.id) + "\r\n";
  r += "  Drive " + std::to_string(drive) + " of " + std::to_string(drives) + "\r\n\r\n";
  r += "Contents\r\n";
  r += "  repo/            the restic repository (config, keys, snapshots, index, data, locks)\r\n";
  r += "  SHA256SUMS       the SHA-256 of every file on this drive (check: sha256sum -c "
       "SHA256SUMS)\r\n";
  r += "  SHA256SUMS.sig   Ed25519 signature of SHA256SUMS by the node's courier key\r\n\r\n";
  if (drives > 1) {
    r += "Several drives\r\n";
    r += "  The backup is split over " + std::to_string(drives) +
         " drives. Every drive has the repository's config, keys,\r\n";
    r += "  snapshots and index, and a part of repo/data. To restore, copy the repo folder of\r\n";
    r += "  every drive into ONE folder on a disk with enough room (merging the data folders;\r\n";
    r += "  no file exists on two drives), then use that folder below instead of "
         "<drive>/repo.\r\n\r\n";
  }
  r += "Restore (install restic first; it asks for the repository password the backups were\r\n";
  r += "made with). --no-lock lets restic read the drive even where it is mounted "
       "read-only.\r\n\r\n";
  r += "  Windows (the drive as E:):\r\n";
  r += "    restic -r E:\\repo --no-lock snapshots\r\n";
  r += "    restic -r E:\\repo --no-lock restore latest --target C:\\restored\r\n\r\n";
  r += "  macOS:\r\n";
  r += "    restic -r /Volumes/" + std::string(kLabel) + "/repo --no-lock snapshots\r\n";
  r += "    restic -r /Volumes/" + std::string(kLabel) +
       "/repo --no-lock restore latest --target ~/restored\r\n\r\n";
  r += "  Linux (mounted by the desktop, or: sudo mount /dev/sdX1 /mnt):\r\n";
  r += "    restic -r /media/$USER/" + std::string(kLabel) + "/repo --no-lock snapshots\r\n";
  r += "    restic -r /media/$USER/" + std::string(kLabel) +
       "/repo --no-lock restore latest --target ~/restored\r\n\r\n";
  r += "  One snapshot instead of the latest: restic ... restore <snapshot id> --target ...\r\n";
  r +=
      "  Check everything first (optional): restic -r <drive>/repo --no-lock check --read-data\r\n";
  return r;
}

// One file of a drive and where its bytes come from: a text made here, or an object.
struct Source {
  std::string text;
  const SnapObject* object = nullptr;
};

struct DriveFiles {
  std::vector<courier::FileSpec> files;
  std::vector<Source> sources;  // same indexes
};

courier::LayoutOptions BaseLayoutOptions(const Snapshot& s, uint64_t drive_bytes) {
  courier::LayoutOptions lo;
  lo.label = std::string(kLabel);
  lo.unix_time = s.taken_ns / 1000000000;
  lo.image_bytes = drive_bytes;
  lo.empty_dirs = {"repo/data", "repo/index", "repo/keys", "repo/locks", "repo/snapshots"};
  return lo;
}

// Every drive's files: README, the manifest, its signature, the repository's metadata and
// the drive's share of repo/data.
Result<std::vector<DriveFiles>> PlanDrives(const Snapshot& s, const index::Job& job,
                                           uint64_t drive_bytes, const std::string& private_pem) {
  std::vector<const SnapObject*> common_objects, data_objects;
  for (const auto& o : s.objects) {
    (o.type == index::ObjectType::kData ? data_objects : common_objects).push_back(&o);
  }
  std::vector<std::vector<size_t>> shares;  // data_objects indexes per drive
  if (drive_bytes == 0) {
    shares.emplace_back(data_objects.size());
    for (size_t i = 0; i < data_objects.size(); ++i) shares[0][i] = i;
  } else {
    std::vector<courier::FileSpec> common, data;
    // An upper bound of every drive's README: the most digits drive numbers can have.
    common.push_back({std::string(kReadme), Readme(s, job, 99999, 99999).size()});
    common.push_back({std::string(kSignature), 64});
    for (const SnapObject* o : common_objects) common.push_back({RepoPath(*o), o->size});
    for (const SnapObject* o : data_objects) data.push_back({RepoPath(*o), o->size});
    CV_TRY_ASSIGN(auto plans,
                  courier::PlanSplit(common, data, BaseLayoutOptions(s, drive_bytes), kManifest));
    for (const auto& p : plans) shares.push_back(p.data_files);
  }
  std::vector<DriveFiles> drives;
  for (size_t d = 0; d < shares.size(); ++d) {
    DriveFiles df;
    auto add = [&](std::string path, Source src, uint64_t size) {
      df.files.push_back({std::move(path), size});
      df.sources.push_back(std::move(src));
    };
    std::string readme = Readme(s, job, d + 1, shares.size());
    std::vector<courier::ManifestEntry> manifest;
    manifest.push_back({std::string(kReadme), Sha256::Of(readme)});
    add(std::string(kReadme), Source{readme, nullptr}, readme.size());
    std::vector<const SnapObject*> mine = common_objects;
    for (size_t i : shares[d]) mine.push_back(data_objects[i]);
    for (const SnapObject* o : mine) {
      manifest.push_back({RepoPath(*o), o->sha256});
      add(RepoPath(*o), Source{{}, o}, o->size);
    }
    std::sort(manifest.begin(), manifest.end(),
              [](const auto& a, const auto& b) { return a.path < b.path; });
    std::string sums = courier::FormatSha256Sums(manifest);
    CV_TRY_ASSIGN(auto sig,
                  courier::Ed25519Sign(
                      private_pem, {reinterpret_cast<const uint8_t*>(sums.data()), sums.size()}));
    add(std::string(kManifest), Source{sums, nullptr}, sums.size());
    add(std::string(kSignature), Source{std::string(sig.begin(), sig.end()), nullptr}, 64);
    drives.push_back(std::move(df));
  }
  return drives;
}

// Between the writer and the file: SHA-256 of the image as written (free space and holes
// read as zeros) and a byte count the job thread reports.
class HashingSink : public courier::Sink {
 public:
  HashingSink(courier::Sink& inner, std::atomic<uint64_t>& written)
      : inner_(inner), written_(written) {}
  Status Write(std::span<const uint8_t> data) override {
    sha_.Update(data);
    CV_TRY(inner_.Write(data));
    written_ += data.size();
    return {};
  }
  Status WriteZeros(uint64_t n) override {
    HashZeros(n);
    CV_TRY(inner_.WriteZeros(n));
    written_ += n;
    return {};
  }
  Status Skip(uint64_t n) override {
    HashZeros(n);
    CV_TRY(inner_.Skip(n));
    written_ += n;
    return {};
  }
  Status Finish() override { return inner_.Finish(); }
  Sha256Digest Digest() { return sha_.Final(); }

 private:
  void HashZeros(uint64_t n) {
    static const std::vector<uint8_t> zeros(1 << 20);
    while (n > 0) {
      const size_t k = static_cast<size_t>(std::min<uint64_t>(n, zeros.size()));
      sha_.Update(std::span<const uint8_t>(zeros.data(), k));
      n -= k;
    }
  }
  courier::Sink& inner_;
  std::atomic<uint64_t>& written_;
  Sha256 sha_;
};

// Reads a drive's objects ahead of the writer, in write order, on threads of its own: the
// store's reader serves one request at a time, and several in flight keep every disk busy.
// An object of up to kWholeBytes is one piece, read and checked against its SHA-256 by the
// thread that reads it; larger ones are cut into pieces of kPieceBytes that the writer checks
// as they go by. Pieces ahead of the writer (read, being read, or waiting) hold at most
// kWindowBytes, or one piece: bounded memory.
class Prefetcher {
 public:
  struct Piece {
    const SnapObject* object;
    uint64_t offset = 0;
    uint64_t length = 0;
    bool whole() const { return offset == 0 && length == object->size; }
  };
  static constexpr uint64_t kWholeBytes = 32 << 20;
  static constexpr uint64_t kPieceBytes = 8 << 20;
  static constexpr uint64_t kWindowBytes = 96 << 20;
  static constexpr int kThreads = 4;

  // bytes_per_sec: pieces start no faster than that (0 = unthrottled).
  Prefetcher(storage::ObjectStore& store, const index::Id& device, std::vector<Piece> pieces,
             uint64_t bytes_per_sec)
      : store_(store), device_(device), pieces_(std::move(pieces)), rate_(bytes_per_sec) {
    for (int i = 0; i < kThreads; ++i) threads_.emplace_back([this] { Work(); });
  }
  ~Prefetcher() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  const std::vector<Piece>& pieces() const { return pieces_; }

  // The bytes of piece i, waiting for them if need be; pieces before i are dropped. REQUIRES:
  // i does not decrease from call to call. While it waits it calls `idle` every 100 ms;
  // nullptr when that returned true (stop).
  Result<const std::vector<uint8_t>*> Get(size_t i, const std::function<bool()>& idle) {
    std::unique_lock lock(mu_);
    if (i != consumed_) {
      for (auto it = slots_.begin(); it != slots_.end() && it->first < i;) {
        std::vector<uint8_t>& b = it->second.bytes;
        if (!b.empty() && spare_bytes_ + b.size() <= kWindowBytes) {  // bounded, like the window
          spare_bytes_ += b.size();
          spare_.push_back(std::move(b));
        }
        it = slots_.erase(it);
      }
      for (; consumed_ < i; ++consumed_) {
        if (consumed_ < next_) ahead_bytes_ -= pieces_[consumed_].length;
      }
      next_ = std::max(next_, consumed_);
      cv_.notify_all();
    }
    while (
        !cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return slots_.count(i) > 0; })) {
      lock.unlock();
      const bool stop = idle();
      lock.lock();
      if (stop) return nullptr;
    }
    Slot& s = slots_[i];
    if (s.error) return tl::unexpected(*s.error);
    return &s.bytes;
  }

 private:
  struct Slot {
    std::vector<uint8_t> bytes;  // the piece is its first `length` bytes (reused buffers)
    std::optional<Error> error;
  };

  void Work() {
    while (true) {
      size_t i;
      uint64_t before;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] {
          return stop_ ||
                 (next_ < pieces_.size() &&
                  (next_ == consumed_ || ahead_bytes_ + pieces_[next_].length <= kWindowBytes));
        });
        if (stop_) return;
        i = next_++;
        ahead_bytes_ += pieces_[i].length;
        before = started_bytes_;
        started_bytes_ += pieces_[i].length;
      }
      if (rate_ > 0) {  // the throttle: this piece starts when the bytes before it are due
        const auto due = start_ + std::chrono::microseconds(before * 1000000 / rate_);
        std::unique_lock lock(mu_);
        if (cv_.wait_until(lock, due, [&] { return stop_; })) return;
      }
      Slot s = Read(pieces_[i]);
      {
        std::lock_guard lock(mu_);
        slots_[i] = std::move(s);
      }
      cv_.notify_all();
    }
  }

  Slot Read(const Piece& p) {
    Slot s;
    {
      // A consumed piece's buffer: already faulted in, and not cleared again (resize of a
      // fresh vector zeroes it, which cost as much as the read's own copy).
      // Only one at most twice the piece's size: small pieces do not hold big buffers.
      std::lock_guard lock(mu_);
      for (size_t j = 0; j < spare_.size(); ++j) {
        const uint64_t size = spare_[j].size();
        if (size >= p.length && size <= 2 * p.length) {
          spare_bytes_ -= size;
          s.bytes = std::move(spare_[j]);
          spare_.erase(spare_.begin() + static_cast<ptrdiff_t>(j));
          break;
        }
      }
    }
    const SnapObject& obj = *p.object;
    auto r = store_.Open(index::ObjectKey{device_, obj.type, obj.name}, p.offset, p.length);
    if (!r) {
      s.error = r.error();
      return s;
    }
    if (s.bytes.size() < p.length) s.bytes.resize(p.length);
    size_t got = 0;
    while (got < p.length) {
      auto k = (*r)->Read(std::span<uint8_t>(s.bytes.data() + got, p.length - got));
      if (!k) {
        s.error = k.error();
        return s;
      }
      if (*k == 0) {
        s.error = Error{ErrorKind::kCorruption, 0,
                        "the store returned " + std::to_string(p.offset + got) + " of " +
                            std::to_string(obj.size) + " bytes"};
        return s;
      }
      got += *k;
    }
    if (p.whole() && Sha256::Of(std::string_view(reinterpret_cast<const char*>(s.bytes.data()),
                                                 p.length)) != obj.sha256) {
      s.error = Error{ErrorKind::kCorruption, 0, "SHA-256 differs from the index"};
    }
    return s;
  }

  storage::ObjectStore& store_;
  const index::Id device_;
  const std::vector<Piece> pieces_;
  const uint64_t rate_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<size_t, Slot> slots_;
  std::vector<std::vector<uint8_t>> spare_;  // buffers of consumed pieces, for the next reads
  uint64_t spare_bytes_ = 0;                 // their sizes, at most kWindowBytes
  size_t next_ = 0;             // the next piece a thread reads
  size_t consumed_ = 0;         // the piece the writer is on
  uint64_t ahead_bytes_ = 0;    // bytes of pieces [consumed_, next_)
  uint64_t started_bytes_ = 0;  // bytes of pieces [0, next_)
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// The job stopped on purpose (node stopping, job no longer running): not an error.
constexpr std::string_view kStopped = "courier job stopped";

// ---- the job ----

Result<bool> JobIsCancelled(storage::ObjectStore& store, const index::Id& id) {
  CV_TRY_ASSIGN(auto txn, store.Index().BeginRead());
  CV_TRY_ASSIGN(auto j, txn->GetJob(id));
  return j && j->state == "cancelled";
}

// courier: progress {"phase": "writing", snapshot_sha256, snapshot_at, images (finished
// ones), objects, bytes_total, drives, drive, bytes_written}; result {"images": [{drive,
// file, bytes, sha256, files}], drives, objects, object_bytes, snapshot_at, started_at,
// finished_at}, and images_deleted_at once DELETE removed them.
//
// WriteImages takes these steps, each a function below: Start (the job's folder and
// parameters), LoadOrTakeSnapshot (the device's object list), PlanImages (what goes on each
// drive, and where), WriteDrive for each drive not finished yet (its image, from the
// objects read ahead through the store), and Receipt (the job's result).

// One run of a courier job: what its steps share.
struct CourierRun {
  explicit CourierRun(JobContext& c)
      : ctx(c),
        job(c.job),
        dir(CourierJobDir(c.options, c.job.id)),
        snap_file(dir + "/snapshot.json") {}

  JobContext& ctx;
  index::Job& job;
  const std::string dir;        // courier_dir/<job>
  const std::string snap_file;  // <dir>/snapshot.json
  uint64_t drive_bytes = 0;     // of each drive, as asked for; 0: one drive
  CourierProgress progress;     // as last saved, and then as this run goes on
  Snapshot snap;
  std::vector<DriveFiles> drives;        // each drive's files and where their bytes come from
  std::vector<courier::Layout> layouts;  // where they go in its image (same indexes)
  // Bytes written, of the images before the one being written and of that one (counted as
  // they reach its file).
  uint64_t written_before = 0;
  std::atomic<uint64_t> written{0};
  std::chrono::steady_clock::time_point last_save = std::chrono::steady_clock::now();
  // The node stops, or the job is no longer running (cancelled): the writer stops at its next
  // chunk.
  bool stop = false;

  // Saves the progress, drive `drive` (1..n) being written; a job no longer running stops.
  Status Save(size_t drive) {
    progress.drive = drive;
    progress.bytes_written = written_before + written.load();
    CV_TRY_ASSIGN(auto ok, ctx.SaveProgress(progress));
    if (!ok) stop = true;
    last_save = std::chrono::steady_clock::now();
    return {};
  }
  // Progress is saved about once a second.
  bool SaveDue() const {
    return std::chrono::steady_clock::now() - last_save >= std::chrono::seconds(1);
  }
};

// The job's parameters and saved progress, and its folder.
Status Start(CourierRun& run) {
  const index::Job& job = run.job;
  if (!job.device || !job.account) {
    return Err(ErrorKind::kInvalidArgument, "courier job without a device");
  }
  if (run.ctx.options.courier_dir.empty()) {
    return Err(ErrorKind::kUnavailable, "courier_dir is not set");
  }
  run.drive_bytes = FromJsonText<CourierParams>(job.params_json).drive_bytes;
  run.progress = FromJsonText<CourierProgress>(job.progress_json);
  std::error_code ec;
  fs::create_directories(run.dir, ec);
  if (ec) return Err(ErrorKind::kIOError, "create " + run.dir + ": " + ec.message());
  return {};
}

// The snapshot: the saved one if the progress names it, else a new one, with which the
// progress starts over.
Status LoadOrTakeSnapshot(CourierRun& run) {
  const std::string& named = run.progress.snapshot_sha256;
  if (!named.empty()) {
    auto text = ReadSmallFile(run.snap_file);
    if (text && ToHex(Sha256::Of(*text)) == named) {
      if (auto s = ParseSnapshot(*text)) {
        run.snap = std::move(*s);
        return {};
      }
    }
  }
  CV_TRY_ASSIGN(auto s, TakeSnapshot(run.ctx.store, *run.job.device));
  run.snap = std::move(s);
  const std::string text = SnapshotText(run.snap);
  CV_TRY(WriteFileDurably(run.snap_file, text));
  run.progress = CourierProgress{};
  run.progress.phase = "writing";
  run.progress.snapshot_sha256 = ToHex(Sha256::Of(text));
  run.progress.snapshot_at = TimeOf(run.snap.taken_ns);
  return {};
}

// Every drive's files (signed manifest included) and their layout in its image; the totals in
// the progress. Images a previous run finished (same snapshot, so the same bytes) stay.
Status PlanImages(CourierRun& run) {
  CV_TRY_ASSIGN(auto pem, CourierPrivateKey(run.ctx.options));
  CV_TRY_ASSIGN(auto drives, PlanDrives(run.snap, run.job, run.drive_bytes, pem));
  run.drives = std::move(drives);
  uint64_t bytes_total = 0;
  for (auto& d : run.drives) {
    CV_TRY_ASSIGN(auto l,
                  courier::Layout::Plan(d.files, BaseLayoutOptions(run.snap, run.drive_bytes)));
    bytes_total += l.image_bytes();
    run.layouts.push_back(std::move(l));
  }
  run.progress.objects = run.snap.objects.size();
  run.progress.bytes_total = bytes_total;
  run.progress.drives = run.layouts.size();
  std::vector<CourierImage> done;
  for (const CourierImage& img : run.progress.images) {
    struct stat st {};
    const std::string f = run.dir + "/" + img.file;
    if (::stat(f.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) == img.bytes) {
      done.push_back(img);
    }
  }
  run.progress.images = std::move(done);
  return {};
}

// Whether the progress lists image `name` as finished.
bool Finished(const CourierRun& run, const std::string& name) {
  for (const CourierImage& img : run.progress.images) {
    if (img.file == name) return true;
  }
  return false;
}

// The bytes of one drive's files as the image writer asks for them (courier::FillFn): texts
// made here, and objects read ahead through the store (which verifies every shard and
// rebuilds degraded stripes), each checked against its snapshotted SHA-256 as it goes by.
// Meanwhile the progress is saved every second, and the run stops when the node does.
class DriveFiller {
 public:
  DriveFiller(CourierRun& run, size_t d)
      : run_(run),
        d_(d),
        files_(run.drives[d]),
        prefetch_(run.ctx.store, *run.job.device, Pieces(run.layouts[d], files_),
                  run.ctx.options.courier_bytes_per_sec) {}

  Status Fill(size_t fi, uint64_t offset, std::span<uint8_t> out) {
    const Source& src = files_.sources[fi];
    if (!src.object) {
      std::memcpy(out.data(), src.text.data() + offset, out.size());
      return {};
    }
    const SnapObject& obj = *src.object;
    const std::string what = RepoPath(obj);
    // Objects of one piece were checked by the thread that read them.
    const bool check_here = obj.size > Prefetcher::kWholeBytes;
    if (cur_ != &obj) {
      cur_ = &obj;
      if (check_here) object_sha_.emplace();
    }
    size_t got = 0;
    while (got < out.size()) {
      const auto& ps = prefetch_.pieces();
      const uint64_t at = offset + got;
      while (piece_ < ps.size() &&
             (ps[piece_].object != &obj || ps[piece_].offset + ps[piece_].length <= at)) {
        ++piece_;
      }
      if (piece_ == ps.size() || ps[piece_].offset > at) {
        return Err(ErrorKind::kInternal, what + ": the writer asked for bytes out of order");
      }
      auto bytes = prefetch_.Get(piece_, [this] { return Idle(); });
      if (bytes && !*bytes) {
        run_.stop = true;
        return Err(ErrorKind::kInternal, std::string(kStopped));
      }
      if (!bytes && bytes.error().kind == ErrorKind::kNotFound) {
        // Deleted after the snapshot: the next attempt starts over with a new one.
        ::unlink(run_.snap_file.c_str());
        return Err(ErrorKind::kNotFound,
                   what + " was deleted after the job's snapshot; the job starts over");
      }
      if (!bytes) {
        return Err(bytes.error().kind, what + " unreadable: " + bytes.error().ToString());
      }
      const uint64_t in_piece = at - ps[piece_].offset;
      const size_t n =
          static_cast<size_t>(std::min<uint64_t>(out.size() - got, ps[piece_].length - in_piece));
      std::memcpy(out.data() + got, (*bytes)->data() + in_piece, n);
      got += n;
    }
    if (check_here) {
      object_sha_->Update(std::span<const uint8_t>(out.data(), out.size()));
      if (offset + out.size() == obj.size && object_sha_->Final() != obj.sha256) {
        return Err(ErrorKind::kCorruption, what + ": SHA-256 differs from the index");
      }
    }
    if (run_.ctx.stopping()) run_.stop = true;
    if (!run_.stop && run_.SaveDue()) CV_TRY(run_.Save(d_ + 1));
    if (run_.stop) return Err(ErrorKind::kInternal, std::string(kStopped));
    return {};
  }

 private:
  // The objects' pieces in the order the writer asks for them.
  static std::vector<Prefetcher::Piece> Pieces(const courier::Layout& layout,
                                               const DriveFiles& files) {
    std::vector<Prefetcher::Piece> pieces;
    for (size_t fi : layout.write_order()) {
      const SnapObject* obj = files.sources[fi].object;
      if (!obj) continue;
      const uint64_t step =
          obj->size <= Prefetcher::kWholeBytes ? obj->size : Prefetcher::kPieceBytes;
      for (uint64_t off = 0; off < obj->size; off += step) {
        pieces.push_back({obj, off, std::min(step, obj->size - off)});
      }
    }
    return pieces;
  }

  // While the writer waits for the store (or the throttle): progress every second, and the
  // node may stop. true: stop.
  bool Idle() {
    if (run_.ctx.stopping()) run_.stop = true;
    if (!run_.stop && run_.SaveDue()) {
      if (Status st = run_.Save(d_ + 1); !st) {
        Log(LogLevel::kWarn, "courier_progress_failed",
            {{"job", index::IdToHex(run_.job.id)}, {"error", st.error().ToString()}});
      }
    }
    return run_.stop;
  }

  CourierRun& run_;
  const size_t d_;
  const DriveFiles& files_;
  Prefetcher prefetch_;
  size_t piece_ = 0;                  // the piece the writer is on
  const SnapObject* cur_ = nullptr;   // the object the writer is on
  std::optional<Sha256> object_sha_;  // of cur_ so far, when the writer checks it
};

// Drive d's image: written to <name>.tmp, renamed when complete and recorded in the progress
// as finished. false: the run stopped (the partial image is gone).
Result<bool> WriteDrive(CourierRun& run, size_t d) {
  const courier::Layout& layout = run.layouts[d];
  const std::string name = ImageName(d + 1, run.layouts.size());
  const std::string tmp = run.dir + "/" + name + ".tmp";
  ::unlink(tmp.c_str());
  CV_TRY_ASSIGN(auto fd_sink, courier::FdSink::Open(tmp, /*sync=*/true));
  run.written = 0;
  HashingSink hashing(*fd_sink, run.written);
  courier::PipelinedSink pipelined(hashing);
  DriveFiller filler(run, d);
  Status w = courier::WriteImage(
      layout,
      [&](size_t fi, uint64_t offset, std::span<uint8_t> out) {
        return filler.Fill(fi, offset, out);
      },
      pipelined);
  if (w) w = pipelined.Finish();
  if (!w) {
    ::unlink(tmp.c_str());
    if (run.stop) return false;  // resumed at next start, or cancelled
    return tl::unexpected(w.error());
  }
  const std::string final_path = run.dir + "/" + name;
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
    return ErrnoError(errno, "rename " + tmp);
  }
  const CourierImage img{d + 1, name, layout.image_bytes(), ToHex(hashing.Digest()),
                         run.drives[d].files.size()};
  run.progress.images.push_back(img);
  run.written_before += layout.image_bytes();
  run.written = 0;
  CV_TRY(run.Save(d + 1));
  if (run.stop) return false;
  Log(LogLevel::kInfo, "courier_image",
      {{"job", index::IdToHex(run.job.id)}, {"file", final_path}, {"sha256", img.sha256}});
  return true;
}

// The job's result: its images in drive order, and what they hold.
CourierResult Receipt(const CourierRun& run) {
  CourierResult result;
  result.images = run.progress.images;
  std::sort(result.images.begin(), result.images.end(),
            [](const CourierImage& a, const CourierImage& b) { return a.drive < b.drive; });
  result.drives = run.layouts.size();
  result.objects = run.snap.objects.size();
  for (const auto& x : run.snap.objects) result.object_bytes += x.size;
  result.snapshot_at = TimeOf(run.snap.taken_ns);
  result.started_at = TimeOf(run.job.started_ns);
  result.finished_at = TimeOf(NowNanos());
  return result;
}

JobResult WriteImages(JobContext& ctx) {
  CourierRun run(ctx);
  CV_TRY(Start(run));
  CV_TRY(LoadOrTakeSnapshot(run));
  CV_TRY(PlanImages(run));
  for (size_t d = 0; d < run.layouts.size(); ++d) {
    if (Finished(run, ImageName(d + 1, run.layouts.size()))) {
      run.written_before += run.layouts[d].image_bytes();
      continue;
    }
    CV_TRY_ASSIGN(auto written, WriteDrive(run, d));
    if (!written) return Stopped();  // resumed at next start, or cancelled
  }
  return Done(Receipt(run));
}

// ---- the room a job needs in courier_dir ----

// Object names are 64 hex digits (restic's content addresses): no name in an image is longer.
constexpr uint64_t kMaxNameUnits = 64;

}  // namespace

// At most the bytes a courier job of device d takes in courier_dir: its snapshot.json and
// every drive image as the writer lays it out (courier::AllocatedBytesBound: image files
// are sparse). The device's counters give the data (locks, never copied, count too); the
// objects every drive repeats (config, keys, snapshots, index: few and small beside the
// data) are listed. A split plan is first fit, so no two of its drives are both at most half
// full: it has at most 2 * ceil(data / room) + 1 drives, room being what one drive holds
// beside the repeated files.
Result<uint64_t> CourierBytesNeeded(index::Txn& txn, const index::DeviceRecord& d,
                                    uint64_t drive_bytes) {
  uint64_t common_objects = 0, common_bytes = 0;
  for (index::ObjectType type : kTypes) {
    if (type == index::ObjectType::kData) continue;
    std::string after;
    while (true) {
      CV_TRY_ASSIGN(auto page, txn.ListObjects(d.id, type, after, 1000));
      for (const auto& [key, rec] : page) {
        ++common_objects;
        common_bytes += rec.size;
      }
      if (page.size() < 1000) break;
      after = page.back().first.name;
    }
  }
  const uint64_t data_objects = d.objects > common_objects ? d.objects - common_objects : 0;
  const uint64_t data_bytes = d.bytes > common_bytes ? d.bytes - common_bytes : 0;
  // SHA256SUMS lines, the README (longest drive numbers) and the signature, on every drive.
  const uint64_t line = courier::Sha256SumsLineBytes(
      RepoPath(SnapObject{index::ObjectType::kSnapshots, std::string(kMaxNameUnits, '0')}));
  Snapshot s;
  s.taken_ns = NowNanos();
  s.device_name = d.name;
  index::Job probe;
  probe.account = d.account;
  probe.device = d.id;
  const uint64_t readme = Readme(s, probe, 99999, 99999).size();
  // Folders besides the root: repo, its five object folders, and data/00..ff where a data
  // object's name starts so.
  const uint64_t dirs = 6 + std::min<uint64_t>(256, data_objects);
  courier::ContentSummary common{common_objects + 3,
                                 common_bytes + readme + 64 + (common_objects + 1) * line, dirs,
                                 kMaxNameUnits};
  courier::ContentSummary data{data_objects, data_bytes + data_objects * line, 0, kMaxNameUnits};
  // snapshot.json: per object its type, name, size and SHA-256 in JSON.
  const uint64_t snapshot = 4096 + 6 * d.name.size() + 200 * d.objects;  // \u00XX at worst
  if (drive_bytes == 0) {
    common.files += data.files;
    common.file_bytes += data.file_bytes;
    return snapshot + courier::AllocatedBytesBound(common, 0);
  }
  const uint64_t per_drive = courier::AllocatedBytesBound(common, drive_bytes);
  const uint64_t data_part = courier::AllocatedBytesBound(data, drive_bytes);
  // Minus the few clusters that where a file lands can change (a new folder, the manifest).
  const uint64_t slack = 4 * (128 << 10);
  uint64_t drives = 1;
  if (data.files > 0 && drive_bytes > per_drive + slack) {
    drives = 2 * ((data_part + drive_bytes - per_drive - slack - 1) /
                  (drive_bytes - per_drive - slack)) +
             1;
  }
  return snapshot + drives * per_drive + data_part;
}

JobResult RunCourierJob(JobContext& ctx) {
  JobResult r = WriteImages(ctx);
  if (r && *r) return r;
  // Stopped or failed. A cancelled job is never resumed: its files go. The cancel route
  // removed them already, but this thread may have written more before it stopped.
  bool cancelled = ctx.cancelled();
  if (!cancelled) {
    auto c = JobIsCancelled(ctx.store, ctx.job.id);
    cancelled = c && *c;
  }
  if (cancelled) {
    if (Status s = RemoveCourierFiles(ctx.options, ctx.job.id); !s) {
      Log(LogLevel::kWarn, "courier_cleanup_failed",
          {{"job", index::IdToHex(ctx.job.id)}, {"error", s.error().ToString()}});
    }
    return Stopped();
  }
  return r;
}

}  // namespace cv::admin::jobs
