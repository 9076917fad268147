// cluster/placement: where accounts and devices live, in etcd. An account lives on exactly
// one node: /chunkvault/v1/accounts/<account hex> = {"node": NODE_ID}, written once with a
// transaction that succeeds only if the key does not exist, so two nodes never place one
// account twice. A device belongs to one account: /chunkvault/v1/devices/<device hex> =
// {"account": <account hex>}. Both are written before the account or device is created in
// the node's index, so nothing exists that the cluster cannot find; a creation refused after
// that takes its record back. While etcd cannot be reached, creations are refused
// (kUnavailable: the admin API's 503 etcd_unavailable) and everything else keeps working.
// A placement this node wrote is in its ClusterCache before the creation is answered (waited
// for up to a second).
//
// Today a node places new accounts on itself (the one whose admin API was asked); placing them
// on the node with the most free bytes comes with proxying between nodes.
//
// Thread-safety: every member may be called from any thread.
#pragma once

#include <string>

#include "admin/admin.h"
#include "cluster/cache.h"
#include "cluster/etcd.h"

namespace cv::cluster {

inline constexpr std::string_view kAccountsPrefix = "/chunkvault/v1/accounts/";
inline constexpr std::string_view kDevicesPrefix = "/chunkvault/v1/devices/";

class Placement final : public admin::ClusterHooks {
 public:
  Placement(Etcd& etcd, const ClusterCache& cache, std::string node_id, int64_t lease_ttl_s)
      : etcd_(etcd), cache_(cache), node_id_(std::move(node_id)), lease_ttl_s_(lease_ttl_s) {}

  // {"cluster":true,"node","lease_ttl_s","revision","nodes":[...]}: the nodes whose lease is
  // alive, each with the accounts placed on it (admin/API.md, GET /cluster), from the cache
  // (no etcd call); kUnavailable while the cache does not follow etcd.
  Result<std::string> StatusJson() override;
  Status PlaceAccount(const index::Id& account) override;
  Status PlaceDevice(const index::Id& device, const index::Id& account) override;
  void UnplaceAccount(const index::Id& account) override;
  void UnplaceDevice(const index::Id& device) override;

 private:
  // Writes `key` once; kConflict when it exists.
  Status Create(const std::string& key, const std::string& value);
  void Remove(const std::string& key);

  Etcd& etcd_;
  const ClusterCache& cache_;
  const std::string node_id_;
  const int64_t lease_ttl_s_;
};

}  // namespace cv::cluster
