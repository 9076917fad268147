// StoreImpl: the ObjectStore implementation shared by the write and read paths
// (object_store.cc) and the checks (checks.cc: fsck, scrub, repair). Internal to storage/.
#pragma once

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <tuple>

#include "erasure/erasure.h"
#include "storage/disk_set.h"
#include "storage/group_commit.h"
#include "storage/io/io.h"
#include "storage/record.h"
#include "storage/storage.h"

namespace cv::storage::internal {

using index::Layout;
using index::ObjectKey;
using index::ObjectRecord;
using index::ShardLoc;

constexpr uint64_t kMaxObjectBytes = 1ull << 40;
// The disk of a shard location that an index rebuild found no valid record for: no extent
// holds it; reads rebuild it and repair writes it anew.
constexpr uint16_t kLostShardDisk = UINT16_MAX;

// Payload length of every shard of stripe s.
inline uint32_t ShardLen(const ObjectRecord& r, uint32_t s) {
  const uint64_t stripe_bytes = uint64_t{r.k} * r.shard_unit;
  const uint64_t begin = uint64_t{s} * stripe_bytes;
  const uint64_t n = std::min<uint64_t>(stripe_bytes, r.size - begin);
  return static_cast<uint32_t>((n + r.k - 1) / r.k);
}

inline uint32_t StripeCount(uint64_t size, int k, uint32_t unit) {
  const uint64_t stripe_bytes = uint64_t(k) * unit;
  return static_cast<uint32_t>((size + stripe_bytes - 1) / stripe_bytes);
}

// Payload bytes of shard location `shard_index` of an object (see FORMAT.md).
inline uint32_t PayloadLen(const ObjectRecord& r, size_t shard_index) {
  return r.layout == Layout::kReplicated
             ? static_cast<uint32_t>(r.size)
             : ShardLen(r, static_cast<uint32_t>(shard_index / (r.k + r.m)));
}

inline std::string Describe(const ObjectKey& key) {
  return index::IdToHex(key.device) + "/" + index::ObjectTypeName(key.type) + "/" + key.name;
}


// Dead/live accounting of shard records in the extents table.
inline Status AddExtentBytes(index::WriteTxn& txn, const ShardLoc& loc, uint64_t capacity,
                      int64_t live_delta, int64_t dead_delta) {
  CV_TRY_ASSIGN(auto cur, txn.GetExtent(loc.disk, loc.extent));
  index::ExtentRecord rec = cur.value_or(index::ExtentRecord{capacity, 0, 0});
  rec.live_bytes = static_cast<uint64_t>(static_cast<int64_t>(rec.live_bytes) + live_delta);
  rec.dead_bytes = static_cast<uint64_t>(static_cast<int64_t>(rec.dead_bytes) + dead_delta);
  return txn.PutExtent(loc.disk, loc.extent, rec);
}

// Disk order of shard locations: the canonical order of a replicated object's copies.
inline bool ShardLocLess(const ShardLoc& a, const ShardLoc& b) {
  return std::tie(a.disk, a.extent, a.offset) < std::tie(b.disk, b.extent, b.offset);
}

// A record header found by scanning an extent (only the header is checked).
struct ScannedRecord {
  ObjectKey key;
  uint64_t offset = 0;
  uint64_t bytes = 0;  // the whole record, padded
  bool tombstone = false;
  RecordHeader header;
};
// Finds every valid record header in an extent, in 4096-byte steps (a record skips its
// length); a header whose record would end past ext.capacity is not one. Defined in
// compaction.cc.
Result<std::vector<ScannedRecord>> ScanExtent(Env* env, Extent& ext);

class StoreImpl final : public ObjectStore {
 public:
  StoreImpl(StoreOptions opts, std::unique_ptr<Env> owned_env, Env* env,
            std::unique_ptr<erasure::Codec> codec, std::unique_ptr<index::Index> idx)
      : opts_(std::move(opts)),
        owned_env_(std::move(owned_env)),
        env_(env),
        codec_(std::move(codec)),
        index_(std::move(idx)),
        disks_(env_, opts_.disks, opts_.extent_bytes, opts_.try_direct) {}

  Status Init() {
    CV_TRY_ASSIGN(auto txn, index_->BeginRead());
    auto node = txn->GetMeta("node_id");
    auto profile = txn->GetMeta("erasure_profile");
    auto ndisks = txn->GetMeta("disk_count");
    auto table = txn->GetMeta(kDiskTableMeta);
    txn.reset();
    CV_TRY(node);
    CV_TRY(table);
    const std::string want_profile = std::to_string(opts_.k) + "+" + std::to_string(opts_.m);
    if (!node->has_value()) {
      node_id_ = RandomHex(16);
      disks_.Open(node_id_, /*create=*/true);
      CV_TRY(index_->Update([&](index::WriteTxn& w) -> Status {
        CV_TRY(w.PutMeta("node_id", node_id_));
        CV_TRY(w.PutMeta("erasure_profile", want_profile));
        return SaveDiskTable(w, std::nullopt);
      }));
      Log(LogLevel::kInfo, "node_created", {{"node_id", node_id_}, {"profile", want_profile}});
    } else {
      node_id_ = **node;
      if (!profile || profile->value_or("") != want_profile) {
        return Err(ErrorKind::kInvalidArgument,
                   "erasure profile " + want_profile + " differs from the node's " +
                       (profile ? profile->value_or("?") : "?"));
      }
      if (table->has_value()) {
        CV_TRY(ApplyDiskTable(**table));
      } else if (!ndisks || ndisks->value_or("") != std::to_string(opts_.disks.size())) {
        // A node from before the disk table: its disks are exactly the config's.
        return Err(ErrorKind::kInvalidArgument, "number of disks differs from the node's");
      }
      disks_.Open(node_id_, /*create=*/false);
    }
    Log(LogLevel::kInfo, "store_open",
        {{"node_id", node_id_},
         {"disks", std::to_string(disks_.size())},
         {"healthy", std::to_string(disks_.HealthyCount())},
         {"io", env_->Name()}});
    return {};
  }
  // The node's disks in the index: meta "disk_table", one line per position,
  // "<state>\t<path>\n", and "disk_count". (disks.cc)
  static constexpr std::string_view kDiskTableMeta = "disk_table";
  // A row of the table that differs from the disks in memory: disk `d` (size(): a disk about
  // to be added) in `state` at `path`.
  struct DiskRow {
    size_t d = 0;
    DiskState state = DiskState::kActive;
    std::string path;
  };
  Status SaveDiskTable(index::WriteTxn& w, const std::optional<DiskRow>& change);
  // At open: checks the config's disks against the table, adds the disks added while an
  // earlier run served and sets every disk's state.
  Status ApplyDiskTable(const std::string& table);
  // One transaction: the table with `change` (if any), then also(w, after) with after's live
  // bytes read in that transaction. `committing` (if given) is true when an error came from
  // the commit itself, whose outcome is then unknown (DiskSet::Add).
  Status CommitDiskChange(const std::optional<DiskRow>& change, DiskStatus after,
                          const DiskChangeFn& also, bool* committing = nullptr);
  using ObjectStore::AddDisk;
  Result<size_t> AddDisk(const std::string& path, const DiskChangeFn& also) override;
  using ObjectStore::SetDiskState;
  Status SetDiskState(size_t d, DiskState state, const DiskChangeFn& also) override;
  Result<DrainReport> Drain(size_t d, const DrainOptions& options) override;
  // Deletes the extent files of disk d that the index references nothing in (drain's end).
  void RetireUnreferenced(size_t d, DrainReport& rep);

  Result<std::unique_ptr<Writer>> BeginPut(const ObjectKey& key, uint64_t size) override;
  // writer.cc
  void CommitAsync(std::unique_ptr<Writer> writer, std::function<Status(index::WriteTxn&)> also,
                   std::function<void(Result<ObjectInfo>)> done) override;
  void UpdateAsync(std::function<Status(index::WriteTxn&)> fn,
                   std::function<void(Status)> done) override;
  void WaitForCommits() override;
  Result<std::optional<ObjectInfo>> Head(const ObjectKey& key) override {
    CV_TRY_ASSIGN(auto rec, Lookup(key));
    if (!rec.has_value()) return std::optional<ObjectInfo>();
    return std::optional<ObjectInfo>(Info(key, *rec));
  }
  Result<std::unique_ptr<Reader>> Open(const ObjectKey& key, uint64_t offset,
                                       uint64_t length) override;
  Status Delete(const ObjectKey& key) override {
    CV_TRY_ASSIGN(auto cur, Lookup(key));
    if (!cur.has_value()) return Err(ErrorKind::kNotFound, "no such object");
    CV_TRY(WriteTombstone(key, NowNanos()));
    return index_->Update([&](index::WriteTxn& txn) -> Status {
      CV_TRY_ASSIGN(auto rec, txn.GetObject(key));
      if (!rec.has_value()) return Err(ErrorKind::kNotFound, "no such object");
      CV_TRY(txn.DeleteObject(key));
      return AccountRecords(txn, key, *rec, /*live=*/false);
    });
  }
  Result<std::vector<ObjectInfo>> List(const index::Id& device,
                                       std::optional<index::ObjectType> type,
                                       std::string_view start_after, size_t limit) override {
    CV_TRY_ASSIGN(auto txn, index_->BeginRead());
    CV_TRY_ASSIGN(auto rows, txn->ListObjects(device, type, start_after, limit));
    std::vector<ObjectInfo> out;
    out.reserve(rows.size());
    for (const auto& [k, r] : rows) out.push_back(Info(k, r));
    return out;
  }
  Status WriteDeviceTombstone(const index::Id& device) override {
    return WriteTombstone(DeviceTombstoneKey(device), NowNanos());
  }
  Result<PurgeBatch> PurgeObjects(
      const index::Id& device, size_t limit,
      const std::function<Status(index::WriteTxn&, const PurgeBatch&)>& also) override {
    PurgeBatch batch;
    CV_TRY(index_->Update([&](index::WriteTxn& txn) -> Status {
      batch = PurgeBatch{};
      // Extent accounting summed per extent: a batch touches few extents.
      std::map<std::pair<uint16_t, uint32_t>, int64_t> dead;
      CV_TRY_ASSIGN(
          auto n, txn.DeleteDeviceObjects(
                      device, limit, [&](const ObjectKey& key, const ObjectRecord& rec) -> Status {
                        for (size_t i = 0; i < rec.shards.size(); ++i) {
                          if (rec.shards[i].disk == kLostShardDisk) continue;  // no extent holds it
                          dead[{rec.shards[i].disk, rec.shards[i].extent}] +=
                              static_cast<int64_t>(RecordBytes(key, PayloadLen(rec, i)));
                        }
                        batch.bytes += rec.size;
                        return {};
                      }));
      batch.objects = n;
      for (const auto& [de, bytes] : dead) {
        CV_TRY(AddExtentBytes(txn, ShardLoc{de.first, de.second, 0}, opts_.extent_bytes, -bytes,
                              bytes));
      }
      return also(txn, batch);
    }));
    return batch;
  }
  using ObjectStore::Fsck;
  Result<FsckReport> Fsck(
      bool fix, const std::function<Status(index::WriteTxn&, const FsckReport&)>& also) override;
  // Fsck's walk over one snapshot; with `fix`, corrects through it (checks.cc).
  Status FsckIn(index::Txn& txn, index::WriteTxn* fix, FsckReport& rep);
  using ObjectStore::Scrub;
  Result<ScrubReport> Scrub(const ScrubOptions& options) override;
  Result<RepairReport> Repair(bool include_failed_disks) override;
  Result<CompactReport> Compact(const CompactOptions& options) override;
  // Walks the objects after `start` in key order, a batch per read snapshot (short read
  // transactions: map growth is never held up). visit() does the work (false: stop); then, at
  // each batch's end and at least every second, report(last key done) (false: stop). True
  // when the walk reached the end. (checks.cc)
  Result<bool> WalkObjects(const std::optional<ObjectKey>& start,
                           const std::function<bool(const ObjectKey&, const ObjectRecord&)>& visit,
                           const std::function<bool(const ObjectKey&)>& report);
  // Copies the live records and tombstones of one extent (holding `live` live bytes) to its
  // disk's active extent; false, having written nothing, when that would free no more than one
  // maximal record (an extent full of tombstones). See compaction.cc.
  Result<bool> MoveLiveRecords(size_t d, uint32_t id, uint64_t live, const CompactOptions& options,
                               CompactReport& rep);
  // The largest shard record this store can write (compaction.cc).
  uint64_t MaxRecordBytes() const;
  // Replaces every object and extent record of the index with what the extents hold.
  Status RebuildObjects(RebuildReport& rep);
  // Writes and syncs m+1 copies of a tombstone for `key` (see FORMAT.md).
  Status WriteTombstone(const ObjectKey& key, int64_t when_ns);
  // Repairs one stripe; false when there was nothing to do or the object is gone. With
  // `evacuate`, a good shard on that disk counts as one to rewrite elsewhere (drain).
  Result<bool> RepairStripe(const ObjectKey& key, uint32_t stripe, RepairReport& rep,
                            std::optional<size_t> evacuate = std::nullopt);

  // Picks `count` distinct healthy disks, rotating the start so that load spreads and
  // skipping `avoid`, and reserves `len` bytes on each.
  Result<std::vector<Placement>> Place(size_t count, uint64_t len, const std::set<size_t>& avoid,
                                       std::vector<size_t>* disks_out) {
    const size_t n = disks_.size();
    const size_t start = placement_cursor_.fetch_add(1) % n;
    std::vector<Placement> out;
    std::vector<size_t> full;
    for (size_t i = 0; i < n && out.size() < count; ++i) {
      const size_t d = (start + i) % n;
      if (!disks_.placeable(d) || avoid.count(d)) continue;
      auto p = disks_.Reserve(d, len);
      if (!p) {
        if (p.error().kind == ErrorKind::kNoSpace) full.push_back(d);
        disks_.ReportError(d, p.error());
        continue;
      }
      out.push_back(std::move(*p));
      disks_out->push_back(d);
    }
    if (out.size() < count) {
      if (!full.empty()) {
        std::sort(full.begin(), full.end());
        return tl::unexpected(disks_.NameFullDisks(
            Error{ErrorKind::kNoSpace, 0, "not enough data disks with free space"}, full));
      }
      return Err(ErrorKind::kUnavailable,
                 "not enough healthy data disks (" + std::to_string(PlaceableCount()) +
                     " healthy and active, " + std::to_string(count) + " needed)");
    }
    return out;
  }
  size_t PlaceableCount() const {
    size_t n = 0;
    for (size_t d = 0; d < disks_.size(); ++d) n += disks_.placeable(d) ? 1 : 0;
    return n;
  }
  index::Index& Index() override { return *index_; }
  Result<std::unique_ptr<AsyncRing>> NewAsyncRing() override { return env_->NewAsyncRing(); }
  StoreStats Stats() override {
    StoreStats s;
    s.reconstructed_reads = reconstructed_.load();
    s.corrupt_shards = corrupt_.load();
    {
      std::lock_guard lock(repair_mu_);
      s.pending_repairs = repair_queue_.size();
    }
    std::vector<uint64_t> live(disks_.size(), 0);
    if (auto txn = index_->BeginRead()) {
      (void)(*txn)->ForEachExtent([&](uint16_t disk, uint32_t, const index::ExtentRecord& e) {
        if (disk < live.size()) live[disk] += e.live_bytes;
        return true;
      });
    }
    for (size_t d = 0; d < disks_.size(); ++d) s.disks.push_back(StatusOfDisk(d, live[d]));
    s.io_engine = env_->Name();
    const IoCounters io = env_->Counters();
    s.io_requests = io.requests;
    s.io_registered_requests = io.registered_requests;
    s.io_async_requests = io.async_requests;
    const GroupCommit::Counters c = commits_->counters();
    s.commit_groups = c.groups;
    s.commit_jobs = c.jobs;
    s.commit_sync_ns = c.sync_ns;
    s.commit_index_ns = c.index_ns;
    return s;
  }
  // Disk d as Stats reports it, given its live bytes. d may be a disk being added (its slot
  // is set before size() counts it).
  DiskStatus StatusOfDisk(size_t d, uint64_t live_bytes) {
    DiskStatus ds;
    ds.position = d;
    ds.path = disks_.path(d);
    ds.state = disks_.state(d);
    ds.live_bytes = live_bytes;
    if (disks_.healthy(d)) (void)disks_.CheckPresent(d);  // notices a vanished directory
    ds.failed = !disks_.healthy(d);
    ds.errors = disks_.errors(d);
    if (auto st = env_->StatFs(ds.path)) {
      ds.total_bytes = st->total_bytes;
      ds.free_bytes = st->free_bytes;
    }
    return ds;
  }
  bool Ready() override {
    if (PlaceableCount() < static_cast<size_t>(opts_.k + opts_.m)) return false;
    return index_->BeginRead().has_value();
  }

  // ---- shared with Writer and Reader ----
  Result<std::optional<ObjectRecord>> Lookup(const ObjectKey& key) {
    CV_TRY_ASSIGN(auto txn, index_->BeginRead());
    return txn->GetObject(key);
  }
  static ObjectInfo Info(const ObjectKey& key, const ObjectRecord& r) {
    return ObjectInfo{key, r.size, r.created_ns, r.sha256};
  }
  // Adds (live) or moves to dead (!live) the bytes of every record of an object.
  Status AccountRecords(index::WriteTxn& txn, const ObjectKey& key, const ObjectRecord& r,
                        bool live) {
    for (size_t i = 0; i < r.shards.size(); ++i) {
      if (r.shards[i].disk == kLostShardDisk) continue;  // no extent holds it
      const int64_t b = static_cast<int64_t>(RecordBytes(key, PayloadLen(r, i)));
      CV_TRY(AddExtentBytes(txn, r.shards[i], opts_.extent_bytes, live ? b : -b, live ? 0 : b));
    }
    return {};
  }
  using RepairItem = std::tuple<index::Id, uint8_t, std::string, uint32_t>;
  void QueueRepair(const ObjectKey& key, uint32_t stripe) {
    std::lock_guard lock(repair_mu_);
    if (repair_queue_.size() < 1000000) {
      repair_queue_.emplace(key.device, static_cast<uint8_t>(key.type), key.name, stripe);
    }
  }

  // One shard record to read into `buf` (RecordBytes(key, payload_len) bytes, aligned);
  // after ReadShards, `payload` is its verified payload inside buf, or why not.
  struct ShardRead {
    const ShardLoc* loc = nullptr;
    uint32_t stripe = 0;
    uint8_t shard = 0;
    uint32_t payload_len = 0;
    uint8_t* buf = nullptr;
    Result<std::span<const uint8_t>> payload = Err(ErrorKind::kInternal, "shard not read");
  };
  // The I/O of a batch of ShardReads, between PrepareShardReads and FinishShardReads.
  struct ShardReadIo {
    std::vector<IoRequest> reqs;
    std::vector<size_t> of;  // reqs[j] reads reads[of[j]]
    std::vector<std::shared_ptr<Extent>> held;  // open until the batch is done (compaction)
  };
  // Reads the records in one I/O batch (concurrently, one request per record) and verifies
  // each: header, then XXH3. I/O errors count against the record's disk.
  void ReadShards(const ObjectKey& key, const ObjectRecord& r, std::span<ShardRead> reads) {
    ShardReadIo io;
    PrepareShardReads(key, reads, io);
    if (io.reqs.empty()) return;
    (void)env_->Execute(io.reqs);  // every request has its own result
    FinishShardReads(key, r, reads, io);
  }
  // The requests of a ReadShards (the caller runs them, e.g. on an AsyncRing); a record
  // whose extent cannot be opened gets its error now.
  void PrepareShardReads(const ObjectKey& key, std::span<ShardRead> reads, ShardReadIo& io) {
    io.reqs.reserve(reads.size());
    io.of.reserve(reads.size());
    io.held.reserve(reads.size());
    for (size_t i = 0; i < reads.size(); ++i) {
      ShardRead& s = reads[i];
      auto ext = disks_.Get(s.loc->disk, s.loc->extent);
      if (!ext) {
        s.payload = tl::unexpected(ext.error());
        continue;
      }
      io.reqs.push_back(IoRequest{IoRequest::Op::kRead, (*ext)->file.get(), s.loc->offset, s.buf,
                                  RecordBytes(key, s.payload_len)});
      io.of.push_back(i);
      io.held.push_back(std::move(*ext));
    }
  }
  // After the requests ran: counts errors against disks and verifies every record read.
  void FinishShardReads(const ObjectKey& key, const ObjectRecord& r, std::span<ShardRead> reads,
                        const ShardReadIo& io) {
    for (size_t j = 0; j < io.reqs.size(); ++j) {
      ShardRead& s = reads[io.of[j]];
      const IoRequest& req = io.reqs[j];
      if (req.result < 0) {
        Status failed = detail::BatchStatus(std::span(&req, 1));
        disks_.ReportError(s.loc->disk, failed.error());
        s.payload = tl::unexpected(failed.error());
        continue;
      }
      disks_.ReportSuccess(s.loc->disk);
      s.payload = VerifyShard(key, r, s, static_cast<uint64_t>(req.result));
    }
  }

  // Reads one shard record and verifies it. On success `payload` points into buf.
  Result<std::span<const uint8_t>> ReadShard(const ObjectKey& key, const ObjectRecord& r,
                                             const ShardLoc& loc, uint32_t stripe, uint8_t shard,
                                             uint32_t payload_len, uint8_t* buf) {
    ShardRead one{&loc, stripe, shard, payload_len, buf};
    ReadShards(key, r, std::span(&one, 1));
    return std::move(one.payload);
  }

 private:
  // Checks a record read into s.buf (`got` bytes of it) against what the index expects.
  Result<std::span<const uint8_t>> VerifyShard(const ObjectKey& key, const ObjectRecord& r,
                                               const ShardRead& s, uint64_t got) {
    auto bad = [&](const char* why) {
      corrupt_.fetch_add(1);
      Log(LogLevel::kWarn, "shard_corrupt",
          {{"object", key.name}, {"stripe", std::to_string(s.stripe)},
           {"shard", std::to_string(s.shard)}, {"disk", disks_.path(s.loc->disk)}, {"why", why}});
      return Err(ErrorKind::kCorruption, why);
    };
    const uint64_t len = RecordBytes(key, s.payload_len);
    if (got < len) return bad("short record");
    auto h = DecodeHeader(std::span<const uint8_t>(s.buf, len));
    if (!h) return bad("bad header");
    if (!(h->key == key) || h->stripe != s.stripe || h->payload_len != s.payload_len ||
        h->object_size != r.size || (r.layout == Layout::kErasure && h->shard != s.shard)) {
      return bad("header names another shard");
    }
    std::span<const uint8_t> payload(s.buf + HeaderBytes(key), s.payload_len);
    if (PayloadChecksum(payload) != h->payload_xxh3) return bad("payload checksum mismatch");
    return payload;
  }

 public:
  StoreOptions opts_;
  std::unique_ptr<Env> owned_env_;
  Env* env_;
  std::unique_ptr<erasure::Codec> codec_;
  std::unique_ptr<index::Index> index_;
  DiskSet disks_;
  std::string node_id_;
  std::atomic<uint64_t> reconstructed_{0}, corrupt_{0};
  std::atomic<uint64_t> placement_cursor_{0};
  std::mutex repair_mu_;
  std::set<RepairItem> repair_queue_;
  std::mutex disk_admin_mu_;  // one AddDisk / SetDiskState at a time
  // Extents that compaction found not worth rewriting (tombstones fill them), with their
  // live bytes then: skipped until those change.
  std::mutex compact_mu_;
  std::map<std::pair<uint16_t, uint32_t>, uint64_t> tombstone_full_;
  // The commit thread (last: it stops, running what is queued, before the rest goes).
  std::unique_ptr<GroupCommit> commits_ = std::make_unique<GroupCommit>(disks_, *index_);
};

}  // namespace cv::storage::internal
