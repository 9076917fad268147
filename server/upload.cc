// Session::Upload: an object's body, streamed into the store, with the account's status and
// hard quota checked (a reservation of Content-Length) before any of it is read.
#include <boost/beast/core/error.hpp>
#include <optional>
#include <span>
#include <string>

#include "server/disk_ring.h"
#include "server/quota.h"
#include "server/store_commits.h"
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
  // The worker thread never waits for a disk here: the shard writes go through its DiskRing
  // (the body goes on into the next stripe while one is written), and the fdatasyncs and the
  // object's index commit through the store's commit thread, grouped with every other
  // connection's (server/store_commits.h). Without a DiskRing (an Env with none) the shard
  // writes run on this thread. What still runs here: the index reads (Head, List, the quota
  // reservation's usage), which LMDB serves from memory; the reservation itself is in memory.
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
  // re-upload reserves nothing; its commit checks that this still holds (StillUnreserved).
  Reservation reservation;
  bool unreserved = small_lock;
  if (account && !small_lock) {
    auto head = ctx_.store.Head(key);
    if (!head) co_return co_await Send(x, ErrorReply(head.error()));
    unreserved = head->has_value();
    if (!unreserved) {
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
  DiskRing* ring = worker_.disk.get();
  if (ring) ring->Attach(**writer);
  // From here on, a client that goes away (co_return false) releases the reservation through
  // its destructor.
  if (!co_await SendContinue()) co_return false;

  // The body is read straight into the Writer's shard buffers (no copy in between).
  std::optional<Error> failed;
  uint64_t received = 0;
  while (!BodyDone()) {
    const std::span<uint8_t> window = (*writer)->Window();
    if (window.empty() && ring && (*writer)->status()) {
      co_await ring->WhenWritten(**writer);  // both stripe buffers are being written
      if (!(*writer)->Window().empty()) continue;
    }
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
      auto st = ring ? ring->Appended(**writer, got) : (*writer)->Appended(got);
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
  if (ring) {
    co_await ring->WhenWritten(**writer);  // the last stripe's writes
  }
  // The commit group syncs and indexes the object, and (snapshots) the device's last backup
  // in the same transaction.
  std::function<Status(index::WriteTxn&)> also =
      [unreserved, small_lock, key, backup = AgentApi::UploadCommittedIn(key, NowNanos())](
          index::WriteTxn& txn) -> Status {
    if (unreserved) CV_TRY(StillUnreserved(txn, key, small_lock));
    return backup ? backup(txn) : Status{};
  };
  auto info = co_await CommitUpload(ctx_.store, std::move(*writer), std::move(also));
  // The bytes are in usage now, or nowhere: the reservation goes either way.
  reservation.Release();
  if (!info) co_return co_await Send(x, ErrorReply(info.error()));
  co_return co_await Send(x, Empty200());
}

}  // namespace cv::server
