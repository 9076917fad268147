// ClusterCache against FakeEtcd: loaded, then following every change with its revision;
// keeping what it has while etcd is down and catching up after; loading again when etcd has
// compacted the history it needed.
#include "cluster/cache.h"

#include <gtest/gtest.h>

#include <thread>

#include "cluster/fake_etcd.h"

namespace cv::cluster {
namespace {

using namespace std::chrono_literals;

const std::string kA = "/chunkvault/v1/accounts/a";
const std::string kB = "/chunkvault/v1/accounts/b";

TEST(ClusterCacheTest, LoadsThenFollowsEveryChange) {
  FakeEtcd etcd;
  etcd.PutRaw(kA, "1");
  etcd.PutRaw("/elsewhere/x", "not ours");
  auto cache = ClusterCache::Start(etcd);
  ASSERT_TRUE(cache->WaitFor(etcd.revision(), 5000ms));
  EXPECT_EQ(cache->Get(kA)->value, "1");
  EXPECT_FALSE(cache->Get("/elsewhere/x"));
  ASSERT_TRUE(Eventually([&] { return cache->watching(); }));
  auto rev = etcd.PutIf(kB, "2", 0, 0);
  ASSERT_TRUE(rev && *rev > 0);
  ASSERT_TRUE(cache->WaitFor(*rev, 5000ms));
  EXPECT_EQ(cache->Get(kB)->value, "2");
  ASSERT_TRUE(etcd.Delete(kA));
  ASSERT_TRUE(cache->WaitFor(etcd.revision(), 5000ms));
  EXPECT_FALSE(cache->Get(kA));
  EXPECT_EQ(cache->revision(), etcd.revision());
  auto listed = cache->Prefix("/chunkvault/v1/accounts/");
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].key, kB);
}

// A cache that loaded kA = "1", then lost etcd.
std::unique_ptr<ClusterCache> LoadedThenCutOff(FakeEtcd& etcd) {
  etcd.PutRaw(kA, "1");
  auto cache = ClusterCache::Start(etcd);
  EXPECT_TRUE(cache->WaitFor(etcd.revision(), 5000ms));
  etcd.SetDown(true);
  EXPECT_TRUE(Eventually([&] { return !cache->watching(); }));
  return cache;
}

TEST(ClusterCacheTest, KeepsWhatItHasWhileEtcdIsDownAndCatchesUp) {
  FakeEtcd etcd;
  auto cache = LoadedThenCutOff(etcd);
  EXPECT_EQ(cache->Get(kA)->value, "1");  // the last state seen
  etcd.PutRaw(kB, "2");                   // what others wrote meanwhile
  etcd.SetDown(false);
  ASSERT_TRUE(cache->WaitFor(etcd.revision(), 5000ms));
  EXPECT_EQ(cache->Get(kB)->value, "2");
  EXPECT_TRUE(Eventually([&] { return cache->watching(); }));
}

TEST(ClusterCacheTest, LoadsAgainWhenTheHistoryItNeedsIsCompacted) {
  FakeEtcd etcd;
  auto cache = LoadedThenCutOff(etcd);
  etcd.PutRaw(kB, "2");
  etcd.PutRaw(kA, "3");
  etcd.Compact();
  etcd.SetDown(false);
  ASSERT_TRUE(cache->WaitFor(etcd.revision(), 5000ms));
  EXPECT_EQ(cache->Get(kA)->value, "3");
  EXPECT_EQ(cache->Get(kB)->value, "2");
}

TEST(ClusterCacheTest, StopsPromptly) {
  FakeEtcd etcd;
  auto cache = ClusterCache::Start(etcd);
  ASSERT_TRUE(Eventually([&] { return cache->watching(); }));
  const auto t0 = std::chrono::steady_clock::now();
  cache.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
}

}  // namespace
}  // namespace cv::cluster
