#include "cluster/registry.h"

#include <boost/json.hpp>

namespace cv::cluster {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

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
  for (auto [field, out] :
       {std::pair{"id", &n.id}, std::pair{"uuid", &n.uuid}, std::pair{"agent_url", &n.agent_url},
        std::pair{"admin_url", &n.admin_url}, std::pair{"state", &n.state},
        std::pair{"version", &n.version}}) {
    const json::value* f = o.if_contains(field);
    if (!f || !f->is_string()) return bad(std::string(field) + " is not a string");
    *out = std::string(f->as_string());
  }
  for (auto [field, out] :
       {std::pair{"capacity_bytes", &n.capacity_bytes}, std::pair{"free_bytes", &n.free_bytes}}) {
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

Result<std::unique_ptr<Registration>> Registration::Start(Etcd& etcd, RegistrationOptions options,
                                                          std::function<NodeInfo()> describe) {
  std::unique_ptr<Registration> r(new Registration(etcd, options, std::move(describe)));
  const NodeInfo me = r->describe_();
  if (!ValidNodeId(me.id)) return Err(ErrorKind::kInvalidArgument, "bad node id '" + me.id + "'");
  r->key_ = std::string(kNodesPrefix) + me.id;
  Status first = r->Register();
  if (!first && first.error().kind == ErrorKind::kConflict) return tl::unexpected(first.error());
  if (!first) {
    Log(LogLevel::kWarn, "etcd_unreachable",
        {{"step", "register"},
         {"error", first.error().ToString()},
         {"retry", "in the background"}});
  }
  r->thread_ = std::thread([p = r.get()] { p->Loop(); });
  return r;
}

Registration::~Registration() { Stop(); }

bool Registration::Stopping() {
  std::lock_guard lock(mu_);
  return stop_;
}

Status Registration::Register() {
  CV_TRY_ASSIGN(const int64_t lease, etcd_.Grant(options_.lease_ttl.count()));
  auto give_back = [&](Error e) -> Status {
    (void)etcd_.Revoke(lease);  // best effort: it runs out by itself otherwise
    return tl::unexpected(std::move(e));
  };
  if (Stopping()) return give_back(Error{ErrorKind::kUnavailable, 0, "stopping"});
  const NodeInfo me = describe_();
  const std::string value = NodeJson(me);
  auto existing = etcd_.Range(key_);
  if (!existing) return give_back(existing.error());
  int64_t expected = 0;
  for (const KeyValue& kv : existing->kvs) {
    if (kv.key != key_) continue;  // node10 under the prefix of node1
    auto other = ParseNodeJson(kv.value);
    if (!other || other->uuid != me.uuid) {
      return give_back(
          Error{ErrorKind::kConflict, 0,
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
  Log(LogLevel::kInfo, "cluster_registered",
      {{"node", me.id},
       {"key", key_},
       {"lease", std::to_string(lease)},
       {"ttl_s", std::to_string(options_.lease_ttl.count())}});
  return {};
}

void Registration::Loop() {
  const auto ttl = std::chrono::duration_cast<Clock::duration>(options_.lease_ttl);
  auto last_ok = Clock::now();
  auto last_refresh = Clock::now();
  bool failed = false;  // the last round's call failed: try again in a second
  bool unreachable = false;
  std::string last_conflict;
  auto note_unreachable = [&](const Error& e, std::string_view step) {
    failed = true;
    if (unreachable) return;
    unreachable = true;
    Log(LogLevel::kWarn, "etcd_unreachable",
        {{"step", std::string(step)}, {"error", e.ToString()}});
  };
  auto note_reachable = [&] {
    failed = false;
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
    // Renewals a third of the TTL after the last good one (however long the calls took); a
    // second between attempts after a failure and between attempts to register.
    auto wait = Clock::duration(std::chrono::seconds(1));
    if (lease_ && !failed)
      wait = std::max(Clock::duration::zero(), last_ok + ttl / 3 - Clock::now());
    {
      std::unique_lock lock(mu_);
      if (wake_.wait_for(lock, wait, [&] { return stop_; })) return;
    }
    if (lease_ == 0) {
      Status st = Register();
      if (st) {
        note_reachable();
        last_ok = last_refresh = Clock::now();
        last_conflict.clear();
      } else if (st.error().kind == ErrorKind::kConflict) {
        failed = true;
        if (st.error().ToString() != last_conflict) {  // once, not every second
          last_conflict = st.error().ToString();
          Log(LogLevel::kError, "cluster_node_id_taken", {{"error", last_conflict}});
        }
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
    if (Status st = Refresh(); !st) note_unreachable(st.error(), "refresh");
  }
}

Status Registration::Refresh() {
  // Read the record back: it may have been deleted by hand, or a write whose answer was lost
  // may have gone through.
  const NodeInfo me = describe_();
  const std::string value = NodeJson(me);
  CV_TRY_ASSIGN(auto ranged, etcd_.Range(key_));
  const KeyValue* mine = nullptr;
  for (const KeyValue& kv : ranged.kvs) {
    if (kv.key == key_) mine = &kv;
  }
  if (mine) {
    auto other = ParseNodeJson(mine->value);
    if (!other || other->uuid != me.uuid) {
      (void)etcd_.Revoke(lease_);
      lease_ = 0;  // Register says whose it is, and logs it
      return {};
    }
    if (mine->value == value && mine->lease == lease_) return {};
  }
  CV_TRY_ASSIGN(const int64_t revision,
                etcd_.PutIf(key_, value, mine ? mine->mod_revision : 0, lease_));
  if (revision == 0) return {};  // written meanwhile: the next refresh looks again
  if (!mine) Log(LogLevel::kWarn, "cluster_record_restored", {{"key", key_}});
  return {};
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

std::vector<NodeInfo> ParseNodes(const std::vector<KeyValue>& kvs) {
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

}  // namespace cv::cluster
