#include "common/common.h"

#include <cerrno>

#include <gtest/gtest.h>

namespace cv {
namespace {

TEST(CommonTest, ErrnoMapsNoSpaceAndNotFound) {
  EXPECT_EQ(ErrnoError(ENOSPC, "x").value().kind, ErrorKind::kNoSpace);
  EXPECT_EQ(ErrnoError(-ENOSPC, "x").value().kind, ErrorKind::kNoSpace);
  EXPECT_EQ(ErrnoError(ENOENT, "x").value().kind, ErrorKind::kNotFound);
  EXPECT_EQ(ErrnoError(EIO, "x").value().kind, ErrorKind::kIOError);
  EXPECT_EQ(ErrnoError(EIO, "x").value().sys_errno, EIO);
}

TEST(CommonTest, HexRoundTripAndRejectsBadDigits) {
  std::array<uint8_t, 3> b{0x00, 0xab, 0xff};
  EXPECT_EQ(ToHex(b), "00abff");
  std::array<uint8_t, 3> back{};
  EXPECT_TRUE(FromHex("00abff", back));
  EXPECT_EQ(back, b);
  EXPECT_FALSE(FromHex("00abfg", back));
  EXPECT_FALSE(FromHex("00abf", back));
  EXPECT_TRUE(IsLowerHex("0123abcdef"));
  EXPECT_FALSE(IsLowerHex("ABC"));
}

TEST(CommonTest, Sha256OfKnownVector) {
  EXPECT_EQ(ToHex(Sha256::Of("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 h;
  h.Update("a");
  h.Update("bc");
  EXPECT_EQ(ToHex(h.Final()), ToHex(Sha256::Of("abc")));
}

TEST(CommonTest, JsonEscapeControlCharacters) {
  EXPECT_EQ(JsonEscape("a\"b\\c\n\x01"), "a\\\"b\\\\c\\n\\u0001");
}

int64_t FixedClock() { return 42; }
TEST(CommonTest, ClockCanBeReplacedInTests) {
  SetClockForTesting(&FixedClock);
  EXPECT_EQ(NowNanos(), 42);
  SetClockForTesting(nullptr);
  EXPECT_GT(NowNanos(), 1'600'000'000'000'000'000LL);
}

}  // namespace
}  // namespace cv
