#include "server/admission.h"

#include <gtest/gtest.h>

#include <vector>

namespace cv::server {
namespace {

using Outcome = Admission::Outcome;
namespace ip = boost::asio::ip;

TEST(AddressKeyTest, Ipv6CountsByItsSlash64AndMappedIpv4AsIpv4) {
  EXPECT_EQ(AddressKey(ip::make_address("203.0.113.7")), "203.0.113.7");
  EXPECT_EQ(AddressKey(ip::make_address("::ffff:203.0.113.7")), "203.0.113.7");
  EXPECT_EQ(AddressKey(ip::make_address("2001:db8:1:2::1")),
            AddressKey(ip::make_address("2001:db8:1:2:ffff:ffff:ffff:fffe")));
  EXPECT_NE(AddressKey(ip::make_address("2001:db8:1:2::1")),
            AddressKey(ip::make_address("2001:db8:1:3::1")));
}

TEST(AdmissionTest, PerAddressLimitRefusesOnlyThatAddress) {
  Admission a(100, 2);
  std::vector<Admission::Ticket> held;
  for (int i = 0; i < 2; ++i) {
    auto d = a.Admit("10.0.0.1");
    ASSERT_EQ(d.outcome, Outcome::kAdmitted);
    held.push_back(std::move(*d.ticket));
  }
  auto refused = a.Admit("10.0.0.1");
  EXPECT_EQ(refused.outcome, Outcome::kRefusedPerAddress);
  EXPECT_FALSE(refused.ticket);
  EXPECT_EQ(a.Admit("10.0.0.2").outcome, Outcome::kAdmitted);  // released at once
  EXPECT_EQ(a.Admit("").outcome, Outcome::kAdmitted);          // the admin listener: no limit
  held.pop_back();                                             // one closes: room again
  EXPECT_EQ(a.open_from("10.0.0.1"), 1u);
  EXPECT_EQ(a.Admit("10.0.0.1").outcome, Outcome::kAdmitted);
}

TEST(AdmissionTest, FullNodeEvictsTheOldestConnectionStillInItsHandshake) {
  Admission a(3, 0);
  std::vector<int> evicted;
  std::vector<Admission::Ticket> t;
  for (int i = 0; i < 3; ++i) {
    auto d = a.Admit("10.0.0.1");
    ASSERT_EQ(d.outcome, Outcome::kAdmitted);
    ASSERT_TRUE(d.ticket->Arm([&evicted, i] { evicted.push_back(i); }));
    t.push_back(std::move(*d.ticket));
  }
  ASSERT_TRUE(t[0].HandshakeDone());  // 0 is serving: never evicted

  auto d = a.Admit("10.0.0.9");
  EXPECT_EQ(d.outcome, Outcome::kAdmittedByEviction);
  EXPECT_EQ(evicted, std::vector<int>{1});
  EXPECT_EQ(a.open(), 3u);
  EXPECT_FALSE(t[1].HandshakeDone());  // its place is gone: it must close
  d.ticket->HandshakeDone();

  EXPECT_EQ(a.Admit("10.0.0.9").outcome, Outcome::kAdmittedByEviction);  // 2 goes next...
  EXPECT_EQ(evicted, (std::vector<int>{1, 2}));
  // ...and the node is then full of finished handshakes (0, the first newcomer) plus the
  // second newcomer, whose ticket was dropped at once: its place is free again.
  EXPECT_EQ(a.open(), 2u);
}

TEST(AdmissionTest, FullOfFinishedHandshakesRefusesTheNewConnection) {
  Admission a(2, 0);
  std::vector<Admission::Ticket> t;
  for (int i = 0; i < 2; ++i) {
    auto d = a.Admit("10.0.0.1");
    ASSERT_TRUE(d.ticket->HandshakeDone());
    t.push_back(std::move(*d.ticket));
  }
  auto d = a.Admit("10.0.0.2");
  EXPECT_EQ(d.outcome, Outcome::kRefusedFull);
  EXPECT_FALSE(d.ticket);
  EXPECT_EQ(a.open(), 2u);
}

TEST(AdmissionTest, EvictedBeforeArmingClosesWhenItArms) {
  Admission a(1, 0);
  auto first = a.Admit("10.0.0.1");
  auto second = a.Admit("10.0.0.2");  // evicts `first`, which had no callback yet
  EXPECT_EQ(second.outcome, Outcome::kAdmittedByEviction);
  EXPECT_FALSE(first.ticket->Arm([] {}));
  EXPECT_EQ(a.open_from("10.0.0.1"), 0u);
  first.ticket.reset();  // releasing an evicted ticket changes nothing
  EXPECT_EQ(a.open(), 1u);
}

}  // namespace
}  // namespace cv::server
