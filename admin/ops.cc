// The operator's routes for running a node (what `cvctl` calls): GET /status, POST /scrub,
// POST /repair, POST /index/backup. Scrub and repair run synchronously in the request for
// now; they become jobs once the job framework lands.
#include <boost/json/array.hpp>
#include <chrono>
#include <filesystem>
#include <mutex>

#include "admin/internal.h"

#ifndef CV_VERSION
#define CV_VERSION "unknown"
#endif

namespace cv::admin::internal {

namespace {

constexpr std::string_view kLastFullScrubMeta = "ops/last_full_scrub_ns";
// The stripe census walks every object: answers within this age come from the cache.
constexpr auto kCensusMaxAge = std::chrono::seconds(5);

// Steady time of the process start (static initialisation of the node binary).
const auto kProcessStart = std::chrono::steady_clock::now();

// Stripes by how many of their shards sit on failed disks or are known missing (a rebuilt
// index marks shards it could not find with disk UINT16_MAX). Replicated objects count as
// one stripe whose shards are its copies.
struct Census {
  uint64_t objects = 0;
  uint64_t bytes = 0;
  uint64_t stripes = 0;
  std::vector<uint64_t> by_missing;  // [0..m]
  uint64_t lost = 0;
  int64_t computed_ns = 0;
};

Result<Census> TakeCensus(storage::ObjectStore& store, const std::vector<bool>& failed, int m,
                          int64_t now_ns) {
  Census c;
  c.by_missing.assign(static_cast<size_t>(m) + 1, 0);
  c.computed_ns = now_ns;
  auto missing = [&](const index::ShardLoc& loc) {
    return loc.disk >= failed.size() || failed[loc.disk];
  };
  // One snapshot for the whole walk. NOTE: a long walk delays map growth; the cache keeps
  // walks rare, and a paged walk is the fix when indexes get that large.
  auto txn = store.Index().BeginRead();
  if (!txn) return tl::unexpected(txn.error());
  CV_TRY((*txn)->ForEachObject([&](const index::ObjectKey&, const index::ObjectRecord& r) {
    ++c.objects;
    c.bytes += r.size;
    const size_t width =
        r.layout == index::Layout::kReplicated ? r.shards.size() : size_t{r.k} + r.m;
    if (width == 0) return true;
    const size_t tolerate = r.layout == index::Layout::kReplicated ? r.shards.size() - 1 : r.m;
    for (size_t s = 0; s + width <= r.shards.size(); s += width) {
      size_t miss = 0;
      for (size_t i = s; i < s + width; ++i) miss += missing(r.shards[i]) ? 1 : 0;
      ++c.stripes;
      if (miss > tolerate) {
        ++c.lost;
      } else {
        c.by_missing[std::min<size_t>(miss, m)]++;
      }
    }
    return true;
  }));
  return c;
}

// The last census, for one store (a process serves one).
std::mutex census_mu;
struct CachedCensus {
  storage::ObjectStore* store = nullptr;
  std::vector<bool> failed;
  std::chrono::steady_clock::time_point at;
  Census census;
};
std::optional<CachedCensus> census_cache;

void ForgetCensus() {
  std::lock_guard lock(census_mu);
  census_cache.reset();
}

Result<Census> CurrentCensus(storage::ObjectStore& store, const std::vector<bool>& failed, int m,
                             int64_t now_ns) {
  std::lock_guard lock(census_mu);  // one walk at a time; the others wait for its result
  const auto now = std::chrono::steady_clock::now();
  if (census_cache && census_cache->store == &store && census_cache->failed == failed &&
      now - census_cache->at < kCensusMaxAge) {
    return census_cache->census;
  }
  auto c = TakeCensus(store, failed, m, now_ns);
  if (!c) return c;
  census_cache = CachedCensus{&store, failed, now, *c};
  return c;
}

// "4+2" -> {4, 2}.
std::optional<std::pair<int, int>> ParseProfile(std::string_view s) {
  const size_t plus = s.find('+');
  if (plus == std::string_view::npos) return std::nullopt;
  try {
    return std::pair{std::stoi(std::string(s.substr(0, plus))),
                     std::stoi(std::string(s.substr(plus + 1)))};
  } catch (...) {
    return std::nullopt;
  }
}

json::array Strings(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v) a.push_back(json::value(s));
  return a;
}

// Records an operator action on the node (not on an account) in the audit log.
Status AuditNodeAction(Call& c, std::string_view action, std::string target,
                       const json::value& after,
                       const std::function<Status(index::WriteTxn&)>& also = nullptr) {
  return c.store.Index().Update([&](index::WriteTxn& txn) -> Status {
    if (also) CV_TRY(also(txn));
    return AppendAudit(txn, c, action, std::move(target), std::nullopt, std::nullopt, nullptr,
                       after);
  });
}

// A body that must be a JSON object with no fields (or empty).
std::optional<Response> RefuseFields(const Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({}); !ok) return FromApiError(ok.error());
  return std::nullopt;
}

}  // namespace

Response NodeStatus(Call& c) {
  std::string node_id;
  std::optional<std::pair<int, int>> profile;
  int64_t last_scrub_ns = 0;
  {
    auto txn = c.store.Index().BeginRead();
    if (!txn) return FromError(txn.error());
    auto id = (*txn)->GetMeta("node_id");
    if (!id) return FromError(id.error());
    if (*id) node_id = **id;
    auto p = (*txn)->GetMeta("erasure_profile");
    if (!p) return FromError(p.error());
    if (*p) profile = ParseProfile(**p);
    auto s = (*txn)->GetMeta(kLastFullScrubMeta);
    if (!s) return FromError(s.error());
    if (*s) last_scrub_ns = std::strtoll((*s)->c_str(), nullptr, 10);
  }
  if (!profile) return FromError(Error{ErrorKind::kCorruption, 0, "erasure_profile meta missing"});
  const auto [k, m] = *profile;

  // Jobs running: counted page by page from the index's job table.
  uint64_t jobs_running = 0;
  {
    index::JobQuery q;
    q.state = "running";
    q.limit = 1000;
    for (;;) {
      auto txn = c.store.Index().BeginRead();
      if (!txn) return FromError(txn.error());
      auto jobs = (*txn)->ListJobs(q);
      if (!jobs) return FromError(jobs.error());
      jobs_running += jobs->size();
      if (jobs->size() < q.limit) break;
      q.start_after = jobs->back().id;
    }
  }

  const storage::StoreStats stats = c.store.Stats();
  std::vector<bool> failed;
  json::array disks;
  for (const auto& d : stats.disks) {
    failed.push_back(d.failed);
    json::object o;
    o["path"] = d.path;
    o["state"] = d.failed ? "failed" : "ok";
    o["capacity_bytes"] = d.total_bytes;
    o["used_bytes"] = d.total_bytes - std::min(d.free_bytes, d.total_bytes);
    o["free_bytes"] = d.free_bytes;
    o["errors"] = d.errors;
    disks.push_back(std::move(o));
  }
  auto census = CurrentCensus(c.store, failed, m, c.now_ns);
  if (!census) return FromError(census.error());

  json::array by_missing;
  uint64_t degraded = 0;
  for (size_t i = 0; i < census->by_missing.size(); ++i) {
    by_missing.push_back(census->by_missing[i]);
    if (i > 0) degraded += census->by_missing[i];
  }
  json::object stripes;
  stripes["total"] = census->stripes;
  stripes["by_missing_shards"] = std::move(by_missing);
  stripes["degraded"] = degraded;
  stripes["lost"] = census->lost;
  stripes["pending_repairs"] = stats.pending_repairs;
  stripes["counted_at"] = TimeOrNull(census->computed_ns);

  json::object o;
  o["node_id"] = node_id;
  o["version"] = CV_VERSION;
  o["uptime_s"] = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::steady_clock::now() - kProcessStart)
                      .count();
  o["ready"] = c.store.Ready();
  o["io_engine"] = stats.io_engine;
  o["erasure"] = json::object{{"k", k}, {"m", m}};
  o["disks"] = std::move(disks);
  o["objects"] = census->objects;
  o["bytes"] = census->bytes;
  o["stripes"] = std::move(stripes);
  o["reconstructed_reads"] = stats.reconstructed_reads;
  o["corrupt_shards"] = stats.corrupt_shards;
  o["last_full_scrub_at"] = TimeOrNull(last_scrub_ns);
  o["jobs_running"] = jobs_running;
  return Reply(200, o);
}

Response Scrub(Call& c) {
  if (auto refused = RefuseFields(c)) return *refused;
  const int64_t started = NowNanos();
  auto rep = c.store.Scrub();
  if (!rep) return FromError(rep.error());
  const int64_t finished = NowNanos();
  ForgetCensus();
  json::object o;
  o["clean"] = rep->damaged_shards == 0 && rep->lost_stripes == 0;
  o["objects"] = rep->objects;
  o["shards_checked"] = rep->shards_checked;
  o["bytes_checked"] = rep->bytes_checked;
  o["damaged_shards"] = rep->damaged_shards;
  o["lost_stripes"] = rep->lost_stripes;
  o["damaged"] = Strings(rep->damaged);
  o["started_at"] = TimeOrNull(started);
  o["finished_at"] = TimeOrNull(finished);
  json::object summary = o;
  summary.erase("damaged");
  auto st = AuditNodeAction(c, "node.scrub", "node", summary, [&](index::WriteTxn& txn) {
    return txn.PutMeta(kLastFullScrubMeta, std::to_string(started));
  });
  if (!st) return FromError(st.error());
  return Reply(200, o);
}

Response Repair(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({"include_failed_disks"}); !ok) return FromApiError(ok.error());
  auto include = body->Bool("include_failed_disks");
  if (!include) return FromApiError(include.error());
  const bool include_failed = include->value_or(false);
  const int64_t started = NowNanos();
  auto rep = c.store.Repair(include_failed);
  if (!rep) return FromError(rep.error());
  const int64_t finished = NowNanos();
  ForgetCensus();
  json::object o;
  o["complete"] = rep->stripes_lost == 0 && rep->still_queued == 0;
  o["include_failed_disks"] = include_failed;
  o["stripes_examined"] = rep->stripes_examined;
  o["stripes_repaired"] = rep->stripes_repaired;
  o["shards_rewritten"] = rep->shards_rewritten;
  o["stripes_lost"] = rep->stripes_lost;
  o["still_queued"] = rep->still_queued;
  o["lost"] = Strings(rep->lost);
  o["started_at"] = TimeOrNull(started);
  o["finished_at"] = TimeOrNull(finished);
  json::object summary = o;
  summary.erase("lost");
  if (auto st = AuditNodeAction(c, "node.repair", "node", summary); !st) {
    return FromError(st.error());
  }
  return Reply(200, o);
}

Response BackupIndex(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({"path"}); !ok) return FromApiError(ok.error());
  auto path = JsonBody::Required(body->String("path"), "path");
  if (!path) return FromApiError(path.error());
  namespace fs = std::filesystem;
  const fs::path p(*path);
  if (path->empty() || !p.is_absolute() || path->find('\0') != std::string::npos) {
    return FromApiError(
        BadField("path", "must be an absolute path on the node (a directory to create)").value());
  }
  std::error_code ec;
  if (fs::symlink_status(p, ec).type() != fs::file_type::not_found) {
    return FromApiError(ApiError{409, "exists", *path + " exists already; name a new directory",
                                 "path"});
  }
  if (!fs::is_directory(p.parent_path(), ec)) {
    return FromApiError(ApiError{400, "invalid_field",
                                 "the parent directory " + p.parent_path().string() +
                                     " does not exist on the node",
                                 "path"});
  }
  const int64_t started = NowNanos();
  if (auto st = c.store.Index().CopyTo(*path); !st) {
    if (st.error().kind == ErrorKind::kConflict) {
      return FromApiError(ApiError{409, "exists", *path + " holds an index already", "path"});
    }
    return FromError(st.error());
  }
  const int64_t finished = NowNanos();
  json::object o;
  o["path"] = *path;
  o["file"] = (p / "data.mdb").string();
  const auto bytes = fs::file_size(p / "data.mdb", ec);
  o["bytes"] = ec ? uint64_t{0} : static_cast<uint64_t>(bytes);
  o["started_at"] = TimeOrNull(started);
  o["finished_at"] = TimeOrNull(finished);
  if (auto st = AuditNodeAction(c, "index.backup", "index", o); !st) return FromError(st.error());
  return Reply(201, o);
}

}  // namespace cv::admin::internal
