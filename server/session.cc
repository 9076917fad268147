#include "server/session.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace cv::server {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

// Every asynchronous step reports errors as values; nothing throws across a handler.
constexpr auto kTuple = net::as_tuple(net::use_awaitable);
// Body bytes moved per step out (downloads, files). Uploads read into the Writer's own buffers.
constexpr size_t kChunk = 256 * 1024;
// Room in the read buffer beyond a maximal header: bounds read-ahead (and pipelined requests).
constexpr size_t kReadAhead = 64 * 1024;
constexpr size_t kDiscardChunk = 64 * 1024;
// Body bytes ReadBodySome may take without a trip through the event loop (one 4+2 stripe).
constexpr size_t kSyncReadRun = 1024 * 1024;

// Errors that only mean the client went away or stopped talking.
bool ClientGone(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == http::error::partial_message ||
         ec == net::error::eof || ec == ssl::error::stream_truncated ||
         ec == net::error::operation_aborted || ec == net::error::connection_reset ||
         ec == net::error::broken_pipe || ec == beast::error::timeout;
}

std::chrono::seconds Seconds(int s) { return std::chrono::seconds(s); }

Reply Empty200() {
  Reply r;
  r.status = 200;
  r.content_type.clear();
  return r;
}

Reply MethodNotAllowed(std::string_view allow) {
  Reply r = ErrorReply(405, "method_not_allowed", "allowed: " + std::string(allow));
  r.headers.emplace_back("Allow", std::string(allow));
  return r;
}

// A GET's Range header against `size` bytes of `what` ("object", "file").
struct RangeRequest {
  std::optional<Reply> refusal;  // 400 or 416: answer this instead
  bool partial = false;          // 206 with `range`, else 200 with the whole
  ByteRange range;
};
RangeRequest ParseRangeRequest(std::string_view header, uint64_t size, std::string_view what) {
  RangeRequest out;
  const RangeParse rp = ParseRange(header, size, &out.range);
  if (rp == RangeParse::kMalformed) {
    out.refusal = ErrorReply(400, "invalid_range",
                             "Range must be one of bytes=FIRST-LAST, bytes=FIRST-, bytes=-SUFFIX");
  } else if (rp == RangeParse::kUnsatisfiable) {
    out.refusal = ErrorReply(416, "range_not_satisfiable",
                             "the range starts at or past the end of the " + std::string(what) +
                                 " (" + std::to_string(size) + " bytes)");
    out.refusal->headers.emplace_back("Content-Range", "bytes */" + std::to_string(size));
  }
  out.partial = rp == RangeParse::kPartial;
  if (!out.partial) out.range = ByteRange{0, size};
  return out;
}

// The head of a 200 (all `size` bytes) or 206 (`range` of them) answer whose body is written
// afterwards in pieces (WriteBodyPiece).
http::response<http::buffer_body> RangedResponse(unsigned version, bool partial, ByteRange range,
                                                 uint64_t size, bool keep) {
  http::response<http::buffer_body> res{partial ? http::status::partial_content : http::status::ok,
                                        version};
  res.set(http::field::server, "chunkvault");
  res.set(http::field::content_type, "application/octet-stream");
  res.set(http::field::accept_ranges, "bytes");
  if (partial) {
    res.set(http::field::content_range, "bytes " + std::to_string(range.offset) + "-" +
                                            std::to_string(range.offset + range.length - 1) +
                                            "/" + std::to_string(size));
  }
  res.content_length(range.length);
  res.keep_alive(keep);
  res.body().data = nullptr;
  res.body().more = true;
  return res;
}

}  // namespace

struct Session::Exchange {
  Clock::time_point start = Clock::now();
  std::string method = "-";
  std::string route = "unknown";
  std::string device;  // hex, once authenticated
  int status = 0;      // 0 = no answer was sent (client gone or timed out)
  uint64_t in = 0, out = 0;
  bool head = false;
};

Session::Session(ServerContext& ctx, Worker& worker, Listener listener, tcp::socket socket,
                 std::shared_ptr<ssl::context> tls, Admission::Ticket ticket)
    : ctx_(ctx),
      worker_(worker),
      listener_(listener),
      ticket_(std::move(ticket)),
      tls_(std::move(tls)),
      stream_(std::move(socket), *tls_),
      buffer_(ctx.config.header_limit_bytes + kReadAhead) {
  beast::error_code ec;
  auto ep = Tcp().socket().remote_endpoint(ec);
  remote_ = ec ? "unknown" : ep.address().to_string();
  // Asynchronous operations work the same on a non-blocking socket; synchronous reads then
  // return would_block instead of waiting (ReadBodySome's fast path).
  Tcp().socket().non_blocking(true, ec);
  worker_.sessions.insert(this);
  ctx_.connections.fetch_add(1);
  ctx_.metrics.ConnectionOpened();
}

Session::~Session() {
  worker_.sessions.erase(this);
  ctx_.connections.fetch_sub(1);
  ctx_.metrics.ConnectionClosed();
}

beast::tcp_stream& Session::Tcp() { return beast::get_lowest_layer(stream_); }

void Session::Start(std::shared_ptr<Session> session) {
  Session* s = session.get();
  net::co_spawn(s->worker_.ioc, s->Run(std::move(session)), [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      Log(LogLevel::kError, "session_exception", {{"what", ex.what()}});
    }
  });
}

void Session::Drain() {
  if (phase_ != Phase::kBusy) Tcp().cancel();
}

net::awaitable<void> Session::Run(std::shared_ptr<Session> self) {
  // Evicted (a newer connection needed the room while this one has not finished its
  // handshake): the callback runs on another worker's thread, so it only posts the cancel here.
  const bool armed = ticket_.Arm([weak = weak_from_this(), &ioc = worker_.ioc] {
    net::post(ioc, [weak] {
      if (auto s = weak.lock(); s && s->phase_ == Phase::kHandshake) {
        s->evicted_ = true;
        s->Tcp().cancel();
      }
    });
  });
  if (!armed) co_return;  // evicted before it started
  Tcp().expires_after(Seconds(ctx_.config.handshake_timeout_s));
  auto [ec] = co_await stream_.async_handshake(ssl::stream_base::server, kTuple);
  if (!ec && !ticket_.HandshakeDone()) {
    // Evicted while the last handshake message was on its way: its place was already given
    // to another connection.
    evicted_ = true;
  }
  if (evicted_) {
    Log(LogLevel::kDebug, "connection_evicted", {{"remote", remote_}});
    co_return;
  }
  if (ec) {
    // Plaintext HTTP, TLS 1.0/1.1, no shared cipher, a port scanner: just close.
    ctx_.metrics.HandshakeFailed();
    Log(LogLevel::kDebug, "tls_handshake_failed", {{"remote", remote_}, {"error", ec.message()}});
    co_return;
  }
  while (co_await ServeOne()) {
  }
  co_await Shutdown();
}

net::awaitable<bool> Session::ServeOne() {
  if (worker_.draining) co_return false;
  const Config& cfg = ctx_.config;
  parser_.emplace();
  parser_->header_limit(cfg.header_limit_bytes);
  parser_->body_limit(listener_ == Listener::kAgent ? cfg.max_object_bytes
                                                    : cfg.max_json_body_bytes);
  continue_pending_ = false;
  phase_ = Phase::kIdle;
  Tcp().expires_after(Seconds(cfg.idle_timeout_s));
  auto [ec, n] = co_await http::async_read_header(stream_, buffer_, *parser_, kTuple);
  phase_ = Phase::kBusy;
  Exchange x;
  if (ec) {
    Reply r;
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      r = ErrorReply(
          431, "header_too_large",
          "request header is larger than " + std::to_string(cfg.header_limit_bytes) + " bytes");
    } else if (ec == http::error::body_limit) {
      r = ErrorReply(413, "too_large", "the body is larger than this endpoint accepts");
    } else if (ClientGone(ec) || buffer_.size() == 0) {
      co_return false;  // idle keep-alive connection closed or timed out
    } else {
      r = ErrorReply(400, "bad_request", "malformed HTTP request: " + ec.message());
    }
    x.route = "invalid";
    r.close = true;
    co_await Send(x, std::move(r));
    Finish(x);
    co_return false;
  }
  auto& req = parser_->get();
  x.method = std::string(http::to_string(req.method()));
  x.head = req.method() == http::verb::head;
  continue_pending_ = beast::iequals(req[http::field::expect], "100-continue");
  size_t fields = static_cast<size_t>(std::distance(req.begin(), req.end()));
  bool keep;
  if (fields > cfg.max_header_fields) {
    x.route = "invalid";
    Reply r = ErrorReply(431, "too_many_headers",
                         "more than " + std::to_string(cfg.max_header_fields) + " header fields");
    r.close = true;
    keep = co_await Send(x, std::move(r));
  } else if (listener_ == Listener::kAgent) {
    keep = co_await ServeAgent(x);
  } else {
    keep = co_await ServeAdmin(x);
  }
  Finish(x);
  co_return keep;
}

net::awaitable<bool> Session::ServeAgent(Exchange& x) {
  auto& req = parser_->get();
  const std::string_view target = req.target();
  const http::verb m = req.method();
  const bool get = m == http::verb::get || m == http::verb::head;

  if (IsOperational(target)) co_return co_await ServeOperational(x);

  AgentTarget t = ParseAgentTarget(target);
  if (t.kind == AgentTarget::Kind::kNone) {
    co_return co_await Send(x, ErrorReply(404, "not_found", "no such route"));
  }
  // Authenticate before saying anything about the path: strangers learn nothing.
  Credentials cred = ParseAuthorization(req[http::field::authorization]);
  auto auth = AuthenticateDevice(ctx_.store.Index(), cred, t.device);
  if (!auth) co_return co_await Send(x, ErrorReply(auth.error()));
  switch (auth->outcome) {
    case AuthOutcome::kMissing:
      co_return co_await SendUnauthorized(
          x, ErrorReply(401, "unauthenticated", "credentials are required"), false);
    case AuthOutcome::kWrong:
      co_return co_await SendUnauthorized(
          x, ErrorReply(401, "unauthenticated", "wrong credentials"), true);
    case AuthOutcome::kOtherDevice:
      co_return co_await Send(x, ErrorReply(404, "not_found", "no such repository"));
    case AuthOutcome::kDeleted:  // purged: its backups are gone; told so while its account exists
      x.device = std::string(t.device);
      co_return co_await Send(x, ErrorReply(410, "device_deleted",
                                            "this device has been deleted and its backups "
                                            "removed: it accepts no requests"));
    case AuthOutcome::kOk:
      break;
  }
  const index::DeviceRecord& dev = auth->device;
  const std::optional<index::Account>& account = auth->account;
  x.device = index::IdToHex(dev.id);
  // A deleted device (purge scheduled or running) is closed to its agent at once.
  if (dev.closed_ns != 0) {
    co_return co_await Send(
        x, ErrorReply(410, "device_deleted",
                      "this device has been deleted: its backups are being removed and it "
                      "accepts no requests"));
  }
  // A suspended account's devices get nothing but this answer.
  if (auto r = AccountRefusal(account, NowNanos(), AgentAccess::kRead, false)) {
    co_return co_await Send(x, std::move(*r));
  }

  using K = AgentTarget::Kind;
  index::ObjectKey key;
  switch (t.kind) {
    case K::kNone:
    case K::kNoRoute:
      co_return co_await Send(x, ErrorReply(404, "not_found", "no such route"));
    case K::kInvalidPath:
      x.route = "invalid";
      co_return co_await Send(x, ErrorReply(400, "invalid_path", t.error));
    case K::kRepo:
      x.route = "repo";
      if (m != http::verb::post) co_return co_await Send(x, MethodNotAllowed("POST"));
      if (t.query != "create=true") {
        co_return co_await Send(x, ErrorReply(400, "invalid_argument", "expected ?create=true"));
      }
      // The device is the repository: there is nothing to create.
      co_return co_await Send(x, Empty200());
    case K::kList:
      x.route = "list";
      if (!get) co_return co_await Send(x, MethodNotAllowed("GET, HEAD"));
      co_return co_await Send(x,
                              ctx_.agent.List(dev.id, t.type, WantsV2(req[http::field::accept])));
    case K::kExists: {
      x.route = "exists";
      if (m != http::verb::post) co_return co_await Send(x, MethodNotAllowed("POST"));
      Reply err;
      auto body = co_await ReadSmallBody(x, ctx_.config.max_json_body_bytes, &err);
      if (!body) co_return err.status ? co_await Send(x, std::move(err)) : false;
      co_return co_await Send(x, ctx_.agent.Exists(dev.id, *body));
    }
    case K::kUsage:
      x.route = "usage";
      if (!get) co_return co_await Send(x, MethodNotAllowed("GET, HEAD"));
      co_return co_await Send(x, ctx_.agent.Usage(dev, account));
    case K::kConfig:
      x.route = "config";
      key = index::ObjectKey{dev.id, index::ObjectType::kConfig, ""};
      break;
    case K::kObject: {
      x.route = "object";
      auto k = ObjectKeyFor(dev.id, t.type, t.name);
      if (!k) {
        co_return co_await Send(x, ErrorReply(400, "invalid_argument", k.error().context));
      }
      key = std::move(*k);
      break;
    }
  }
  switch (m) {
    case http::verb::head:
      co_return co_await Send(x, ctx_.agent.Head(key));
    case http::verb::get:
      co_return co_await Download(x, key);
    case http::verb::post:
      co_return co_await Upload(x, key, account);
    case http::verb::delete_:
      if (auto r = AccountRefusal(account, NowNanos(), AgentAccess::kWrite,
                                  key.type == index::ObjectType::kLocks)) {
        co_return co_await Send(x, std::move(*r));
      }
      co_return co_await Send(x, ctx_.agent.Delete(dev, key));
    default:
      co_return co_await Send(x, MethodNotAllowed("GET, HEAD, POST, DELETE"));
  }
}

bool Session::IsOperational(std::string_view target) {
  return target == "/healthz" || target == "/readyz" || target == "/metrics";
}

net::awaitable<bool> Session::ServeOperational(Exchange& x) {
  const auto& req = parser_->get();
  const std::string_view target = req.target();
  x.route = std::string(target.substr(1));
  const http::verb m = req.method();
  if (m != http::verb::get && m != http::verb::head) {
    co_return co_await Send(x, MethodNotAllowed("GET, HEAD"));
  }
  if (target == "/healthz") co_return co_await Send(x, JsonReply(200, "{\"status\":\"ok\"}"));
  if (target == "/readyz") {
    if (ctx_.store.Ready()) co_return co_await Send(x, JsonReply(200, "{\"ready\":true}"));
    co_return co_await Send(
        x, ErrorReply(503, "unavailable", "too few healthy disks or the index is unusable"));
  }
  const std::string_view authorization = req[http::field::authorization];
  if (!ctx_.metrics.ScrapeAllowed(authorization)) {
    Reply r = ErrorReply(
        401, "unauthenticated",
        authorization.empty()
            ? "/metrics needs Authorization: Bearer with the node's metrics token"
            : "wrong metrics token");
    r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"chunkvault metrics\"");
    // A wrong token is a guess like a wrong password: counted and slowed down alike.
    co_return co_await SendUnauthorized(x, std::move(r), !authorization.empty());
  }
  Reply r = JsonReply(
      200, ctx_.metrics.Render(ctx_.store, ctx_.tls.CertNotAfter(), ctx_.tls.CaNotAfter()));
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  co_return co_await Send(x, std::move(r));
}

net::awaitable<bool> Session::ServeAdmin(Exchange& x) {
  auto& req = parser_->get();
  x.route = "admin";
  if (IsOperational(req.target())) co_return co_await ServeOperational(x);
  Reply err;
  auto body = co_await ReadSmallBody(x, ctx_.config.max_json_body_bytes, &err);
  if (!body) co_return err.status ? co_await Send(x, std::move(err)) : false;
  admin::Request ar{std::string(req.method_string()), std::string(req.target()),
                    std::string(req[http::field::authorization]), std::move(*body)};
  admin::Response resp = ctx_.admin.Handle(ar);
  if (!resp.file.empty() && resp.status == 200) co_return co_await SendFile(x, resp.file);
  Reply r;
  r.status = resp.status;
  r.body = std::move(resp.body);
  r.headers = std::move(resp.headers);
  if (r.status == 401)
    co_return co_await SendUnauthorized(x, std::move(r), !ar.authorization.empty());
  co_return co_await Send(x, std::move(r));
}

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
  if (keep && !parser_->is_done()) keep = co_await DiscardBody(x);

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
  if (keep && !parser_->is_done()) keep = co_await DiscardBody(x);
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

net::awaitable<bool> Session::WriteBodyPiece(Exchange& x, BodyResponse& res, BodySerializer& sr,
                                             uint8_t* data, size_t n) {
  auto& body = res.body();
  body.data = data;
  body.size = n;
  body.more = n > 0;
  Tcp().expires_after(Seconds(ctx_.config.write_timeout_s));
  auto [ec, w] = co_await http::async_write(stream_, sr, kTuple);
  if (ec == http::error::need_buffer) ec = {};  // the piece is written; the serializer wants more
  if (ec) co_return false;
  x.out += n;
  if (n > 0) ctx_.metrics.BytesOut(n);
  co_return true;
}

net::awaitable<std::optional<std::string>> Session::ReadSmallBody(Exchange& x, size_t limit,
                                                                  Reply* error) {
  auto cl = parser_->content_length();
  if (cl && *cl > limit) {
    *error =
        ErrorReply(413, "too_large", "the body is larger than " + std::to_string(limit) + " bytes");
    co_return std::nullopt;
  }
  if (!co_await SendContinue()) {
    error->status = 0;
    co_return std::nullopt;
  }
  std::string out;
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kDiscardChunk]);
  while (!parser_->is_done()) {
    auto [ec, got] = co_await ReadBodySome(buf.get(), kDiscardChunk);
    x.in += got;
    if (ec) {
      error->status = 0;  // nobody to answer
      co_return std::nullopt;
    }
    out.append(reinterpret_cast<const char*>(buf.get()), got);
    if (out.size() > limit) {
      *error = ErrorReply(413, "too_large",
                          "the body is larger than " + std::to_string(limit) + " bytes");
      error->close = true;
      co_return std::nullopt;
    }
  }
  co_return out;
}

net::awaitable<bool> Session::DiscardBody(Exchange& x) {
  if (parser_->is_done()) co_return true;
  // A client waiting for 100 Continue may or may not send its body now: the stream is
  // ambiguous, so close it.
  if (continue_pending_) co_return false;
  const uint64_t limit = ctx_.config.drain_body_bytes;
  auto remaining = parser_->content_length_remaining();
  if (remaining && *remaining > limit) co_return false;
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kDiscardChunk]);
  uint64_t dropped = 0;
  while (!parser_->is_done()) {
    auto [ec, got] = co_await ReadBodySome(buf.get(), kDiscardChunk);
    dropped += got;
    if (ec || dropped > limit) co_return false;  // chunked bodies announce no size
  }
  x.in += dropped;
  co_return true;
}

net::awaitable<std::pair<beast::error_code, size_t>> Session::ReadBodySome(uint8_t* buf,
                                                                          size_t size) {
  auto& body = parser_->get().body();
  body.data = buf;
  body.size = size;
  // Fast path: take the TLS records that have already arrived without a trip through the
  // event loop. The socket is non-blocking, so a synchronous read that would wait fails with
  // would_block instead, and the asynchronous read below (with the body timeout) takes over.
  // Each trip costs a timer, an epoll round and a coroutine resumption per 16 KiB record,
  // which was most of an upload's CPU time (bench/README.md, "Optimisations"). Two limits:
  //  - fairness: after kSyncReadRun bytes the next read goes through the event loop, so one
  //    fast upload cannot keep the worker's other connections waiting;
  //  - TLS output: a record read may make OpenSSL answer (a TLS 1.3 KeyUpdate, an alert),
  //    and Asio's synchronous path writes that answer with a plain write, which on this
  //    non-blocking socket could stop half-way if the send queue were full and lose bytes of
  //    the TLS stream. So the fast path runs only while the kernel's send queue is empty
  //    (SIOCOUTQ == 0): then the few bytes of such an answer always fit.
  beast::error_code ec;
  int unsent = -1;
  if (sync_read_run_ < kSyncReadRun &&
      ::ioctl(Tcp().socket().native_handle(), SIOCOUTQ, &unsent) == 0 && unsent == 0) {
    while (body.size > 0 && !parser_->is_done()) {
      http::read_some(stream_, buffer_, *parser_, ec);
      if (ec == net::error::would_block || ec == net::error::try_again) {
        ec = {};
        break;
      }
      if (ec == http::error::need_buffer) ec = {};  // `buf` is full: not an error
      if (ec) co_return std::pair{ec, size - body.size};
    }
    sync_read_run_ += size - body.size;
    if (body.size < size || parser_->is_done()) co_return std::pair{ec, size - body.size};
  }
  sync_read_run_ = 0;
  Tcp().expires_after(Seconds(ctx_.config.body_timeout_s));
  auto [aec, n] = co_await http::async_read_some(stream_, buffer_, *parser_, kTuple);
  if (aec == http::error::need_buffer) aec = {};  // `buf` is full: not an error
  co_return std::pair{aec, size - body.size};
}

net::awaitable<bool> Session::SendContinue() {
  if (!continue_pending_) co_return true;
  continue_pending_ = false;
  http::response<http::empty_body> res{http::status::continue_, 11};
  Tcp().expires_after(Seconds(ctx_.config.write_timeout_s));
  auto [ec, n] = co_await http::async_write(stream_, res, kTuple);
  co_return !ec;
}

net::awaitable<bool> Session::SendUnauthorized(Exchange& x, Reply reply, bool count_failure) {
  if (count_failure) {
    ctx_.metrics.AuthFailed();
    auto delay = ctx_.throttle.Failed(remote_);
    if (delay.count() > 0) {
      net::steady_timer timer(co_await net::this_coro::executor);
      timer.expires_after(delay);
      co_await timer.async_wait(kTuple);
    }
  }
  bool has_challenge = false;
  for (const auto& [k, v] : reply.headers)
    has_challenge = has_challenge || beast::iequals(k, "WWW-Authenticate");
  if (!has_challenge) {
    reply.headers.emplace_back("WWW-Authenticate", "Basic realm=\"chunkvault\", charset=\"UTF-8\"");
    reply.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"chunkvault\"");
  }
  co_return co_await Send(x, std::move(reply));
}

net::awaitable<bool> Session::Send(Exchange& x, Reply r) {
  bool keep = !r.close && parser_->get().keep_alive() && !worker_.draining;
  if (keep && !parser_->is_done()) keep = co_await DiscardBody(x);
  unsigned version = parser_->get().version() == 10 ? 10 : 11;
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  res.set(http::field::server, "chunkvault");
  for (auto& [k, v] : r.headers) res.insert(k, v);
  if ((!r.body.empty() || r.head_length) && !r.content_type.empty()) {
    res.set(http::field::content_type, r.content_type);
  }
  if (x.head) {
    // A HEAD answer announces the length of what GET would send, and sends nothing.
    res.content_length(r.head_length ? *r.head_length : r.body.size());
  } else {
    res.body() = std::move(r.body);
    res.prepare_payload();
  }
  res.keep_alive(keep);
  if (!keep && !parser_->is_done()) linger_ = true;
  x.status = r.status;
  Tcp().expires_after(Seconds(ctx_.config.write_timeout_s));
  auto [ec, n] = co_await http::async_write(stream_, res, kTuple);
  if (ec) co_return false;
  x.out += res.body().size();
  co_return keep;
}

net::awaitable<void> Session::Shutdown() {
  Tcp().expires_after(Seconds(linger_ ? 2 : std::min(ctx_.config.write_timeout_s, 5)));
  // Sends close_notify and waits for the client's; clients that just close are fine too.
  co_await stream_.async_shutdown(kTuple);  // its error does not matter any more
  beast::error_code ignored;
  if (linger_) {
    // The client may still be sending the request we refused. Closing with unread bytes would
    // make the kernel answer with a reset that can destroy our answer in flight, so read and
    // drop for a moment first (what web servers call a lingering close).
    Tcp().socket().shutdown(tcp::socket::shutdown_send, ignored);
    Tcp().expires_after(std::chrono::seconds(2));
    char scratch[4096];
    size_t total = 0;
    while (total < (4u << 20)) {
      auto [e, n] = co_await Tcp().async_read_some(net::buffer(scratch), kTuple);
      if (e) break;
      total += n;
    }
  }
  Tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
  Tcp().close();
}

void Session::Finish(Exchange& x) {
  double seconds = std::chrono::duration<double>(Clock::now() - x.start).count();
  int status = x.status ? x.status : 499;  // 499: the client went away before the answer
  const char* listener = listener_ == Listener::kAgent ? "agent" : "admin";
  ctx_.metrics.Request(listener, x.route, x.method, status, seconds);
  Log(status >= 500 ? LogLevel::kWarn : LogLevel::kInfo, "http_request",
      {{"listener", listener},
       {"remote", remote_},
       {"method", x.method},
       {"route", x.route},
       {"device", x.device},
       {"status", std::to_string(status)},
       {"in", std::to_string(x.in)},
       {"out", std::to_string(x.out)},
       {"ms", std::to_string(static_cast<int64_t>(seconds * 1000))}});
}

}  // namespace cv::server
