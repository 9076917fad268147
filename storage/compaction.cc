// Compaction: give the space of deleted (and never-committed) shard records back to the
// file system. See ObjectStore::Compact in storage.h for the contract.
//
// An extent only ever receives new records while it is its disk's active extent; after that
// its set of live records can only shrink (deletes, repairs, compaction moving them away).
// So an extent that is not active, that nobody holds, and in which the index references
// nothing can be deleted.
#include <chrono>
#include <thread>

#include "storage/store_impl.h"

namespace cv::storage::internal {
namespace {

using Candidate = ScannedRecord;

}  // namespace

Result<std::vector<ScannedRecord>> ScanExtent(Env* env, Extent& ext) {
  constexpr size_t kChunk = 1 << 20;
  AlignedBuffer buf = AllocateAligned(kChunk);
  std::vector<Candidate> out;
  uint64_t off = 0;
  while (off + kRecordAlign <= ext.capacity) {
    IoRequest req{IoRequest::Op::kRead, ext.file.get(), off, buf.get(),
                  static_cast<size_t>(std::min<uint64_t>(kChunk, ext.capacity - off))};
    CV_TRY(env->Execute(std::span(&req, 1)));
    if (req.result <= 0) break;
    const uint64_t got = static_cast<uint64_t>(req.result) / kRecordAlign * kRecordAlign;
    uint64_t at = 0;
    while (at < got) {
      auto h = DecodeHeader(std::span<const uint8_t>(buf.get() + at, got - at));
      if (!h) {
        at += kRecordAlign;
        continue;
      }
      const uint64_t len = RecordBytes(h->key, h->payload_len);
      if (off + at + len > ext.capacity) {
        // Writers never reserve past the capacity: this is garbage that happens to checksum,
        // and a reader trusting it would allocate and read up to 4 GiB (payload_len).
        at += kRecordAlign;
        continue;
      }
      out.push_back(ScannedRecord{h->key, off + at, len, h->tombstone(), *h});
      at += len;  // may run past this chunk: the next read starts after the record
    }
    off += std::max<uint64_t>(at, kRecordAlign);
  }
  return out;
}

namespace {

// Where a record at (d, id, offset) sits in an object's record, or -1.
ptrdiff_t FindLoc(const ObjectRecord& r, size_t d, uint32_t id, uint64_t offset) {
  for (size_t j = 0; j < r.shards.size(); ++j) {
    const ShardLoc& loc = r.shards[j];
    if (loc.disk == d && loc.extent == id && loc.offset == offset) return static_cast<ptrdiff_t>(j);
  }
  return -1;
}

}  // namespace

Result<bool> StoreImpl::MoveLiveRecords(size_t d, uint32_t id, uint64_t live,
                                        const CompactOptions& options, CompactReport& rep) {
  CV_TRY_ASSIGN(auto ext, disks_.Get(d, id));
  CV_TRY_ASSIGN(auto found, ScanExtent(env_, *ext));
  // Tombstones are carried forward like live records but are not in the index's accounting:
  // an extent that holds little besides them would be copied into one just as full, at every
  // pass. Only a rewrite that frees more than one maximal record is worth its I/O.
  uint64_t tombstone_bytes = 0;
  for (const Candidate& c : found) tombstone_bytes += c.tombstone ? c.bytes : 0;
  if (ext->capacity - std::min(ext->capacity, live + tombstone_bytes) < MaxRecordBytes()) {
    return false;
  }
  const auto started = std::chrono::steady_clock::now();
  uint64_t moved_bytes = 0;

  // Copies are written one by one but made durable and indexed in batches: one grouped
  // fdatasync and one LMDB transaction per kBatch records.
  constexpr size_t kBatch = 64;
  struct Move {
    ObjectKey key;
    ObjectRecord was;
    size_t slot;
    ShardLoc fresh;
    uint64_t bytes;
  };
  std::vector<Move> batch;
  std::vector<std::pair<std::shared_ptr<Extent>, uint64_t>> to_sync;
  // With writes_ok == false (a copy failed) nothing of the batch is switched.
  auto flush = [&](bool writes_ok) -> Status {
    if (batch.empty() && to_sync.empty()) return {};
    Status synced = writes_ok ? disks_.Sync(to_sync)
                              : Status(Err(ErrorKind::kIOError, "a compaction copy failed"));
    if (batch.empty()) {  // tombstones only: nothing to index
      to_sync.clear();
      return synced;
    }
    CV_TRY(index_->Update([&](index::WriteTxn& txn) -> Status {
      for (const Move& mv : batch) {
        CV_TRY_ASSIGN(auto now, txn.GetObject(mv.key));
        const int64_t b = static_cast<int64_t>(mv.bytes);
        // Switch only if the object is the same one (not deleted and re-uploaded) and this
        // slot still points where we copied from; other slots may have moved in this batch.
        const bool same = now.has_value() && now->created_ns == mv.was.created_ns &&
                          now->shards.size() == mv.was.shards.size() &&
                          now->shards[mv.slot] == mv.was.shards[mv.slot];
        if (!synced || !same) {
          CV_TRY(AddExtentBytes(txn, mv.fresh, opts_.extent_bytes, 0, b));  // copy is garbage
          continue;
        }
        ObjectRecord next = *now;
        next.shards[mv.slot] = mv.fresh;
        CV_TRY(AddExtentBytes(txn, mv.was.shards[mv.slot], opts_.extent_bytes, -b, b));
        CV_TRY(AddExtentBytes(txn, mv.fresh, opts_.extent_bytes, b, 0));
        CV_TRY(txn.PutObject(mv.key, next));
      }
      return {};
    }));
    batch.clear();
    to_sync.clear();
    return synced;
  };

  for (const Candidate& c : found) {
    if (c.tombstone) {
      // Carried forward while its extent goes: an index rebuild needs it (FORMAT.md).
      AlignedBuffer buf = AllocateAligned(c.bytes);
      IoRequest rd{IoRequest::Op::kRead, ext->file.get(), c.offset, buf.get(), c.bytes};
      CV_TRY(env_->Execute(std::span(&rd, 1)));
      auto h = DecodeHeader(std::span<const uint8_t>(buf.get(), c.bytes));
      if (!h || !h->tombstone()) continue;  // changed under us: not a tombstone any more
      auto placed = disks_.Reserve(d, c.bytes);
      if (!placed) {
        CV_TRY(flush(true));
        return tl::unexpected(placed.error());
      }
      IoRequest w{IoRequest::Op::kWrite, placed->extent->file.get(), placed->offset, buf.get(),
                  c.bytes};
      if (Status ws = env_->Execute(std::span(&w, 1)); !ws) {
        placed->extent->poisoned = true;
        (void)flush(false);
        return tl::unexpected(ws.error());
      }
      to_sync.emplace_back(placed->extent, placed->extent->write_seq.fetch_add(1) + 1);
      continue;
    }
    CV_TRY_ASSIGN(auto cur, Lookup(c.key));
    if (!cur.has_value()) continue;
    const ObjectRecord& r = *cur;
    const ptrdiff_t j = FindLoc(r, d, id, c.offset);
    if (j < 0) continue;  // dead record
    const bool replicated = r.layout == Layout::kReplicated;
    const size_t width = replicated ? r.shards.size() : size_t{r.k} + r.m;
    const uint32_t stripe = static_cast<uint32_t>(j / width);
    const uint8_t shard = replicated ? 0 : static_cast<uint8_t>(j % width);
    const uint32_t len = PayloadLen(r, static_cast<size_t>(j));
    const uint64_t rb = RecordBytes(c.key, len);
    AlignedBuffer buf = AllocateAligned(rb);
    if (!ReadShard(c.key, r, r.shards[j], stripe, shard, len, buf.get())) {
      // Never copy damage: let repair rebuild this shard elsewhere; the extent stays for now.
      QueueRepair(c.key, stripe);
      rep.problems.push_back(Describe(c.key) + ": damaged record left for repair");
      continue;
    }
    auto placed = disks_.Reserve(d, rb);  // same disk: a stripe keeps its distinct disks
    if (!placed) {
      CV_TRY(flush(true));
      return tl::unexpected(placed.error());
    }
    IoRequest w{IoRequest::Op::kWrite, placed->extent->file.get(), placed->offset, buf.get(), rb};
    const ShardLoc fresh{static_cast<uint16_t>(d), placed->extent->id, placed->offset};
    batch.push_back(Move{c.key, r, static_cast<size_t>(j), fresh, rb});
    if (Status ws = env_->Execute(std::span(&w, 1)); !ws) {
      placed->extent->poisoned = true;
      (void)flush(false);
      return tl::unexpected(ws.error());
    }
    to_sync.emplace_back(placed->extent, placed->extent->write_seq.fetch_add(1) + 1);
    ++rep.records_moved;
    rep.bytes_moved += rb;
    moved_bytes += rb;
    if (batch.size() >= kBatch) CV_TRY(flush(true));
    if (options.max_bytes_per_sec > 0) {
      const auto due = started + std::chrono::duration<double>(double(moved_bytes) /
                                                               double(options.max_bytes_per_sec));
      std::this_thread::sleep_until(due);
    }
  }
  CV_TRY(flush(true));
  return true;
}

// The most bytes any one shard record can take: an erasure shard (shard_unit) or a whole
// one-stripe object stored as m+1 copies, which BeginPut picks only when the copies cost no
// more than the k+m shards: (m+1)*RecordBytes(size) <= (k+m)*RecordBytes(size/k), and
// size/k <= shard_unit.
uint64_t StoreImpl::MaxRecordBytes() const {
  const ObjectKey longest{index::Id{}, index::ObjectType::kData, std::string(64, '0')};
  const uint64_t shard = RecordBytes(longest, opts_.shard_unit);
  const uint64_t copy = uint64_t(opts_.k + opts_.m) * shard / uint64_t(opts_.m + 1);
  return std::max(shard, copy);
}

Result<CompactReport> StoreImpl::Compact(const CompactOptions& options) {
  CompactReport rep;
  // An extent stops taking records when the next one does not fit, so every extent but the
  // active one ends in unused space of up to one record; copies of live records leave such a
  // tail behind them too. Rewriting an extent whose non-live space is no more than that frees
  // nothing, and with a live threshold near 1 or small extents it would rewrite the same
  // records at every pass: such an extent is left alone, whatever max_live_ratio says.
  const uint64_t max_record = MaxRecordBytes();
  std::map<std::pair<uint16_t, uint32_t>, index::ExtentRecord> recorded;
  {
    CV_TRY_ASSIGN(auto txn, index_->BeginRead());
    CV_TRY(txn->ForEachExtent([&](uint16_t disk, uint32_t ext, const index::ExtentRecord& e) {
      recorded[{disk, ext}] = e;
      return true;
    }));
  }
  auto live_of = [&](size_t d, uint32_t id) -> Result<uint64_t> {
    CV_TRY_ASSIGN(auto txn, index_->BeginRead());
    CV_TRY_ASSIGN(auto e, txn->GetExtent(static_cast<uint16_t>(d), id));
    return e.has_value() ? e->live_bytes : 0;
  };
  for (size_t d = 0; d < disks_.size(); ++d) {
    // A draining disk takes no new records, so nothing can be carried forward on it: its
    // drain deletes its extents once they hold nothing live.
    if (!disks_.placeable(d)) continue;
    auto ids = disks_.ExtentIds(d);
    if (!ids) {
      rep.problems.push_back(disks_.path(d) + ": " + ids.error().ToString());
      continue;
    }
    {  // forget extents that are gone (retired, or their disk drained)
      const std::set<uint32_t> present(ids->begin(), ids->end());
      std::lock_guard lock(compact_mu_);
      std::erase_if(tombstone_full_, [&](const auto& kv) {
        return kv.first.first == d && !present.contains(kv.first.second);
      });
    }
    for (uint32_t id : *ids) {
      if (disks_.IsActive(d, id)) continue;
      ++rep.extents_examined;
      auto it = recorded.find({static_cast<uint16_t>(d), id});
      const uint64_t live = it == recorded.end() ? 0 : it->second.live_bytes;
      const uint64_t capacity = it == recorded.end() ? opts_.extent_bytes : it->second.capacity;
      if (double(live) > options.max_live_ratio * double(capacity)) continue;
      if (live > 0 && capacity - std::min(capacity, live) < max_record) continue;  // tail rule
      {
        // Found full of tombstones (and live records) at this live count before: an extent
        // that is not active never changes, so scanning it again would find the same.
        std::lock_guard lock(compact_mu_);
        auto seen = tombstone_full_.find({static_cast<uint16_t>(d), id});
        if (seen != tombstone_full_.end() && seen->second == live) continue;
      }
      if (live > 0) {  // one line per rewrite
        Log(LogLevel::kInfo, "compaction_extent",
            {{"disk", disks_.path(d)}, {"extent", std::to_string(id)},
             {"live_bytes", std::to_string(live)}, {"capacity", std::to_string(capacity)}});
      }
      {  // even with nothing live: tombstones in it are carried forward
        auto moved = MoveLiveRecords(d, id, live, options, rep);
        if (!moved) {
          rep.problems.push_back(disks_.path(d) + " extent " + std::to_string(id) + ": " +
                                 moved.error().ToString());
          continue;
        }
        if (!*moved) {
          std::lock_guard lock(compact_mu_);
          tombstone_full_[{static_cast<uint16_t>(d), id}] = live;
          continue;
        }
      }
      auto now_live = live_of(d, id);
      if (!now_live || *now_live != 0) continue;
      auto ext = disks_.Get(d, id);
      const uint64_t size = ext ? (*ext)->capacity : 0;
      ext = Err(ErrorKind::kInternal, "released");  // drop our reference before Retire
      auto retired = disks_.Retire(d, id);
      if (!retired) {
        rep.problems.push_back(disks_.path(d) + " extent " + std::to_string(id) + ": " +
                               retired.error().ToString());
        continue;
      }
      if (!*retired) continue;  // busy: next time
      ++rep.extents_removed;
      rep.bytes_reclaimed += size;
      if (it != recorded.end()) {
        CV_TRY(index_->Update([&](index::WriteTxn& txn) -> Status {
          CV_TRY_ASSIGN(auto e, txn.GetExtent(static_cast<uint16_t>(d), id));
          if (!e.has_value()) return {};
          return txn.DeleteExtent(static_cast<uint16_t>(d), id);
        }));
      }
    }
  }
  // Records of extents whose files are gone (a crash between removing the file and this
  // record) carry no live bytes: drop them.
  for (const auto& entry : recorded) {
    // Not a structured binding: clang 14 cannot capture one in the lambda below.
    const auto& de = entry.first;
    const auto& e = entry.second;
    if (e.live_bytes != 0 || !disks_.healthy(de.first)) continue;
    auto ids = disks_.ExtentIds(de.first);
    if (!ids || std::find(ids->begin(), ids->end(), de.second) != ids->end()) continue;
    CV_TRY(index_->Update([&](index::WriteTxn& txn) -> Status {
      CV_TRY_ASSIGN(auto cur, txn.GetExtent(de.first, de.second));
      if (!cur.has_value() || cur->live_bytes != 0) return {};
      return txn.DeleteExtent(de.first, de.second);
    }));
  }
  Log(LogLevel::kInfo, "compaction_done",
      {{"examined", std::to_string(rep.extents_examined)},
       {"removed", std::to_string(rep.extents_removed)},
       {"moved_records", std::to_string(rep.records_moved)},
       {"reclaimed_bytes", std::to_string(rep.bytes_reclaimed)}});
  return rep;
}

}  // namespace cv::storage::internal
