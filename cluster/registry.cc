#include "cluster/registry.h"

#include <boost/json.hpp>

#include "admin/json_util.h"

namespace cv::cluster {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

namespace {
json::object NodeObject(const NodeInfo& n) {
  return json::object{{"id", n.id},
                      {"uuid", n.uuid},
                      {"agent_url", n.agent_url},
                      {"admin_url", n.admin_url},
                      {"state", n.state},
                      {"capacity_bytes", n.capacity_bytes},
                      {"free_bytes", n.free_bytes},
                      {"version", n.version},
                      {"started_ns", n.started_ns}};
}
}  // namespace

std::string NodeJson(const NodeInfo& n) { return json::serialize(NodeObject(n)); }

Result<NodeInfo> ParseNodeJson(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  auto bad = [&](std::string_view what) {
    return Err(ErrorKind::kInvalidArgument, "not a node record (" + std::string(what) + ")");
  };
  if (ec || !v.is_object()) return bad("no JSON object");
  const json::object& o = v.as_object();
  NodeInfo n;
  for (auto [field, out] : {std::pair{"id", &n.id}, std::pair{"uuid", &n.uuid},
                            std::pair{"agent_url", &n.agent_url},
                            std::pair{"admin_url", &n.admin_url}, std::pair{"state", &n.state},
                            std::pair{"version", &n.version}}) {
    const json::value* f = o.if_contains(field);
    if (!f || !f->is_string()) return bad(std::string(field) + " is not a string");
    *out = std::string(f->as_string());
  }
  for (auto [field, out] : {std::pair{"capacity_bytes", &n.capacity_bytes},
                            std::pair{"free_bytes", &n.free_bytes}}) {
    const json::value* f = o.if_contains(field);
    if (!f || !(f->is_uint64() || (f->is_int64() && f->as_int64() >= 0))) {
      return bad(std::string(field) + " is not a byte count");
    }
    *out = f->is_uint64() ? f->as_uint64() : static_cast<uint64_t>(f->as_int64());
  }
  const json::value* started = o.if_contains("started_ns");
  if (!started || !started->is_int64()) return bad("started_ns is not a number");
  n.started_ns = started->as_int64();
  if (!ValidNodeId(n.id)) return bad("bad id");
  if (n.state != "active" && n.state != "draining") return bad("bad state");
  return n;
}

bool ValidNodeId(std::string_view id) {
  if (id.empty() || id.size() > 63 || id.front() == '-') return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  }
  return true;
}

Registration::Registration(Etcd& etcd, RegistrationOptions options,
                           std::function<NodeInfo()> describe)
    : etcd_(etcd), options_(options), describe_(std::move(describe)) {}

Result<std::unique_ptr<Registration>> Registration::Start(Etcd& etcd,
                                                          RegistrationOptions options,
                                                          std::function<NodeInfo()> describe) {
  std::unique_ptr<Registration> r(new Registration(etcd, options, std::move(describe)));
  const NodeInfo me = r->describe_();
  if (!ValidNodeId(me.id)) return Err(ErrorKind::kInvalidArgument, "bad node id '" + me.id + "'");
  r->key_ = std::string(kNodesPrefix) + me.id;
  Status first = r->Register();
  if (!first && first.error().kind == ErrorKind::kConflict) return tl::unexpected(first.error());
  if (!first) {
    Log(LogLevel::kWarn, "etcd_unreachable",
        {{"step", "register"}, {"error", first.error().ToString()}, {"retry", "in the background"}});
  }
  r->thread_ = std::thread([p = r.get()] { p->Loop(); });
  return r;
}

Registration::~Registration() { Stop(); }

Status Registration::Register() {
  CV_TRY_ASSIGN(const int64_t lease, etcd_.Grant(options_.lease_ttl.count()));
  auto give_back = [&](Error e) -> Status {
    (void)etcd_.Revoke(lease);  // best effort: it runs out by itself otherwise
    return tl::unexpected(std::move(e));
  };
  const NodeInfo me = describe_();
  const std::string value = NodeJson(me);
  auto existing = etcd_.Range(key_);
  if (!existing) return give_back(existing.error());
  int64_t expected = 0;
  for (const KeyValue& kv : *existing) {
    if (kv.key != key_) continue;  // node10 under the prefix of node1
    auto other = ParseNodeJson(kv.value);
    if (!other || other->uuid != me.uuid) {
      return give_back(Error{
          ErrorKind::kConflict, 0,
          "node id '" + me.id + "' is registered in etcd by another node" +
              (other ? " (uuid " + other->uuid + ", admin " + other->admin_url + ")" : "") +
              ": give this node another [cluster] node_id"});
    }
    expected = kv.mod_revision;  // an earlier run of this node whose lease has not run out
  }
  auto revision = etcd_.PutIf(key_, value, expected, lease);
  if (!revision) return give_back(revision.error());
  if (*revision == 0) {
    return give_back(Error{ErrorKind::kUnavailable, 0,
                           "the node's key changed while it registered; trying again"});
  }
  lease_ = lease;
  mod_revision_ = *revision;
  published_ = value;
  Log(LogLevel::kInfo, "cluster_registered",
      {{"node", me.id}, {"key", key_}, {"lease", std::to_string(lease)},
       {"ttl_s", std::to_string(options_.lease_ttl.count())}});
  return {};
}

void Registration::Loop() {
  const auto ttl = std::chrono::duration_cast<Clock::duration>(options_.lease_ttl);
  auto last_ok = Clock::now();
  auto last_refresh = Clock::now();
  bool unreachable = false;
  auto note_unreachable = [&](const Error& e, std::string_view step) {
    if (unreachable) return;
    unreachable = true;
    Log(LogLevel::kWarn, "etcd_unreachable", {{"step", std::string(step)}, {"error", e.ToString()}});
  };
  auto note_reachable = [&] {
    if (!unreachable) return;
    unreachable = false;
    Log(LogLevel::kInfo, "etcd_reachable");
  };
  auto lost = [&](std::string_view reason) {
    Log(LogLevel::kWarn, "cluster_lease_lost",
        {{"lease", std::to_string(lease_)}, {"reason", std::string(reason)}});
    lease_ = 0;
  };
  for (;;) {
    // A third of the TTL between renewals; a second between attempts to register.
    const auto wait = lease_ ? ttl / 3 : Clock::duration(std::chrono::seconds(1));
    {
      std::unique_lock lock(mu_);
      if (wake_.wait_for(lock, wait, [&] { return stop_; })) return;
    }
    if (lease_ == 0) {
      Status st = Register();
      if (st) {
        note_reachable();
        last_ok = last_refresh = Clock::now();
      } else if (st.error().kind == ErrorKind::kConflict) {
        Log(LogLevel::kError, "cluster_node_id_taken", {{"error", st.error().ToString()}});
      } else {
        note_unreachable(st.error(), "register");
      }
      continue;
    }
    auto left = etcd_.KeepAlive(lease_);
    if (!left) {
      if (left.error().kind == ErrorKind::kNotFound) {
        lost("etcd no longer knows the lease");
        continue;
      }
      note_unreachable(left.error(), "keepalive");
      if (Clock::now() - last_ok > ttl) lost("etcd unreachable for longer than the lease TTL");
      continue;
    }
    note_reachable();
    if (*left == 0) {
      lost("the lease ran out");
      continue;
    }
    last_ok = Clock::now();
    if (Clock::now() - last_refresh < options_.refresh) continue;
    last_refresh = Clock::now();
    const std::string value = NodeJson(describe_());
    if (value == published_) continue;
    auto revision = etcd_.PutIf(key_, value, mod_revision_, lease_);
    if (!revision) {
      note_unreachable(revision.error(), "refresh");
    } else if (*revision == 0) {
      // Someone else wrote our key: take it again through Register, which checks whose it is.
      (void)etcd_.Revoke(lease_);
      lost("the node's key was changed by another writer");
    } else {
      mod_revision_ = *revision;
      published_ = value;
    }
  }
}

void Registration::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (lease_ != 0) {
    if (Status st = etcd_.Revoke(lease_); !st) {
      Log(LogLevel::kWarn, "cluster_leave_failed",
          {{"error", st.error().ToString()}, {"note", "the lease runs out by itself"}});
    } else {
      Log(LogLevel::kInfo, "cluster_left", {{"key", key_}});
    }
    lease_ = 0;
  }
}

Result<std::vector<NodeInfo>> ListNodes(Etcd& etcd) {
  CV_TRY_ASSIGN(auto kvs, etcd.Range(std::string(kNodesPrefix)));
  std::vector<NodeInfo> out;
  for (const KeyValue& kv : kvs) {
    auto n = ParseNodeJson(kv.value);
    if (!n || std::string(kNodesPrefix) + n->id != kv.key) {
      Log(LogLevel::kWarn, "cluster_bad_node_record", {{"key", kv.key}});
      continue;
    }
    out.push_back(std::move(*n));
  }
  return out;
}

Result<std::string> ClusterStatusJson(Etcd& etcd, std::string_view self, int64_t lease_ttl_s) {
  CV_TRY_ASSIGN(auto nodes, ListNodes(etcd));
  json::array items;
  for (const NodeInfo& n : nodes) {
    json::object o = NodeObject(n);
    o.erase("started_ns");
    o["started_at"] = admin::FormatRfc3339(n.started_ns);
    o["self"] = n.id == self;
    items.push_back(std::move(o));
  }
  return json::serialize(json::object{{"cluster", true},
                                      {"node", self},
                                      {"lease_ttl_s", lease_ttl_s},
                                      {"nodes", std::move(items)}});
}

}  // namespace cv::cluster
