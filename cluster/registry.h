// cluster/registry: a node's membership in its cluster. A node with a [cluster] section
// publishes what the others need to know about it under /chunkvault/v1/nodes/<node_id>, in a
// key attached to an etcd lease that it keeps alive; when the node stops (SIGTERM) it revokes
// the lease, and when it dies the lease runs out after lease_ttl_s. A node whose key is
// missing is down for the cluster: no home-made failure detector, only etcd's lease.
//
// One node id, one node: a node registers only when the key is free or was written by an
// earlier run of the same node (the index's node uuid, which stays with the data). A second
// process configured with the same node_id is refused (kConflict) and does not start.
//
// While etcd cannot be reached the node keeps serving (nothing here is on a request's path)
// and retries; once its lease has run out it registers afresh. Each transition is logged
// (cluster_registered, cluster_lease_lost, etcd_unreachable, etcd_reachable).
//
// Thread-safety: Registration runs its own thread; Stop and the destructor are called by the
// owner, once. ParseNodes may be called from any thread.
#pragma once

#include <boost/json/object.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd.h"
#include "common/common.h"

namespace cv::cluster {

inline constexpr std::string_view kNodesPrefix = "/chunkvault/v1/nodes/";

// What a node publishes about itself (JSON in etcd, the admin API's GET /cluster).
struct NodeInfo {
  std::string id;         // [cluster] node_id
  std::string uuid;       // the index's node id: 32 hex digits, stays with the data
  std::string agent_url;  // https://HOST:PORT of each listener
  std::string admin_url;
  std::string state = "active";  // "active" or "draining"
  uint64_t capacity_bytes = 0;   // client bytes the disks hold when full (raw x k / (k+m))
  uint64_t free_bytes = 0;       // client bytes that still fit
  std::string version;
  int64_t started_ns = 0;
};

std::string NodeJson(const NodeInfo& node);
boost::json::object NodeObject(const NodeInfo& node);  // NodeJson's object
// kInvalidArgument when `json` is not a node's record.
Result<NodeInfo> ParseNodeJson(std::string_view json);

// [cluster] node_id: 1-63 of [a-z0-9-], starting with a letter or digit (a DNS label).
bool ValidNodeId(std::string_view id);

struct RegistrationOptions {
  std::chrono::seconds lease_ttl{10};
  // How often the record is read back and written again when it is missing (deleted by
  // hand) or out of date (the free bytes), in a keepalive round.
  std::chrono::seconds refresh{30};
};

class Registration {
 public:
  // Registers now when etcd answers, then keeps the lease alive on a thread of its own.
  // kConflict: another node (another uuid) holds this node id. etcd unreachable is not an
  // error: the thread keeps trying. `describe` is called for every write of the record.
  static Result<std::unique_ptr<Registration>> Start(Etcd& etcd, RegistrationOptions options,
                                                     std::function<NodeInfo()> describe);
  ~Registration();  // Stop()
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;

  // Leaves the cluster now: stops the thread and revokes the lease (best effort).
  void Stop();

 private:
  Registration(Etcd& etcd, RegistrationOptions options, std::function<NodeInfo()> describe);
  // One attempt to take the node's key under a new lease.
  Status Register();
  // Writes the record again when it is missing or out of date.
  Status Refresh();
  bool Stopping();
  void Loop();

  Etcd& etcd_;
  const RegistrationOptions options_;
  const std::function<NodeInfo()> describe_;
  std::string key_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  // Owned by the thread (and by Start and Stop while it does not run).
  int64_t lease_ = 0;
  std::thread thread_;
};

// The node records among `kvs` (the keys under kNodesPrefix: the nodes whose lease is alive),
// in node id order. Records that do not parse are skipped (and logged).
std::vector<NodeInfo> ParseNodes(const std::vector<KeyValue>& kvs);

}  // namespace cv::cluster
