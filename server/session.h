// server/session: one TLS connection, from handshake to close, as one C++20 coroutine on its
// worker's io_context (one thread per io_context, so no strand is needed). It follows the
// Beast examples (advanced/server, http/server/async-ssl, boost-1.81.0): a deadline before
// every asynchronous step, header size limits, one request at a time (a pipelined request
// waits in the bounded read buffer until the previous answer is written), and a graceful
// TLS shutdown; stream_truncated from clients that skip close_notify is not an error.
//
// Bodies are streamed: an upload is decrypted straight into storage::Writer's buffers, a
// download is read from storage::Reader in kChunk pieces, so memory per request is a couple of
// chunks plus what the store holds for its stripes, whatever the object size.
//
// As DESIGN.md says, the disks do not hold the worker thread: downloads' shard reads and
// uploads' shard writes go through the worker's io_uring ring (DiskRing), and uploads'
// fdatasyncs and index commits through the store's commit thread (store_commits.h), and admin
// requests on the admin threads (ServerContext::admin_pool). What still runs on it: index
// reads (LMDB, from memory) and courier-image file reads.
//
//   accept -> handshake -> [ read header -> route -> auth -> body in/out -> answer ]* -> shutdown
//
// One class; its member functions live in one file per concept, all in server/:
//   session.cc          the connection: start, handshake, request loop, reading request heads
//                       and bodies, 100-continue, sending answers, timeouts, shutdown
//   agent_routes.cc     ServeAgent: an agent request's route, authentication and dispatch
//   admin_requests.cc   ServeAdmin: an admin request handed to admin::AdminApi
//   upload.cc           Upload: an object's body into the store, within the account's quota
//   download.cc         Download, ReadPiece: an object, or a Range of it, out of the store
//   file_send.cc        SendFile: a file as the answer (courier images), with Range
//   health.cc           IsOperational, ServeOperational: /healthz, /readyz and /metrics
//   session_internal.h  what these files share (Exchange, kTuple, kChunk, ...)
//   ranged_response.h   not Session's: a GET's Range header and the head of its 200/206
//                       answer, for download.cc and file_send.cc
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "admin/admin.h"
#include "server/admission.h"
#include "server/agent_api.h"
#include "server/auth.h"
#include "common/config.h"
#include "server/disk_ring.h"
#include "server/metrics.h"
#include "server/quota.h"
#include "server/tls.h"
#include "storage/storage.h"

namespace cv::server {

class Session;

// What every session shares. Lives for as long as the server.
struct ServerContext {
  ServerContext(const Config& c, storage::ObjectStore& s, admin::AdminApi& a, Metrics& m,
                TlsContexts& t)
      : config(c),
        store(s),
        admin(a),
        metrics(m),
        tls(t),
        agent(s),
        agent_admission(static_cast<size_t>(c.max_connections),
                        static_cast<size_t>(c.max_connections_per_address)),
        admin_admission(static_cast<size_t>(c.max_admin_connections), 0),
        throttle(c.free_failures, std::chrono::milliseconds(c.failure_delay_ms),
                 std::chrono::milliseconds(c.max_failure_delay_ms),
                 std::chrono::seconds(c.failure_window_s)) {}
  const Config& config;
  storage::ObjectStore& store;
  admin::AdminApi& admin;
  Metrics& metrics;
  TlsContexts& tls;
  AgentApi agent;
  // Each listener has its own: a flood on the agent port cannot take the places the
  // operators' connections need.
  Admission agent_admission;  // max_connections and max_connections_per_address
  Admission admin_admission;  // max_admin_connections
  FailureThrottle throttle;
  // admin::AdminApi::Handle runs here, not on a worker thread: its index commits and cluster
  // (etcd) calls never hold up the worker's other connections. Four, so that a few long
  // requests (fsck, an index backup, creations while etcd times out) leave room for the
  // others. Joined before the workers go.
  boost::asio::thread_pool admin_pool{4};
};

// One worker thread: its io_context, its acceptors and the sessions running on it. Members
// other than `ioc` are touched only from that io_context's thread.
struct Worker {
  std::unordered_set<Session*> sessions;  // declared first: destroyed after ioc's handlers
  boost::asio::io_context ioc{1};
  // Downloads' shard reads; nullptr where the store has no asynchronous ring (they block the
  // thread then). After ioc: destroyed before it.
  std::unique_ptr<DiskRing> disk;
  std::vector<std::unique_ptr<boost::asio::ip::tcp::acceptor>> acceptors;
  bool draining = false;
};

enum class Listener { kAgent, kAdmin };

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(ServerContext& ctx, Worker& worker, Listener listener,
          boost::asio::ip::tcp::socket socket, std::shared_ptr<boost::asio::ssl::context> tls,
          Admission::Ticket ticket);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Runs the connection on the worker's io_context until it closes.
  static void Start(std::shared_ptr<Session> session);
  // SIGTERM: a connection waiting for its next request closes now; one in a request finishes
  // it and answers with Connection: close. Call on the worker's thread.
  void Drain();

 private:
  struct Exchange;
  using Stream = boost::beast::ssl_stream<boost::beast::tcp_stream>;
  using Parser = boost::beast::http::request_parser<boost::beast::http::buffer_body>;

  boost::asio::awaitable<void> Run(std::shared_ptr<Session> self);
  // Serves one request; false when the connection must close.
  boost::asio::awaitable<bool> ServeOne();
  boost::asio::awaitable<bool> ServeAgent(Exchange& x);
  boost::asio::awaitable<bool> ServeAdmin(Exchange& x);
  // GET /healthz, /readyz (both listeners, open to anyone) and /metrics (both listeners, with
  // the scrape token).
  static bool IsOperational(std::string_view target);
  boost::asio::awaitable<bool> ServeOperational(Exchange& x);
  // `account`: the device's, if it has a record (status and quota apply).
  boost::asio::awaitable<bool> Upload(Exchange& x, const index::ObjectKey& key,
                                      const std::optional<index::Account>& account);
  boost::asio::awaitable<bool> Download(Exchange& x, const index::ObjectKey& key);
  // The next piece of a download, at most `max` bytes, through the worker's DiskRing when it
  // has one.
  boost::asio::awaitable<Result<size_t>> ReadPiece(storage::Reader& reader, uint8_t* buf,
                                                   size_t max);
  // An admin answer that is a file (courier images): streamed with Range support.
  boost::asio::awaitable<bool> SendFile(Exchange& x, const std::string& path);
  using BodyResponse = boost::beast::http::response<boost::beast::http::buffer_body>;
  using BodySerializer = boost::beast::http::response_serializer<boost::beast::http::buffer_body>;
  // Writes `n` bytes at `data` of the body of `res` (its head is written), or the body's end
  // when n == 0. false: the client is gone or too slow.
  boost::asio::awaitable<bool> WriteBodyPiece(Exchange& x, BodyResponse& res, BodySerializer& sr,
                                              uint8_t* data, size_t n);
  // Reads a small body completely (JSON APIs). nullopt: *error holds the answer to send.
  boost::asio::awaitable<std::optional<std::string>> ReadSmallBody(Exchange& x, size_t limit,
                                                                   Reply* error);
  // Reads and drops what is left of the request body, when small enough; false = must close.
  boost::asio::awaitable<bool> DiscardBody(Exchange& x);
  // Reads what comes next of the request's body into `buf` (up to `size` bytes), within the
  // body timeout: an error (the client went away, timed out or sent a bad body) and how many
  // bytes arrived, either way. A body with a Content-Length is decrypted straight into `buf`
  // once the parser has handed over what it had buffered (see raw_left_).
  boost::asio::awaitable<std::pair<boost::beast::error_code, size_t>> ReadBodySome(uint8_t* buf,
                                                                                 size_t size);
  // The same for the part of a Content-Length body that is still on the stream: TLS records
  // decrypted into `buf`, past Beast's parser and its read buffer (one copy less per byte).
  boost::asio::awaitable<std::pair<boost::beast::error_code, size_t>> ReadRawSome(uint8_t* buf,
                                                                                size_t size);
  // The fast paths of ReadBodySome and ReadRawSome may take what has arrived without a trip
  // through the event loop (ReadRawSome says when and why).
  bool MayReadWithoutWaiting();
  // The whole request body has been read.
  bool BodyDone() const { return raw_left_ ? *raw_left_ == 0 : parser_->is_done(); }
  // Body bytes still to come, when the request announced its length.
  std::optional<uint64_t> BodyLeft() const {
    if (raw_left_) return raw_left_;
    const auto left = parser_->content_length_remaining();
    return left ? std::optional<uint64_t>(*left) : std::nullopt;
  }
  boost::asio::awaitable<bool> SendContinue();
  boost::asio::awaitable<bool> Send(Exchange& x, Reply reply);
  // Waits for the failure delay of this client's address, then answers 401.
  boost::asio::awaitable<bool> SendUnauthorized(Exchange& x, Reply reply, bool count_failure);
  boost::asio::awaitable<void> Shutdown();
  void Finish(Exchange& x);

  boost::beast::tcp_stream& Tcp();

  ServerContext& ctx_;
  Worker& worker_;
  const Listener listener_;
  Admission::Ticket ticket_;  // this connection's place in its listener's Admission
  std::shared_ptr<boost::asio::ssl::context> tls_;  // keeps this connection's context alive
  Stream stream_;
  boost::beast::flat_buffer buffer_;
  std::optional<Parser> parser_;
  std::string remote_;
  enum class Phase { kHandshake, kIdle, kBusy } phase_ = Phase::kHandshake;
  bool evicted_ = false;  // closed by its Admission to make room (before its handshake ended)
  bool continue_pending_ = false;  // the client sent Expect: 100-continue and waits for us
  bool linger_ = false;            // closing with unread request bytes: read them before closing
  size_t sync_read_run_ = 0;       // body bytes read since the last trip through the event loop
  // Set once the parser has handed over every body byte it had buffered, for a body with a
  // Content-Length: the bytes of it still on the stream, read by ReadRawSome. The parser
  // takes no part in the rest of this request's body (it never reaches is_done()); BodyDone
  // and BodyLeft answer for both cases.
  std::optional<uint64_t> raw_left_;
};

}  // namespace cv::server
