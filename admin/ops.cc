// The operator's routes for running a node (what `cvctl` calls): GET /status, POST /scrub,
// POST /repair, POST /index/backup. Scrub and repair run synchronously in the request for
// now; they become jobs once the job framework lands.
#include <boost/json/array.hpp>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <mutex>

#include "admin/internal.h"

#ifndef CV_VERSION
#define CV_VERSION "unknown"
#endif

namespace cv::admin::internal {

namespace {

// The stripe census walks every object: answers within this age come from the cache.
constexpr auto kCensusMaxAge = std::chrono::seconds(5);

// The rate repair jobs rebuild at, measured by the last one that rewrote at least
// kRateMinBytes ("<bytes per second> <when ns>"); before any, kAssumedRepairRate.
constexpr std::string_view kRepairRateMeta = "ops/repair_rate";
constexpr uint64_t kRateMinBytes = 16ull << 20;
constexpr uint64_t kAssumedRepairRate = 100ull << 20;

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
  uint64_t missing_bytes = 0;  // payload of the missing shards of degraded stripes (estimate)
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
        // A full shard (or copy) each: the tail stripe's are smaller, so this errs long.
        const uint64_t shard = r.layout == index::Layout::kReplicated ? r.size : r.shard_unit;
        c.missing_bytes += miss * shard;
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

}  // namespace

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

Status AuditNodeAction(index::WriteTxn& txn, const Call& c, std::string_view action,
                       std::string target, const json::value& after) {
  return AppendAudit(txn, c, action, std::move(target), std::nullopt, std::nullopt, nullptr, after);
}

std::optional<Response> RefuseFields(const Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({}); !ok) return FromApiError(ok.error());
  return std::nullopt;
}

Response NodeStatus(Call& c) {
  std::string node_id;
  std::optional<std::pair<int, int>> profile;
  int64_t last_scrub_ns = 0;
  uint64_t repair_rate = 0;
  int64_t repair_rate_ns = 0;
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
    auto rate = (*txn)->GetMeta(kRepairRateMeta);
    if (!rate) return FromError(rate.error());
    if (*rate && std::sscanf((*rate)->c_str(), "%" SCNu64 " %" SCNd64, &repair_rate,
                             &repair_rate_ns) != 2) {
      repair_rate = 0;
    }
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
    disks.push_back(DiskJson(d));
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

  // Time to full redundancy: the missing shards' bytes at the rate repair last achieved. Null
  // when stripes are lost (never), 0 when nothing is degraded.
  json::object redundancy;
  const uint64_t rate = repair_rate > 0 ? repair_rate : kAssumedRepairRate;
  redundancy["missing_bytes"] = census->missing_bytes;
  redundancy["repair_rate_bytes_per_s"] = rate;
  redundancy["rate_measured_at"] = repair_rate > 0 ? TimeOrNull(repair_rate_ns) : json::value(nullptr);
  if (census->lost > 0) {
    redundancy["time_to_full_s"] = nullptr;
  } else {
    redundancy["time_to_full_s"] =
        degraded == 0 ? uint64_t{0} : std::max<uint64_t>(1, (census->missing_bytes + rate - 1) / rate);
  }

  json::object o;
  o["node_id"] = node_id;
  o["version"] = CV_VERSION;
  o["uptime_s"] = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::steady_clock::now() - kProcessStart)
                      .count();
  o["ready"] = c.store.Ready();
  o["io_engine"] = stats.io_engine;
  o["io"] = json::object{{"requests", stats.io_requests},
                         {"registered_requests", stats.io_registered_requests},
                         {"async_requests", stats.io_async_requests}};
  o["erasure"] = json::object{{"k", k}, {"m", m}};
  o["disks"] = std::move(disks);
  o["objects"] = census->objects;
  o["bytes"] = census->bytes;
  o["stripes"] = std::move(stripes);
  o["redundancy"] = std::move(redundancy);
  o["reconstructed_reads"] = stats.reconstructed_reads;
  o["corrupt_shards"] = stats.corrupt_shards;
  o["last_full_scrub_at"] = TimeOrNull(last_scrub_ns);
  o["jobs_running"] = jobs_running;
  return Reply(200, o);
}

json::object KeyJson(const index::ObjectKey& k) {
  return json::object{{"device", index::IdToHex(k.device)},
                      {"type", index::ObjectTypeName(k.type)},
                      {"name", k.name}};
}

std::optional<index::ObjectKey> KeyFromJson(const json::value* v) {
  if (!v || !v->is_object()) return std::nullopt;
  const json::object& o = v->as_object();
  auto str = [&](const char* f) -> std::optional<std::string> {
    const json::value* x = o.if_contains(f);
    if (!x || !x->is_string()) return std::nullopt;
    return std::string(x->as_string());
  };
  auto dev = str("device"), type = str("type"), name = str("name");
  if (!dev || !type || !name) return std::nullopt;
  auto id = index::IdFromHex(*dev);
  auto t = index::ParseObjectType(*type);
  if (!id || !t) return std::nullopt;
  return index::ObjectKey{*id, *t, *name};
}

namespace {

json::object RepairJson(const storage::RepairReport& rep, bool include_failed) {
  json::object o;
  o["complete"] = rep.stripes_lost == 0 && rep.still_queued == 0;
  o["include_failed_disks"] = include_failed;
  o["stripes_examined"] = rep.stripes_examined;
  o["bytes_rewritten"] = rep.bytes_rewritten;
  o["stripes_repaired"] = rep.stripes_repaired;
  o["shards_rewritten"] = rep.shards_rewritten;
  o["stripes_lost"] = rep.stripes_lost;
  o["still_queued"] = rep.still_queued;
  o["lost"] = Strings(rep.lost);
  return o;
}

}  // namespace

Result<ApiResult<index::Job>> ScheduleOpsJobIn(index::WriteTxn& txn, const Call& c,
                                               std::string_view kind, const json::object& params) {
  for (const char* state : {"scheduled", "running"}) {
    index::JobQuery q;
    q.state = state;
    q.limit = 1000;
    auto jobs = txn.ListJobs(q);
    if (!jobs) return tl::unexpected(jobs.error());
    for (const auto& j : *jobs) {
      if (j.kind == kind) {
        return ApiResult<index::Job>(tl::unexpected(ApiError{
            409,
            "already_running",
            "a " + std::string(kind) + " job is " + j.state + " already: " + index::IdToHex(j.id),
            {}}));
      }
    }
  }
  index::Job job = NewJob(kind, std::nullopt, std::nullopt, params, c.now_ns, c.now_ns);
  CV_TRY(txn.PutJob(job));
  CV_TRY(AppendAudit(txn, c, "job.schedule", JobTarget(job.id), std::nullopt, std::nullopt, nullptr,
                     JobJson(job)));
  return ApiResult<index::Job>(std::move(job));
}

Response JobScheduled(const index::Job& job) {
  Response ok = Reply(202, JobJson(job));
  ok.headers.emplace_back("Location", "/admin/v1/jobs/" + index::IdToHex(job.id));
  return ok;
}

Response ScheduleOpsJob(Call& c, std::string_view kind, const json::object& params) {
  Response r = InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    auto job = ScheduleOpsJobIn(txn, c, kind, params);
    if (!job) return tl::unexpected(job.error());
    if (!*job) return Outcome(tl::unexpected(job->error()));
    return Outcome(JobScheduled(**job));
  });
  if (r.status == 202 && c.runner) c.runner->Wake();
  return r;
}

namespace {

constexpr std::string_view kLastAutoRepairMeta = "ops/last_auto_repair_ns";
constexpr int64_t kAutoRepairEveryNs = int64_t{600} * 1000000000;  // when disks stay failed

}  // namespace

Response Scrub(Call& c) {
  if (auto refused = RefuseFields(c)) return *refused;
  json::object params;
  params["background"] = false;
  params["max_bytes_per_sec"] = uint64_t{0};
  return ScheduleOpsJob(c, kScrubJob, params);
}

Response Repair(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({"include_failed_disks"}); !ok) return FromApiError(ok.error());
  auto include = body->Bool("include_failed_disks");
  if (!include) return FromApiError(include.error());
  json::object params;
  params["include_failed_disks"] = include->value_or(false);
  return ScheduleOpsJob(c, kRepairJob, params);
}

// scrub: progress {objects_done, objects_total, shards_checked, bytes_checked, damaged_shards,
// lost_stripes, damaged[<= 200], last (the last object done)}, saved about once a second, so a
// resumed pass goes on after `last`. When complete: the time of the pass becomes the node's
// last full scrub, and damage found is repaired at once if auto_repair is on.
JobResult RunScrubJob(JobContext& ctx) {
  json::object params = ParsedObjectOrEmpty(ctx.job.params_json);
  json::object progress = ParsedObjectOrEmpty(ctx.job.progress_json);
  if (!progress.contains("objects_total")) {
    auto total = CountObjects(ctx.store);
    if (!total) return tl::unexpected(total.error());
    progress["objects_total"] = *total;
  }
  storage::ScrubOptions so;
  so.max_bytes_per_sec = U64(params, "max_bytes_per_sec");
  so.start_after = KeyFromJson(progress.if_contains("last"));
  const json::object base = progress;
  auto merged = [&](const storage::ScrubReport& rep, const index::ObjectKey& last) {
    json::object p = base;
    p["objects_done"] = U64(base, "objects_done") + rep.objects;
    p["shards_checked"] = U64(base, "shards_checked") + rep.shards_checked;
    p["bytes_checked"] = U64(base, "bytes_checked") + rep.bytes_checked;
    p["damaged_shards"] = U64(base, "damaged_shards") + rep.damaged_shards;
    p["lost_stripes"] = U64(base, "lost_stripes") + rep.lost_stripes;
    p["damaged"] = AppendCapped(base.if_contains("damaged"), rep.damaged, 200);
    p["last"] = KeyJson(last);
    return p;
  };
  ProgressSaver saver(ctx);
  so.progress = [&](const storage::ScrubReport& rep, const index::ObjectKey& last) {
    return saver.Tick([&] { return merged(rep, last); });
  };
  auto rep = ctx.store.Scrub(so);
  if (!rep) return tl::unexpected(rep.error());
  if (saver.error()) return tl::unexpected(*saver.error());
  if (!rep->complete || saver.cancelled()) return std::optional<json::object>();
  const index::ObjectKey last = so.start_after.value_or(index::ObjectKey{});
  json::object p = rep->objects > 0 || so.start_after ? merged(*rep, last) : base;
  const uint64_t damaged_shards = U64(p, "damaged_shards");
  const uint64_t lost = U64(p, "lost_stripes");
  const int64_t pass_started = ctx.job.started_ns;
  auto saved = ctx.SaveProgress(p, [&](index::WriteTxn& txn) {
    return txn.PutMeta(kLastFullScrubMeta, std::to_string(pass_started));
  });
  if (!saved) return tl::unexpected(saved.error());
  if (!*saved) return std::optional<json::object>();
  ForgetCensus();
  json::object o;
  o["clean"] = damaged_shards == 0 && lost == 0;
  o["background"] = params.contains("background") && params.at("background").is_bool() &&
                    params.at("background").as_bool();
  o["objects"] = U64(p, "objects_done");
  o["shards_checked"] = U64(p, "shards_checked");
  o["bytes_checked"] = U64(p, "bytes_checked");
  o["damaged_shards"] = damaged_shards;
  o["lost_stripes"] = lost;
  o["damaged"] = p["damaged"];
  o["started_at"] = TimeOrNull(pass_started);
  o["finished_at"] = TimeOrNull(NowNanos());
  if (damaged_shards > 0 && ctx.options.auto_repair) {
    auto r = ctx.store.Repair(false);
    if (!r) return tl::unexpected(r.error());
    ForgetCensus();
    o["repair"] = RepairJson(*r, false);
  }
  return std::optional<json::object>(std::move(o));
}

JobResult RunRepairJob(JobContext& ctx) {
  json::object params = ParsedObjectOrEmpty(ctx.job.params_json);
  const json::value* inc = params.if_contains("include_failed_disks");
  const bool include_failed = inc && inc->is_bool() && inc->as_bool();
  const int64_t started = NowNanos();
  auto rep = ctx.store.Repair(include_failed);
  if (!rep) return tl::unexpected(rep.error());
  ForgetCensus();
  const int64_t finished = NowNanos();
  if (rep->bytes_rewritten >= kRateMinBytes && finished > started) {
    const uint64_t rate = static_cast<uint64_t>(double(rep->bytes_rewritten) * 1e9 /
                                                double(finished - started));
    CV_TRY(ctx.store.Index().Update([&](index::WriteTxn& txn) {
      return txn.PutMeta(kRepairRateMeta, std::to_string(rate) + " " + std::to_string(finished));
    }));
  }
  json::object o = RepairJson(*rep, include_failed);
  o["started_at"] = TimeOrNull(started);
  o["finished_at"] = TimeOrNull(NowNanos());
  return std::optional<json::object>(std::move(o));
}

Result<std::optional<index::Job>> DueMaintenanceJob(storage::ObjectStore& store,
                                                    const Options& options, int64_t now_ns,
                                                    std::optional<SteadyTime>& last_disk_check) {
  auto txn = store.Index().BeginRead();
  if (!txn) return tl::unexpected(txn.error());
  for (const char* state : {"scheduled", "running"}) {
    index::JobQuery q;
    q.state = state;
    q.limit = 1000;
    auto jobs = (*txn)->ListJobs(q);
    if (!jobs) return tl::unexpected(jobs.error());
    for (const auto& j : *jobs) {
      if (j.kind == kScrubJob || j.kind == kRepairJob || j.kind == kDrainJob) {
        return std::optional<index::Job>();
      }
    }
  }
  auto meta_ns = [&](std::string_view key) -> Result<int64_t> {
    auto v = (*txn)->GetMeta(key);
    if (!v) return tl::unexpected(v.error());
    int64_t ns = 0;
    if (*v) {
      try {
        ns = std::stoll(**v);
      } catch (...) {
        ns = 0;
      }
    }
    return ns;
  };
  bool scrub_due = false;
  if (options.scrub_interval_ns > 0) {
    auto last = meta_ns(kLastFullScrubMeta);
    if (!last) return tl::unexpected(last.error());
    scrub_due = now_ns - *last >= options.scrub_interval_ns;
  }
  const SteadyTime now_steady = std::chrono::steady_clock::now();
  if (!scrub_due && last_disk_check && now_steady - *last_disk_check < kDiskCheckInterval) {
    return std::optional<index::Job>();
  }
  last_disk_check = now_steady;
  const storage::StoreStats stats = store.Stats();
  bool failed_disk = false;
  uint64_t used = 0;
  for (const auto& d : stats.disks) {
    // A removed disk needs repair only while the index still references shards on it.
    failed_disk = failed_disk ||
                  (d.failed && (d.state != storage::DiskState::kRemoved || d.live_bytes > 0));
    used += d.total_bytes - std::min(d.total_bytes, d.free_bytes);
  }
  if (options.auto_repair && (failed_disk || stats.pending_repairs > 0)) {
    auto last = meta_ns(kLastAutoRepairMeta);
    if (!last) return tl::unexpected(last.error());
    if (now_ns - *last >= kAutoRepairEveryNs || (!failed_disk && stats.pending_repairs > 0)) {
      txn->reset();
      json::object params;
      params["include_failed_disks"] = failed_disk;
      params["automatic"] = true;
      CV_TRY(store.Index().Update([&](index::WriteTxn& w) {
        return w.PutMeta(kLastAutoRepairMeta, std::to_string(now_ns));
      }));
      return std::optional<index::Job>(
          NewJob(kRepairJob, std::nullopt, std::nullopt, params, now_ns, now_ns));
    }
  }
  if (scrub_due) {
    // A pass over what the disks hold in half the interval, within the bounds.
    const double secs = double(options.scrub_interval_ns) / 2e9;
    uint64_t rate = static_cast<uint64_t>(double(used) / secs);
    rate = std::clamp<uint64_t>(rate, options.scrub_min_bytes_per_sec,
                                std::max(options.scrub_min_bytes_per_sec,
                                         options.scrub_max_bytes_per_sec));
    json::object params;
    params["background"] = true;
    params["max_bytes_per_sec"] = rate;
    return std::optional<index::Job>(
        NewJob(kScrubJob, std::nullopt, std::nullopt, params, now_ns, now_ns));
  }
  return std::optional<index::Job>();
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
  // The copy is files, not an index change, so it cannot commit with its record: the record
  // follows the copy, and a crash between them leaves a backup directory that the audit log
  // does not mention (nothing in the node's state changed).
  if (auto st = c.store.Index().Update([&](index::WriteTxn& txn) {
        return AuditNodeAction(txn, c, "index.backup", "index", o);
      });
      !st) {
    return FromError(st.error());
  }
  return Reply(201, o);
}

}  // namespace cv::admin::internal
