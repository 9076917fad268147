// common: what every module shares. Error values instead of exceptions, JSON-line logging,
// hex and SHA-256 helpers, durable file replacement, and an injectable clock.
//
// Thread-safety: everything here is safe to call from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tl/expected.hpp>

namespace cv {

// What went wrong, coarse enough for the HTTP layer to map to a status code in one place.
enum class ErrorKind {
  kInvalidArgument,   // the caller's input is bad (400)
  kNotFound,          // (404)
  kConflict,          // same name, different content (409)
  kCorruption,        // stored bytes fail their checksum and cannot be rebuilt
  kIOError,           // the OS reported an I/O failure
  kNoSpace,           // a disk or the index map is full (507)
  kUnavailable,       // too few healthy disks or shards to serve (503)
  kPermissionDenied,  // (403)
  kUnauthenticated,   // (401)
  kQuotaExceeded,     // (507)
  kGone,              // (410)
  kTooLarge,          // (413)
  kTimeout,
  kInternal,
};

const char* KindName(ErrorKind kind);

struct Error {
  ErrorKind kind = ErrorKind::kInternal;
  int sys_errno = 0;     // 0 unless the error came from the OS
  std::string context;   // what was being done, for logs and messages
  // What a client of a server-side error (5xx) is told instead of a generic sentence, set only
  // by the layer that knows the cause and can say it without paths or errno, with what an
  // operator does about it: which data disks are full, that the index is full. Empty for
  // everything else. (The initializer keeps Error{kind, errno, context} free of warnings.)
  std::string public_message = {};
  std::string ToString() const;
};

template <class T>
using Result = tl::expected<T, Error>;
using Status = Result<void>;

inline tl::unexpected<Error> Err(ErrorKind kind, std::string context, int sys_errno = 0) {
  return tl::unexpected<Error>(Error{kind, sys_errno, std::move(context)});
}
// The one place where errno becomes an Error: ENOSPC/EDQUOT -> kNoSpace, ENOENT -> kNotFound,
// everything else -> kIOError. `err` is positive (an errno, or minus a liburing result).
tl::unexpected<Error> ErrnoError(int err, std::string context);

// Early return on error, for functions returning a Result<U> or Status. Both take an
// expression that yields a Result<T> or Status, evaluate it exactly once and, if it holds an
// error, return that error (moved) from the enclosing function, unchanged: a caller that
// adds context writes the check out by hand. Not for coroutines (they co_return) nor for
// lambdas whose own return type is not a Result.
//
//   CV_TRY(expr);             discards the value of a successful `expr`; `expr` may name a
//                             Result variable, which it does not copy.
//   CV_TRY_ASSIGN(lhs, expr); evaluates `expr` into a hidden temporary and, on success,
//                             assigns the value to `lhs`: a declaration (`auto v`, `Foo v`)
//                             or an existing variable. It is several statements: never the
//                             sole body of an if or a loop without braces.
#define CV_TRY(...)                                                                \
  do {                                                                             \
    auto&& cv_try_result_ = (__VA_ARGS__);                                         \
    if (!cv_try_result_) return tl::unexpected(std::move(cv_try_result_.error())); \
  } while (0)

#define CV_TRY_ASSIGN(lhs, ...) \
  CV_TRY_ASSIGN_IMPL_(CV_TRY_CONCAT_(cv_try_tmp_, __COUNTER__), lhs, __VA_ARGS__)
#define CV_TRY_CONCAT_INNER_(a, b) a##b
#define CV_TRY_CONCAT_(a, b) CV_TRY_CONCAT_INNER_(a, b)
#define CV_TRY_ASSIGN_IMPL_(tmp, lhs, ...)                 \
  auto tmp = (__VA_ARGS__);                                \
  if (!tmp) return tl::unexpected(std::move(tmp.error())); \
  lhs = std::move(*tmp)

// ---- logging: one JSON object per line on stderr ----
enum class LogLevel { kDebug, kInfo, kWarn, kError };
using LogField = std::pair<std::string_view, std::string>;
void Log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields = {});
void SetLogLevel(LogLevel min_level);
// `s` with every byte that does not start a well-formed UTF-8 sequence (overlong forms,
// surrogates and code points past U+10FFFF included) replaced by U+FFFD. JSON must be UTF-8,
// and Boost.JSON copies string bytes as they are: whatever a client or a disk sent goes
// through this before it is written into JSON.
std::string ValidUtf8(std::string_view s);

// ---- request paths ----
// The segments of an absolute request path as sent, split by Boost.URL without decoding
// ("/a/b/" -> a, b, ""; "//x" -> "", x; "/" -> none). nullopt when `path` is not absolute, has
// a "." or ".." segment, or is not exactly "/" followed by its segments joined with "/" (Boost
// hides a leading "./" from the segments it returns): a path means one thing or is refused.
std::optional<std::vector<std::string_view>> PathSegments(std::string_view path);

// ---- bytes ----
std::string ToHex(std::span<const uint8_t> bytes);
// Parses exactly 2*N lowercase or uppercase hex digits; false on anything else.
bool FromHex(std::string_view hex, std::span<uint8_t> out);
bool IsLowerHex(std::string_view s);
// Fills `out` with bytes from the OS CSPRNG (getrandom). Aborts if the OS cannot.
void RandomBytes(std::span<uint8_t> out);
std::string RandomHex(size_t nbytes);

using Sha256Digest = std::array<uint8_t, 32>;
// Incremental SHA-256 (OpenSSL). Not thread-safe; one per stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(std::span<const uint8_t> data);
  void Update(std::string_view data) {
    Update(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
  }
  Sha256Digest Final();
  static Sha256Digest Of(std::string_view data);

 private:
  void* ctx_;
};

// ---- files ----
// Replaces the file `path` with `data` so that a crash leaves the old file or the new one,
// never a mix: writes `path`.tmp in the same directory (created with `mode`, less the umask),
// fsyncs it, renames it over `path` and fsyncs the directory. The directory must exist
// (kNotFound otherwise). On failure the temporary file is removed. One writer per path.
Status WriteFileDurably(const std::string& path, std::string_view data, unsigned mode = 0644);

// Makes a new secret (32 random bytes as 64 hex digits), writes it with a newline to `path`
// (mode 0600, durably, creating the parent directories) and returns it: the operator key, the
// metrics token.
Result<std::string> WriteNewSecret(const std::string& path);

// ---- time ----
// Nanoseconds since the Unix epoch. Tests may replace the clock (SetClockForTesting) to make
// expiry and staleness deterministic; production uses the system clock.
int64_t NowNanos();
void SetClockForTesting(int64_t (*now_nanos)());

}  // namespace cv
