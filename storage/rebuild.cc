// Index rebuild from the extents: the last line of defence when the LMDB index is lost.
// See ObjectStore::RebuildIndex in storage.h and "Tombstones" in FORMAT.md.
#include <cstdint>
#include <filesystem>
#include <fstream>

#include "storage/store_impl.h"

namespace cv::storage {
namespace internal {
namespace {

// One upload of an object, as found on disk: every valid record with its created_ns.
struct Instance {
  RecordHeader model;                              // any of its headers
  std::map<std::pair<uint32_t, uint8_t>, ShardLoc> shards;  // (stripe, shard) -> where
  std::vector<ShardLoc> copies;                    // replicated layout
  Sha256Digest sha256{};                           // from a header that carries it
};

struct KeyLess {
  bool operator()(const ObjectKey& a, const ObjectKey& b) const {
    return std::tie(a.device, a.type, a.name) < std::tie(b.device, b.type, b.name);
  }
};

}  // namespace

Status StoreImpl::RebuildObjects(RebuildReport& rep) {
  std::map<ObjectKey, std::map<int64_t, Instance>, KeyLess> found;
  std::map<ObjectKey, int64_t, KeyLess> tombstones;
  std::map<index::Id, int64_t> device_tombstones;  // purged devices (their latest tombstone)
  std::map<std::pair<uint16_t, uint32_t>, uint64_t> capacities;
  for (size_t d = 0; d < disks_.size(); ++d) {
    if (!disks_.healthy(d)) {
      rep.problems.push_back(disks_.path(d) + ": failed, not scanned (repair rebuilds its shards)");
      continue;
    }
    CV_TRY_ASSIGN(auto ids, disks_.ExtentIds(d));
    for (uint32_t id : ids) {
      CV_TRY_ASSIGN(auto ext, disks_.Get(d, id));
      capacities[{static_cast<uint16_t>(d), id}] = ext->capacity;
      CV_TRY_ASSIGN(auto recs, ScanExtent(env_, *ext));
      ++rep.extents_scanned;
      for (const ScannedRecord& sr : recs) {
        const RecordHeader& h = sr.header;
        if (h.tombstone()) {
          ++rep.tombstones;
          auto& t = IsDeviceTombstone(h.key) ? device_tombstones[h.key.device] : tombstones[h.key];
          t = std::max(t, h.created_ns);
          continue;
        }
        // Verify the payload too: an instance is only as good as its verified shards.
        AlignedBuffer buf = AllocateAligned(sr.bytes);
        IoRequest rd{IoRequest::Op::kRead, ext->file.get(), sr.offset, buf.get(), sr.bytes};
        Status s = env_->Execute(std::span(&rd, 1));
        if (!s || rd.result != static_cast<int64_t>(sr.bytes) ||
            PayloadChecksum(std::span<const uint8_t>(buf.get() + HeaderBytes(h.key),
                                                     h.payload_len)) != h.payload_xxh3) {
          ++rep.records_invalid;
          continue;
        }
        ++rep.records_valid;
        Instance& inst = found[h.key][h.created_ns];
        inst.model = h;
        const ShardLoc loc{static_cast<uint16_t>(d), id, sr.offset};
        if (h.layout == Layout::kReplicated) {
          inst.copies.push_back(loc);
        } else {
          inst.shards.emplace(std::make_pair(h.stripe, h.shard), loc);
        }
        if (h.sha256 != Sha256Digest{}) inst.sha256 = h.sha256;
      }
    }
  }

  // Choose, per object, the earliest complete instance newer than its latest tombstone.
  std::vector<std::pair<ObjectKey, ObjectRecord>> chosen;
  for (auto& [key, instances] : found) {
    int64_t deleted_up_to = INT64_MIN;
    if (auto t = tombstones.find(key); t != tombstones.end()) deleted_up_to = t->second;
    // A purged device is gone for good (ids are never reused): what an upload refused after
    // its tombstone left on disk is garbage too.
    if (device_tombstones.count(key.device)) deleted_up_to = INT64_MAX;
    bool picked = false;
    for (auto& [created, inst] : instances) {  // ascending created_ns
      if (created <= deleted_up_to) {
        ++rep.deleted_instances;
        continue;
      }
      if (picked) continue;  // a later no-op re-upload or a refused conflicting one: garbage
      const RecordHeader& h = inst.model;
      ObjectRecord r;
      r.size = h.object_size;
      r.created_ns = created;
      r.layout = h.layout;
      r.k = h.k;
      r.m = h.m;
      r.shard_unit = h.shard_unit;
      bool complete = true;
      if (h.layout == Layout::kReplicated) {
        if (inst.copies.empty()) complete = false;
        // As many copies as the layout has, on distinct disks: a copy that a compaction,
        // repair or drain wrote and then failed (or crashed) to switch to is valid but not
        // one more copy, and may sit on the same disk as the one it was to replace.
        std::sort(inst.copies.begin(), inst.copies.end(), ShardLocLess);
        for (const ShardLoc& loc : inst.copies) {
          if (r.shards.size() < h.k && (r.shards.empty() || r.shards.back().disk != loc.disk)) {
            r.shards.push_back(loc);
          }
        }
        r.sha256 = h.sha256;
        // Fewer than k copies found (a lost disk): keep the locations; repair restores them.
        while (r.shards.size() < h.k) r.shards.push_back(ShardLoc{kLostShardDisk, 0, 0});
      } else {
        const uint32_t stripes = StripeCount(r.size, r.k, r.shard_unit);
        for (uint32_t st = 0; st < stripes && complete; ++st) {
          size_t have = 0;
          for (uint8_t i = 0; i < r.k + r.m; ++i) {
            auto it = inst.shards.find({st, i});
            if (it != inst.shards.end()) {
              r.shards.push_back(it->second);
              ++have;
            } else {
              r.shards.push_back(ShardLoc{kLostShardDisk, 0, 0});  // lost: reads rebuild it
            }
          }
          if (have < r.k) complete = false;
        }
        r.sha256 = inst.sha256;
        if (IsContentAddressed(key.type)) FromHex(key.name, r.sha256);
      }
      if (!complete) {
        ++rep.incomplete_instances;
        continue;
      }
      chosen.emplace_back(key, std::move(r));
      picked = true;
    }
  }

  // Swap the object and extent tables for the rebuilt ones, in bounded transactions.
  std::vector<ObjectKey> old_objects;
  std::vector<std::pair<uint16_t, uint32_t>> old_extents;
  {
    CV_TRY_ASSIGN(auto txn, index_->BeginRead());
    CV_TRY(txn->ForEachObject([&](const ObjectKey& k, const ObjectRecord&) {
      old_objects.push_back(k);
      return true;
    }));
    CV_TRY(txn->ForEachExtent([&](uint16_t d, uint32_t e, const index::ExtentRecord&) {
      old_extents.emplace_back(d, e);
      return true;
    }));
  }
  constexpr size_t kBatch = 1000;
  for (size_t i = 0; i < old_objects.size(); i += kBatch) {
    CV_TRY(index_->Update([&](index::WriteTxn& txn) -> Status {
      for (size_t j = i; j < std::min(old_objects.size(), i + kBatch); ++j) {
        CV_TRY(txn.DeleteObject(old_objects[j]));
      }
      return {};
    }));
  }
  CV_TRY(index_->Update([&](index::WriteTxn& txn) -> Status {
    for (const auto& [d, e] : old_extents) CV_TRY(txn.DeleteExtent(d, e));
    return {};
  }));
  for (size_t i = 0; i < chosen.size(); i += kBatch) {
    CV_TRY(index_->Update([&](index::WriteTxn& txn) -> Status {
      for (size_t j = i; j < std::min(chosen.size(), i + kBatch); ++j) {
        const auto& [key, r] = chosen[j];
        CV_TRY(txn.PutObject(key, r));
        for (size_t s = 0; s < r.shards.size(); ++s) {
          const ShardLoc& loc = r.shards[s];
          if (loc.disk == kLostShardDisk) {
            QueueRepair(key, static_cast<uint32_t>(
                                 r.layout == Layout::kReplicated ? 0 : s / (r.k + r.m)));
            continue;
          }
          const uint64_t cap = capacities[{loc.disk, loc.extent}];
          CV_TRY(AddExtentBytes(txn, loc, cap,
                                static_cast<int64_t>(RecordBytes(key, PayloadLen(r, s))), 0));
        }
      }
      return {};
    }));
  }
  // A device purged after the backup was taken must not come back from it (with its token).
  CV_TRY(index_->Update([&](index::WriteTxn& txn) -> Status {
    for (const auto& [device, when] : device_tombstones) {
      CV_TRY_ASSIGN(auto d, txn.GetDevice(device));
      if (d) {
        CV_TRY(txn.DeleteDevice(device));
        rep.problems.push_back("device " + index::IdToHex(device) +
                               " of the backup was purged since: not restored");
      }
      CV_TRY(txn.PutMeta(index::PurgedDeviceMetaKey(device), "rebuild"));
    }
    return {};
  }));
  rep.objects = chosen.size();
  Log(LogLevel::kInfo, "index_rebuilt",
      {{"objects", std::to_string(rep.objects)},
       {"extents", std::to_string(rep.extents_scanned)},
       {"tombstones", std::to_string(rep.tombstones)},
       {"deleted_instances", std::to_string(rep.deleted_instances)},
       {"incomplete_instances", std::to_string(rep.incomplete_instances)}});
  return {};
}

}  // namespace internal

Result<RebuildReport> ObjectStore::RebuildIndex(const StoreOptions& options,
                                                const std::string& backup_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(fs::path(options.index_dir) / "data.mdb", ec)) {
    return Err(ErrorKind::kConflict,
               "an index exists in " + options.index_dir + "; move it away before rebuilding");
  }
  fs::create_directories(options.index_dir, ec);
  if (ec) return Err(ErrorKind::kIOError, "create " + options.index_dir + ": " + ec.message());
  if (!backup_dir.empty()) {
    fs::copy_file(fs::path(backup_dir) / "data.mdb", fs::path(options.index_dir) / "data.mdb", ec);
    if (ec) return Err(ErrorKind::kIOError, "copy the index backup: " + ec.message());
  } else {
    // No backup: recreate the node's identity from the first disk that has one.
    std::string node_id;
    for (const auto& d : options.disks) {
      std::ifstream in(d + "/chunkvault-disk");
      std::string word;
      while (in >> word) {
        if (word == "node") in >> node_id;
      }
      if (!node_id.empty()) break;
    }
    if (node_id.empty()) return Err(ErrorKind::kNotFound, "no disk holds a node identity");
    index::Index::Options io;
    io.dir = options.index_dir;
    io.initial_map_bytes = options.index_initial_map_bytes;
    CV_TRY_ASSIGN(auto idx, index::Index::Open(io));
    CV_TRY(idx->Update([&](index::WriteTxn& w) -> Status {
      CV_TRY(w.PutMeta("node_id", node_id));
      CV_TRY(w.PutMeta("erasure_profile", std::to_string(options.k) + "+" + std::to_string(options.m)));
      return w.PutMeta("disk_count", std::to_string(options.disks.size()));
    }));
  }
  CV_TRY_ASSIGN(auto store, ObjectStore::Open(options));
  RebuildReport rep;
  CV_TRY(static_cast<internal::StoreImpl&>(*store).RebuildObjects(rep));
  return rep;
}

}  // namespace cv::storage
