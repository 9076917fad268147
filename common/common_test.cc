#include "common/common.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <boost/json/parse.hpp>

#include "common/test_temp_dir.h"

namespace cv {
namespace {

TEST(CommonTest, ErrnoMapsNoSpaceAndNotFound) {
  EXPECT_EQ(ErrnoError(ENOSPC, "x").value().kind, ErrorKind::kNoSpace);
  EXPECT_EQ(ErrnoError(-ENOSPC, "x").value().kind, ErrorKind::kNoSpace);
  EXPECT_EQ(ErrnoError(ENOENT, "x").value().kind, ErrorKind::kNotFound);
  EXPECT_EQ(ErrnoError(EIO, "x").value().kind, ErrorKind::kIOError);
  EXPECT_EQ(ErrnoError(EIO, "x").value().sys_errno, EIO);
}

// A Result<T> that counts how often it is produced, for the CV_TRY tests.
Result<std::unique_ptr<int>> Produce(int* calls, bool fail, int value) {
  ++*calls;
  if (fail) return Err(ErrorKind::kNotFound, "produce");
  return std::make_unique<int>(value);
}
Status Check(int* calls, bool fail) {
  ++*calls;
  if (fail) return Err(ErrorKind::kConflict, "check");
  return {};
}

Result<int> TwiceThenCheck(int* calls, bool fail_produce, bool fail_check) {
  CV_TRY_ASSIGN(std::unique_ptr<int> v, Produce(calls, fail_produce, 21));  // move-only
  CV_TRY(Check(calls, fail_check));
  std::unique_ptr<int> out;
  CV_TRY_ASSIGN(out, Produce(calls, false, *v * 2));  // into an existing variable
  return *out;
}

TEST(CommonTest, TryMacrosPassValuesAndReturnErrorsEvaluatingOnce) {
  struct Case {
    bool fail_produce, fail_check;
    int calls;  // each expression is evaluated once, and nothing after a failure
    std::optional<ErrorKind> error;
  };
  for (const Case& c :
       {Case{false, false, 3, std::nullopt}, Case{true, false, 1, ErrorKind::kNotFound},
        Case{false, true, 2, ErrorKind::kConflict}}) {
    int calls = 0;
    auto got = TwiceThenCheck(&calls, c.fail_produce, c.fail_check);
    EXPECT_EQ(calls, c.calls);
    if (c.error) {
      ASSERT_FALSE(got);
      EXPECT_EQ(got.error().kind, *c.error);
      EXPECT_EQ(got.error().context, c.fail_produce ? "produce" : "check");
    } else {
      ASSERT_TRUE(got);
      EXPECT_EQ(*got, 42);
    }
  }
}

TEST(CommonTest, TryOnAResultVariableReturnsItsError) {
  auto f = [](Result<int> r) -> Status {
    CV_TRY(r);
    return {};
  };
  EXPECT_TRUE(f(7));
  auto failed = f(Err(ErrorKind::kIOError, "disk", EIO));
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().kind, ErrorKind::kIOError);
  EXPECT_EQ(failed.error().sys_errno, EIO);
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

// A log line is one valid JSON object whatever bytes its fields carry (a client's header, a
// path on a disk): quotes, control characters and bytes that are not UTF-8 included.
TEST(CommonTest, LogWritesOneValidJsonObjectPerLine) {
  testing::internal::CaptureStderr();
  Log(LogLevel::kWarn, "odd\"event", {{"remote", "a\"b\\c\n\x01"}, {"name", "\xca\xfe"}});
  const std::string line = testing::internal::GetCapturedStderr();
  ASSERT_FALSE(line.empty());
  EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(line, ec);
  ASSERT_FALSE(ec) << line;
  EXPECT_EQ(v.at("level").as_string(), "warn");
  EXPECT_EQ(v.at("event").as_string(), "odd\"event");
  EXPECT_EQ(v.at("remote").as_string(), "a\"b\\c\n\x01");
  EXPECT_EQ(v.at("name").as_string(), "\xef\xbf\xbd\xef\xbf\xbd");
}

TEST(CommonTest, ValidUtf8KeepsWellFormedTextAndReplacesTheRest) {
  EXPECT_EQ(ValidUtf8("gr\xc3\xb6\xc3\x9f" "e \xf0\x9f\x98\x80"), "gr\xc3\xb6\xc3\x9f" "e \xf0\x9f\x98\x80");
  const std::string fffd = "\xef\xbf\xbd";
  EXPECT_EQ(ValidUtf8("a\xca" "b"), "a" + fffd + "b");                 // truncated sequence
  EXPECT_EQ(ValidUtf8("\xc0\xaf"), fffd + fffd);                      // overlong '/'
  EXPECT_EQ(ValidUtf8("\xed\xa0\x80"), fffd + fffd + fffd);          // UTF-16 surrogate
  EXPECT_EQ(ValidUtf8("\xf4\x90\x80\x80"), fffd + fffd + fffd + fffd);  // past U+10FFFF
  EXPECT_EQ(ValidUtf8(std::string_view("\0x", 2)), std::string("\0x", 2));
}

class WriteFileDurablyTest : public ::testing::Test {
 protected:
  static std::string Read(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  std::vector<std::string> Names() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir_.path()))
      names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
  TempDir dir_{"common_test"};
};

TEST_F(WriteFileDurablyTest, ReplacesContentAndLeavesNoTemporaryFile) {
  const std::string path = dir_ / "f.json";
  ASSERT_TRUE(WriteFileDurably(path, "first, and longer\n"));
  EXPECT_EQ(Read(path), "first, and longer\n");
  ASSERT_TRUE(WriteFileDurably(path, std::string("se\0cond", 7)));
  EXPECT_EQ(Read(path), std::string("se\0cond", 7));
  ASSERT_TRUE(WriteFileDurably(path, ""));
  EXPECT_EQ(Read(path), "");
  EXPECT_EQ(Names(), std::vector<std::string>{"f.json"});
}

TEST_F(WriteFileDurablyTest, SecretFileGetsItsModeEvenOverALeftoverTemporaryFile) {
  const std::string path = dir_ / "secret.key";
  {
    // What a crash between create and rename leaves behind, readable by everyone.
    std::ofstream(path + ".tmp") << "stale";
    ASSERT_EQ(::chmod((path + ".tmp").c_str(), 0644), 0);
  }
  ASSERT_TRUE(WriteFileDurably(path, "k\n", 0600));
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(Read(path), "k\n");
  EXPECT_EQ(Names(), std::vector<std::string>{"secret.key"});
}

TEST_F(WriteFileDurablyTest, MissingDirectoryIsNotFoundAndCreatesNothing) {
  auto st = WriteFileDurably(dir_ / "no/such/dir/f", "x");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(st.error().sys_errno, ENOENT);
  EXPECT_TRUE(Names().empty());
}

TEST_F(WriteFileDurablyTest, FailedRenameRemovesTheTemporaryFile) {
  // A directory stands where the file should go: the rename fails after the write.
  ASSERT_TRUE(std::filesystem::create_directory(dir_ / "taken"));
  std::ofstream(dir_ / "taken/inside") << "keep";
  auto st = WriteFileDurably(dir_ / "taken", "x");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().kind, ErrorKind::kIOError);
  EXPECT_EQ(Names(), std::vector<std::string>{"taken"});
  EXPECT_EQ(Read(dir_ / "taken/inside"), "keep");
}

int64_t FixedClock() { return 42; }
TEST(CommonTest, PathSegmentsAreThePathOrNothing) {
  using V = std::vector<std::string_view>;
  EXPECT_EQ(PathSegments("/"), V{});
  EXPECT_EQ(PathSegments("/a/b/"), (V{"a", "b", ""}));
  EXPECT_EQ(PathSegments("//x"), (V{"", "x"}));
  EXPECT_EQ(PathSegments("/a.b/..c"), (V{"a.b", "..c"}));
  for (std::string_view bad : {"", "a/b", "/./", "/.", "/..", "/./a", "/a/./b", "/a/..", "/a/../b",
                               "/a b", "/a?b"}) {
    EXPECT_EQ(PathSegments(bad), std::nullopt) << bad;
  }
}

TEST(CommonTest, ClockCanBeReplacedInTests) {
  SetClockForTesting(&FixedClock);
  EXPECT_EQ(NowNanos(), 42);
  SetClockForTesting(nullptr);
  EXPECT_GT(NowNanos(), 1'600'000'000'000'000'000LL);
}

}  // namespace
}  // namespace cv
