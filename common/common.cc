#include "common/common.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/random.h>
#include <unistd.h>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/url/parse_path.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>

namespace cv {

const char* KindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument: return "invalid_argument";
    case ErrorKind::kNotFound: return "not_found";
    case ErrorKind::kConflict: return "conflict";
    case ErrorKind::kCorruption: return "corruption";
    case ErrorKind::kIOError: return "io_error";
    case ErrorKind::kNoSpace: return "no_space";
    case ErrorKind::kUnavailable: return "unavailable";
    case ErrorKind::kPermissionDenied: return "permission_denied";
    case ErrorKind::kUnauthenticated: return "unauthenticated";
    case ErrorKind::kQuotaExceeded: return "quota_exceeded";
    case ErrorKind::kGone: return "gone";
    case ErrorKind::kTooLarge: return "too_large";
    case ErrorKind::kTimeout: return "timeout";
    case ErrorKind::kInternal: return "internal";
  }
  return "internal";
}

std::string Error::ToString() const {
  std::string s = KindName(kind);
  if (!context.empty()) s += ": " + context;
  if (sys_errno != 0) s += std::string(" (") + std::strerror(sys_errno) + ")";
  return s;
}

tl::unexpected<Error> ErrnoError(int err, std::string context) {
  if (err < 0) err = -err;
  ErrorKind kind = ErrorKind::kIOError;
  if (err == ENOSPC || err == EDQUOT) kind = ErrorKind::kNoSpace;
  if (err == ENOENT) kind = ErrorKind::kNotFound;
  return tl::unexpected<Error>(Error{kind, err, std::move(context)});
}

// ---- logging ----
namespace {
std::atomic<int> g_min_level{static_cast<int>(LogLevel::kInfo)};
std::mutex g_log_mu;
const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}
}  // namespace

void SetLogLevel(LogLevel min_level) { g_min_level = static_cast<int>(min_level); }

std::string ValidUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80                  ? 1
                     : c >= 0xc2 && c <= 0xdf ? 2
                     : c >= 0xe0 && c <= 0xef ? 3
                     : c >= 0xf0 && c <= 0xf4 ? 4
                                              : 0;
    bool ok = n != 0 && i + n <= s.size();
    for (size_t j = 1; ok && j < n; ++j) {
      ok = (static_cast<unsigned char>(s[i + j]) & 0xc0) == 0x80;
    }
    if (ok && n >= 3) {
      const auto d = static_cast<unsigned char>(s[i + 1]);
      ok = !(c == 0xe0 && d < 0xa0) &&  // overlong
           !(c == 0xed && d > 0x9f) &&  // UTF-16 surrogate
           !(c == 0xf0 && d < 0x90) &&  // overlong
           !(c == 0xf4 && d > 0x8f);    // beyond U+10FFFF
    }
    if (ok) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out.append("\xef\xbf\xbd");
      ++i;
    }
  }
  return out;
}

std::optional<std::vector<std::string_view>> PathSegments(std::string_view path) {
  if (!path.starts_with('/')) return std::nullopt;
  auto segments = boost::urls::parse_path(path);
  if (!segments) return std::nullopt;
  // Each part must start where the path has it when the parts are joined with "/": then the
  // parts are the whole path, and nothing (such as a leading "./") was hidden.
  std::vector<std::string_view> parts;
  size_t at = 1;
  for (auto segment : *segments) {
    std::string_view part(segment.data(), segment.size());
    if (part == "." || part == ".." || part.data() != path.data() + at) return std::nullopt;
    at += part.size() + 1;
    parts.push_back(part);
  }
  if (parts.empty() ? path != "/" : at != path.size() + 1) return std::nullopt;
  return parts;
}

void Log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields) {
  if (static_cast<int>(level) < g_min_level.load(std::memory_order_relaxed)) return;
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  boost::json::object line;
  line["ts_ms"] = ms;
  line["level"] = LevelName(level);
  line["event"] = ValidUtf8(event);
  for (const auto& [k, v] : fields) line[ValidUtf8(k)] = ValidUtf8(v);
  std::string text = boost::json::serialize(line);
  text += '\n';
  std::lock_guard lock(g_log_mu);
  std::fwrite(text.data(), 1, text.size(), stderr);
}

// ---- bytes ----
std::string ToHex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(bytes.size() * 2, '0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return out;
}

static int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool FromHex(std::string_view hex, std::span<uint8_t> out) {
  if (hex.size() != out.size() * 2) return false;
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

void RandomBytes(std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::perror("getrandom");
      std::abort();
    }
    done += static_cast<size_t>(n);
  }
}

std::string RandomHex(size_t nbytes) {
  std::string raw(nbytes, '\0');
  RandomBytes(std::span<uint8_t>(reinterpret_cast<uint8_t*>(raw.data()), raw.size()));
  return ToHex(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(raw.data()), raw.size()));
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1) {
    std::abort();
  }
}
Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }
void Sha256::Update(std::span<const uint8_t> data) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data.data(), data.size());
}
Sha256Digest Sha256::Final() {
  Sha256Digest d{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), d.data(), &len);
  return d;
}
Sha256Digest Sha256::Of(std::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.Final();
}

// ---- files ----
Status WriteFileDurably(const std::string& path, std::string_view data, unsigned mode) {
  const std::string tmp = path + ".tmp";
  // Removed first so that O_EXCL creates it with `mode`: O_TRUNC would keep the mode of a
  // temporary file that a crash left behind.
  ::unlink(tmp.c_str());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoError(errno, "open " + tmp);
  auto fail = [&](const char* what) {
    const int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return ErrnoError(e, std::string(what) + " " + tmp);
  };
  for (size_t done = 0; done < data.size();) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("write");
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("fsync");
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return ErrnoError(e, "rename " + tmp);
  }
  // The rename is durable only once the directory is.
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return ErrnoError(errno, "open " + dir);
  const int rc = ::fsync(dfd);
  const int e = errno;
  ::close(dfd);
  if (rc != 0) return ErrnoError(e, "fsync " + dir);
  return {};
}

Result<std::string> WriteNewSecret(const std::string& path) {
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  if (ec) return Err(ErrorKind::kIOError, "create " + dir.string() + ": " + ec.message());
  std::string secret = RandomHex(32);
  CV_TRY(WriteFileDurably(path, secret + "\n", 0600));
  return secret;
}

// ---- time ----
namespace {
int64_t SystemNowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
std::atomic<int64_t (*)()> g_clock{&SystemNowNanos};
}  // namespace

int64_t NowNanos() { return g_clock.load()(); }
void SetClockForTesting(int64_t (*now_nanos)()) { g_clock = now_nanos ? now_nanos : &SystemNowNanos; }

}  // namespace cv
