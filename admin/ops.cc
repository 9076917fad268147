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

namespace {

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

uint64_t Num(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (!v) return 0;
  if (v->is_uint64()) return v->as_uint64();
  if (v->is_int64() && v->as_int64() >= 0) return static_cast<uint64_t>(v->as_int64());
  return 0;
}

json::object RepairJson(const storage::RepairReport& rep, bool include_failed) {
  json::object o;
  o["complete"] = rep.stripes_lost == 0 && rep.still_queued == 0;
  o["include_failed_disks"] = include_failed;
  o["stripes_examined"] = rep.stripes_examined;
  o["stripes_repaired"] = rep.stripes_repaired;
  o["shards_rewritten"] = rep.shards_rewritten;
  o["stripes_lost"] = rep.stripes_lost;
  o["still_queued"] = rep.still_queued;
  o["lost"] = Strings(rep.lost);
  return o;
}

// A scrub or repair job asked for by the operator: 202 with the job, or 409 naming the one of
// that kind already scheduled or running.
Response ScheduleOpsJob(Call& c, std::string_view kind, const json::object& params) {
  Response r = InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    for (const char* state : {"scheduled", "running"}) {
      index::JobQuery q;
      q.state = state;
      q.limit = 1000;
      auto jobs = txn.ListJobs(q);
      if (!jobs) return tl::unexpected(jobs.error());
      for (const auto& j : *jobs) {
        if (j.kind == kind) {
          return Outcome(tl::unexpected(ApiError{
              409, "already_running",
              "a " + std::string(kind) + " job is " + j.state + " already: " + index::IdToHex(j.id),
              {}}));
        }
      }
    }
    index::Job job = NewJob(kind, std::nullopt, std::nullopt, params, c.now_ns, c.now_ns);
    CV_TRY(txn.PutJob(job));
    json::object o = JobJson(job);
    CV_TRY(AppendAudit(txn, c, "job.schedule", JobTarget(job.id), std::nullopt, std::nullopt,
                       nullptr, o));
    Response ok = Reply(202, o);
    ok.headers.emplace_back("Location", "/admin/v1/jobs/" + index::IdToHex(job.id));
    return Outcome(std::move(ok));
  });
  if (r.status == 202 && c.runner) c.runner->Wake();
  return r;
}

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
    uint64_t total = 0;
    auto txn = ctx.store.Index().BeginRead();
    if (!txn) return tl::unexpected(txn.error());
    CV_TRY((*txn)->ForEachObject([&](const index::ObjectKey&, const index::ObjectRecord&) {
      ++total;
      return true;
    }));
    progress["objects_total"] = total;
  }
  storage::ScrubOptions so;
  so.max_bytes_per_sec = Num(params, "max_bytes_per_sec");
  so.start_after = KeyFromJson(progress.if_contains("last"));
  const json::object base = progress;
  json::array damaged;
  if (const json::value* d = base.if_contains("damaged"); d && d->is_array()) damaged = d->as_array();
  bool cancelled = false;
  Error save_error;
  auto last_save = std::chrono::steady_clock::now();
  auto merged = [&](const storage::ScrubReport& rep, const index::ObjectKey& last) {
    json::object p = base;
    p["objects_done"] = Num(base, "objects_done") + rep.objects;
    p["shards_checked"] = Num(base, "shards_checked") + rep.shards_checked;
    p["bytes_checked"] = Num(base, "bytes_checked") + rep.bytes_checked;
    p["damaged_shards"] = Num(base, "damaged_shards") + rep.damaged_shards;
    p["lost_stripes"] = Num(base, "lost_stripes") + rep.lost_stripes;
    json::array d = damaged;
    for (const auto& line : rep.damaged) {
      if (d.size() >= 200) break;
      d.push_back(json::value(line));
    }
    p["damaged"] = std::move(d);
    p["last"] = KeyJson(last);
    return p;
  };
  so.progress = [&](const storage::ScrubReport& rep, const index::ObjectKey& last) {
    if (ctx.stopping()) return false;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_save < std::chrono::seconds(1)) return true;
    last_save = now;
    auto saved = ctx.SaveProgress(merged(rep, last));
    if (!saved) {
      save_error = saved.error();
      return false;
    }
    if (!*saved) cancelled = true;
    return *saved;
  };
  auto rep = ctx.store.Scrub(so);
  if (!rep) return tl::unexpected(rep.error());
  if (!save_error.context.empty()) return tl::unexpected(save_error);
  if (!rep->complete || cancelled) return std::optional<json::object>();
  const index::ObjectKey last = so.start_after.value_or(index::ObjectKey{});
  json::object p = rep->objects > 0 || so.start_after ? merged(*rep, last) : base;
  const uint64_t damaged_shards = Num(p, "damaged_shards");
  const uint64_t lost = Num(p, "lost_stripes");
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
  o["objects"] = Num(p, "objects_done");
  o["shards_checked"] = Num(p, "shards_checked");
  o["bytes_checked"] = Num(p, "bytes_checked");
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
      if (j.kind == kScrubJob || j.kind == kRepairJob) return std::optional<index::Job>();
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
    failed_disk = failed_disk || d.failed;
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
  if (auto st = AuditNodeAction(c, "index.backup", "index", o); !st) return FromError(st.error());
  return Reply(201, o);
}

}  // namespace cv::admin::internal
