// tls_sink: the CPU bound of an upload. A single-threaded HTTPS server that does, for each
// request body, only the per-byte work no verifying 4+2 store can skip, and nothing more:
//
//   TLS receive (OpenSSL straight on the socket: no copy between the kernel and the record
//   layer; chunkvaultd's own TLS policy, server::MakeServerContext)
//     -> decrypted into a stripe buffer laid out as storage lays out shards (shard i of a
//        stripe of n bytes holds bytes [i*L, (i+1)*L), L = ceil(n/k); the last stripe's
//        padding is zeros) -> SHA-256 of the body as it arrives -> ISA-L k+m encode of each
//        stripe -> XXH3 of each of the k+m shards (the dispatch entry point, as storage does)
//   then "200 OK" with an empty body. Nothing is kept, written or indexed.
//
// The request header is parsed by Beast only for its Content-Length (method, target and
// credentials are ignored): the loader (build/bin/loadgen, --mode put or restic) is pointed
// at it like at any server. Every object is erasure-coded, even one so small that the store
// would keep m+1 copies of it instead: this measures a 4+2 store.
//
//   tls_sink --cert CERT.pem --key KEY.pem [--listen 127.0.0.1:0] [--k 4] [--m 2]
//            [--shard-unit BYTES]
//
// Defaults are chunkvaultd's (common/config.h). Once listening it prints
//   LISTEN https://127.0.0.1:PORT/
// on stdout; on SIGTERM or SIGINT it prints
//   RESULT sink requests=N bytes=B cpu_s=S sink=X
// (X folds every checksum computed, so that none of the work can be optimised away)
// and exits 0. Run it pinned (taskset) on the core the servers use.
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/resource.h>
#include <xxh_x86dispatch.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <csignal>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/common.h"
#include "common/config.h"
#include "erasure/erasure.h"
#include "server/tls.h"

namespace {

namespace net = boost::asio;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;

struct Options {
  std::string cert, key;
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  int k = cv::Config{}.k;
  int m = cv::Config{}.m;
  uint32_t unit = cv::Config{}.shard_unit_bytes;
};

[[noreturn]] void Usage(const char* msg) {
  if (msg) std::fprintf(stderr, "tls_sink: %s\n", msg);
  std::fprintf(stderr,
               "usage: tls_sink --cert CERT.pem --key KEY.pem [--listen HOST:PORT] [--k K] [--m M]\n"
               "                [--shard-unit BYTES]\n");
  std::exit(2);
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) Usage(("missing value for " + a).c_str());
    const std::string v = argv[++i];
    try {
      if (a == "--cert") {
        o.cert = v;
      } else if (a == "--key") {
        o.key = v;
      } else if (a == "--listen") {
        const size_t colon = v.rfind(':');
        if (colon == std::string::npos) Usage("--listen is HOST:PORT");
        o.host = v.substr(0, colon);
        o.port = static_cast<uint16_t>(std::stoul(v.substr(colon + 1)));
      } else if (a == "--k") {
        o.k = std::stoi(v);
      } else if (a == "--m") {
        o.m = std::stoi(v);
      } else if (a == "--shard-unit") {
        o.unit = static_cast<uint32_t>(std::stoul(v));
      } else {
        Usage(("unknown argument " + a).c_str());
      }
    } catch (const std::logic_error&) {
      Usage(("bad value for " + a).c_str());
    }
  }
  if (o.cert.empty() || o.key.empty()) Usage("--cert and --key are required");
  if (o.unit == 0 || o.unit % cv::erasure::kAlignment != 0) {
    Usage("--shard-unit must be a positive multiple of 32");
  }
  return o;
}

struct Stats {
  uint64_t requests = 0;
  uint64_t bytes = 0;
  uint64_t sink = 0;  // see Stripes::sink()
};

// One stripe's k+m shards, in one 32-byte-aligned buffer: data shard i of a stripe with shard
// length L at i*L (so a full stripe's data is contiguous and is read in one window), parity
// shards after the k*unit data area.
class Stripes {
 public:
  Stripes(const cv::erasure::Codec& codec, uint32_t unit)
      : codec_(codec),
        k_(static_cast<size_t>(codec.k())),
        m_(static_cast<size_t>(codec.m())),
        unit_(unit),
        buf_(static_cast<uint8_t*>(std::aligned_alloc(cv::erasure::kAlignment,
                                                      size_t{unit} * (k_ + m_)))) {
    if (!buf_) throw std::bad_alloc();
  }

  // Starts an object of `size` bytes.
  void Begin(uint64_t size) {
    size_ = size;
    pos_ = 0;
    sha_.emplace();
    StartStripe();
  }
  bool done() const { return pos_ == size_; }

  // Where the next body bytes go: the rest of the current stripe's data.
  std::span<uint8_t> Window() { return {buf_.get() + fill_, static_cast<size_t>(stripe_bytes_ - fill_)}; }

  // `n` bytes were placed at the start of Window(): hash them; a full stripe is encoded and
  // its shards checksummed.
  void Appended(size_t n) {
    sha_->Update(std::span<const uint8_t>(buf_.get() + fill_, n));
    fill_ += n;
    pos_ += n;
    if (fill_ < stripe_bytes_) return;
    // The last stripe is zero-padded to k*L bytes.
    std::memset(buf_.get() + fill_, 0, k_ * L_ - fill_);
    const uint8_t* data[cv::erasure::kMaxShards];
    uint8_t* parity[cv::erasure::kMaxShards];
    for (size_t i = 0; i < k_; ++i) data[i] = buf_.get() + i * L_;
    for (size_t j = 0; j < m_; ++j) parity[j] = buf_.get() + size_t{unit_} * k_ + j * L_;
    codec_.Encode(L_, std::span<const uint8_t* const>(data, k_), std::span<uint8_t* const>(parity, m_));
    for (size_t i = 0; i < k_; ++i) sink_ ^= XXH3_64bits_dispatch(data[i], L_);
    for (size_t j = 0; j < m_; ++j) sink_ ^= XXH3_64bits_dispatch(parity[j], L_);
    if (!done()) StartStripe();
  }

  // The body's SHA-256, computed and dropped (nothing compares it here).
  void End() { sink_ ^= sha_->Final()[0]; }

  // Everything computed, folded into one value that is printed, so that no computation can be
  // optimised away.
  uint64_t sink() const { return sink_; }

 private:
  void StartStripe() {
    const uint64_t full = uint64_t{unit_} * k_;
    stripe_bytes_ = std::min(full, size_ - pos_);
    L_ = static_cast<uint32_t>((stripe_bytes_ + k_ - 1) / k_);
    fill_ = 0;
  }

  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  const cv::erasure::Codec& codec_;
  const size_t k_, m_;
  const uint32_t unit_;
  std::unique_ptr<uint8_t[], Free> buf_;
  std::optional<cv::Sha256> sha_;
  uint64_t size_ = 0, pos_ = 0;
  uint64_t stripe_bytes_ = 0, fill_ = 0;
  uint32_t L_ = 0;
  uint64_t sink_ = 0;
};

// One accepted connection: OpenSSL on the non-blocking socket, Asio only to wait for it.
class Conn {
 public:
  Conn(tcp::socket sock, SSL_CTX* ctx) : sock_(std::move(sock)), ssl_(SSL_new(ctx)) {
    sock_.non_blocking(true);
    sock_.set_option(tcp::no_delay(true));
    if (!ssl_ || SSL_set_fd(ssl_, static_cast<int>(sock_.native_handle())) != 1) ok_ = false;
  }
  ~Conn() {
    if (ssl_) SSL_free(ssl_);
  }
  bool ok() const { return ok_; }

  // Runs `op` (an SSL call returning 1 on success) until it completes; false on close/error.
  template <class Op>
  net::awaitable<bool> Do(Op op) {
    for (;;) {
      ERR_clear_error();
      const int r = op();
      if (r == 1) co_return true;
      const int e = SSL_get_error(ssl_, r);
      boost::system::error_code ec;
      if (e == SSL_ERROR_WANT_READ) {
        co_await sock_.async_wait(tcp::socket::wait_read, net::redirect_error(net::use_awaitable, ec));
      } else if (e == SSL_ERROR_WANT_WRITE) {
        co_await sock_.async_wait(tcp::socket::wait_write, net::redirect_error(net::use_awaitable, ec));
      } else {
        co_return false;  // closed by the peer (also without close_notify) or a TLS error
      }
      if (ec) co_return false;
    }
  }
  net::awaitable<bool> Handshake() {
    co_return co_await Do([&] { return SSL_accept(ssl_); });
  }
  net::awaitable<size_t> Read(void* p, size_t len) {
    size_t n = 0;
    if (!co_await Do([&] { return SSL_read_ex(ssl_, p, len, &n); })) co_return 0;
    co_return n;
  }
  net::awaitable<bool> Write(std::string_view s) {
    while (!s.empty()) {
      size_t n = 0;
      if (!co_await Do([&] { return SSL_write_ex(ssl_, s.data(), s.size(), &n); })) co_return false;
      s.remove_prefix(n);
    }
    co_return true;
  }
  void Shutdown() { SSL_shutdown(ssl_); }

 private:
  tcp::socket sock_;
  SSL* ssl_;
  bool ok_ = true;
};

constexpr size_t kHeaderBuffer = 16 * 1024;  // chunkvaultd's default header_limit_bytes
constexpr std::string_view kOk = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
constexpr std::string_view kNoLength =
    "HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

net::awaitable<void> Serve(tcp::socket sock, SSL_CTX* ctx, const cv::erasure::Codec& codec,
                           uint32_t unit, Stats& stats) {
  Conn c(std::move(sock), ctx);
  if (!c.ok() || !co_await c.Handshake()) co_return;
  Stripes stripes(codec, unit);
  struct Fold {  // on every way out
    Stats& stats;
    Stripes& stripes;
    ~Fold() { stats.sink ^= stripes.sink(); }
  } fold{stats, stripes};
  std::vector<char> head(kHeaderBuffer);
  size_t have = 0;  // bytes in `head` not yet given to a parser
  for (;;) {
    http::request_parser<http::buffer_body> parser;
    parser.header_limit(kHeaderBuffer);
    parser.body_limit(boost::none);  // the body never goes through the parser
    boost::beast::error_code ec;
    while (!parser.is_header_done()) {
      if (have > 0) {
        const size_t used = parser.put(net::buffer(head.data(), have), ec);
        std::memmove(head.data(), head.data() + used, have - used);
        have -= used;
        if (ec == http::error::need_more) ec = {};
        if (ec) co_return;
        if (parser.is_header_done()) break;
      }
      if (have == head.size()) co_return;  // header larger than the limit
      const size_t n = co_await c.Read(head.data() + have, head.size() - have);
      if (n == 0) co_return;
      have += n;
    }
    if (!parser.content_length()) {
      co_await c.Write(kNoLength);
      co_return;
    }
    const uint64_t size = *parser.content_length();
    stripes.Begin(size);
    while (!stripes.done()) {
      const std::span<uint8_t> w = stripes.Window();
      size_t n;
      if (have > 0) {  // body bytes read together with the header
        n = std::min(have, w.size());
        std::memcpy(w.data(), head.data(), n);
        std::memmove(head.data(), head.data() + n, have - n);
        have -= n;
      } else {
        n = co_await c.Read(w.data(), w.size());
        if (n == 0) co_return;
      }
      stripes.Appended(n);
    }
    stripes.End();
    stats.requests++;
    stats.bytes += size;
    if (!co_await c.Write(kOk)) co_return;
    if (!parser.keep_alive()) break;
  }
  c.Shutdown();
}

double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

int Main(int argc, char** argv) {
  const Options o = ParseArgs(argc, argv);
  std::signal(SIGPIPE, SIG_IGN);  // a peer gone mid-write is an error return, not a signal
  auto tls = cv::server::MakeServerContext({o.cert, o.key, ""});
  if (!tls) {
    std::fprintf(stderr, "tls_sink: %s\n", tls.error().ToString().c_str());
    return 1;
  }
  auto codec = cv::erasure::Codec::Create(o.k, o.m);
  if (!codec) {
    std::fprintf(stderr, "tls_sink: %s\n", codec.error().ToString().c_str());
    return 2;
  }
  Stats stats;  // outlives the io_context, whose destruction ends the sessions still open
  net::io_context io(1);
  tcp::acceptor acceptor(io, tcp::endpoint(net::ip::make_address(o.host), o.port));
  SSL_CTX* ctx = (*tls)->native_handle();
  const cv::erasure::Codec& c = **codec;
  net::co_spawn(
      io,
      [&]() -> net::awaitable<void> {
        for (;;) {
          tcp::socket s = co_await acceptor.async_accept(net::use_awaitable);
          net::co_spawn(io, Serve(std::move(s), ctx, c, o.unit, stats), net::detached);
        }
      },
      net::detached);
  net::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code&, int) { io.stop(); });
  std::printf("LISTEN https://%s:%u/\n", o.host.c_str(), acceptor.local_endpoint().port());
  std::fflush(stdout);
  io.run();
  std::printf("RESULT sink requests=%" PRIu64 " bytes=%" PRIu64 " cpu_s=%.2f sink=%016" PRIx64 "\n",
              stats.requests, stats.bytes, CpuSeconds(), stats.sink);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tls_sink: %s\n", e.what());
    return 1;
  }
}
