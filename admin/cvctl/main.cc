// cvctl: the operators' command line. Every command but `index rebuild` is a thin wrapper
// over the node's admin API (operator key); `index rebuild` works offline on the node's
// disks. See README.md, "Operating a node: cvctl".
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <thread>
#include <unistd.h>

#include "admin/cvctl/client.h"
#include "admin/cvctl/cvctl.h"
#include "admin/cvctl/views.h"
#include "admin/jobs/job_json.h"

namespace cv::cvctl {
namespace {

namespace jobs = cv::admin::jobs;

constexpr char kExitCodes[] =
    "Exit codes:\n"
    "  0  ok\n"
    "  1  the node refused the request (4xx/5xx; its message is printed on stderr), or an\n"
    "     offline command failed\n"
    "  2  usage error (bad arguments, unreadable key file)\n"
    "  3  the node cannot be reached (no endpoints.json, connection refused, timeout, TLS)\n"
    "  4  problems found: fsck not clean, scrub found damage, repair incomplete, status shows\n"
    "     degraded or lost stripes or repairs pending, courier verify found a problem\n";

// How to reach the node, as given on the command line or in the environment.
struct Global {
  std::string root = "./var/chunkvault";
  std::string url;
  std::string ca;
  std::string key_file;
  bool json = false;
  int timeout_s = 0;  // 0: 30 s, or 1 h for scrub, repair and index backup
};

struct Failure {
  int code;
  std::string message;
};

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

// The node's admin endpoint: --url/--ca/--key-file, else ROOT/run/endpoints.json (written by
// a running chunkvaultd) with --ca/--key-file overriding what it names.
tl::expected<Endpoint, Failure> FindNode(const Global& g) {
  Endpoint ep;
  std::string ca = g.ca;
  std::string key_file = g.key_file;
  if (!g.url.empty()) {
    auto parsed = ParseAdminUrl(g.url);
    if (!parsed) return tl::unexpected(Failure{kExitUsage, parsed.error()});
    ep = *parsed;
    if (key_file.empty()) {
      return tl::unexpected(Failure{kExitUsage, "--url needs --key-file (or CVCTL_KEY_FILE)"});
    }
  } else {
    const std::string file = g.root + "/run/endpoints.json";
    auto text = ReadFile(file);
    if (!text) {
      return tl::unexpected(Failure{kExitUnreachable,
                                    "no running node found: " + file +
                                        " does not exist (is chunkvaultd running on this root? "
                                        "else give --root or --url)"});
    }
    boost::system::error_code ec;
    json::value doc = json::parse(*text, ec);
    const json::object* o = ec ? nullptr : doc.if_object();
    auto field = [&](const char* k) { return o ? jobs::StringField(*o, k) : std::string(); };
    if (field("admin").empty()) {
      return tl::unexpected(Failure{kExitUnreachable, file + " has no admin address"});
    }
    auto parsed = ParseAdminUrl(field("admin"));
    if (!parsed) return tl::unexpected(Failure{kExitUnreachable, file + ": " + parsed.error()});
    ep = *parsed;
    if (ca.empty()) ca = field("ca");
    if (key_file.empty()) key_file = field("admin_key_file");
  }
  ep.ca_file = ca;
  auto key = ReadFile(key_file);
  if (!key) {
    return tl::unexpected(Failure{kExitUsage, "cannot read the admin key file " + key_file});
  }
  ep.key = Trim(*key);
  return ep;
}

// What a command did: the exit code (messages are printed already).
using Run = std::function<int()>;

// Percent-encodes a query value (ids, names and durations need nothing, but be exact).
std::string QueryValue(std::string_view v) { return boost::urls::encode(v, boost::urls::unreserved_chars); }

// "?a=1&b=2" from the given (non-empty) parameters.
std::string Query(std::initializer_list<std::pair<const char*, std::string>> params) {
  std::string q;
  for (const auto& [k, v] : params) {
    if (v.empty()) continue;
    q += (q.empty() ? "?" : "&") + std::string(k) + "=" + QueryValue(v);
  }
  return q;
}

int FollowJob(const Global& g, const std::string& id,
              const std::function<void(const json::object&)>& show,
              const std::function<bool(const json::object&)>& problems);

// Sends one request; the answer object, or the exit code after saying why on stderr.
tl::expected<json::object, int> Fetch(const Global& g, std::string_view method,
                                      const std::string& path, const std::string& body,
                                      int default_timeout_s) {
  auto ep = FindNode(g);
  if (!ep) {
    std::fprintf(stderr, "cvctl: %s\n", ep.error().message.c_str());
    return tl::unexpected(ep.error().code);
  }
  AdminClient client(*ep, std::chrono::seconds(g.timeout_s > 0 ? g.timeout_s : default_timeout_s));
  auto answer = client.Call(method, path, body);
  if (!answer) {
    std::fprintf(stderr, "cvctl: %s\n", answer.error().c_str());
    return tl::unexpected(kExitUnreachable);
  }
  boost::system::error_code ec;
  json::value doc = json::parse(answer->body, ec);
  if (answer->status >= 400) {
    std::string code = "error", message = answer->body;
    if (!ec && doc.is_object()) {
      if (const json::value* e = doc.as_object().if_contains("error"); e && e->is_object()) {
        const json::object& eo = e->as_object();
        if (auto c = eo.if_contains("code"); c && c->is_string()) code = c->as_string();
        if (auto m = eo.if_contains("message"); m && m->is_string()) message = m->as_string();
      }
    }
    std::fprintf(stderr, "cvctl: the node refused %s /admin/v1/%s: %d %s: %s\n",
                 std::string(method).c_str(), path.c_str(), answer->status, code.c_str(),
                 message.c_str());
    if (g.json) std::printf("%s\n", answer->body.c_str());
    return tl::unexpected(kExitRefused);
  }
  if (ec || !doc.is_object()) {
    std::fprintf(stderr, "cvctl: the node's answer is not a JSON object: %.200s\n",
                 answer->body.c_str());
    return tl::unexpected(kExitRefused);
  }
  return std::move(doc.as_object());
}

// A disk named by its position or its path (as the node lists it): the position, or the exit
// code after saying why.
tl::expected<std::string, int> DiskPosition(const Global& g, const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("0123456789") == std::string::npos) return arg;
  auto page = Fetch(g, "GET", "disks", "", 30);
  if (!page) return tl::unexpected(page.error());
  auto bare = [](std::string p) {
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    return p;
  };
  const json::value* items = page->if_contains("items");
  if (items && items->is_array()) {
    for (const auto& d : items->as_array()) {
      if (!d.is_object() || bare(jobs::StringField(d.as_object(), "path")) != bare(arg)) continue;
      const json::value* pos = d.as_object().if_contains("position");
      if (auto p = pos ? jobs::AsUint(*pos) : std::nullopt) return std::to_string(*p);
    }
  }
  std::fprintf(stderr, "cvctl: %s is not one of the node's disks (cvctl disk list)\n", arg.c_str());
  return tl::unexpected(kExitRefused);
}

// Sends one request and shows the answer: unchanged with --json, else through `show`.
// `problems` decides exit code 4 from the answer.
int Request(const Global& g, std::string_view method, std::string path, std::string body,
            int default_timeout_s, const std::function<void(const json::object&)>& show,
            const std::function<bool(const json::object&)>& problems = nullptr) {
  auto doc = Fetch(g, method, path, body, default_timeout_s);
  if (!doc) return doc.error();
  if (g.json) {
    std::printf("%s\n", json::serialize(*doc).c_str());
  } else if (show) {
    show(*doc);
  }
  std::fflush(stdout);
  return problems && problems(*doc) ? kExitProblems : kExitOk;
}

// Starts a job (the request answers 202 with it) and, unless `wait` is false, follows it to
// its end with a progress line on stderr (a terminal only), then shows its result like a
// synchronous answer: `show`/`problems` see the job's result; failed or cancelled -> exit 1.
int StartJob(const Global& g, std::string_view method, const std::string& path,
             const std::string& body, bool wait,
             const std::function<void(const json::object&)>& show,
             const std::function<bool(const json::object&)>& problems) {
  auto job = Fetch(g, method, path, body, 30);
  if (!job) return job.error();
  const auto view = json::value_to<jobs::JobView>(json::value(*job));
  if (!wait) {
    if (g.json) {
      std::printf("%s\n", json::serialize(*job).c_str());
    } else {
      std::printf("job %s (%s) %s\n", view.id.c_str(), view.kind.c_str(), view.state.c_str());
    }
    return kExitOk;
  }
  return FollowJob(g, view.id, show, problems);
}

int FollowJob(const Global& g, const std::string& id,
              const std::function<void(const json::object&)>& show,
              const std::function<bool(const json::object&)>& problems) {
  ProgressLine line(::isatty(2) != 0 && !g.json);
  while (true) {
    auto job = Fetch(g, "GET", "jobs/" + id, "", 30);
    if (!job) {
      line.Clear();
      return job.error();
    }
    const auto view = json::value_to<jobs::JobView>(json::value(*job));
    const std::string& state = view.state;
    if (state == "done" || state == "failed" || state == "cancelled") {
      line.Clear();
      const json::object result =
          view.result.is_object() ? view.result.as_object() : json::object();
      if (state != "done") {
        std::fprintf(stderr, "cvctl: job %s %s%s%s\n", id.c_str(), state.c_str(),
                     result.contains("error") ? ": " : "",
                     json::value_to<jobs::JobFailure>(view.result).error.c_str());
        if (g.json) std::printf("%s\n", json::serialize(*job).c_str());
        return kExitRefused;
      }
      if (g.json) {
        std::printf("%s\n", json::serialize(result).c_str());
      } else if (show) {
        show(result);
      }
      std::fflush(stdout);
      return problems && problems(result) ? kExitProblems : kExitOk;
    }
    line.Show(*job);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

int Main(int argc, char** argv) {
  CLI::App app{"cvctl: operate a chunkvault node (status, checks, repair, index backup and "
               "rebuild, accounts, devices, jobs, cluster)"};
  app.footer(kExitCodes);
  app.fallthrough();  // global options may follow the command
  app.require_subcommand(1);
  Global g;
  app.add_option("--root", g.root,
                 "the node's root folder; its run/endpoints.json names the admin address, CA and "
                 "key file [./var/chunkvault]")
      ->envname("CVCTL_ROOT");
  app.add_option("--url", g.url, "admin URL https://HOST:PORT instead of --root")
      ->envname("CVCTL_URL");
  app.add_option("--ca", g.ca, "CA certificate (PEM) the node's certificate must chain to")
      ->envname("CVCTL_CA");
  app.add_option("--key-file", g.key_file, "file holding the operator admin key")
      ->envname("CVCTL_KEY_FILE");
  app.add_flag("--json", g.json, "print the node's JSON answer unchanged");
  app.add_option("--timeout", g.timeout_s,
                 "seconds per network step [30; 3600 for scrub, repair, index backup]")
      ->check(CLI::Range(1, 86400));

  Run run;
  auto on = [&](CLI::App* cmd, Run r) { cmd->callback([&run, r] { run = r; }); };
  constexpr int kShort = 30, kLong = 3600;

  on(app.add_subcommand("status", "node health at a glance (exit 4 if stripes are degraded)"),
     [&] { return Request(g, "GET", "status", "", kShort, ShowStatus, StatusHasProblems); });
  auto* cluster = app.add_subcommand("cluster", "the cluster this node belongs to (etcd)");
  cluster->require_subcommand(1);
  on(cluster->add_subcommand("status", "the nodes whose lease is alive: state, capacity, free "
                                       "bytes, version, addresses"),
     [&] { return Request(g, "GET", "cluster", "", kShort, ShowCluster); });
  bool fsck_fix = false;
  auto* fsck = app.add_subcommand(
      "fsck", "index <-> extents <-> usage counters (exit 4 if not clean, after --fix: if "
              "problems remain)");
  fsck->add_flag("--fix", fsck_fix,
                 "set usage counters and extent accounting to what the objects sum to (one "
                 "index transaction: uploads wait for it); prints what it fixed");
  on(fsck, [&] {
    if (!fsck_fix) return Request(g, "GET", "fsck", "", kLong, ShowFsck, FsckHasProblems);
    return Request(g, "POST", "fsck", json::serialize(json::object{{"fix", true}}), kLong, ShowFsck,
                   FsckHasProblems);
  });

  bool no_wait = false;
  auto* scrub = app.add_subcommand(
      "scrub", "read and verify every shard record (a job; cvctl follows it with a progress "
               "line); damage is queued for repair (exit 4 if damage was found)");
  scrub->require_subcommand(0, 1);
  scrub->add_flag("--no-wait", no_wait, "start the job and print its id; do not follow it");
  auto* scrub_start = scrub->add_subcommand("start", "the same as plain 'scrub'");
  scrub_start->add_flag("--no-wait", no_wait, "start the job and print its id");
  auto* scrub_status = scrub->add_subcommand("status", "the scrub running now, if any, and the last full one");
  auto* scrub_stop = scrub->add_subcommand("stop", "stop the running scrub (the next one starts over)");
  // CLI11 runs the parent's callback after its subcommand's: plain 'scrub' only.
  scrub->callback([&] {
    if (!scrub->get_subcommands().empty()) return;
    run = [&] { return StartJob(g, "POST", "scrub", "{}", !no_wait, ShowScrub, ScrubHasProblems); };
  });
  on(scrub_start, [&] {
    return StartJob(g, "POST", "scrub", "{}", !no_wait, ShowScrub, ScrubHasProblems);
  });
  on(scrub_status, [&] {
    return Request(g, "GET", "jobs?kind=scrub&state=running", "", kShort, ShowJobs);
  });
  on(scrub_stop, [&] {
    auto page = Fetch(g, "GET", "jobs?kind=scrub&state=running", "", kShort);
    if (!page) return page.error();
    const json::value* items = page->if_contains("items");
    if (!items || !items->is_array() || items->as_array().empty()) {
      std::fprintf(stderr, "cvctl: no scrub is running\n");
      return kExitRefused;
    }
    const std::string id = json::value_to<jobs::JobView>(items->as_array()[0]).id;
    return Request(g, "POST", "jobs/" + id + "/cancel", "{}", kShort, ShowRecord);
  });

  bool include_failed = false;
  auto* repair = app.add_subcommand(
      "repair", "rebuild damaged stripes from their survivors now, fewest survivors first (exit 4 "
                "if stripes are lost or left queued)");
  repair->add_flag("--include-failed-disks", include_failed,
                   "also rebuild every shard that sits on a failed disk");
  repair->add_flag("--no-wait", no_wait, "start the job and print its id; do not follow it");
  on(repair, [&] {
    json::object body;
    body["include_failed_disks"] = include_failed;
    return StartJob(g, "POST", "repair", json::serialize(body), !no_wait, ShowRepair,
                    RepairHasProblems);
  });

  auto* disk = app.add_subcommand(
      "disk", "replace disks: list them, add one while serving, drain one (move its shards off), "
              "remove one (declare it gone; repair rebuilds its shards)");
  disk->require_subcommand(1);
  std::string disk_arg;
  bool force = false;
  on(disk->add_subcommand("list", "the node's disks: position, path, state, shard bytes"),
     [&] { return Request(g, "GET", "disks", "", kShort, ShowDisks); });
  auto* dadd = disk->add_subcommand(
      "add", "add an empty directory (a new disk's mount point) as a disk; it takes new shards "
             "at once. List it in the config's `disks` too");
  dadd->add_option("PATH", disk_arg, "absolute path on the node's machine")->required();
  on(dadd, [&] {
    json::object body;
    body["path"] = disk_arg;
    return Request(g, "POST", "disks", json::serialize(body), kShort, ShowRecord);
  });
  auto* ddrain = disk->add_subcommand(
      "drain", "move every shard off a disk that is still readable (a job; exit 4 if shards "
               "are left on it); cancel it with 'cvctl jobs cancel ID' to put the disk back");
  ddrain->add_option("DISK", disk_arg, "the disk's path or position")->required();
  ddrain->add_flag("--no-wait", no_wait, "start the job and print its id; do not follow it");
  on(ddrain, [&] {
    auto pos = DiskPosition(g, disk_arg);
    if (!pos) return pos.error();
    return StartJob(g, "POST", "disks/" + *pos + "/drain", "{}", !no_wait, ShowDrain,
                    DrainHasProblems);
  });
  auto* dremove = disk->add_subcommand(
      "remove", "declare a disk gone for good (dead, or drained): a repair job rebuilds its "
                "shards on the other disks (exit 4 if that repair is incomplete)");
  dremove->add_option("DISK", disk_arg, "the disk's path or position")->required();
  dremove->add_flag("--force", force,
                    "remove a healthy disk that still holds shards (leaves them short of full "
                    "redundancy until repair is done; prefer drain)");
  dremove->add_flag("--no-wait", no_wait, "do not follow the repair job");
  on(dremove, [&] {
    auto pos = DiskPosition(g, disk_arg);
    if (!pos) return pos.error();
    json::object body;
    if (force) body["force"] = true;
    auto doc = Fetch(g, "POST", "disks/" + *pos + "/remove", json::serialize(body), kShort);
    if (!doc) return doc.error();
    const json::value* repair = doc->if_contains("repair");
    const bool follow = !no_wait && repair && repair->is_object();
    const std::string repair_job =
        repair && repair->is_object() ? json::value_to<jobs::JobView>(*repair).id : "";
    if (g.json && !follow) {
      std::printf("%s\n", json::serialize(*doc).c_str());
      return kExitOk;
    }
    if (!g.json) {
      const json::value* d = doc->if_contains("disk");
      if (d && d->is_object()) ShowRecord(d->as_object());
      const std::string message = jobs::StringField(*doc, "message");
      if (!message.empty()) std::printf("%s\n", message.c_str());
      if (repair && repair->is_object()) {
        std::printf("repair job %s rebuilds its shards\n", repair_job.c_str());
      }
      std::fflush(stdout);
    }
    if (!follow) return kExitOk;
    return FollowJob(g, repair_job, ShowRepair, RepairHasProblems);
  });

  auto* index = app.add_subcommand("index", "back up or rebuild the LMDB index");
  index->require_subcommand(1);
  std::string backup_path;
  auto* backup = index->add_subcommand(
      "backup", "hot, consistent copy of the index into a new directory on the node");
  backup->add_option("PATH", backup_path,
                     "absolute path on the node's machine; must not exist (the copy is "
                     "PATH/data.mdb)")
      ->required();
  on(backup, [&] {
    json::object body;
    body["path"] = backup_path;
    return Request(g, "POST", "index/backup", json::serialize(body), kLong, ShowIndexBackup);
  });
  RebuildArgs rebuild_args;
  auto* rebuild = index->add_subcommand(
      "rebuild",
      "OFFLINE: rebuild a lost index from the extents' shard headers; chunkvaultd must be "
      "stopped. Accounts, devices and tokens come from an index backup");
  rebuild->add_option("--config", rebuild_args.config_file,
                      "the node's TOML configuration, as given to chunkvaultd")
      ->check(CLI::ExistingFile);
  auto* from = rebuild->add_option("--from-backup", rebuild_args.backup_dir,
                                   "a directory made by 'cvctl index backup'")
                   ->check(CLI::ExistingDirectory);
  rebuild->add_flag("--without-backup", rebuild_args.without_backup,
                    "rebuild objects only: no accounts, devices or tokens survive")
      ->excludes(from);
  on(rebuild, [&] {
    rebuild_args.root = g.root;
    rebuild_args.json = g.json;
    return RebuildIndex(rebuild_args);
  });

  auto* accounts = app.add_subcommand("accounts", "list, show and create accounts");
  accounts->require_subcommand(1);
  std::string partner, status, cursor, account_id, expires_at;
  int limit = 0;
  auto* alist = accounts->add_subcommand("list", "accounts, a page at a time");
  alist->add_option("--partner", partner, "only this partner's accounts");
  alist->add_option("--status", status, "trial, active, expired or suspended");
  alist->add_option("--cursor", cursor, "next page: the cursor the previous page printed");
  alist->add_option("--limit", limit, "accounts per page (1-1000) [100]");
  on(alist, [&] {
    return Request(g, "GET",
                   "accounts" + Query({{"partner", partner},
                                       {"status", status},
                                       {"cursor", cursor},
                                       {"limit", limit ? std::to_string(limit) : ""}}),
                   "", kShort, ShowAccounts);
  });
  auto* ashow = accounts->add_subcommand("show", "one account");
  ashow->add_option("ID", account_id, "account id")->required();
  on(ashow, [&] { return Request(g, "GET", "accounts/" + account_id, "", kShort, ShowRecord); });
  auto* acreate = accounts->add_subcommand("create", "a new account");
  uint64_t quota = 0, trial_days = 0;
  uint32_t device_limit = 0;
  std::string create_status = "active";
  acreate->add_option("--quota", quota, "plan quota in bytes")->required();
  acreate->add_option("--device-limit", device_limit, "devices the plan allows")->required();
  acreate->add_option("--status", create_status, "trial or active [active]");
  acreate->add_option("--partner", partner, "the partner the account belongs to");
  acreate->add_option("--trial-days", trial_days, "a trial's length in days");
  acreate->add_option("--expires-at", expires_at, "RFC 3339 UTC expiry");
  on(acreate, [&] {
    json::object body;
    body["plan_quota_bytes"] = quota;
    body["device_limit"] = device_limit;
    body["status"] = create_status;
    if (!partner.empty()) body["partner"] = partner;
    if (trial_days) body["trial_days"] = trial_days;
    if (!expires_at.empty()) body["expires_at"] = expires_at;
    return Request(g, "POST", "accounts", json::serialize(body), kShort, ShowRecord);
  });

  auto* devices = app.add_subcommand("devices", "list devices");
  devices->require_subcommand(1);
  std::string stale_for, device_account;
  auto* dlist = devices->add_subcommand(
      "list", "one account's devices (--account), or every device (optionally only stale ones)");
  auto* dacc = dlist->add_option("--account", device_account, "that account's devices");
  dlist->add_option("--stale-for", stale_for,
                    "devices whose last backup is older than this (72h, 7d)")
      ->excludes(dacc);
  dlist->add_option("--partner", partner, "that partner's devices")->excludes(dacc);
  dlist->add_option("--cursor", cursor, "next page: the cursor the previous page printed")
      ->excludes(dacc);
  dlist->add_option("--limit", limit, "devices per page (1-1000) [100]")->excludes(dacc);
  on(dlist, [&] {
    if (!device_account.empty()) {
      return Request(g, "GET", "accounts/" + device_account + "/devices", "", kShort,
                     ShowDevices);
    }
    return Request(g, "GET",
                   "devices" + Query({{"stale_for", stale_for},
                                      {"partner", partner},
                                      {"cursor", cursor},
                                      {"limit", limit ? std::to_string(limit) : ""}}),
                   "", kShort, ShowDevices);
  });

  auto* jobs = app.add_subcommand("jobs", "long-running work on the node");
  jobs->require_subcommand(1);
  std::string job_id, job_state;
  auto* jlist = jobs->add_subcommand("list", "jobs, a page at a time");
  std::string job_kind;
  jlist->add_option("--state", job_state, "only jobs in this state");
  jlist->add_option("--kind", job_kind, "only jobs of this kind (device.purge, scrub, repair, courier)");
  jlist->add_option("--cursor", cursor, "next page: the cursor the previous page printed");
  jlist->add_option("--limit", limit, "jobs per page");
  on(jlist, [&] {
    return Request(g, "GET",
                   "jobs" + Query({{"state", job_state},
                                   {"kind", job_kind},
                                   {"cursor", cursor},
                                   {"limit", limit ? std::to_string(limit) : ""}}),
                   "", kShort, ShowJobs);
  });
  auto* jshow = jobs->add_subcommand("show", "one job: state, progress, result");
  jshow->add_option("ID", job_id, "job id")->required();
  on(jshow, [&] { return Request(g, "GET", "jobs/" + job_id, "", kShort, ShowRecord); });
  auto* jwait = jobs->add_subcommand("wait", "follow a job to its end with a progress line");
  jwait->add_option("ID", job_id, "job id")->required();
  on(jwait, [&] { return FollowJob(g, job_id, ShowRecord, nullptr); });
  auto* jcancel = jobs->add_subcommand("cancel", "cancel a job that has not finished");
  jcancel->add_option("ID", job_id, "job id")->required();
  on(jcancel,
     [&] { return Request(g, "POST", "jobs/" + job_id + "/cancel", "{}", kShort, ShowRecord); });

  auto* courier = app.add_subcommand(
      "courier", "courier recovery: write a device's backup as drive images, check an image");
  courier->require_subcommand(1);
  std::string c_account, c_device, c_out;
  uint64_t drive_size = 0;
  bool c_no_download = false;
  auto* ccreate = courier->add_subcommand(
      "create", "start a courier job for one device, follow it, then download its image(s) to "
                "--out (a file, or a block device such as /dev/sdX; several drives: OUT-1-of-N, ...)");
  ccreate->add_option("--account", c_account, "account id")->required();
  ccreate->add_option("--device", c_device, "device id")->required();
  ccreate->add_option("--drive-size", drive_size,
                      "split over drives of this size (bytes, or 500GB, 64MiB, ...)")
      ->transform(CLI::AsSizeValue(true));
  auto* out_opt = ccreate->add_option("--out", c_out, "where the image goes");
  ccreate->add_flag("--no-download", c_no_download,
                    "leave the images on the node (GET /admin/v1/jobs/JOB/images/I)")
      ->excludes(out_opt);
  on(ccreate, [&] {
    if (c_out.empty() && !c_no_download) {
      std::fprintf(stderr, "cvctl: give --out PATH (or --no-download)\n");
      return kExitUsage;
    }
    json::object body;
    if (drive_size) body["drive_bytes"] = drive_size;
    auto job = Fetch(g, "POST", "accounts/" + c_account + "/devices/" + c_device + "/courier",
                     json::serialize(body), kShort);
    if (!job) return job.error();
    const std::string id = json::value_to<jobs::JobView>(json::value(*job)).id;
    int rc = FollowJob(g, id, [](const json::object&) {}, nullptr);
    if (rc != kExitOk) return rc;
    auto done = Fetch(g, "GET", "jobs/" + id, "", kShort);
    if (!done) return done.error();
    const auto result = json::value_to<jobs::CourierResult>(
        json::value_to<jobs::JobView>(json::value(*done)).result);
    std::vector<CourierImageInfo> images;
    for (const jobs::CourierImage& i : result.images) {
      images.push_back(CourierImageInfo{static_cast<int>(i.drive), i.bytes, i.sha256});
    }
    if (!g.json) {
      std::printf("job %s done: %zu image(s)\n", id.c_str(), images.size());
    }
    if (c_no_download) return kExitOk;
    auto ep = FindNode(g);
    if (!ep) {
      std::fprintf(stderr, "cvctl: %s\n", ep.error().message.c_str());
      return ep.error().code;
    }
    AdminClient client(*ep, std::chrono::seconds(g.timeout_s > 0 ? g.timeout_s : kShort));
    return DownloadCourierImages(client, id, images, c_out, !g.json);
  });
  std::string c_image, c_pubkey;
  auto* cverify = courier->add_subcommand(
      "verify", "OFFLINE: check an image: file system structures, signature of SHA256SUMS, "
                "every file's SHA-256 (exit 4 on problems; the first bad file is named first)");
  cverify->add_option("IMAGE", c_image, "image file or block device")->required();
  cverify->add_option("--pubkey", c_pubkey, "the node's courier public key (PEM; cvctl courier pubkey)")
      ->required();
  on(cverify, [&] { return VerifyCourierImage(c_image, c_pubkey, g.json); });
  std::string c_job;
  auto* cdelete = courier->add_subcommand(
      "delete", "remove a done courier job's image files from the node once shipped (the job "
                "and its result stay, marked images_deleted_at)");
  cdelete->add_option("JOB", c_job, "courier job id")->required();
  on(cdelete,
     [&] { return Request(g, "DELETE", "jobs/" + c_job + "/images", "", kShort, ShowRecord); });
  auto* cpub = courier->add_subcommand("pubkey", "print the node's courier public key (PEM)");
  on(cpub, [&] {
    auto doc = Fetch(g, "GET", "courier/pubkey", "", kShort);
    if (!doc) return doc.error();
    if (g.json) {
      std::printf("%s\n", json::serialize(*doc).c_str());
    } else {
      std::printf("%s", jobs::StringField(*doc, "public_key_pem").c_str());
    }
    return kExitOk;
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  if (!run) {
    std::fprintf(stderr, "cvctl: no command given (see cvctl --help)\n");
    return kExitUsage;
  }
  return run();
}

}  // namespace
}  // namespace cv::cvctl

int main(int argc, char** argv) {
  try {
    return cv::cvctl::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cvctl: %s\n", e.what());
    return cv::cvctl::kExitRefused;
  }
}
