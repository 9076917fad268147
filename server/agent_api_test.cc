#include "server/agent_api.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "server/auth.h"

namespace cv::server {
namespace {

using K = AgentTarget::Kind;

TEST(AgentTargetTest, RestPathsOfRestic) {
  const std::string dev(32, 'a');
  EXPECT_EQ(ParseAgentTarget("/" + dev + "/?create=true").kind, K::kRepo);
  EXPECT_EQ(ParseAgentTarget("/" + dev + "/?create=true").query, "create=true");
  EXPECT_EQ(ParseAgentTarget("/" + dev + "/config").kind, K::kConfig);
  auto list = ParseAgentTarget("/" + dev + "/data/");
  EXPECT_EQ(list.kind, K::kList);
  EXPECT_EQ(list.type, "data");
  auto obj = ParseAgentTarget("/" + dev + "/snapshots/" + std::string(64, 'b'));
  EXPECT_EQ(obj.kind, K::kObject);
  EXPECT_EQ(obj.device, dev);
  EXPECT_EQ(obj.type, "snapshots");
  EXPECT_EQ(obj.name, std::string(64, 'b'));
  EXPECT_EQ(ParseAgentTarget("/" + dev + "/v1/exists").kind, K::kExists);
  EXPECT_EQ(ParseAgentTarget("/" + dev + "/v1/usage").kind, K::kUsage);
  EXPECT_EQ(ParseAgentTarget("/").kind, K::kNone);
  EXPECT_EQ(ParseAgentTarget("*").kind, K::kNone);
  EXPECT_EQ(ParseAgentTarget("/" + dev + "/a/b/c").kind, K::kNoRoute);
}

TEST(AgentTargetTest, TraversalAndEncodedBytesAreInvalidPaths) {
  const std::string dev(32, 'a');
  for (const char* tail : {"/data/..", "/../config", "/./data/x", "/data/%2e%2e", "/data/a%2fb",
                           "/data/%00", "/data/a b", "/data/a\\b"}) {
    EXPECT_EQ(ParseAgentTarget("/" + dev + tail).kind, K::kInvalidPath) << tail;
  }
  // A leading "." segment, which Boost.URL hides from the segments it returns (the fuzz
  // target found "/./").
  for (const std::string& target :
       std::vector<std::string>{"/./", "/.", "/..", "/./" + dev + "/config", "/../" + dev}) {
    EXPECT_EQ(ParseAgentTarget(target).kind, K::kInvalidPath) << target;
  }
}

TEST(AgentTargetTest, ObjectKeyValidation) {
  index::Id dev{};
  const std::string hex(64, 'c');
  EXPECT_TRUE(ObjectKeyFor(dev, "data", hex));
  EXPECT_TRUE(ObjectKeyFor(dev, "config", ""));
  EXPECT_FALSE(ObjectKeyFor(dev, "blobs", hex));
  EXPECT_FALSE(ObjectKeyFor(dev, "config", hex));
  EXPECT_FALSE(ObjectKeyFor(dev, "data", ""));
  EXPECT_FALSE(ObjectKeyFor(dev, "data", std::string(64, 'C')));
  EXPECT_FALSE(ObjectKeyFor(dev, "data", std::string(300, 'a')));
  EXPECT_FALSE(ObjectKeyFor(dev, "data", ".."));
  EXPECT_EQ(ObjectKeyFor(dev, "data", "x").error().kind, ErrorKind::kInvalidArgument);
}

TEST(RangeTest, FormsResticSendsAndSuffixes) {
  ByteRange r;
  EXPECT_EQ(ParseRange("", 100, &r), RangeParse::kWhole);
  ASSERT_EQ(ParseRange("bytes=0-", 100, &r), RangeParse::kPartial);
  EXPECT_EQ(r.offset, 0u);
  EXPECT_EQ(r.length, 100u);
  ASSERT_EQ(ParseRange("bytes=10-19", 100, &r), RangeParse::kPartial);
  EXPECT_EQ(r.offset, 10u);
  EXPECT_EQ(r.length, 10u);
  ASSERT_EQ(ParseRange("bytes=90-1000", 100, &r), RangeParse::kPartial);
  EXPECT_EQ(r.length, 10u);
  ASSERT_EQ(ParseRange("bytes=-30", 100, &r), RangeParse::kPartial);
  EXPECT_EQ(r.offset, 70u);
  EXPECT_EQ(r.length, 30u);
  ASSERT_EQ(ParseRange("bytes=-300", 100, &r), RangeParse::kPartial);
  EXPECT_EQ(r.offset, 0u);
  EXPECT_EQ(r.length, 100u);
  ASSERT_EQ(ParseRange("Bytes=5-5", 100, &r),
            RangeParse::kPartial);  // the unit is case-insensitive
  EXPECT_EQ(r.length, 1u);
}

TEST(RangeTest, MalformedAndUnsatisfiable) {
  ByteRange r;
  for (const char* bad :
       {"bytes=abc", "bytes=5-2", "bytes=0-1,3-4", "items=0-1", "bytes=", "bytes=--1",
        "bytes=1-2-3", "bytes=99999999999999999999999-", "bytes=+1-2", "bytes = 1-2"}) {
    EXPECT_EQ(ParseRange(bad, 100, &r), RangeParse::kMalformed) << bad;
  }
  EXPECT_EQ(ParseRange("bytes=100-", 100, &r), RangeParse::kUnsatisfiable);
  EXPECT_EQ(ParseRange("bytes=100-200", 100, &r), RangeParse::kUnsatisfiable);
  EXPECT_EQ(ParseRange("bytes=-0", 100, &r), RangeParse::kUnsatisfiable);
  // An empty object: bytes=0- is served whole; anything else cannot be satisfied.
  EXPECT_EQ(ParseRange("bytes=0-", 0, &r), RangeParse::kWhole);
  EXPECT_EQ(ParseRange("bytes=0-0", 0, &r), RangeParse::kUnsatisfiable);
  EXPECT_EQ(ParseRange("bytes=-5", 0, &r), RangeParse::kUnsatisfiable);
}

TEST(AgentApiTest, WantsV2OnlyForTheResticMediaType) {
  EXPECT_TRUE(WantsV2("application/vnd.x.restic.rest.v2"));
  EXPECT_TRUE(WantsV2("text/plain, Application/Vnd.X.Restic.Rest.V2"));
  EXPECT_FALSE(WantsV2("*/*"));
  EXPECT_FALSE(WantsV2(""));
}

TEST(AuthTest, ParsesBasicAndBearer) {
  // "0123:s3cret:with:colons"
  auto c = ParseAuthorization("Basic MDEyMzpzM2NyZXQ6d2l0aDpjb2xvbnM=");
  EXPECT_EQ(c.scheme, Credentials::Scheme::kBasic);
  EXPECT_EQ(c.user, "0123");
  EXPECT_EQ(c.secret, "s3cret:with:colons");
  c = ParseAuthorization("bearer tok");
  EXPECT_EQ(c.scheme, Credentials::Scheme::kBearer);
  EXPECT_EQ(c.secret, "tok");
  EXPECT_EQ(ParseAuthorization("").scheme, Credentials::Scheme::kNone);
  for (const char* bad :
       {"Basic !!!!", "Basic MDEy", "Basic bm9jb2xvbg==", "Digest x", "Bearer ", "Basic =MDE"}) {
    EXPECT_EQ(ParseAuthorization(bad).scheme, Credentials::Scheme::kMalformed) << bad;
  }
}

TEST(AuthTest, ThrottleDelaysAfterFreeFailuresAndCaps) {
  using ms = std::chrono::milliseconds;
  FailureThrottle t(2, ms(100), ms(350), std::chrono::seconds(60));
  EXPECT_EQ(t.Failed("a"), ms(0));
  EXPECT_EQ(t.Failed("a"), ms(0));
  EXPECT_EQ(t.Failed("a"), ms(100));
  EXPECT_EQ(t.Failed("a"), ms(200));
  EXPECT_EQ(t.Failed("a"), ms(350));
  EXPECT_EQ(t.Failed("b"), ms(0));  // per address
}

TEST(ErrorReplyTest, ServerErrorsShowOnlyTheirPublicMessage) {
  Error full{ErrorKind::kNoSpace, 28, "fallocate /srv/disk3/extents/00000007.ext"};
  Reply generic = ErrorReply(full);
  EXPECT_EQ(generic.status, 507);
  EXPECT_EQ(generic.body.find("/srv"), std::string::npos) << generic.body;
  EXPECT_NE(generic.body.find("could not complete"), std::string::npos) << generic.body;
  full.public_message = "data disk 3 of this node is full";
  Reply named = ErrorReply(full);
  EXPECT_EQ(named.status, 507);
  EXPECT_EQ(named.body,
            R"({"error":{"code":"no_space","message":"data disk 3 of this node is full"}})");
  EXPECT_EQ(named.body.find("/srv"), std::string::npos);
}

}  // namespace
}  // namespace cv::server
