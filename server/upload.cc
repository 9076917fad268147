// Session::Upload: an object's body, streamed into the store, with the account's status and
// hard quota checked (a reservation of Content-Length) before any of it is read.
#include <boost/beast/core/error.hpp>
#include <optional>
#include <span>
#include <string>

#include "server/quota.h"
#include "server/session_internal.h"

namespace cv::server {

namespace net = boost::asio;
namespace beast = boost::beast;
using internal::Empty200;

net::awaitable<bool> Session::Upload(Exchange& x, const index::ObjectKey& key,
                                     const std::optional<index::Account>& account) {
  auto& req = parser_->get();
  if (req.chunked() || !parser_->content_length()) {
    co_return co_await Send(
        x, ErrorReply(411, "length_required", "uploads need a Content-Length header"));
  }
  const uint64_t size = *parser_->content_length();
  // NOTE: storage and index calls (List, Head, Reserve, BeginPut/Append/Commit, Release)
  // block on disk I/O and run on this worker's thread, which stalls the other connections of
  // this io_context meanwhile. (Downloads' shard reads do not: they go through the worker's
  // DiskRing.) Measured: a thread pool for these calls halved the upload rate, and a stripe
  // in flight on the ring did not pay (bench/README.md, "Optimisations").
  // This falls short of ../shared/DESIGN.md's rule that no thread blocks on disk I/O; the
  // ingest work (writes and fdatasyncs on the worker's ring, group commit) is still to come.
  const int64_t now = NowNanos();
  bool small_lock = false;  // restic's locks keep restores working (server/quota.h)
  if (account) {
    auto exempt = LockExempt(ctx_.store, key, size);
    if (!exempt) co_return co_await Send(x, ErrorReply(exempt.error()));
    small_lock = *exempt;
  }
  if (auto r = AccountRefusal(account, now, AgentAccess::kWrite, small_lock)) {
    co_return co_await Send(x, std::move(*r));
  }
  // Hard quota: reserve Content-Length before reading any of the body. An object that is
  // already there cannot grow usage (the same body is a no-op, another one a conflict), so a
  // re-upload reserves nothing.
  Reservation reservation;
  if (account && !small_lock) {
    auto head = ctx_.store.Head(key);
    if (!head) co_return co_await Send(x, ErrorReply(head.error()));
    if (!*head) {
      auto got = Reserve(ctx_.store.Index(), account->id, size, now);
      if (!got) co_return co_await Send(x, ErrorReply(got.error()));
      if (!got->decision.granted) {
        co_return co_await Send(x, QuotaExceededReply(got->decision, size));
      }
      reservation = std::move(got->reservation);
    }
  }
  auto writer = ctx_.store.BeginPut(key, size);
  if (!writer) {
    reservation.Release();
    co_return co_await Send(x, ErrorReply(writer.error()));
  }
  // From here on, a client that goes away (co_return false) releases the reservation through
  // its destructor.
  if (!co_await SendContinue()) co_return false;

  // The body is read straight into the Writer's shard buffers (no copy in between).
  std::optional<Error> failed;
  uint64_t received = 0;
  while (!parser_->is_done()) {
    const std::span<uint8_t> window = (*writer)->Window();
    if (window.empty()) {  // the Writer failed, or more body than Content-Length (cannot be)
      const Status st = (*writer)->status();
      failed = st ? Error{ErrorKind::kInternal, 0, "the store took no more of the body"} : st.error();
      break;
    }
    auto [ec, got] = co_await ReadBodySome(window.data(), window.size());
    received += got;
    x.in += got;
    ctx_.metrics.BytesIn(got);
    if (ec) {
      // Dropping the Writer aborts the upload: nothing becomes visible.
      x.status = ec == beast::error::timeout ? 408 : 0;
      Log(LogLevel::kWarn, "upload_aborted",
          {{"remote", remote_},
           {"device", x.device},
           {"type", index::ObjectTypeName(key.type)},
           {"name", key.name},
           {"received", std::to_string(received)},
           {"expected", std::to_string(size)},
           {"error", ec.message()}});
      co_return false;
    }
    if (got > 0) {
      auto st = (*writer)->Appended(got);
      if (!st) {
        failed = st.error();
        break;
      }
    }
  }
  // The parser must not keep pointing into the Writer's buffers, which go with it below.
  parser_->get().body().data = nullptr;
  parser_->get().body().size = 0;
  if (failed) {
    writer->reset();
    reservation.Release();
    co_return co_await Send(x, ErrorReply(*failed));  // Send drops the rest or closes
  }
  auto info = (*writer)->Commit();
  writer->reset();  // free its stripe buffers before answering
  // Committed or not, the bytes are now in usage or nowhere: give the reservation back before
  // answering, so that the client's next upload sees it free.
  reservation.Release();
  if (!info) co_return co_await Send(x, ErrorReply(info.error()));
  auto st = ctx_.agent.UploadCommitted(key);
  if (!st) co_return co_await Send(x, ErrorReply(st.error()));
  co_return co_await Send(x, Empty200());
}

}  // namespace cv::server
