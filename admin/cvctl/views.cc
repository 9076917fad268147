#include "admin/cvctl/views.h"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cstdio>

#include "admin/jobs/job_json.h"

namespace cv::cvctl {

namespace {

namespace jobs = cv::admin::jobs;

// The node's answers, read leniently (a newer node may answer more, or differently).
uint64_t U(const json::object& o, std::string_view key) { return jobs::UintField(o, key); }
bool B(const json::object& o, std::string_view key) { return jobs::BoolField(o, key); }

// A scalar as text: strings bare, null as "-", the rest as JSON.
std::string Text(const json::value* v) {
  if (v == nullptr || v->is_null()) return "-";
  if (v->is_string()) return std::string(v->as_string());
  return json::serialize(*v);
}
std::string S(const json::object& o, std::string_view key) { return Text(o.if_contains(key)); }

const json::object& Obj(const json::object& o, std::string_view key) {
  static const json::object kEmpty;
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_object() ? v->as_object() : kEmpty;
}

const json::array& Arr(const json::object& o, std::string_view key) {
  static const json::array kEmpty;
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_array() ? v->as_array() : kEmpty;
}

std::string Duration(uint64_t s) {
  char buf[64];
  if (s >= 86400) {
    std::snprintf(buf, sizeof buf, "%llud %lluh", static_cast<unsigned long long>(s / 86400),
                  static_cast<unsigned long long>(s % 86400 / 3600));
  } else if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lluh %llum", static_cast<unsigned long long>(s / 3600),
                  static_cast<unsigned long long>(s % 3600 / 60));
  } else {
    std::snprintf(buf, sizeof buf, "%llum %llus", static_cast<unsigned long long>(s / 60),
                  static_cast<unsigned long long>(s % 60));
  }
  return buf;
}

void PrintList(const char* title, const json::array& items) {
  if (items.empty()) return;
  std::printf("%s\n", title);
  for (const auto& v : items) std::printf("  - %s\n", Text(&v).c_str());
}

void PrintList(const char* title, const std::vector<std::string>& items) {
  if (items.empty()) return;
  std::printf("%s\n", title);
  for (const auto& s : items) std::printf("  - %s\n", s.c_str());
}

void PrintNextCursor(const json::object& page) {
  const json::value* next = page.if_contains("next_cursor");
  if (next != nullptr && next->is_string()) {
    std::printf("(more: --cursor %s)\n", std::string(next->as_string()).c_str());
  }
}

}  // namespace

std::string HumanBytes(uint64_t n) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  }
  return buf;
}

void PrintTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < cells.size() && i < width.size(); ++i) {
      out += cells[i];
      if (i + 1 < cells.size()) out += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    std::printf("%s\n", out.c_str());
  };
  line(header);
  for (const auto& r : rows) line(r);
}

bool StatusHasProblems(const json::object& status) {
  const json::object& st = Obj(status, "stripes");
  return U(st, "degraded") > 0 || U(st, "lost") > 0 || U(st, "pending_repairs") > 0;
}
bool FsckHasProblems(const json::object& fsck) { return !B(fsck, "clean"); }
bool ScrubHasProblems(const json::object& scrub) {
  return !json::value_to<jobs::ScrubResult>(json::value(scrub)).clean;
}
bool RepairHasProblems(const json::object& repair) {
  return !json::value_to<jobs::RepairResult>(json::value(repair)).summary.complete;
}

void ShowStatus(const json::object& s) {
  const json::object& er = Obj(s, "erasure");
  const json::object& st = Obj(s, "stripes");
  std::printf("node      %s  chunkvault %s, up %s, %s%s\n", S(s, "node_id").c_str(),
              S(s, "version").c_str(), Duration(U(s, "uptime_s")).c_str(),
              S(s, "io_engine").c_str(), B(s, "ready") ? "" : ", NOT READY");
  std::printf("data      %llu objects, %s, erasure %llu+%llu\n",
              static_cast<unsigned long long>(U(s, "objects")), HumanBytes(U(s, "bytes")).c_str(),
              static_cast<unsigned long long>(U(er, "k")),
              static_cast<unsigned long long>(U(er, "m")));
  std::string missing;
  const json::array& by = Arr(st, "by_missing_shards");
  for (size_t i = 0; i < by.size(); ++i) {
    missing +=
        (i ? ", " : "") + std::to_string(jobs::AsUint(by[i]).value_or(0)) +
        (i == 0 ? " intact" : " missing " + std::to_string(i) + (i == 1 ? " shard" : " shards"));
  }
  std::printf("stripes   %llu total: %s, %llu lost; %llu queued for repair\n",
              static_cast<unsigned long long>(U(st, "total")), missing.c_str(),
              static_cast<unsigned long long>(U(st, "lost")),
              static_cast<unsigned long long>(U(st, "pending_repairs")));
  const json::object& red = Obj(s, "redundancy");
  if (const json::value* t = red.if_contains("time_to_full_s"); t && t->is_null()) {
    std::printf("repair    never back to full redundancy: stripes are lost\n");
  } else if (U(red, "time_to_full_s") > 0) {
    std::printf("repair    about %s to full redundancy once repair runs (%s to rebuild at %s/s, "
                "%s)\n",
                HumanDuration(double(U(red, "time_to_full_s"))).c_str(),
                HumanBytes(U(red, "missing_bytes")).c_str(),
                HumanBytes(U(red, "repair_rate_bytes_per_s")).c_str(),
                S(red, "rate_measured_at") == "-"
                    ? "an assumed rate: no repair measured yet"
                    : ("the rate of the repair of " + S(red, "rate_measured_at")).c_str());
  }
  std::printf("scrub     last full pass %s\n",
              S(s, "last_full_scrub_at") == "-" ? "never" : S(s, "last_full_scrub_at").c_str());
  std::printf("jobs      %llu running\n", static_cast<unsigned long long>(U(s, "jobs_running")));
  std::printf("health    %s\n",
              StatusHasProblems(s)
                  ? (U(st, "lost") > 0 ? "DATA LOST: stripes beyond repair"
                                       : "DEGRADED: run cvctl repair (--include-failed-disks "
                                         "for failed disks)")
                  : "ok: every stripe has all its shards");
  std::printf("\n");
  ShowDisks(s);
}

void ShowDisks(const json::object& s) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& d : Arr(s, s.contains("disks") ? "disks" : "items")) {
    if (!d.is_object()) continue;
    const json::object& o = d.as_object();
    rows.push_back({std::to_string(U(o, "position")), S(o, "path"), S(o, "state"),
                    HumanBytes(U(o, "live_bytes")), HumanBytes(U(o, "used_bytes")),
                    HumanBytes(U(o, "capacity_bytes")), std::to_string(U(o, "errors"))});
  }
  PrintTable({"#", "DISK", "STATE", "SHARDS", "USED", "CAPACITY", "ERRORS"}, rows);
}

void ShowCluster(const json::object& c) {
  if (!B(c, "cluster")) {
    std::printf("single node (no [cluster] section in its configuration)\n");
    return;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& v : Arr(c, "nodes")) {
    if (!v.is_object()) continue;
    const json::object& n = v.as_object();
    rows.push_back({S(n, "id") + (B(n, "self") ? " *" : ""), S(n, "state"),
                    std::to_string(U(n, "accounts")), HumanBytes(U(n, "capacity_bytes")),
                    HumanBytes(U(n, "free_bytes")),
                    S(n, "version"), S(n, "agent_url"), S(n, "admin_url"), S(n, "started_at")});
  }
  std::printf(
      "cluster seen from node %s (* = this node) at etcd revision %llu; nodes whose %llu s "
      "lease is alive:\n",
      S(c, "node").c_str(), static_cast<unsigned long long>(U(c, "revision")),
      static_cast<unsigned long long>(U(c, "lease_ttl_s")));
  PrintTable({"NODE", "STATE", "ACCOUNTS", "CAPACITY", "FREE", "VERSION", "AGENT", "ADMIN",
              "STARTED"},
             rows);
}

bool DrainHasProblems(const json::object& drain) {
  return !json::value_to<jobs::DrainResult>(json::value(drain)).complete;
}

void ShowDrain(const json::object& drain) {
  const auto r = json::value_to<jobs::DrainResult>(json::value(drain));
  std::printf(
      "drain of %s: %llu stripes moved (%llu shards, %s), %llu could not be moved, %llu "
      "extent files deleted, %s still referenced on the disk%s\n",
      r.path.value_or("-").c_str(), static_cast<unsigned long long>(r.stripes_moved),
      static_cast<unsigned long long>(r.shards_moved), HumanBytes(r.bytes_moved).c_str(),
      static_cast<unsigned long long>(r.stripes_failed),
      static_cast<unsigned long long>(r.extents_removed), HumanBytes(r.remaining_bytes).c_str(),
      r.complete ? ": complete" : "");
  PrintList("problems:", r.problems);
  if (!r.next.empty()) std::printf("next: %s\n", r.next.c_str());
}

void ShowFsck(const json::object& f) {
  const json::array& problems = Arr(f, "problems");
  std::printf("fsck: %llu objects, %s: %s\n", static_cast<unsigned long long>(U(f, "objects")),
              HumanBytes(U(f, "bytes")).c_str(),
              problems.empty() ? "clean" : (std::to_string(problems.size()) + " problem(s)").c_str());
  PrintList("problems:", problems);
  if (f.contains("fixed")) PrintList("fixed:", Arr(f, "fixed"));
}

void ShowScrub(const json::object& scrub) {
  const auto s = json::value_to<jobs::ScrubResult>(json::value(scrub));
  std::printf(
      "scrub: %llu objects, %llu shards, %s checked: ", static_cast<unsigned long long>(s.objects),
      static_cast<unsigned long long>(s.shards_checked), HumanBytes(s.bytes_checked).c_str());
  if (s.clean) {
    std::printf("clean\n");
    return;
  }
  std::printf("%llu damaged shard(s), %llu lost stripe(s); damage is queued: run cvctl repair\n",
              static_cast<unsigned long long>(s.damaged_shards),
              static_cast<unsigned long long>(s.lost_stripes));
  PrintList("damaged:", s.damaged.value_or(std::vector<std::string>{}));
}

void ShowRepair(const json::object& repair) {
  const jobs::RepairSummary r = json::value_to<jobs::RepairResult>(json::value(repair)).summary;
  std::printf(
      "repair: %llu stripes examined, %llu repaired (%llu shards rewritten), %llu lost, "
      "%llu still queued%s\n",
      static_cast<unsigned long long>(r.stripes_examined),
      static_cast<unsigned long long>(r.stripes_repaired),
      static_cast<unsigned long long>(r.shards_rewritten),
      static_cast<unsigned long long>(r.stripes_lost),
      static_cast<unsigned long long>(r.still_queued), r.complete ? ": complete" : "");
  PrintList("lost:", r.lost);
}

void ShowIndexBackup(const json::object& b) {
  std::printf("index copied to %s (%s)\n", S(b, "file").c_str(), HumanBytes(U(b, "bytes")).c_str());
}

void ShowAccounts(const json::object& page) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& v : Arr(page, "items")) {
    if (!v.is_object()) continue;
    const json::object& a = v.as_object();
    rows.push_back({S(a, "id"), S(a, "partner"), S(a, "status"), HumanBytes(U(a, "quota_bytes")),
                    HumanBytes(U(a, "used_bytes")), std::to_string(U(a, "objects")),
                    std::to_string(U(a, "device_limit")), S(a, "expires_at")});
  }
  PrintTable({"ID", "PARTNER", "STATUS", "QUOTA", "USED", "OBJECTS", "DEVICE LIMIT", "EXPIRES"},
             rows);
  PrintNextCursor(page);
}

void ShowDevices(const json::object& page) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& v : Arr(page, "items")) {
    if (!v.is_object()) continue;
    const json::object& d = v.as_object();
    rows.push_back({S(d, "id"), S(d, "account"), S(d, "name"), S(d, "kind"),
                    HumanBytes(U(d, "bytes")), std::to_string(U(d, "objects")),
                    S(d, "last_backup_at")});
  }
  PrintTable({"ID", "ACCOUNT", "NAME", "KIND", "USED", "OBJECTS", "LAST BACKUP"}, rows);
  PrintNextCursor(page);
}

void ShowJobs(const json::object& page) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& v : Arr(page, "items")) {
    if (!v.is_object()) continue;
    const auto j = json::value_to<jobs::JobView>(v);
    auto cell = [](const std::string& s) { return s.empty() ? std::string("-") : s; };
    rows.push_back({cell(j.id), cell(j.kind), cell(j.state), j.created_at.value_or("-"),
                    j.finished_at.value_or("-")});
  }
  PrintTable({"ID", "KIND", "STATE", "CREATED", "FINISHED"}, rows);
  PrintNextCursor(page);
}

void ShowRecord(const json::object& record) {
  size_t width = 0;
  for (const auto& kv : record) width = std::max(width, kv.key().size());
  for (const auto& kv : record) {
    std::printf("%-*s  %s\n", static_cast<int>(width), std::string(kv.key()).c_str(),
                Text(&kv.value()).c_str());
  }
}

std::string HumanDuration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e9) return "?";
  const uint64_t t = static_cast<uint64_t>(seconds + 0.5);
  char buf[32];
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%llu:%02llu:%02llu", (unsigned long long)(t / 3600),
                  (unsigned long long)(t / 60 % 60), (unsigned long long)(t % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%llu:%02llu", (unsigned long long)(t / 60),
                  (unsigned long long)(t % 60));
  }
  return buf;
}

void ProgressLine::Show(const json::object& job) {
  if (!enabled_) return;
  const auto view = json::value_to<jobs::JobView>(json::value(job));
  const auto counts = json::value_to<jobs::ProgressCounts>(view.progress);
  auto num = [](const std::optional<uint64_t>& n) { return n ? double(*n) : -1.0; };
  // Bytes when the job counts bytes against a total, else objects.
  double done = num(counts.bytes_done);
  double total = num(counts.bytes_total);
  bool bytes = done >= 0 && total > 0;
  if (!bytes) {
    done = num(counts.objects_done);
    total = num(counts.objects_total);
  }
  const double now = std::chrono::duration<double>(
                         std::chrono::steady_clock::now().time_since_epoch())
                         .count();
  if (done >= 0 && last_done_ >= 0 && now > last_time_ && done >= last_done_) {
    const double r = (done - last_done_) / (now - last_time_);
    rate_ = rate_ > 0 ? 0.7 * rate_ + 0.3 * r : r;
  }
  if (done >= 0) {
    last_done_ = done;
    last_time_ = now;
  }
  std::string text = (view.kind.empty() ? "job" : view.kind) + " " + view.state;
  if (done >= 0 && total > 0) {
    char pct[16];
    std::snprintf(pct, sizeof pct, " %5.1f%% ", 100.0 * std::min(done, total) / total);
    text += pct;
    text += bytes ? HumanBytes(uint64_t(done)) + "/" + HumanBytes(uint64_t(total))
                  : std::to_string(uint64_t(done)) + "/" + std::to_string(uint64_t(total)) +
                        " objects";
    if (rate_ > 0) {
      text += "  " + (bytes ? HumanBytes(uint64_t(rate_)) : std::to_string(uint64_t(rate_)) +
                                                                " objects") +
              "/s  ETA " + HumanDuration((total - done) / rate_);
    }
  }
  std::fprintf(stderr, "\r%-100s", text.c_str());
  std::fflush(stderr);
  shown_ = true;
}

void ProgressLine::Clear() {
  if (!shown_) return;
  std::fprintf(stderr, "\r%-100s\r", "");
  std::fflush(stderr);
  shown_ = false;
}

}  // namespace cv::cvctl
