// cluster/etcd: the few etcd v3 calls a node needs, behind one small interface, so that tests
// can run the cluster code against a real etcd or a fault-injecting one.
//
// The implementation (MakeEtcd) speaks etcd's v3 JSON gateway (POST /v3/kv/range, /v3/kv/txn,
// /v3/kv/deleterange, /v3/watch, /v3/lease/grant, /v3/lease/keepalive, /v3/lease/revoke; keys and
// values in base64) over Beast, which the node already links, rather than gRPC: Debian's etcd 3.4
// serves the gateway on its client port, and one HTTP/1.1 request per call needs no code
// generation and no second RPC stack in the node. Each call has a deadline; an endpoint that
// cannot be reached is skipped for the next one, and the one that answered is tried first
// next time.
//
// Errors: kUnavailable when no endpoint answered (etcd down, partitioned, timed out);
// kInternal for an answer that is not what etcd sends; etcd's own refusals (an unknown lease)
// with their message.
//
// Thread-safety: one Etcd may be used from several threads; each call opens its own
// connection.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/common.h"

namespace cv::cluster {

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t lease = 0;  // 0: none
};

struct Ranged {
  std::vector<KeyValue> kvs;
  int64_t revision = 0;
};

struct WatchEvent {
  bool deleted = false;  // else a put
  KeyValue kv;           // a deletion carries the key and its mod_revision only
};

class Etcd {
 public:
  virtual ~Etcd() = default;

  // A lease of `ttl_s` seconds: its id.
  virtual Result<int64_t> Grant(int64_t ttl_s) = 0;
  // Renews a lease: its TTL in seconds from now, 0 when the lease is gone (expired or revoked).
  virtual Result<int64_t> KeepAlive(int64_t lease) = 0;
  // Ends a lease; its keys go with it.
  virtual Status Revoke(int64_t lease) = 0;
  // Every key that starts with `prefix`, in key order (at most `limit`; 0 = no limit), and
  // the store's revision they were read at.
  virtual Result<Ranged> Range(const std::string& prefix, int64_t limit = 0) = 0;
  // Sets `key` to `value` (attached to `lease` when not 0) if its mod_revision is still
  // `expected_mod_revision` (0: only if the key does not exist): the key's new mod_revision,
  // or 0 when another write came first and nothing changed.
  virtual Result<int64_t> PutIf(const std::string& key, const std::string& value,
                                int64_t expected_mod_revision, int64_t lease) = 0;
  // Removes `key` (nothing when it does not exist).
  virtual Status Delete(const std::string& key) = 0;
  // Streams the changes of the keys under `prefix`, from revision `from` on, to `on_events`
  // (in revision order, one call per message etcd sends), until `stop` is true (looked at
  // every 200 ms; then it returns success) or the stream ends. `on_open` runs once the
  // stream is open. kUnavailable: etcd cannot be reached or the stream broke; kGone: `from`
  // was compacted away (load again with Range).
  virtual Status Watch(const std::string& prefix, int64_t from,
                       const std::function<void()>& on_open,
                       const std::function<void(std::vector<WatchEvent>&&)>& on_events,
                       const std::atomic<bool>& stop) = 0;
};

// endpoints: "http://HOST:PORT" each (etcd's client URLs); timeout: per call and endpoint.
Result<std::unique_ptr<Etcd>> MakeEtcd(const std::vector<std::string>& endpoints,
                                       std::chrono::milliseconds timeout);

}  // namespace cv::cluster
