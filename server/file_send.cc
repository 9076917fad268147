// Session::SendFile: an admin answer that is a file on the node (courier images), whole or a
// Range of it.
#include <algorithm>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include "server/ranged_response.h"
#include "server/session_internal.h"

namespace cv::server {

namespace net = boost::asio;
namespace http = boost::beast::http;
using internal::kChunk;
using internal::kTuple;
using internal::Seconds;

net::awaitable<bool> Session::SendFile(Exchange& x, const std::string& path) {
  auto& req = parser_->get();
  // NOTE: blocking preads on the worker thread (courier images; see Upload).
  // Logged with the path; answered without it (the node's paths are not the client's
  // business). ENOENT: removed since the route checked it (DELETE of a courier job's images
  // racing this download), the same answer as when the check itself finds it gone.
  auto cannot_read = [&](const char* step, int err) {
    Log(LogLevel::kWarn, "file_read_failed",
        {{"file", path}, {"step", step}, {"errno", std::to_string(err)}});
    if (err == ENOENT) return ErrorReply(410, "gone", "the file is no longer on the node");
    return ErrorReply(500, "internal", std::string("cannot read the file: ") + std::strerror(err));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) co_return co_await Send(x, cannot_read("open", errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) co_return co_await Send(x, cannot_read("fstat", errno));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  RangeRequest rr = ParseRangeRequest(req[http::field::range], size, "file");
  if (rr.refusal) co_return co_await Send(x, std::move(*rr.refusal));
  const ByteRange range = rr.range;
  bool keep = req.keep_alive() && !worker_.draining;
  if (keep && !BodyDone()) keep = co_await DiscardBody(x);
  auto res = RangedResponse(req.version(), rr.partial, range, size, keep);
  BodySerializer sr{res};
  x.status = res.result_int();
  Tcp().expires_after(Seconds(ctx_.config.write_timeout_s));
  auto [ec, w] = co_await http::async_write_header(stream_, sr, kTuple);
  if (ec) co_return false;
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kChunk]);
  uint64_t sent = 0;
  while (sent < range.length) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, range.length - sent));
    const ssize_t n = ::pread(fd, buf.get(), want, static_cast<off_t>(range.offset + sent));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // The status line is gone: cut the body short so that the client notices.
      Log(LogLevel::kError, "file_send_failed",
          {{"file", path}, {"sent", std::to_string(sent)}, {"errno", std::to_string(errno)}});
      co_return false;
    }
    if (!co_await WriteBodyPiece(x, res, sr, buf.get(), static_cast<size_t>(n))) co_return false;
    sent += static_cast<uint64_t>(n);
  }
  if (!co_await WriteBodyPiece(x, res, sr, nullptr, 0)) co_return false;
  co_return keep;
}

}  // namespace cv::server
