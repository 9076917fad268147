// The operator's routes for running a node (what `cvctl` calls): GET /status, POST /scrub
// and POST /repair (which schedule the jobs of admin/jobs/scrub.cc and repair.cc), POST
// /index/backup.
#include <boost/json/array.hpp>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <mutex>

#include "admin/internal.h"
#include "admin/jobs/jobs.h"

#ifndef CV_VERSION
#define CV_VERSION "unknown"
#endif

namespace cv::admin::internal {

namespace {

// The stripe census walks every object: answers within this age come from the cache.
constexpr auto kCensusMaxAge = std::chrono::seconds(5);

// The rate GET /status assumes repair rebuilds at before a repair job measured one
// (jobs::kRepairRateMeta).
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
  CV_TRY_ASSIGN(auto txn, store.Index().BeginRead());
  CV_TRY(txn->ForEachObject([&](const index::ObjectKey&, const index::ObjectRecord& r) {
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

Response FromClusterError(const Error& e) {
  if (e.kind != ErrorKind::kUnavailable) return FromError(e);
  Log(LogLevel::kWarn, "etcd_unreachable", {{"step", "admin request"}, {"error", e.ToString()}});
  Response r = FromApiError(ApiError{503, "etcd_unavailable",
                                     "the cluster's etcd cannot be reached: this node keeps "
                                     "serving the accounts it holds, but cannot change where "
                                     "accounts and devices live",
                                     {}});
  r.headers.emplace_back("Retry-After", "5");
  return r;
}

Response ClusterStatus(Call& c) {
  if (!c.options->cluster) return Reply(200, json::object{{"cluster", false}});
  auto status = c.options->cluster->StatusJson();
  if (!status) {
    return FromClusterError(status.error());
  }
  return Response{200, std::move(*status), {}, {}};
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
    auto rate = (*txn)->GetMeta(jobs::kRepairRateMeta);
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

Result<ApiResult<index::Job>> ScheduleOpsJobIn(index::WriteTxn& txn, const Call& c,
                                               std::string_view kind, const json::value& params) {
  for (const char* state : {"scheduled", "running"}) {
    index::JobQuery q;
    q.state = state;
    q.limit = 1000;
    CV_TRY_ASSIGN(auto jobs, txn.ListJobs(q));
    for (const auto& j : jobs) {
      if (j.kind == kind) {
        return ApiResult<index::Job>(tl::unexpected(ApiError{
            409,
            "already_running",
            "a " + std::string(kind) + " job is " + j.state + " already: " + index::IdToHex(j.id),
            {}}));
      }
    }
  }
  index::Job job = jobs::NewJob(kind, std::nullopt, std::nullopt, params, c.now_ns, c.now_ns);
  CV_TRY(txn.PutJob(job));
  CV_TRY(AppendAudit(txn, c, "job.schedule", jobs::JobTarget(job.id), std::nullopt, std::nullopt,
                     nullptr, jobs::JobJson(job)));
  return ApiResult<index::Job>(std::move(job));
}

Response JobScheduled(const index::Job& job) {
  Response ok = Reply(202, jobs::JobJson(job));
  ok.headers.emplace_back("Location", "/admin/v1/jobs/" + index::IdToHex(job.id));
  return ok;
}

Response ScheduleOpsJob(Call& c, std::string_view kind, const json::value& params) {
  Response r = InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto job, ScheduleOpsJobIn(txn, c, kind, params));
    if (!job) return Outcome(tl::unexpected(job.error()));
    return Outcome(JobScheduled(*job));
  });
  if (r.status == 202 && c.runner) c.runner->Wake();
  return r;
}

Response Scrub(Call& c) {
  if (auto refused = RefuseFields(c)) return *refused;
  // The operator's pass: not a background one, unthrottled.
  const jobs::ScrubParams params{/*background=*/false, /*max_bytes_per_sec=*/0};
  return ScheduleOpsJob(c, jobs::kScrubJob, json::value_from(params));
}

Response Repair(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({"include_failed_disks"}); !ok) return FromApiError(ok.error());
  auto include = body->Bool("include_failed_disks");
  if (!include) return FromApiError(include.error());
  jobs::RepairParams params;
  params.include_failed_disks = include->value_or(false);
  return ScheduleOpsJob(c, jobs::kRepairJob, json::value_from(params));
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
