// Disk replacement: the node's disk table in the index, adding a disk while serving,
// draining one (moving every shard off it) and removing one (see ObjectStore::AddDisk).
#include "storage/store_impl.h"

namespace cv::storage {

const char* DiskStateName(DiskState s) {
  switch (s) {
    case DiskState::kActive: return "active";
    case DiskState::kDraining: return "draining";
    case DiskState::kRemoved: return "removed";
  }
  return "?";
}

std::optional<DiskState> ParseDiskState(std::string_view name) {
  for (DiskState s : {DiskState::kActive, DiskState::kDraining, DiskState::kRemoved}) {
    if (name == DiskStateName(s)) return s;
  }
  return std::nullopt;
}

namespace internal {

Status StoreImpl::SaveDiskTable(index::WriteTxn& w, const std::optional<DiskRow>& change) {
  std::string table;
  const size_t n = std::max(disks_.size(), change ? change->d + 1 : 0);
  for (size_t d = 0; d < n; ++d) {
    const bool changed = change && change->d == d;
    table += std::string(DiskStateName(changed ? change->state : disks_.state(d))) + "\t" +
             (changed ? change->path : disks_.path(d)) + "\n";
  }
  CV_TRY(w.PutMeta(kDiskTableMeta, table));
  return w.PutMeta("disk_count", std::to_string(n));
}

Status StoreImpl::ApplyDiskTable(const std::string& table) {
  std::vector<std::pair<DiskState, std::string>> rows;
  size_t at = 0;
  while (at < table.size()) {
    const size_t nl = table.find('\n', at);
    const size_t tab = table.find('\t', at);
    if (nl == std::string::npos || tab == std::string::npos || tab > nl) {
      return Err(ErrorKind::kCorruption, "disk table in the index is malformed");
    }
    auto state = ParseDiskState(std::string_view(table).substr(at, tab - at));
    if (!state) return Err(ErrorKind::kCorruption, "disk table names an unknown disk state");
    rows.emplace_back(*state, table.substr(tab + 1, nl - tab - 1));
    at = nl + 1;
  }
  if (opts_.disks.size() > rows.size()) {
    return Err(ErrorKind::kInvalidArgument,
               "the config lists " + std::to_string(opts_.disks.size()) + " disks, the node has " +
                   std::to_string(rows.size()) +
                   ": add a disk with `cvctl disk add PATH` while the node serves");
  }
  for (size_t d = 0; d < opts_.disks.size(); ++d) {
    if (opts_.disks[d] != rows[d].second) {
      return Err(ErrorKind::kInvalidArgument,
                 "disk " + std::to_string(d) + " is " + opts_.disks[d] + " in the config but " +
                     rows[d].second + " on this node; the order of disks never changes");
    }
  }
  if (rows.size() > DiskSet::kMaxDisks) {
    return Err(ErrorKind::kCorruption, "disk table lists more disks than a node can have");
  }
  for (size_t d = opts_.disks.size(); d < rows.size(); ++d) {
    disks_.Extend(rows[d].second);
    Log(LogLevel::kInfo, "disk_from_index",
        {{"disk", rows[d].second}, {"position", std::to_string(d)},
         {"note", "added while serving; list it in the config's disks too"}});
  }
  for (size_t d = 0; d < rows.size(); ++d) disks_.SetInitialState(d, rows[d].first);
  return {};
}

Status StoreImpl::CommitDiskChange(const std::optional<DiskRow>& change, DiskStatus after,
                                   const DiskChangeFn& also, bool* committing) {
  return index_->Update([&](index::WriteTxn& w) -> Status {
    if (committing) *committing = false;  // Update may run this more than once
    if (change) CV_TRY(SaveDiskTable(w, change));
    if (also) {
      DiskStatus a = after;
      a.live_bytes = 0;
      CV_TRY(w.ForEachExtent([&](uint16_t disk, uint32_t, const index::ExtentRecord& e) {
        if (disk == a.position) a.live_bytes += e.live_bytes;
        return true;
      }));
      CV_TRY(also(w, a));
    }
    if (committing) *committing = true;  // from here on only the commit can fail
    return {};
  });
}

Result<size_t> StoreImpl::AddDisk(const std::string& path, const DiskChangeFn& also) {
  std::lock_guard lock(disk_admin_mu_);
  return disks_.Add(path, node_id_, [&](size_t d, bool& committing) {
    return CommitDiskChange(DiskRow{d, DiskState::kActive, path}, StatusOfDisk(d, 0), also,
                            &committing);
  });
}

Status StoreImpl::SetDiskState(size_t d, DiskState state, const DiskChangeFn& also) {
  std::lock_guard lock(disk_admin_mu_);
  if (d >= disks_.size()) return Err(ErrorKind::kNotFound, "no disk at position " + std::to_string(d));
  const DiskState before = disks_.state(d);
  if (before == state && !also) return {};
  if (before == DiskState::kRemoved) {
    return Err(ErrorKind::kConflict, "disk " + disks_.path(d) + " was removed; that is final");
  }
  // Out of placement at once, before the commit (which may wait for a group of writers):
  // draining in memory receives no new shards but is still read, which is right for both a
  // drain and a removal while the change is not yet durable, and undone if it fails. Back
  // into placement, or no longer read (removed), only once durable: the node never places
  // shards on a disk the index has out of placement, nor stops reading one it has readable.
  const bool out_of_placement = before == DiskState::kActive && state != DiskState::kActive;
  if (out_of_placement) disks_.SetState(d, DiskState::kDraining);
  DiskStatus after = StatusOfDisk(d, 0);
  after.state = state;
  after.failed = after.failed || state == DiskState::kRemoved;
  std::optional<DiskRow> change;
  if (state != before) change = DiskRow{d, state, disks_.path(d)};
  Status s = CommitDiskChange(change, after, also);
  if (!s) {
    if (out_of_placement) disks_.SetState(d, before);
    return s;
  }
  disks_.SetState(d, state);
  return {};
}

Result<DrainReport> StoreImpl::Drain(size_t d, const DrainOptions& options) {
  if (d >= disks_.size()) return Err(ErrorKind::kNotFound, "no disk at position " + std::to_string(d));
  if (disks_.state(d) != DiskState::kDraining) {
    return Err(ErrorKind::kConflict, "disk " + disks_.path(d) + " is not draining");
  }
  DrainReport rep;
  auto visit = [&](const ObjectKey& key, const ObjectRecord& r) {
    if (disks_.state(d) != DiskState::kDraining) return false;  // back in service (cancelled)
    ++rep.objects;
    const size_t width = r.layout == Layout::kReplicated ? r.shards.size() : size_t{r.k} + r.m;
    for (size_t st = 0; width > 0 && (st + 1) * width <= r.shards.size(); ++st) {
      bool here = false;
      for (size_t i = 0; i < width; ++i) here = here || r.shards[st * width + i].disk == d;
      if (!here) continue;
      RepairReport moved;
      auto done = RepairStripe(key, static_cast<uint32_t>(st), moved, d);
      rep.stripes_moved += moved.stripes_repaired;
      rep.shards_moved += moved.shards_rewritten;
      rep.bytes_moved += moved.bytes_rewritten;
      std::string why;
      if (!done) {
        why = done.error().ToString();
      } else if (moved.stripes_lost > 0 && !moved.lost.empty()) {
        why = moved.lost.front();
      }
      if (why.empty()) continue;
      ++rep.stripes_failed;
      if (rep.problems.size() < 1000) {
        rep.problems.push_back(Describe(key) + " stripe " + std::to_string(st) + ": " + why);
      }
      Log(LogLevel::kWarn, "drain_deferred",
          {{"object", Describe(key)}, {"stripe", std::to_string(st)}, {"error", why}});
    }
    return true;
  };
  std::function<bool(const ObjectKey&)> report;
  if (options.progress) report = [&](const ObjectKey& key) { return options.progress(rep, key); };
  CV_TRY_ASSIGN(auto walked, WalkObjects(options.start_after, visit, report));
  if (!walked) {
    rep.complete = false;
    return rep;
  }
  RetireUnreferenced(d, rep);
  Log(LogLevel::kInfo, "drain_pass_done",
      {{"disk", disks_.path(d)}, {"stripes_moved", std::to_string(rep.stripes_moved)},
       {"failed", std::to_string(rep.stripes_failed)},
       {"remaining_bytes", std::to_string(rep.remaining_bytes)}});
  return rep;
}

void StoreImpl::RetireUnreferenced(size_t d, DrainReport& rep) {
  const uint16_t disk = static_cast<uint16_t>(d);
  std::map<uint32_t, uint64_t> live;
  {
    auto txn = index_->BeginRead();
    if (!txn) {
      rep.problems.push_back("index: " + txn.error().ToString());
      return;
    }
    Status s = (*txn)->ForEachExtent([&](uint16_t dd, uint32_t id, const index::ExtentRecord& e) {
      if (dd == disk) live[id] = e.live_bytes;
      return true;
    });
    if (!s) {
      rep.problems.push_back("index: " + s.error().ToString());
      return;
    }
  }
  rep.remaining_bytes = 0;
  for (const auto& [id, bytes] : live) rep.remaining_bytes += bytes;
  if (!disks_.healthy(d)) return;
  auto ids = disks_.ExtentIds(d);
  if (!ids) {
    rep.problems.push_back(disks_.path(d) + ": " + ids.error().ToString());
    return;
  }
  for (uint32_t id : *ids) {
    auto it = live.find(id);
    if (it != live.end() && it->second != 0) continue;
    auto retired = disks_.Retire(d, id);
    if (!retired || !*retired) continue;  // busy (a reader): the next pass
    ++rep.extents_removed;
    Status s = index_->Update([&](index::WriteTxn& txn) -> Status {
      CV_TRY_ASSIGN(auto e, txn.GetExtent(disk, id));
      if (!e.has_value() || e->live_bytes != 0) return {};
      return txn.DeleteExtent(disk, id);
    });
    if (!s) rep.problems.push_back("index: " + s.error().ToString());
  }
}

}  // namespace internal
}  // namespace cv::storage
