// Placement against FakeEtcd: records written once, taken back, refused while etcd is down,
// and counted per node in the status.
#include "cluster/placement.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <thread>

#include "cluster/cache.h"
#include "cluster/fake_etcd.h"
#include "cluster/registry.h"

namespace cv::cluster {
namespace {

using namespace std::chrono_literals;

// One string member of a placement record.
std::string Field(const std::string& json, const char* name) {
  return std::string(boost::json::parse(json).as_object().at(name).as_string());
}

index::Id IdOf(uint8_t b) {
  index::Id id{};
  id.fill(b);
  return id;
}

TEST(PlacementTest, AnAccountIsPlacedOnceOnThisNode) {
  FakeEtcd etcd;
  auto cache = ClusterCache::Start(etcd);
  Placement p(etcd, *cache, "node-a", 10);
  ASSERT_TRUE(p.PlaceAccount(IdOf(1)));
  const std::string key = std::string(kAccountsPrefix) + index::IdToHex(IdOf(1));
  ASSERT_TRUE(etcd.Get(key));
  EXPECT_EQ(Field(etcd.Get(key)->value, "node"), "node-a");
  EXPECT_EQ(etcd.Get(key)->lease, 0);
  const std::string first = etcd.Get(key)->value;
  // A second placement of the same account (another node, or a retry) changes nothing.
  Placement other(etcd, *cache, "node-b", 10);
  auto again = other.PlaceAccount(IdOf(1));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().kind, ErrorKind::kConflict);
  EXPECT_EQ(etcd.Get(key)->value, first);
  p.UnplaceAccount(IdOf(1));
  EXPECT_FALSE(etcd.Get(key));
}

TEST(PlacementTest, ADeviceRecordsItsAccount) {
  FakeEtcd etcd;
  auto cache = ClusterCache::Start(etcd);
  Placement p(etcd, *cache, "node-a", 10);
  ASSERT_TRUE(p.PlaceDevice(IdOf(2), IdOf(1)));
  const std::string key = std::string(kDevicesPrefix) + index::IdToHex(IdOf(2));
  EXPECT_EQ(Field(etcd.Get(key)->value, "account"), index::IdToHex(IdOf(1)));
  p.UnplaceDevice(IdOf(2));
  EXPECT_FALSE(etcd.Get(key));
}

TEST(PlacementTest, AWriteWhoseAnswerWasLostIsRecognisedAsOurs) {
  FakeEtcd etcd;
  auto cache = ClusterCache::Start(etcd);
  Placement p(etcd, *cache, "node-a", 10);
  etcd.LoseNextAnswer();  // applied, but the caller hears "unavailable"
  ASSERT_TRUE(p.PlaceAccount(IdOf(1)));
  EXPECT_TRUE(etcd.Get(std::string(kAccountsPrefix) + index::IdToHex(IdOf(1))));
}

TEST(PlacementTest, UnplacingAnAccountTakesItsDevicesRecords) {
  FakeEtcd etcd;
  auto cache = ClusterCache::Start(etcd);
  Placement p(etcd, *cache, "node-a", 10);
  ASSERT_TRUE(p.PlaceAccount(IdOf(1)));
  ASSERT_TRUE(p.PlaceDevice(IdOf(2), IdOf(1)));
  ASSERT_TRUE(p.PlaceAccount(IdOf(3)));
  ASSERT_TRUE(p.PlaceDevice(IdOf(4), IdOf(3)));
  p.UnplaceAccount(IdOf(1));
  EXPECT_FALSE(etcd.Get(std::string(kAccountsPrefix) + index::IdToHex(IdOf(1))));
  EXPECT_FALSE(etcd.Get(std::string(kDevicesPrefix) + index::IdToHex(IdOf(2))));
  EXPECT_TRUE(etcd.Get(std::string(kAccountsPrefix) + index::IdToHex(IdOf(3))));
  EXPECT_TRUE(etcd.Get(std::string(kDevicesPrefix) + index::IdToHex(IdOf(4))));
}

TEST(PlacementTest, NothingIsPlacedWhileEtcdIsDown) {
  FakeEtcd etcd;
  auto cache = ClusterCache::Start(etcd);
  Placement p(etcd, *cache, "node-a", 10);
  etcd.SetDown(true);
  ASSERT_TRUE(Eventually([&] { return !cache->watching(); }));
  auto st = p.PlaceAccount(IdOf(1));
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().kind, ErrorKind::kUnavailable);
  EXPECT_FALSE(p.PlaceDevice(IdOf(2), IdOf(1)));
  auto status = p.StatusJson();
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().kind, ErrorKind::kUnavailable);
  etcd.SetDown(false);
  EXPECT_FALSE(etcd.Get(std::string(kAccountsPrefix) + index::IdToHex(IdOf(1))));
}

TEST(PlacementTest, StatusCountsTheAccountsOfEachLiveNode) {
  FakeEtcd etcd;
  for (const char* id : {"node-a", "node-b"}) {
    NodeInfo n;
    n.id = id;
    n.uuid = id;
    n.version = "t";
    etcd.PutRaw(std::string(kNodesPrefix) + id, NodeJson(n));
  }
  auto cache = ClusterCache::Start(etcd);
  Placement a(etcd, *cache, "node-a", 10), b(etcd, *cache, "node-b", 10);
  ASSERT_TRUE(a.PlaceAccount(IdOf(1)));
  ASSERT_TRUE(a.PlaceAccount(IdOf(2)));
  ASSERT_TRUE(b.PlaceAccount(IdOf(3)));
  ASSERT_TRUE(Eventually([&] { return cache->watching(); }));
  auto status = b.StatusJson();
  ASSERT_TRUE(status) << status.error().ToString();
  auto v = boost::json::parse(*status).as_object();
  EXPECT_EQ(v["node"].as_string(), "node-b");
  const auto& nodes = v["nodes"].as_array();
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[0].as_object().at("id").as_string(), "node-a");
  EXPECT_EQ(nodes[0].as_object().at("accounts").to_number<uint64_t>(), 2u);
  EXPECT_FALSE(nodes[0].as_object().at("self").as_bool());
  EXPECT_EQ(nodes[1].as_object().at("accounts").to_number<uint64_t>(), 1u);
  EXPECT_TRUE(nodes[1].as_object().at("self").as_bool());
}

}  // namespace
}  // namespace cv::cluster
