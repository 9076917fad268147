// Session::Download and ReadPiece: an object, whole or a Range of it, streamed out of the
// store, its shard reads through the worker's DiskRing.
#include <algorithm>
#include <boost/beast/http.hpp>
#include <memory>
#include <span>
#include <string>

#include "server/disk_ring.h"
#include "server/ranged_response.h"
#include "server/session_internal.h"

namespace cv::server {

namespace net = boost::asio;
namespace http = boost::beast::http;
using internal::kChunk;
using internal::kTuple;
using internal::Seconds;

// GCC 12 says, wrongly, that this coroutine's frame is freed by a mismatched operator delete:
// Asio's awaitable frames come from its operator new (aligned_alloc) and go back through its
// operator delete (free), but once GCC inlines the one and not the other it no longer sees the
// pair. Whether it warns depends only on inlining; it did not while Download lived in session.cc.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
net::awaitable<bool> Session::Download(Exchange& x, const index::ObjectKey& key) {
  auto& req = parser_->get();
  // The index lookups block; the shard reads go through the worker's DiskRing (ReadPiece).
  auto head = ctx_.store.Head(key);
  if (!head) co_return co_await Send(x, ErrorReply(head.error()));
  if (!*head) co_return co_await Send(x, ErrorReply(404, "not_found", "no such object"));
  const uint64_t size = (*head)->size;
  RangeRequest rr = ParseRangeRequest(req[http::field::range], size, "object");
  if (rr.refusal) co_return co_await Send(x, std::move(*rr.refusal));
  auto reader = ctx_.store.Open(key, rr.range.offset, rr.range.length);
  if (!reader) co_return co_await Send(x, ErrorReply(reader.error()));
  const uint64_t length = (*reader)->length();

  // The first chunk is read before the status line so that a read failure can still be
  // answered with a proper error instead of a cut-off body.
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kChunk]);
  size_t n = 0;
  if (length > 0) {
    auto r = co_await ReadPiece(**reader, buf.get(), std::min<uint64_t>(kChunk, length));
    if (!r) co_return co_await Send(x, ErrorReply(r.error()));
    if (*r == 0)
      co_return co_await Send(x, ErrorReply(Error{ErrorKind::kInternal, 0, "empty read"}));
    n = *r;
  }
  bool keep = req.keep_alive() && !worker_.draining;
  if (keep && !BodyDone()) keep = co_await DiscardBody(x);

  auto res =
      RangedResponse(req.version(), rr.partial, ByteRange{rr.range.offset, length}, size, keep);
  BodySerializer sr{res};
  x.status = res.result_int();
  Tcp().expires_after(Seconds(ctx_.config.write_timeout_s));
  auto [ec, w] = co_await http::async_write_header(stream_, sr, kTuple);
  if (ec) co_return false;

  uint64_t sent = 0;
  while (sent < length) {
    if (n == 0) {
      auto r = co_await ReadPiece(**reader, buf.get(), std::min<uint64_t>(kChunk, length - sent));
      if (!r || *r == 0) {
        // The status line is gone: all we can do is cut the body short so the client notices.
        Log(LogLevel::kError, "download_failed",
            {{"device", x.device},
             {"name", key.name},
             {"sent", std::to_string(sent)},
             {"error", r ? "short read" : r.error().ToString()}});
        co_return false;
      }
      n = *r;
    }
    if (!co_await WriteBodyPiece(x, res, sr, buf.get(), n)) co_return false;
    sent += n;
    n = 0;
  }
  if (!co_await WriteBodyPiece(x, res, sr, nullptr, 0)) co_return false;
  co_return keep;
}
#pragma GCC diagnostic pop

net::awaitable<Result<size_t>> Session::ReadPiece(storage::Reader& reader, uint8_t* buf,
                                                 size_t max) {
  if (worker_.disk) {
    // Most pieces of a stripe are in memory already: then no round through the ring.
    if (reader.Buffered() == 0) co_await worker_.disk->Prefetch(reader);
    // Still nothing buffered: a shard failed; Read rebuilds the stripe (synchronously).
    if (const uint64_t b = reader.Buffered(); b > 0) max = static_cast<size_t>(std::min<uint64_t>(max, b));
  }
  co_return reader.Read(std::span<uint8_t>(buf, max));
}

}  // namespace cv::server
