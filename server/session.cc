// The session itself: a connection's start, TLS handshake, request loop and shutdown, with a
// deadline before every step; reading request heads and bodies, 100-continue, and sending
// answers. What a request is routed to lives in the files server/session.h lists.
#include "server/session.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <linux/sockios.h>
#include <sys/ioctl.h>

#include "server/session_internal.h"

namespace cv::server {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using internal::kTuple;
using internal::Seconds;

namespace {

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

}  // namespace

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
  ctx_.metrics.ConnectionOpened();
}

Session::~Session() {
  worker_.sessions.erase(this);
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
  raw_left_.reset();
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
  while (!BodyDone()) {
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
  if (BodyDone()) co_return true;
  // A client waiting for 100 Continue may or may not send its body now: the stream is
  // ambiguous, so close it.
  if (continue_pending_) co_return false;
  const uint64_t limit = ctx_.config.drain_body_bytes;
  auto remaining = BodyLeft();
  if (remaining && *remaining > limit) co_return false;
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kDiscardChunk]);
  uint64_t dropped = 0;
  while (!BodyDone()) {
    auto [ec, got] = co_await ReadBodySome(buf.get(), kDiscardChunk);
    dropped += got;
    if (ec || dropped > limit) co_return false;  // chunked bodies announce no size
  }
  x.in += dropped;
  co_return true;
}

net::awaitable<std::pair<beast::error_code, size_t>> Session::ReadBodySome(uint8_t* buf,
                                                                           size_t size) {
  // A body with a Content-Length goes past the parser as soon as the parser has handed over
  // what arrived with the header: from then on its bytes are all body and need no parsing.
  // Chunked bodies stay with the parser to the end.
  const bool sized = !raw_left_ && !parser_->chunked() && parser_->content_length();
  if (sized && buffer_.size() == 0) raw_left_ = parser_->content_length_remaining().value_or(0);
  if (raw_left_) co_return co_await ReadRawSome(buf, size);
  auto& body = parser_->get().body();
  body.data = buf;
  body.size = size;
  // Fast path: take the TLS records that have already arrived without a trip through the
  // event loop (the fast path of ReadRawSome says why and when).
  beast::error_code ec;
  if (MayReadWithoutWaiting()) {
    // A sized body stops here once the buffer is empty: the next call reads it raw.
    while (body.size > 0 && !parser_->is_done() && !(sized && buffer_.size() == 0)) {
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

bool Session::MayReadWithoutWaiting() {
  int unsent = -1;
  return sync_read_run_ < kSyncReadRun &&
         ::ioctl(Tcp().socket().native_handle(), SIOCOUTQ, &unsent) == 0 && unsent == 0;
}

net::awaitable<std::pair<beast::error_code, size_t>> Session::ReadRawSome(uint8_t* buf,
                                                                          size_t size) {
  // Never past this body: what follows on the stream is the next request's.
  const size_t want = static_cast<size_t>(std::min<uint64_t>(size, *raw_left_));
  if (want == 0) co_return std::pair{beast::error_code{}, size_t{0}};
  size_t got = 0;
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
  if (MayReadWithoutWaiting()) {
    while (got < want) {
      const size_t n = stream_.read_some(net::buffer(buf + got, want - got), ec);
      got += n;
      if (ec == net::error::would_block || ec == net::error::try_again) {
        ec = {};
        break;
      }
      if (ec) break;
    }
    sync_read_run_ += got;
    *raw_left_ -= got;
    if (got > 0 || ec) co_return std::pair{ec, got};
  }
  sync_read_run_ = 0;
  Tcp().expires_after(Seconds(ctx_.config.body_timeout_s));
  auto [aec, n] = co_await stream_.async_read_some(net::buffer(buf, want), kTuple);
  *raw_left_ -= n;
  co_return std::pair{aec, n};
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
  if (keep && !BodyDone()) keep = co_await DiscardBody(x);
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
  if (!keep && !BodyDone()) linger_ = true;
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
