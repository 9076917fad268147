#include "server/quota.h"

#include <gtest/gtest.h>

#include "storage/storage.h"
#include "storage/test_store.h"

namespace cv::server {
namespace {

TEST(AccountRefusalTest, StatusDecidesWhatAgentsMayDo) {
  using S = index::AccountStatus;
  const int64_t now = 1'000'000;
  auto account = [&](S s, int64_t expires = 0) {
    index::Account a;
    a.status = s;
    a.expires_ns = expires;
    return std::optional<index::Account>(a);
  };
  // No record: pre-account devices are not restricted.
  EXPECT_FALSE(AccountRefusal(std::nullopt, now, AgentAccess::kWrite, false));
  for (S s : {S::kTrial, S::kActive}) {
    EXPECT_FALSE(AccountRefusal(account(s), now, AgentAccess::kWrite, false));
  }
  // A trial past its end is expired: reads and locks only.
  for (auto a : {account(S::kExpired), account(S::kTrial, now)}) {
    EXPECT_FALSE(AccountRefusal(a, now, AgentAccess::kRead, false));
    EXPECT_FALSE(AccountRefusal(a, now, AgentAccess::kWrite, true));
    auto r = AccountRefusal(a, now, AgentAccess::kWrite, false);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403);
    EXPECT_NE(r->body.find(R"("code":"account_expired")"), std::string::npos) << r->body;
    EXPECT_NE(r->body.find(R"("status":"expired")"), std::string::npos) << r->body;
  }
  EXPECT_FALSE(AccountRefusal(account(S::kTrial, now + 1), now, AgentAccess::kWrite, false));
  for (bool lock : {false, true}) {
    for (auto access : {AgentAccess::kRead, AgentAccess::kWrite}) {
      auto r = AccountRefusal(account(S::kSuspended), now, access, lock);
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 403);
      EXPECT_NE(r->body.find(R"("status":"suspended")"), std::string::npos) << r->body;
    }
  }
}

class ReservationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(store_.ok());
    account_.id = index::NewId();
    account_.status = index::AccountStatus::kActive;
    account_.plan_quota_bytes = 1000;
    ASSERT_TRUE(store_->Index().Update([&](index::WriteTxn& t) { return t.PutAccount(account_); }));
  }
  Reserved Reserve(uint64_t bytes) {
    auto r = server::Reserve(store_->Index(), account_.id, bytes, 0);
    EXPECT_TRUE(r.has_value());
    return std::move(*r);
  }
  // What a Txn's read of the account shows.
  uint64_t ReservedNow() {
    auto txn = store_->Index().BeginRead();
    return (*(*txn)->GetAccount(account_.id))->reserved_bytes;
  }
  storage::TempStore store_{"quota_test"};
  index::Account account_;
};

TEST_F(ReservationTest, GrantsUpToTheQuotaAndGivesBackOnceWhateverHappens) {
  auto a = Reserve(600);
  EXPECT_TRUE(a.decision.granted && a.reservation.held());
  auto b = Reserve(401);
  EXPECT_FALSE(b.decision.granted || b.reservation.held());
  EXPECT_EQ(b.decision.quota_bytes, 1000u);
  EXPECT_EQ(b.decision.reserved_bytes, 600u);
  Reply r = QuotaExceededReply(b.decision, 401);
  EXPECT_EQ(r.status, 507);
  EXPECT_NE(r.body.find(R"("code":"quota_exceeded")"), std::string::npos);
  EXPECT_NE(r.body.find(R"("reserved_bytes":600)"), std::string::npos);
  EXPECT_EQ(ReservedNow(), 600u);
  {
    Reservation moved = std::move(a.reservation);
    EXPECT_FALSE(a.reservation.held());
    EXPECT_EQ(ReservedNow(), 600u);
  }  // destroyed: released
  EXPECT_EQ(ReservedNow(), 0u);
  auto c = Reserve(1000);
  ASSERT_TRUE(c.decision.granted);
  c.reservation.Release();
  c.reservation.Release();  // once only
  EXPECT_EQ(ReservedNow(), 0u);
}

TEST_F(ReservationTest, OnlyAFewSmallLocksPerDeviceGoAroundTheQuota) {
  const index::Id dev = index::NewId();
  auto lock = [&](int i) {
    std::string body = "lock " + std::to_string(i);
    return index::ObjectKey{dev, index::ObjectType::kLocks, ToHex(Sha256::Of(body))};
  };
  EXPECT_TRUE(*LockExempt(*store_, lock(0), kLockExemptBytes));
  EXPECT_FALSE(*LockExempt(*store_, lock(0), kLockExemptBytes + 1));
  EXPECT_FALSE(*LockExempt(*store_, index::ObjectKey{dev, index::ObjectType::kData, "x"}, 10));
  for (size_t i = 0; i < kMaxExemptLocks; ++i) {
    ASSERT_TRUE(store_->Put(lock(static_cast<int>(i)), "lock " + std::to_string(i)));
  }
  EXPECT_FALSE(*LockExempt(*store_, lock(-1), 10));
  // The commit's own check: a new lock past the limit is refused (retry), one already there
  // and any lock below the limit are not.
  auto still = [&](const index::ObjectKey& key, bool exempt_lock = true) {
    std::optional<ErrorKind> kind;
    EXPECT_TRUE(store_->Index().Update([&](index::WriteTxn& txn) -> Status {
      Status st = StillUnreserved(txn, key, exempt_lock);
      if (!st) kind = st.error().kind;
      return {};
    }));
    return kind;
  };
  EXPECT_EQ(still(lock(-1)), ErrorKind::kUnavailable);
  EXPECT_EQ(still(lock(0)), std::nullopt);
  ASSERT_TRUE(store_->Delete(lock(0)));
  EXPECT_EQ(still(lock(-1)), std::nullopt);
  // A re-upload (no reservation) of an object deleted meanwhile is refused (retry); of one
  // still there it is not.
  EXPECT_EQ(still(lock(0), false), ErrorKind::kUnavailable);
  EXPECT_EQ(still(lock(1), false), std::nullopt);
}

}  // namespace
}  // namespace cv::server
