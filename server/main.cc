// chunkvaultd: the chunkvault storage node. See server/server.h for the process model and
// deploy/chunkvaultd.toml for the configuration.
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <csignal>
#include <cstdio>
#include <filesystem>

#include "admin/admin.h"
#include "cluster/cache.h"
#include "cluster/etcd.h"
#include "cluster/placement.h"
#include "cluster/registry.h"
#include "common/config.h"
#include "server/fake_clock.h"
#include "server/metrics.h"
#include "server/server.h"
#include "server/tls.h"
#include "storage/storage.h"

namespace {

using namespace cv;
using namespace cv::server;

LogLevel ParseLevel(const std::string& s) {
  if (s == "debug") return LogLevel::kDebug;
  if (s == "warn") return LogLevel::kWarn;
  if (s == "error") return LogLevel::kError;
  return LogLevel::kInfo;
}

int Fail(const std::string& what, const Error& e) {
  Log(LogLevel::kError, "startup_failed", {{"step", what}, {"error", e.ToString()}});
  std::fprintf(stderr, "chunkvaultd: %s: %s\n", what.c_str(), e.ToString().c_str());
  return 1;
}

// Publishes this node in etcd (cluster/registry.h): its listeners, and its disks' capacity
// and free space in client bytes (raw bytes x k / (k+m)), refreshed while it runs.
Result<std::unique_ptr<cluster::Registration>> Register(const Config& c,
                                                        storage::ObjectStore& store,
                                                        Server& server, cluster::Etcd& etcd) {
  std::string uuid;
  {
    CV_TRY_ASSIGN(auto txn, store.Index().BeginRead());
    CV_TRY_ASSIGN(auto id, txn->GetMeta("node_id"));
    if (!id) return Err(ErrorKind::kCorruption, "the index has no node_id");
    uuid = *id;
  }
  const int64_t started = NowNanos();
  auto describe = [&c, &store, uuid, started, agent = server.AgentUrl(),
                   admin = server.AdminUrl()] {
    cluster::NodeInfo n;
    n.id = c.node_id;
    n.uuid = uuid;
    n.agent_url = agent;
    n.admin_url = admin;
    n.version = CV_VERSION;
    n.started_ns = started;
    uint64_t total = 0, free = 0;
    for (const storage::DiskStatus& d : store.Stats().disks) {
      if (d.failed) continue;
      total += d.total_bytes;
      free += d.free_bytes;
    }
    const auto usable = [&](uint64_t raw) {
      return static_cast<uint64_t>(static_cast<double>(raw) * c.k / (c.k + c.m));
    };
    n.capacity_bytes = usable(total);
    n.free_bytes = usable(free);
    return n;
  };
  cluster::RegistrationOptions ro;
  ro.lease_ttl = std::chrono::seconds(c.lease_ttl_s);
  return cluster::Registration::Start(etcd, ro, describe);
}

int Main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  // One descriptor per connection plus extents and the index: use all we are allowed.
  if (rlimit rl{}; ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  CLI::App app{"chunkvaultd: a chunkvault storage node (restic REST v2 agent API + admin API)"};
  Flags flags;
  app.add_option("--config", flags.config_file,
                 "TOML configuration file (see deploy/chunkvaultd.toml)")
      ->check(CLI::ExistingFile);
  app.add_option("--root", flags.root,
                 "root folder for data, index, TLS and run files [./var/chunkvault]");
  app.add_option("--listen", flags.listen,
                 "agent listener ADDR:PORT (port 0: kernel-chosen) [127.0.0.1:8443]");
  app.add_option("--admin-listen", flags.admin_listen, "admin listener ADDR:PORT [127.0.0.1:9443]");
  app.add_option("--threads", flags.threads, "worker threads [one per CPU it may run on]")
      ->check(CLI::Range(1, 256));
  app.add_option("--log-level", flags.log_level, "debug, info, warn or error [info]");
  app.add_flag("--new-admin-key", flags.new_admin_key,
               "replace the operator admin key with a new one (written to ROOT/run/admin.key)");
  std::string fake_clock_file;
  // Hidden (no group): tests against a real process move time through this file.
  app.add_option("--fake-clock-file", fake_clock_file)->group("");
  CLI11_PARSE(app, argc, argv);

  auto cfg = LoadConfig(flags);
  if (!cfg) return Fail("configuration", cfg.error());
  const Config& c = *cfg;
  SetLogLevel(ParseLevel(c.log_level));
  if (!fake_clock_file.empty()) {
    if (auto st = UseFakeClockFile(fake_clock_file); !st) return Fail("fake clock", st.error());
  }

  std::error_code ec;
  std::filesystem::create_directories(c.run_dir, ec);
  if (ec) return Fail("create " + c.run_dir, Error{ErrorKind::kIOError, 0, ec.message()});
  ::chmod(c.run_dir.c_str(), 0700);
  if (auto st = LockRoot(c); !st) return Fail("lock the root", st.error());
  const std::string endpoints_file = c.run_dir + "/endpoints.json";
  ::unlink(endpoints_file.c_str());  // a stale one would point tools at a dead process

  TlsPaths tls_paths{c.cert_file, c.key_file, c.ca_file};
  if (c.generate) {
    if (auto st = EnsureDevCertificates(tls_paths); !st) return Fail("TLS certificate", st.error());
  }
  auto tls = TlsContexts::Open(tls_paths);
  if (!tls) return Fail("TLS", tls.error());

  storage::StoreOptions so;
  so.disks = c.disks;
  so.index_dir = c.index_dir;
  so.k = c.k;
  so.m = c.m;
  so.shard_unit = c.shard_unit_bytes;
  so.extent_bytes = c.extent_bytes;
  so.try_direct = c.try_direct;
  so.discard_data_writes = c.bench_discard_writes;
  so.index_initial_map_bytes = c.index_initial_map_bytes;
  auto store = storage::ObjectStore::Open(so);
  if (!store) return Fail("storage", store.error());

  const std::string key_file = c.run_dir + "/admin.key";
  admin::Options ao;
  ao.key_file = key_file;
  ao.new_operator_key = c.new_admin_key;
  constexpr int64_t kNs = 1000000000;
  ao.purge_grace_ns = c.purge_grace_s * kNs;
  ao.purge_batch_objects = c.purge_batch_objects;
  ao.job_poll_ns = int64_t{c.job_poll_ms} * 1000000;
  ao.compact_interval_ns = int64_t{c.compact_interval_s} * kNs;
  ao.compact.max_live_ratio = c.compact_live_percent / 100.0;
  ao.compact.max_bytes_per_sec = uint64_t{c.compact_mib_per_s} << 20;
  ao.scrub_interval_ns = int64_t{c.scrub_interval_s} * kNs;
  ao.scrub_min_bytes_per_sec = uint64_t{c.scrub_min_mib_per_s} << 20;
  ao.scrub_max_bytes_per_sec = uint64_t{c.scrub_max_mib_per_s} << 20;
  ao.auto_repair = c.auto_repair;
  ao.courier_dir = c.courier_dir;
  ao.courier_key_file = c.run_dir + "/courier.key";
  ao.courier_bytes_per_sec = uint64_t{c.courier_mib_per_s} << 20;
  // [cluster]: etcd, and this node's registration once its listeners are bound.
  std::unique_ptr<cluster::Etcd> etcd;
  std::unique_ptr<cluster::ClusterCache> cache;   // after etcd: destroyed before it
  std::unique_ptr<cluster::Placement> placement;  // after both
  if (c.cluster) {
    if (!cluster::ValidNodeId(c.node_id)) {
      return Fail("configuration", Error{ErrorKind::kInvalidArgument, 0,
                                         "[cluster] node_id '" + c.node_id +
                                             "' must be 1-63 of a-z, 0-9 and '-', not "
                                             "starting with '-'"});
    }
    auto e = cluster::MakeEtcd(c.etcd_endpoints, std::chrono::milliseconds(c.etcd_timeout_ms));
    if (!e) return Fail("configuration", e.error());
    etcd = std::move(*e);
    cache = cluster::ClusterCache::Start(*etcd);
    placement = std::make_unique<cluster::Placement>(*etcd, *cache, c.node_id, c.lease_ttl_s);
    ao.cluster = placement.get();
  }
  auto admin = admin::AdminApi::Open(**store, ao);
  if (!admin) return Fail("admin key", admin.error());

  auto scrape_token = LoadScrapeToken(c.metrics_token, c.generate_metrics_token);
  if (!scrape_token) return Fail("metrics token", scrape_token.error());
  Metrics metrics(*scrape_token);
  auto server = Server::Bind(c, **store, **admin, **tls, metrics);
  if (!server) return Fail("listen", server.error());

  // Before endpoints.json: a node refused by its cluster leaves nothing that points at it.
  std::unique_ptr<cluster::Registration> registration;
  if (etcd) {
    auto r = Register(c, **store, **server, *etcd);
    if (!r) return Fail("cluster", r.error());
    registration = std::move(*r);
  }

  boost::json::object ep;
  ep["agent"] = (*server)->AgentUrl();
  ep["admin"] = (*server)->AdminUrl();
  ep["ca"] = c.ca_file;
  ep["admin_key_file"] = key_file;
  ep["metrics_token_file"] = c.metrics_token;
  ep["pid"] = ::getpid();
  const std::string endpoints = boost::json::serialize(ep) + "\n";
  if (auto st = WriteFileDurably(endpoints_file, endpoints); !st)
    return Fail("endpoints.json", st.error());
  Log(LogLevel::kInfo, "started",
      {{"agent", (*server)->AgentUrl()},
       {"admin", (*server)->AdminUrl()},
       {"root", c.root},
       {"threads", std::to_string(c.threads)},
       {"io_engine", (*store)->Stats().io_engine}});

  int rc = (*server)->Run();
  // Drained: leave the cluster before the listeners close.
  registration.reset();
  server->reset();
  ::unlink(endpoints_file.c_str());
  Log(LogLevel::kInfo, "stopped");
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "chunkvaultd: %s\n", e.what());
    return 1;
  }
}
