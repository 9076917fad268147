#include "common/config.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/file.h>
#include <unistd.h>
#include <toml++/toml.h>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <cerrno>

#include <charconv>
#include <filesystem>
#include <limits>
#include <set>

namespace cv {

namespace {

// Reads typed values out of one TOML table, remembering every key it was asked about so
// that the leftovers (typos, keys from another version) can be reported as errors.
class TableReader {
 public:
  TableReader(const toml::table* table, std::string prefix)
      : table_(table), prefix_(std::move(prefix)) {}

  template <class T>
  void Int(std::string_view key, T* out, int64_t min, int64_t max) {
    const toml::node* n = Find(key);
    if (!n) return;
    auto v = n->value<int64_t>();
    if (!n->is_integer() || !v) return Fail(key, "must be an integer");
    if (*v < min || *v > max) {
      return Fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max));
    }
    *out = static_cast<T>(*v);
  }
  void String(std::string_view key, std::string* out) {
    const toml::node* n = Find(key);
    if (!n) return;
    if (!n->is_string()) return Fail(key, "must be a string");
    *out = *n->value<std::string>();
  }
  void Bool(std::string_view key, bool* out) {
    const toml::node* n = Find(key);
    if (!n) return;
    if (!n->is_boolean()) return Fail(key, "must be true or false");
    *out = *n->value<bool>();
  }
  void Strings(std::string_view key, std::vector<std::string>* out) {
    const toml::node* n = Find(key);
    if (!n) return;
    const toml::array* a = n->as_array();
    if (!a) return Fail(key, "must be an array of strings");
    std::vector<std::string> v;
    for (const auto& e : *a) {
      if (!e.is_string()) return Fail(key, "must be an array of strings");
      v.push_back(*e.value<std::string>());
    }
    *out = std::move(v);
  }
  // Marks a sub-table name as known (it is read by its own TableReader).
  void Table(std::string_view key) { seen_.insert(std::string(key)); }

  // Errors so far, then every key that nobody asked about.
  std::string Finish() {
    if (table_) {
      for (const auto& [k, v] : *table_) {
        if (!seen_.count(std::string(k.str()))) {
          if (!error_.empty()) error_ += "; ";
          error_ += "unknown key '" + prefix_ + std::string(k.str()) + "'";
        }
      }
    }
    return error_;
  }

 private:
  const toml::node* Find(std::string_view key) {
    seen_.insert(std::string(key));
    return table_ ? table_->get(key) : nullptr;
  }
  void Fail(std::string_view key, const std::string& what) {
    if (!error_.empty()) error_ += "; ";
    error_ += "'" + prefix_ + std::string(key) + "' " + what;
  }

  const toml::table* table_;
  std::string prefix_;
  std::set<std::string> seen_;
  std::string error_;
};

const toml::table* SubTable(const toml::table& root, std::string_view name, std::string* error) {
  const toml::node* n = root.get(name);
  if (!n) return nullptr;
  if (!n->is_table()) {
    *error +=
        std::string(error->empty() ? "" : "; ") + "'" + std::string(name) + "' must be a table";
    return nullptr;
  }
  return n->as_table();
}

Status ApplyToml(const std::string& file, Config* c) {
  toml::table root;
  try {
    root = toml::parse_file(file);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return Err(ErrorKind::kInvalidArgument, file + ":" + std::to_string(where.line) + ":" +
                                                std::to_string(where.column) + ": " +
                                                std::string(e.description()));
  }
  constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();
  constexpr int64_t kMaxU64 = std::numeric_limits<int64_t>::max();
  std::string errors;
  auto collect = [&](TableReader& r) {
    std::string e = r.Finish();
    if (!e.empty()) errors += (errors.empty() ? "" : "; ") + e;
  };

  TableReader top(&root, "");
  top.String("root", &c->root);
  top.String("log_level", &c->log_level);
  for (auto t : {"server", "tls", "storage", "jobs", "scrub", "auth", "cluster"}) top.Table(t);
  collect(top);

  TableReader s(SubTable(root, "server", &errors), "server.");
  s.String("listen", &c->listen);
  s.String("admin_listen", &c->admin_listen);
  s.Int("threads", &c->threads, 0, 256);
  s.Int("max_connections", &c->max_connections, 1, 1000000);
  s.Int("max_connections_per_address", &c->max_connections_per_address, 0, 1000000);
  s.Int("max_admin_connections", &c->max_admin_connections, 1, 1000000);
  s.String("metrics_token", &c->metrics_token);
  s.Int("header_limit_bytes", &c->header_limit_bytes, 1024, 1 << 20);
  s.Int("max_header_fields", &c->max_header_fields, 8, 1000);
  s.Int("max_object_bytes", &c->max_object_bytes, 1, kMaxU64);
  s.Int("max_json_body_bytes", &c->max_json_body_bytes, 1024, 1 << 30);
  s.Int("drain_body_bytes", &c->drain_body_bytes, 0, kMaxU64);
  s.Int("handshake_timeout_s", &c->handshake_timeout_s, 1, 3600);
  s.Int("idle_timeout_s", &c->idle_timeout_s, 1, 86400);
  s.Int("body_timeout_s", &c->body_timeout_s, 1, 3600);
  s.Int("write_timeout_s", &c->write_timeout_s, 1, 3600);
  s.Int("drain_timeout_s", &c->drain_timeout_s, 0, 3600);
  collect(s);

  TableReader t(SubTable(root, "tls", &errors), "tls.");
  t.String("cert_file", &c->cert_file);
  t.String("key_file", &c->key_file);
  t.String("ca_file", &c->ca_file);
  t.Bool("generate", &c->generate);
  t.Int("watch_interval_s", &c->watch_interval_s, 0, 86400);
  collect(t);

  TableReader st(SubTable(root, "storage", &errors), "storage.");
  st.Strings("disks", &c->disks);
  st.String("index_dir", &c->index_dir);
  st.Int("k", &c->k, 1, 32);
  st.Int("m", &c->m, 0, 32);
  st.Int("shard_unit_bytes", &c->shard_unit_bytes, 4096, 64 << 20);
  st.Int("extent_bytes", &c->extent_bytes, 1 << 20, kMaxU64);
  st.Bool("try_direct", &c->try_direct);
  st.Bool("bench_discard_writes", &c->bench_discard_writes);
  st.Int("index_initial_map_bytes", &c->index_initial_map_bytes, 65536, int64_t{1} << 40);
  collect(st);

  TableReader j(SubTable(root, "jobs", &errors), "jobs.");
  j.Int("purge_grace_s", &c->purge_grace_s, 0, int64_t{100} * 366 * 86400);
  j.Int("purge_batch_objects", &c->purge_batch_objects, 1, 100000);
  j.Int("job_poll_ms", &c->job_poll_ms, 10, 3600000);
  j.Int("compact_interval_s", &c->compact_interval_s, 0, 365 * 86400);
  j.Int("compact_live_percent", &c->compact_live_percent, 0, 99);
  j.Int("compact_mib_per_s", &c->compact_mib_per_s, 0, 1 << 20);
  j.Int("courier_mib_per_s", &c->courier_mib_per_s, 0, 1 << 20);
  j.String("courier_dir", &c->courier_dir);
  collect(j);

  TableReader sc(SubTable(root, "scrub", &errors), "scrub.");
  sc.Int("interval_s", &c->scrub_interval_s, 0, 10 * 366 * 86400);
  sc.Int("min_mib_per_s", &c->scrub_min_mib_per_s, 1, 1 << 20);
  sc.Int("max_mib_per_s", &c->scrub_max_mib_per_s, 1, 1 << 20);
  sc.Bool("auto_repair", &c->auto_repair);
  collect(sc);

  TableReader a(SubTable(root, "auth", &errors), "auth.");
  a.Int("free_failures", &c->free_failures, 0, kMaxInt);
  a.Int("failure_delay_ms", &c->failure_delay_ms, 0, 60000);
  a.Int("max_failure_delay_ms", &c->max_failure_delay_ms, 0, 60000);
  a.Int("failure_window_s", &c->failure_window_s, 1, 86400);
  collect(a);

  const toml::table* cluster = SubTable(root, "cluster", &errors);
  if (cluster) {
    c->cluster = true;
    TableReader cl(cluster, "cluster.");
    cl.Strings("etcd_endpoints", &c->etcd_endpoints);
    cl.String("node_id", &c->node_id);
    cl.Int("lease_ttl_s", &c->lease_ttl_s, 2, 300);
    cl.Int("etcd_timeout_ms", &c->etcd_timeout_ms, 100, 60000);
    collect(cl);
    // What the endpoints and the id must look like, cluster/ checks when the node starts.
    if (c->etcd_endpoints.empty()) {
      errors += std::string(errors.empty() ? "" : "; ") + "'cluster.etcd_endpoints' is required";
    }
    if (c->node_id.empty()) {
      errors += std::string(errors.empty() ? "" : "; ") + "'cluster.node_id' is required";
    }
    // A renewal that waits for every endpoint in turn (each unresponsive for its whole
    // deadline) must still come before the lease ends.
    const int64_t budget = int64_t{c->lease_ttl_s} * 1000 / 3;
    const int64_t worst = int64_t{c->etcd_timeout_ms} * std::max<int64_t>(1, static_cast<int64_t>(c->etcd_endpoints.size()));
    if (worst > budget) {
      errors += std::string(errors.empty() ? "" : "; ") +
                "'cluster.etcd_timeout_ms' x the number of etcd_endpoints must be at most a third "
                "of lease_ttl_s (" + std::to_string(budget) + " ms)";
    }
  }

  if (!errors.empty()) return Err(ErrorKind::kInvalidArgument, file + ": " + errors);
  return {};
}

}  // namespace

Result<HostPort> ParseHostPort(std::string_view s) {
  // Boost.URL parses the authority; a listener needs a host and a port and nothing else.
  auto a = boost::urls::parse_authority(s);
  if (!a || a->has_userinfo() || a->host_address().empty() || !a->has_port()) {
    return Err(ErrorKind::kInvalidArgument,
               "bad address '" + std::string(s) + "' (want host:port or [v6]:port)");
  }
  const std::string_view port = a->port();
  unsigned v = 0;
  auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
  if (port.empty() || ec != std::errc() || p != port.data() + port.size() || v > 65535) {
    return Err(ErrorKind::kInvalidArgument, "bad port in '" + std::string(s) + "'");
  }
  return HostPort{std::string(a->host_address()), static_cast<uint16_t>(v)};
}

namespace {
// The CPUs this process may run on (at least 1, at most 256).
int CpusAvailable() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::clamp(CPU_COUNT(&set), 1, 256);
}
}  // namespace

Result<Config> LoadConfig(const Flags& flags) {
  Config c;
  if (!flags.config_file.empty()) CV_TRY(ApplyToml(flags.config_file, &c));
  if (!flags.root.empty()) c.root = flags.root;
  if (!flags.listen.empty()) c.listen = flags.listen;
  if (!flags.admin_listen.empty()) c.admin_listen = flags.admin_listen;
  if (flags.threads > 0) c.threads = flags.threads;
  if (c.threads == 0) c.threads = CpusAvailable();
  if (!flags.log_level.empty()) c.log_level = flags.log_level;
  c.new_admin_key = flags.new_admin_key;

  if (c.root.empty()) return Err(ErrorKind::kInvalidArgument, "root must not be empty");
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path root = fs::absolute(c.root, ec);
  if (ec) return Err(ErrorKind::kInvalidArgument, "root '" + c.root + "': " + ec.message());
  c.root = root.lexically_normal().string();
  if (c.root.size() > 1 && c.root.back() == '/') c.root.pop_back();
  c.run_dir = c.root + "/run";
  c.tls_dir = c.root + "/tls";
  if (c.cert_file.empty()) c.cert_file = c.tls_dir + "/server.pem";
  if (c.key_file.empty()) c.key_file = c.tls_dir + "/server.key";
  if (c.ca_file.empty()) c.ca_file = c.tls_dir + "/ca.pem";
  if (c.index_dir.empty()) c.index_dir = c.root + "/index";
  if (c.courier_dir.empty()) c.courier_dir = c.root + "/courier";
  c.generate_metrics_token = c.metrics_token.empty();
  if (c.generate_metrics_token) {
    c.metrics_token = c.run_dir + "/metrics.token";
  } else {
    c.metrics_token = fs::absolute(c.metrics_token, ec).lexically_normal().string();
    if (ec) return Err(ErrorKind::kInvalidArgument, "metrics_token: " + ec.message());
  }
  if (c.disks.empty()) {
    for (int i = 0; i < 6; ++i) c.disks.push_back(c.root + "/disks/d" + std::to_string(i));
  }
  if (c.log_level != "debug" && c.log_level != "info" && c.log_level != "warn" &&
      c.log_level != "error") {
    return Err(ErrorKind::kInvalidArgument, "log_level must be debug, info, warn or error");
  }
  if (c.k + c.m > static_cast<int>(c.disks.size())) {
    return Err(ErrorKind::kInvalidArgument, "k + m (" + std::to_string(c.k + c.m) +
                                                ") is more than the number of disks (" +
                                                std::to_string(c.disks.size()) + ")");
  }
  CV_TRY(ParseHostPort(c.listen));
  CV_TRY(ParseHostPort(c.admin_listen));
  return c;
}

Status LockRoot(const Config& config) {
  const std::string path = config.run_dir + "/lock";
  // Never closed: the lock lives as long as the process.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError(errno, "open " + path);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    ::close(fd);
    if (e == EWOULDBLOCK) {
      return Err(ErrorKind::kConflict,
                 "another process (a running chunkvaultd?) holds " + path);
    }
    return ErrnoError(e, "flock " + path);
  }
  return {};
}

}  // namespace cv
