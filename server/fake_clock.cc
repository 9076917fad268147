#include "server/fake_clock.h"

#include <sys/stat.h>

#include <charconv>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>

namespace cv::server {

namespace {

struct FileClock {
  std::mutex mu;
  std::string path;
  struct stat seen {};
  int64_t now_ns = 0;
};
FileClock g_clock;

std::optional<int64_t> ReadTime(const std::string& path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str();
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  int64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || p != text.data() + text.size() || v < 0) {
    return std::nullopt;
  }
  return v;
}

bool SameFile(const struct stat& a, const struct stat& b) {
  return a.st_ino == b.st_ino && a.st_dev == b.st_dev && a.st_size == b.st_size &&
         a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec;
}

int64_t FileNow() {
  std::lock_guard lock(g_clock.mu);
  struct stat st {};
  if (::stat(g_clock.path.c_str(), &st) == 0 && !SameFile(st, g_clock.seen)) {
    // A file caught half-written keeps the previous time; the next call reads it again.
    if (auto v = ReadTime(g_clock.path)) {
      g_clock.now_ns = *v;
      g_clock.seen = st;
    }
  }
  return g_clock.now_ns;
}

}  // namespace

Status UseFakeClockFile(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoError(errno, "fake clock file " + path);
  auto v = ReadTime(path);
  if (!v) {
    return Err(ErrorKind::kInvalidArgument,
               "fake clock file " + path + " must hold nanoseconds since the epoch");
  }
  {
    std::lock_guard lock(g_clock.mu);
    g_clock.path = path;
    g_clock.seen = st;
    g_clock.now_ns = *v;
  }
  SetClockForTesting(&FileNow);
  Log(LogLevel::kWarn, "fake_clock", {{"file", path}, {"now_ns", std::to_string(*v)}});
  return {};
}

}  // namespace cv::server
