// common/config: chunkvaultd's settings, read by the node and by offline tools alike (cvctl
// index rebuild must see the disks and the root lock exactly as chunkvaultd does). An
// embedded default (everything under one root folder) is overlaid with a TOML file (--config)
// and then with command-line flags. deploy/chunkvaultd.toml documents every key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/common.h"

namespace cv {

struct Config {
  std::string root = "./var/chunkvault";
  std::string log_level = "info";

  // [server]
  std::string listen = "127.0.0.1:8443";
  std::string admin_listen = "127.0.0.1:9443";
  // Worker threads; 0 (the default) = one per CPU this process may run on (its affinity
  // mask: taskset, a cgroup's cpuset). LoadConfig resolves 0 to that number.
  int threads = 0;
  int max_connections = 1024;  // the agent listener
  int max_admin_connections = 64;  // the admin listener, counted apart
  // Open agent connections from one client address (IPv6: one /64); 0 = no such limit.
  int max_connections_per_address = 128;
  // File holding the bearer token GET /metrics requires; default ROOT/run/metrics.token,
  // generated on first start.
  std::string metrics_token;
  uint32_t header_limit_bytes = 16 * 1024;
  uint32_t max_header_fields = 64;
  uint64_t max_object_bytes = 4ull << 30;
  uint32_t max_json_body_bytes = 1 << 20;
  // A rejected upload's body is read and dropped up to this size so that the connection stays
  // usable; a larger one closes the connection.
  uint64_t drain_body_bytes = 16ull << 20;
  int handshake_timeout_s = 10;
  int idle_timeout_s = 60;   // waiting for (the header of) the next request
  int body_timeout_s = 30;   // no body bytes for this long ends the upload
  int write_timeout_s = 60;  // one write step of a response
  int drain_timeout_s = 30;  // SIGTERM: how long running requests may take to finish

  // [tls]
  std::string cert_file;      // default ROOT/tls/server.pem
  std::string key_file;       // default ROOT/tls/server.key
  std::string ca_file;        // default ROOT/tls/ca.pem (published in endpoints.json)
  bool generate = true;       // create a self-signed CA + server certificate when both are missing
  int watch_interval_s = 10;  // reload when the files change; 0 = only on SIGHUP

  // [storage]
  std::vector<std::string> disks;  // default ROOT/disks/d0..d5
  std::string index_dir;           // default ROOT/index
  int k = 4;
  int m = 2;
  uint32_t shard_unit_bytes = 256 * 1024;
  uint64_t extent_bytes = 256ull << 20;
  bool try_direct = true;
  bool bench_discard_writes = false;  // the bench's null-disk node: keeps no object data
  uint64_t index_initial_map_bytes = 1ull << 30;  // LMDB map at open; doubles on MDB_MAP_FULL

  // [jobs]
  int64_t purge_grace_s = 7 * 86400;     // DELETE device: default grace before the purge runs
  uint32_t purge_batch_objects = 1000;   // objects removed per index transaction
  uint32_t job_poll_ms = 1000;           // how often due jobs are looked for
  uint32_t compact_interval_s = 3600;    // background compaction; 0 = only after purges
  uint32_t compact_live_percent = 50;    // extents at most this % live are rewritten
  uint32_t compact_mib_per_s = 64;       // throttle for copying live records; 0 = none
  uint32_t courier_mib_per_s = 0;        // throttle for reading objects into courier images
  std::string courier_dir;               // courier images; default ROOT/courier

  // [scrub]
  uint32_t scrub_interval_s = 30 * 86400;  // a background pass when the last is older; 0 = off
  uint32_t scrub_min_mib_per_s = 1;        // its read rate: disks' used bytes / (interval / 2),
  uint32_t scrub_max_mib_per_s = 50;       // within these bounds
  bool auto_repair = true;                 // repair scrub findings and failed disks' shards

  // [auth]
  uint32_t free_failures = 5;            // wrong credentials from one address answered at once
  uint32_t failure_delay_ms = 250;       // then each 401 waits this long, doubling per failure...
  uint32_t max_failure_delay_ms = 2000;  // ...up to this
  uint32_t failure_window_s = 300;       // failures older than this are forgotten

  // [cluster] (absent: a single node that needs no etcd; cluster/registry.h)
  bool cluster = false;                     // the section is present
  std::vector<std::string> etcd_endpoints;  // etcd's client URLs, http://HOST:PORT each
  std::string node_id;                      // this node's name in the cluster (a DNS label)
  int lease_ttl_s = 10;                     // a node that stops renewing is down after this
  int etcd_timeout_ms = 1000;               // per etcd call and endpoint

  // Derived (not in TOML).
  std::string run_dir;         // ROOT/run: endpoints.json, admin.key, metrics.token
  std::string tls_dir;         // ROOT/tls
  bool new_admin_key = false;  // --new-admin-key
  // metrics_token was not set: it is ROOT/run/metrics.token, created when missing.
  bool generate_metrics_token = false;
};

// Command-line overrides; empty/zero = not given.
struct Flags {
  std::string config_file;
  std::string root;
  std::string listen;
  std::string admin_listen;
  int threads = 0;
  std::string log_level;
  bool new_admin_key = false;
};

// Takes ROOT/run/lock, an exclusive flock held until the process exits: one root has at most
// one chunkvaultd, and offline tools (cvctl index rebuild) never run beside it. kConflict
// when another process holds it. REQUIRES: run_dir exists.
Status LockRoot(const Config& config);

// Builds the configuration: defaults, then the TOML file (unknown keys and wrong types are
// errors), then flags; fills in the paths derived from the root.
Result<Config> LoadConfig(const Flags& flags);

struct HostPort {
  std::string host;
  uint16_t port = 0;
};
// "127.0.0.1:8443", "[::1]:0", "localhost:8443".
Result<HostPort> ParseHostPort(std::string_view s);

}  // namespace cv
