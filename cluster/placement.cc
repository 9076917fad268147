#include "cluster/placement.h"

#include <boost/json.hpp>
#include <map>
#include <optional>

#include "admin/json_util.h"
#include "cluster/registry.h"

namespace cv::cluster {

namespace json = boost::json;

namespace {
// A string member of a placement record; nullopt when the record is not JSON or lacks it.
std::optional<std::string> RecordField(const std::string& record, std::string_view name) {
  boost::system::error_code ec;
  json::value v = json::parse(record, ec);
  const json::value* f = !ec && v.is_object() ? v.as_object().if_contains(name) : nullptr;
  if (!f || !f->is_string()) return std::nullopt;
  return std::string(f->as_string());
}
}  // namespace

Result<std::string> Placement::StatusJson() {
  if (!cache_.watching()) {
    return Err(ErrorKind::kUnavailable, "the cluster cache does not follow etcd (revision " +
                                            std::to_string(cache_.revision()) + ")");
  }
  const ClusterCache::View view = cache_.Snapshot();
  const int64_t revision = view.revision;
  const auto nodes = ParseNodes(view.Under(kNodesPrefix));
  std::map<std::string, uint64_t> accounts;  // by node id
  for (const KeyValue& kv : view.Under(kAccountsPrefix)) {
    if (auto node = RecordField(kv.value, "node")) ++accounts[*node];
  }
  json::array items;
  for (const NodeInfo& n : nodes) {
    json::object o = NodeObject(n);
    o.erase("started_ns");
    o["started_at"] = admin::FormatRfc3339(n.started_ns);
    o["accounts"] = accounts[n.id];
    o["self"] = n.id == node_id_;
    items.push_back(std::move(o));
  }
  return json::serialize(json::object{{"cluster", true},
                                      {"node", node_id_},
                                      {"lease_ttl_s", lease_ttl_s_},
                                      {"revision", revision},
                                      {"nodes", std::move(items)}});
}

Status Placement::Create(const std::string& key, const std::string& value) {
  auto revision = etcd_.PutIf(key, value, 0, 0);
  if (!revision || *revision == 0) {
    // A transaction that timed out, or that another member answered after a retry, may have
    // been applied after all: the value (it holds a nonce) says whether it was ours.
    auto now = etcd_.Range(key);
    if (now) {
      for (const KeyValue& kv : now->kvs) {
        if (kv.key == key && kv.value == value) revision = kv.mod_revision;
      }
    }
  }
  if (!revision) return tl::unexpected(revision.error());
  if (*revision == 0) return Err(ErrorKind::kConflict, key + " is already in etcd");
  // Read-your-writes on this node: GET /cluster right after shows it.
  if (!cache_.WaitFor(*revision, std::chrono::seconds(1))) {
    Log(LogLevel::kWarn, "cluster_cache_behind",
        {{"key", key}, {"revision", std::to_string(*revision)}});
  }
  return {};
}

void Placement::Remove(const std::string& key) {
  if (Status st = etcd_.Delete(key); !st) {
    Log(LogLevel::kWarn, "cluster_unplace_failed",
        {{"key", key},
         {"error", st.error().ToString()},
         {"effect", "a placement of something that does not exist (answers 404)"}});
  }
}

// Each record carries a nonce of its write ("op"), so that Create can tell its own write from
// another's after an ambiguous answer.
Status Placement::PlaceAccount(const index::Id& account) {
  return Create(
      std::string(kAccountsPrefix) + index::IdToHex(account),
      json::serialize(json::object{{"node", node_id_}, {"op", index::IdToHex(index::NewId())}}));
}

Status Placement::PlaceDevice(const index::Id& device, const index::Id& account) {
  return Create(std::string(kDevicesPrefix) + index::IdToHex(device),
                json::serialize(json::object{{"account", index::IdToHex(account)},
                                             {"op", index::IdToHex(index::NewId())}}));
}

void Placement::UnplaceAccount(const index::Id& account) {
  const std::string hex = index::IdToHex(account);
  for (const KeyValue& kv : cache_.Prefix(std::string(kDevicesPrefix))) {
    if (RecordField(kv.value, "account") == hex) Remove(kv.key);
  }
  Remove(std::string(kAccountsPrefix) + hex);
}

void Placement::UnplaceDevice(const index::Id& device) {
  Remove(std::string(kDevicesPrefix) + index::IdToHex(device));
}

}  // namespace cv::cluster
