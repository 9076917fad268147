// Registration against FakeEtcd (the real etcd is in tests/integration/test_cluster.py); the
// node record's parser and the endpoint checks.
#include "cluster/registry.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "cluster/fake_etcd.h"

namespace cv::cluster {
namespace {

using namespace std::chrono_literals;

NodeInfo Node(std::string id, std::string uuid) {
  NodeInfo n;
  n.id = std::move(id);
  n.uuid = std::move(uuid);
  n.agent_url = "https://127.0.0.1:8443";
  n.admin_url = "https://127.0.0.1:9443";
  n.capacity_bytes = 1000;
  n.free_bytes = 600;
  n.version = "test";
  n.started_ns = 42;
  return n;
}

const std::string kKey = std::string(kNodesPrefix) + "node1";

TEST(NodeIdTest, IsADnsLabel) {
  for (auto ok : {"node1", "a", "n-2", "0"}) EXPECT_TRUE(ValidNodeId(ok)) << ok;
  EXPECT_TRUE(ValidNodeId(std::string(63, 'x')));
  for (auto bad : {"", "Node1", "-n", "n_1", "n.1", "n/1", "n 1", "nöde"}) {
    EXPECT_FALSE(ValidNodeId(bad)) << bad;
  }
  EXPECT_FALSE(ValidNodeId(std::string(64, 'x')));
}

TEST(NodeJsonTest, RoundTripsAndRefusesWhatIsNotANodeRecord) {
  const NodeInfo n = Node("node1", "ab");
  auto back = ParseNodeJson(NodeJson(n));
  ASSERT_TRUE(back) << back.error().ToString();
  EXPECT_EQ(back->id, "node1");
  EXPECT_EQ(back->uuid, "ab");
  EXPECT_EQ(back->free_bytes, 600u);
  EXPECT_EQ(back->started_ns, 42);
  const std::string good = NodeJson(n);
  for (std::string bad : {std::string(""), std::string("[]"), std::string("{"),
                          std::string(R"({"id":"node1"})"), good.substr(0, good.size() - 1)}) {
    EXPECT_FALSE(ParseNodeJson(bad)) << bad;
  }
  auto with = [&](std::string field, std::string value) {
    NodeInfo m = n;
    std::string j = NodeJson(m);
    const std::string needle = "\"" + field + "\":";
    size_t at = j.find(needle) + needle.size();
    size_t end = j.find_first_of(",}", at);
    return j.substr(0, at) + value + j.substr(end);
  };
  EXPECT_FALSE(ParseNodeJson(with("state", "\"gone\"")));
  EXPECT_FALSE(ParseNodeJson(with("id", "\"Node 1\"")));
  EXPECT_FALSE(ParseNodeJson(with("free_bytes", "-1")));
  EXPECT_FALSE(ParseNodeJson(with("capacity_bytes", "\"1\"")));
  EXPECT_FALSE(ParseNodeJson(with("started_ns", "1.5")));
  EXPECT_TRUE(ParseNodeJson(with("state", "\"draining\"")));
}

TEST(MakeEtcdTest, RefusesWhatIsNotAnHttpEndpoint) {
  for (const char* bad :
       {"127.0.0.1:2379", "https://127.0.0.1:2379", "http://127.0.0.1", "http://127.0.0.1:2379/v3",
        "http://u@127.0.0.1:2379", "http://127.0.0.1:2379?x", "http://:2379", ""}) {
    auto e = MakeEtcd({bad}, 1000ms);
    EXPECT_FALSE(e) << bad;
    if (!e) {
      EXPECT_EQ(e.error().kind, ErrorKind::kInvalidArgument);
    }
  }
  EXPECT_FALSE(MakeEtcd({}, 1000ms));
  EXPECT_TRUE(MakeEtcd({"http://127.0.0.1:2379", "http://[::1]:2379"}, 1000ms));
}

TEST(MakeEtcdTest, NoEtcdListeningIsUnavailable) {
  // A port nobody listens on (bound, never listening): connection refused.
  auto e = MakeEtcd({"http://127.0.0.1:1"}, 1000ms);
  ASSERT_TRUE(e);
  auto r = (*e)->Range("/x");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kUnavailable) << r.error().ToString();
}

TEST(RegistrationTest, RegistersUnderALeaseAndLeavesOnStop) {
  FakeEtcd etcd;
  auto r = Registration::Start(etcd, {3s, 30s}, [] { return Node("node1", "u1"); });
  ASSERT_TRUE(r) << r.error().ToString();
  auto kv = etcd.Get(kKey);
  ASSERT_TRUE(kv);
  EXPECT_NE(kv->lease, 0);
  auto n = ParseNodeJson(kv->value);
  ASSERT_TRUE(n);
  EXPECT_EQ(n->uuid, "u1");
  auto nodes = ParseNodes(etcd.Range(std::string(kNodesPrefix), 0)->kvs);
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0].id, "node1");
  (*r)->Stop();
  EXPECT_FALSE(etcd.Get(kKey));
  EXPECT_EQ(etcd.Leases(), 0u);
}

TEST(RegistrationTest, AnotherNodesIdIsRefusedAndLeftAlone) {
  FakeEtcd etcd;
  const std::string theirs = NodeJson(Node("node1", "other"));
  etcd.PutRaw(kKey, theirs);
  auto r = Registration::Start(etcd, {3s, 30s}, [] { return Node("node1", "u1"); });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kConflict);
  EXPECT_NE(r.error().ToString().find("another node"), std::string::npos) << r.error().ToString();
  EXPECT_EQ(etcd.Get(kKey)->value, theirs);
  EXPECT_EQ(etcd.Leases(), 0u);  // the lease it took for the attempt is given back
  // A record that is not a node's is not ours either.
  etcd.PutRaw(kKey, "garbage");
  EXPECT_FALSE(Registration::Start(etcd, {3s, 30s}, [] { return Node("node1", "u1"); }));
}

TEST(RegistrationTest, AnEarlierRunOfTheSameNodeIsTakenOver) {
  FakeEtcd etcd;
  etcd.PutRaw(kKey, NodeJson(Node("node1", "u1")));  // its lease has not run out yet
  auto r = Registration::Start(etcd, {3s, 30s}, [] { return Node("node1", "u1"); });
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_NE(etcd.Get(kKey)->lease, 0);
}

TEST(RegistrationTest, ALostLeaseIsRegisteredAgain) {
  FakeEtcd etcd;
  auto r = Registration::Start(etcd, {3s, 30s}, [] { return Node("node1", "u1"); });
  ASSERT_TRUE(r);
  const int64_t first = etcd.Get(kKey)->lease;
  etcd.ExpireAll();
  EXPECT_FALSE(etcd.Get(kKey));
  // The next renewal (a third of the TTL) sees the lease gone; the next round registers.
  ASSERT_TRUE(Eventually([&] { return etcd.Get(kKey).has_value(); }));
  EXPECT_NE(etcd.Get(kKey)->lease, first);
}

TEST(RegistrationTest, StartsWhileEtcdIsDownAndRegistersWhenItIsBack) {
  FakeEtcd etcd;
  etcd.SetDown(true);
  auto r = Registration::Start(etcd, {3s, 30s}, [] { return Node("node1", "u1"); });
  ASSERT_TRUE(r) << r.error().ToString();
  std::this_thread::sleep_for(300ms);
  etcd.SetDown(false);
  EXPECT_FALSE(etcd.Get(kKey));
  ASSERT_TRUE(Eventually([&] { return etcd.Get(kKey).has_value(); }));
}

TEST(RegistrationTest, ARecordDeletedByHandIsWrittenAgain) {
  FakeEtcd etcd;
  auto r = Registration::Start(etcd, {3s, 0s}, [] { return Node("node1", "u1"); });
  ASSERT_TRUE(r);
  const int64_t lease = etcd.Get(kKey)->lease;
  ASSERT_TRUE(etcd.Delete(kKey));  // `etcdctl del` while the lease lives
  ASSERT_TRUE(Eventually([&] { return etcd.Get(kKey).has_value(); }));
  EXPECT_EQ(etcd.Get(kKey)->lease, lease);
}

TEST(RegistrationTest, RefreshesWhatItPublishes) {
  FakeEtcd etcd;
  std::atomic<uint64_t> free{600};
  auto r = Registration::Start(etcd, {3s, 0s}, [&] {
    NodeInfo n = Node("node1", "u1");
    n.free_bytes = free.load();
    return n;
  });
  ASSERT_TRUE(r);
  free = 500;
  ASSERT_TRUE(Eventually([&] {
    auto n = ParseNodeJson(etcd.Get(kKey)->value);
    return n && n->free_bytes == 500;
  }));
}

}  // namespace
}  // namespace cv::cluster
