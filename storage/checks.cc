// Checks over the whole store: Fsck (index consistency), Scrub (read and verify every
// shard record) and Repair (rebuild damaged or lost shards onto healthy disks).
#include <chrono>
#include <cstring>
#include <thread>

#include "storage/store_impl.h"

namespace cv::storage::internal {

Result<FsckReport> StoreImpl::Fsck(
    bool fix, const std::function<Status(index::WriteTxn&, const FsckReport&)>& also) {
  FsckReport rep;
  if (!fix) {
    CV_TRY_ASSIGN(auto txn, index_->BeginRead());
    CV_TRY(FsckIn(*txn, nullptr, rep));
    return rep;
  }
  CV_TRY(index_->Update([&](index::WriteTxn& w) -> Status {
    rep = FsckReport{};
    CV_TRY(FsckIn(w, &w, rep));
    return also ? also(w, rep) : Status{};
  }));
  for (const auto& f : rep.fixed) Log(LogLevel::kWarn, "fsck_fixed", {{"what", f}});
  return rep;
}

Status StoreImpl::FsckIn(index::Txn& txn, index::WriteTxn* fix, FsckReport& rep) {
  struct Usage {
    uint64_t bytes = 0, objects = 0;
  };
  // A difference found: fixed (through `fix`, when given) or left as a problem.
  auto found = [&](std::string what, const std::function<Status()>& correct) -> Status {
    if (!fix || !correct) {
      rep.problems.push_back(std::move(what));
      return {};
    }
    CV_TRY(correct());
    rep.fixed.push_back(std::move(what));
    return {};
  };
  std::map<index::Id, Usage> usage;
  std::map<std::pair<uint16_t, uint32_t>, uint64_t> live;
  CV_TRY(txn.ForEachObject([&](const ObjectKey& key, const ObjectRecord& r) {
    ++rep.objects;
    rep.bytes += r.size;
    usage[key.device].bytes += r.size;
    usage[key.device].objects += 1;
    const size_t want = r.layout == Layout::kReplicated
                            ? r.k
                            : size_t{StripeCount(r.size, r.k, r.shard_unit)} * (r.k + r.m);
    if (r.shards.size() != want) {
      rep.problems.push_back(Describe(key) + ": " + std::to_string(r.shards.size()) +
                             " shard locations, expected " + std::to_string(want));
    }
    for (size_t i = 0; i < r.shards.size(); ++i) {
      if (r.shards[i].disk == kLostShardDisk) continue;  // no extent holds it: repair's work
      live[{r.shards[i].disk, r.shards[i].extent}] += RecordBytes(key, PayloadLen(r, i));
    }
    return true;
  }));
  std::vector<index::DeviceRecord> devices;
  CV_TRY(txn.ForEachDevice([&](const index::DeviceRecord& d) {
    devices.push_back(d);
    return true;
  }));
  std::map<index::Id, Usage> by_account;  // what each account's devices' objects sum to
  for (index::DeviceRecord d : devices) {
    const Usage u = usage.count(d.id) ? usage[d.id] : Usage{};
    by_account[d.account].bytes += u.bytes;
    by_account[d.account].objects += u.objects;
    if (u.bytes == d.bytes && u.objects == d.objects) continue;
    CV_TRY(found("device " + index::IdToHex(d.id) + ": counters say " + std::to_string(d.bytes) +
                     " bytes in " + std::to_string(d.objects) + " objects, objects sum to " +
                     std::to_string(u.bytes) + " in " + std::to_string(u.objects),
                 [&]() -> Status {
                   d.bytes = u.bytes;
                   d.objects = u.objects;
                   return fix->PutDevice(d);
                 }));
  }
  if (fix) {  // accounts' counters (CheckAccounts reports them when not fixing)
    for (const auto& entry : by_account) {  // not a binding: clang 14 cannot capture one
      const index::Id& account = entry.first;
      const Usage& u = entry.second;
      CV_TRY_ASSIGN(auto a, txn.GetAccount(account));
      if (!a || (a->bytes == u.bytes && a->objects == u.objects)) continue;
      CV_TRY(found("account " + index::IdToHex(account) + ": counters said " +
                       std::to_string(a->bytes) + " bytes in " + std::to_string(a->objects) +
                       " objects, its devices' objects sum to " + std::to_string(u.bytes) + " in " +
                       std::to_string(u.objects),
                   [&] { return fix->SetAccountUsage(account, u.bytes, u.objects); }));
    }
  }
  std::map<std::pair<uint16_t, uint32_t>, index::ExtentRecord> recorded;
  CV_TRY(txn.ForEachExtent([&](uint16_t disk, uint32_t ext, const index::ExtentRecord& e) {
    recorded[{disk, ext}] = e;
    return true;
  }));
  auto set_live = [&](std::pair<uint16_t, uint32_t> de, uint64_t bytes) -> Status {
    index::ExtentRecord e;
    e.capacity = opts_.extent_bytes;
    if (auto it = recorded.find(de); it != recorded.end()) e = it->second;
    // What the record counted live beyond the references is dead: compaction may take it.
    if (e.live_bytes > bytes) e.dead_bytes += e.live_bytes - bytes;
    e.live_bytes = bytes;
    return fix->PutExtent(de.first, de.second, e);
  };
  for (const auto& [de, bytes] : live) {
    auto it = recorded.find(de);
    const uint64_t have = it == recorded.end() ? 0 : it->second.live_bytes;
    if (have != bytes) {
      CV_TRY(found("extent " + std::to_string(de.first) + "/" + std::to_string(de.second) +
                       ": live bytes recorded " + std::to_string(have) + ", referenced " +
                       std::to_string(bytes),
                   [&, de = de, bytes = bytes] { return set_live(de, bytes); }));
    }
    if (disks_.healthy(de.first) && !disks_.Get(de.first, de.second)) {
      rep.problems.push_back("extent " + std::to_string(de.first) + "/" +
                             std::to_string(de.second) + " is referenced but cannot be opened");
    }
  }
  for (const auto& [de, e] : recorded) {
    if (e.live_bytes != 0 && !live.count(de)) {
      CV_TRY(found("extent " + std::to_string(de.first) + "/" + std::to_string(de.second) + ": " +
                       std::to_string(e.live_bytes) + " live bytes recorded, none referenced",
                   [&, de = de] { return set_live(de, 0); }));
    }
  }
  return {};
}

Result<bool> StoreImpl::WalkObjects(
    const std::optional<ObjectKey>& start,
    const std::function<bool(const ObjectKey&, const ObjectRecord&)>& visit,
    const std::function<bool(const ObjectKey&)>& report) {
  constexpr size_t kBatch = 256;  // objects per read snapshot
  constexpr auto kReportEvery = std::chrono::seconds(1);
  std::optional<ObjectKey> last = start;
  auto reported = std::chrono::steady_clock::now();
  while (true) {
    std::vector<std::pair<ObjectKey, ObjectRecord>> objects;
    {
      CV_TRY_ASSIGN(auto txn, index_->BeginRead());
      CV_TRY(txn->ForEachObjectAfter(last ? &*last : nullptr,
                                     [&](const ObjectKey& k, const ObjectRecord& r) {
                                       objects.emplace_back(k, r);
                                       return objects.size() < kBatch;
                                     }));
    }
    if (objects.empty()) return true;
    for (const auto& [key, r] : objects) {
      if (!visit(key, r)) return false;
      const auto now = std::chrono::steady_clock::now();
      if (report && (&key == &objects.back().first || now - reported >= kReportEvery)) {
        reported = now;
        if (!report(key)) return false;
      }
    }
    last = objects.back().first;
  }
}

Result<ScrubReport> StoreImpl::Scrub(const ScrubOptions& options) {
  ScrubReport rep;
  std::vector<IoBuffer> bufs;  // one per shard of a stripe: its records read in one batch
  uint64_t buf_len = 0;
  std::vector<ShardRead> reads;
  const auto started = std::chrono::steady_clock::now();
  auto visit = [&](const ObjectKey& key, const ObjectRecord& r) {
    ++rep.objects;
    const size_t width = r.layout == Layout::kReplicated ? r.shards.size() : size_t{r.k} + r.m;
    const size_t need = r.layout == Layout::kReplicated ? 1 : r.k;
    const uint64_t max_record = RecordBytes(
        key, r.layout == Layout::kReplicated ? static_cast<uint32_t>(r.size) : r.shard_unit);
    if (max_record > buf_len || bufs.size() < width) {
      buf_len = std::max(buf_len, max_record);
      bufs.clear();
      for (size_t i = 0; i < width; ++i) bufs.push_back(env_->AllocateIo(buf_len));
    }
    for (size_t st = 0; st * width < r.shards.size(); ++st) {
      reads.clear();
      for (size_t i = 0; i < width; ++i) {
        const size_t at = st * width + i;
        const uint8_t shard = r.layout == Layout::kReplicated ? 0 : static_cast<uint8_t>(i);
        reads.push_back(ShardRead{&r.shards[at], static_cast<uint32_t>(st), shard,
                                  PayloadLen(r, at), bufs[i].get()});
      }
      ReadShards(key, r, reads);
      size_t good = 0;
      bool damaged = false;
      for (size_t i = 0; i < width; ++i) {
        const auto& p = reads[i].payload;
        ++rep.shards_checked;
        rep.bytes_checked += reads[i].payload_len;
        if (p) {
          ++good;
          continue;
        }
        damaged = true;
        ++rep.damaged_shards;
        if (rep.damaged.size() < 1000) {
          rep.damaged.push_back(Describe(key) + " stripe " + std::to_string(st) + " shard " +
                                std::to_string(i) + ": " + p.error().ToString());
        }
      }
      if (good < need) ++rep.lost_stripes;
      if (damaged) QueueRepair(key, static_cast<uint32_t>(st));
    }
    if (options.max_bytes_per_sec > 0) {  // stay under the share of the disks we were given
      const auto due =
          started + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                        std::chrono::duration<double>(double(rep.bytes_checked) /
                                                      double(options.max_bytes_per_sec)));
      std::this_thread::sleep_until(due);
    }
    return true;
  };
  std::function<bool(const ObjectKey&)> report;
  if (options.progress) report = [&](const ObjectKey& key) { return options.progress(rep, key); };
  CV_TRY_ASSIGN(auto walked, WalkObjects(options.start_after, visit, report));
  rep.complete = walked;
  return rep;
}

Status StoreImpl::WriteTombstone(const ObjectKey& key, int64_t when_ns) {
  const uint64_t rb = RecordBytes(key, 0);
  AlignedBuffer buf = AllocateAligned(rb);
  std::memset(buf.get(), 0, rb);
  RecordHeader h;
  h.key = key;
  h.layout = static_cast<index::Layout>(kTombstoneLayout);
  h.created_ns = when_ns;
  h.payload_xxh3 = PayloadChecksum({});
  EncodeHeader(h, std::span<uint8_t>(buf.get(), HeaderBytes(key)));
  const size_t copies = size_t(opts_.m) + 1;
  std::vector<size_t> disk_ids;
  CV_TRY_ASSIGN(auto placed, Place(copies, rb, {}, &disk_ids));
  std::vector<IoRequest> reqs(copies);
  for (size_t i = 0; i < copies; ++i) {
    reqs[i] = {IoRequest::Op::kWrite, placed[i].extent->file.get(), placed[i].offset, buf.get(),
               rb};
  }
  Status ws = env_->Execute(reqs);
  std::vector<std::pair<std::shared_ptr<Extent>, uint64_t>> to_sync;
  for (size_t i = 0; i < copies; ++i) {
    const Placement& p = placed[i];
    if (reqs[i].result == static_cast<int64_t>(rb)) {
      to_sync.emplace_back(p.extent, p.extent->write_seq.fetch_add(1) + 1);
    } else {
      p.extent->poisoned = true;
      disks_.ReportError(disk_ids[i], Error{ErrorKind::kIOError, EIO, "tombstone write"});
    }
  }
  if (!ws) return ws;
  return disks_.Sync(to_sync);
}

Result<bool> StoreImpl::RepairStripe(const ObjectKey& key, uint32_t stripe, RepairReport& rep,
                                     std::optional<size_t> evacuate) {
  CV_TRY_ASSIGN(auto cur, Lookup(key));
  if (!cur.has_value()) return false;  // deleted meanwhile: nothing to repair
  const ObjectRecord r = *cur;
  const bool replicated = r.layout == Layout::kReplicated;
  const size_t width = replicated ? r.shards.size() : size_t{r.k} + r.m;
  if (width == 0 || (size_t{stripe} + 1) * width > r.shards.size()) return false;
  const size_t need = replicated ? 1 : r.k;
  const uint32_t L = PayloadLen(r, size_t{stripe} * width);
  const uint64_t rb = RecordBytes(key, L);
  const size_t hb = HeaderBytes(key);
  ++rep.stripes_examined;

  std::vector<IoBuffer> bufs;
  std::vector<bool> good(width, false);
  size_t ngood = 0, first_good = width;
  std::vector<ShardRead> reads;  // the shards on healthy disks, read in one batch
  for (size_t i = 0; i < width; ++i) {
    bufs.push_back(env_->AllocateIo(rb));
    const ShardLoc& loc = r.shards[size_t{stripe} * width + i];
    if (loc.disk >= disks_.size() || !disks_.healthy(loc.disk)) continue;
    const uint8_t shard = replicated ? 0 : static_cast<uint8_t>(i);
    reads.push_back(ShardRead{&loc, stripe, shard, L, bufs[i].get()});
  }
  ReadShards(key, r, reads);
  for (const ShardRead& read : reads) {
    if (!read.payload) continue;
    const size_t i = static_cast<size_t>(read.loc - &r.shards[size_t{stripe} * width]);
    good[i] = true;
    ++ngood;
    first_good = std::min(first_good, i);
  }
  // To write: the shards that are not good (rebuilt), then the good ones to move off the
  // evacuated disk (their buffers hold their verified records already).
  std::vector<size_t> bad;
  for (size_t i = 0; i < width; ++i) {
    if (!good[i]) bad.push_back(i);
  }
  const size_t rebuilt = bad.size();
  for (size_t i = 0; i < width && evacuate; ++i) {
    if (good[i] && r.shards[size_t{stripe} * width + i].disk == *evacuate) bad.push_back(i);
  }
  if (bad.empty()) return false;
  if (ngood < need) {
    ++rep.stripes_lost;
    if (rep.lost.size() < 1000) {
      rep.lost.push_back(Describe(key) + " stripe " + std::to_string(stripe) + ": " +
                         std::to_string(ngood) + " good shards, " + std::to_string(need) +
                         " needed");
    }
    return false;
  }

  // Rebuild the missing shards' records in their buffers.
  const std::span<const size_t> missing(bad.data(), rebuilt);
  if (replicated) {
    for (size_t i : missing) std::memcpy(bufs[i].get(), bufs[first_good].get(), rb);
  } else if (!missing.empty()) {
    uint8_t* shards[erasure::kMaxShards];
    bool present[erasure::kMaxShards];
    for (size_t i = 0; i < width; ++i) {
      shards[i] = bufs[i].get() + hb;
      present[i] = good[i];
    }
    CV_TRY(codec_->Reconstruct(L, std::span<uint8_t* const>(shards, width),
                               std::span<const bool>(present, width)));
    auto model = DecodeHeader(std::span<const uint8_t>(bufs[first_good].get(), rb));
    if (!model) return Err(ErrorKind::kInternal, "verified shard lost its header");
    for (size_t i : missing) {
      RecordHeader h = *model;
      h.shard = static_cast<uint8_t>(i);
      h.payload_xxh3 = PayloadChecksum(std::span<const uint8_t>(shards[i], L));
      EncodeHeader(h, std::span<uint8_t>(bufs[i].get(), hb));
      std::memset(bufs[i].get() + hb + L, 0, rb - hb - L);
    }
  }

  // Write them on healthy disks that hold no good shard of this stripe, then sync.
  std::set<size_t> avoid;
  for (size_t i = 0; i < width; ++i) {
    if (good[i]) avoid.insert(r.shards[size_t{stripe} * width + i].disk);
  }
  std::vector<size_t> disk_ids;
  CV_TRY_ASSIGN(auto placed, Place(bad.size(), rb, avoid, &disk_ids));
  std::vector<IoRequest> reqs(bad.size());
  for (size_t j = 0; j < bad.size(); ++j) {
    reqs[j] = {IoRequest::Op::kWrite, placed[j].extent->file.get(), placed[j].offset,
               bufs[bad[j]].get(), rb};
  }
  Status ws = env_->Execute(reqs);
  std::vector<std::pair<std::shared_ptr<Extent>, uint64_t>> to_sync;
  std::vector<ShardLoc> fresh;
  for (size_t j = 0; j < bad.size(); ++j) {
    const Placement& p = placed[j];
    fresh.push_back(ShardLoc{p.extent->disk, p.extent->id, p.offset});
    if (reqs[j].result == static_cast<int64_t>(rb)) {
      to_sync.emplace_back(p.extent, p.extent->write_seq.fetch_add(1) + 1);
      disks_.ReportSuccess(disk_ids[j]);
    } else {
      p.extent->poisoned = true;
      disks_.ReportError(disk_ids[j], Error{ErrorKind::kIOError, EIO, "repair write"});
    }
  }
  if (ws) ws = disks_.Sync(to_sync);
  bool switched = false;
  bool changed_meanwhile = false;  // e.g. compaction moved one of its shards: try again later
  CV_TRY(index_->Update([&](index::WriteTxn& txn) -> Status {
    switched = false;
    changed_meanwhile = false;
    CV_TRY_ASSIGN(auto now, txn.GetObject(key));
    const bool unchanged = now.has_value() && *now == r;
    if (!ws || !unchanged) {  // our records are garbage: book them dead
      for (const auto& loc : fresh) CV_TRY(AddExtentBytes(txn, loc, opts_.extent_bytes, 0, rb));
      changed_meanwhile = ws && now.has_value();
      return {};
    }
    ObjectRecord next = r;
    for (size_t j = 0; j < bad.size(); ++j) {
      ShardLoc& slot = next.shards[size_t{stripe} * width + bad[j]];
      if (slot.disk < disks_.size()) {
        CV_TRY(AddExtentBytes(txn, slot, opts_.extent_bytes, -static_cast<int64_t>(rb), rb));
      }
      slot = fresh[j];
      CV_TRY(AddExtentBytes(txn, slot, opts_.extent_bytes, rb, 0));
    }
    CV_TRY(txn.PutObject(key, next));
    switched = true;
    return {};
  }));
  CV_TRY(ws);
  if (changed_meanwhile) return Err(ErrorKind::kConflict, "object changed during repair");
  if (switched) {
    ++rep.stripes_repaired;
    rep.shards_rewritten += bad.size();
    rep.bytes_rewritten += bad.size() * rb;
  }
  return switched;
}

Result<RepairReport> StoreImpl::Repair(bool include_failed_disks) {
  std::set<RepairItem> queued;
  {
    std::lock_guard lock(repair_mu_);
    queued.swap(repair_queue_);
  }
  // Risk order: (estimated surviving shards, item). A queued stripe lost at least one shard
  // that we know of; shards on failed disks are certainly lost.
  std::vector<std::pair<size_t, RepairItem>> work;
  std::set<RepairItem> seen;
  auto failed_in = [&](const ObjectRecord& r, size_t stripe, size_t width) {
    size_t n = 0;
    for (size_t i = 0; i < width; ++i) {
      const auto& loc = r.shards[stripe * width + i];
      n += (loc.disk >= disks_.size() || !disks_.healthy(loc.disk)) ? 1 : 0;
    }
    return n;
  };
  {
    CV_TRY_ASSIGN(auto txn, index_->BeginRead());
    for (const auto& item : queued) {
      const auto& [dev, type, name, stripe] = item;
      auto rec = txn->GetObject(ObjectKey{dev, static_cast<index::ObjectType>(type), name});
      if (!rec || !rec->has_value()) continue;
      const ObjectRecord& r = **rec;
      const size_t width = r.layout == Layout::kReplicated ? r.shards.size() : size_t{r.k} + r.m;
      if (width == 0 || (size_t{stripe} + 1) * width > r.shards.size()) continue;
      const size_t lost = std::max<size_t>(1, failed_in(r, stripe, width));
      work.emplace_back(width - std::min(width, lost), item);
      seen.insert(item);
    }
    if (include_failed_disks && disks_.HealthyCount() < disks_.size()) {
      CV_TRY(txn->ForEachObject([&](const ObjectKey& key, const ObjectRecord& r) {
        const size_t width = r.layout == Layout::kReplicated ? r.shards.size() : size_t{r.k} + r.m;
        for (size_t st = 0; width > 0 && st * width < r.shards.size(); ++st) {
          const size_t lost = failed_in(r, st, width);
          if (lost == 0) continue;
          RepairItem item{key.device, static_cast<uint8_t>(key.type), key.name,
                          static_cast<uint32_t>(st)};
          if (seen.insert(item).second) work.emplace_back(width - lost, item);
        }
        return true;
      }));
    }
  }
  std::sort(work.begin(), work.end());
  RepairReport rep;
  for (const auto& [survivors, item] : work) {
    const auto& [dev, type, name, stripe] = item;
    const ObjectKey key{dev, static_cast<index::ObjectType>(type), name};
    auto done = RepairStripe(key, stripe, rep);
    if (!done) {
      ++rep.still_queued;
      QueueRepair(key, stripe);
      Log(LogLevel::kWarn, "repair_deferred",
          {{"object", Describe(key)}, {"stripe", std::to_string(stripe)},
           {"error", done.error().ToString()}});
    }
  }
  Log(LogLevel::kInfo, "repair_done",
      {{"examined", std::to_string(rep.stripes_examined)},
       {"repaired", std::to_string(rep.stripes_repaired)},
       {"lost", std::to_string(rep.stripes_lost)},
       {"deferred", std::to_string(rep.still_queued)}});
  return rep;
}

}  // namespace cv::storage::internal
