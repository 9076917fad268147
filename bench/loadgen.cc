// loadgen: an HTTPS load generator for object uploads and restores (chunkvaultd, rclone serve
// restic, nginx WebDAV PUT). It is the loader of bench/compare.sh.
//
//   loadgen --url https://127.0.0.1:PORT/PREFIX/ --cacert CA [--user U --password P]
//           --objects N --size S --conns C [--mode restic|put] [--get] [--seed X]
//
// Object i is S bytes from a xoshiro256** stream seeded by (seed, S, i): distinct and
// incompressible. Bodies are generated per request (memory is C x S, whatever N), and named
// by the lowercase hex SHA-256 of their bytes, as restic names them:
//   restic mode: POST URL/data/<sha256>, GET URL/data/<sha256>
//   put mode:    PUT  URL/<sha256>,      GET URL/<sha256>
// C worker threads each keep one TLS connection alive (reconnecting after an error or a
// "Connection: close") and take the next object from a shared counter. Each connection is a
// blocking socket driven by OpenSSL directly (SSL_set_fd: no extra copy of the records) under
// Beast's synchronous HTTP serializer and parser; SO_RCVTIMEO/SO_SNDTIMEO bound every socket
// operation by --timeout. Pin the loader with taskset to keep it off the server's core.
// A request's latency runs from the first byte written to the last byte of the answer read (for
// a GET: read and hashed). Every object is named (generated and hashed) before the upload clock
// starts; the upload phase regenerates each body (cheap) just before sending it, outside its
// latency but inside the phase's wall time. Connections are opened before the clock starts.
// MiB/s = object bytes of the successful requests / wall time of the phase.
// With --get every object is read back and its SHA-256 checked against its name.
// --head-names FILE sends only HEAD URL/data/<name> for each name (64 hex digits a line) of FILE
// and expects 200 (the end-to-end index lookup of bench/run.sh); --objects and --size are unused.
// --restore-only skips the uploads: it reads back what an earlier run with the same --objects,
// --size and --seed stored (e.g. again after disks failed: bench/run.sh's degraded reads).
//
// The last lines are machine-readable, one per phase:
//   RESULT op=upload objects=N size=S conns=C mib_s=... p50_ms=... p99_ms=... errors=0 ...
//   RESULT op=restore ...
// Any error (connection, timeout, non-2xx answer, wrong length or hash) -> exit status 1.
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------- options

struct Options {
  std::string url;
  std::string cacert;
  std::string user;
  std::string password;
  uint64_t objects = 0;
  uint64_t size = 0;
  unsigned conns = 4;
  bool restic = true;
  bool get = false;
  bool restore_only = false;  // implies get
  std::string head_names;     // file of names to HEAD (and nothing else)
  uint64_t seed = 1;
  unsigned timeout_s = 300;
  std::string before_get;  // shell command run between the phases (e.g. drop the page cache)
  // from the URL
  std::string host;
  std::string port;
  std::string prefix;  // path, always ending in '/'
};

[[noreturn]] void Usage(const char* msg) {
  if (msg) std::fprintf(stderr, "loadgen: %s\n", msg);
  std::fprintf(
      stderr,
      "usage: loadgen --url https://HOST:PORT/PREFIX/ --cacert CA.pem [--user U --password P]\n"
      "               --objects N --size BYTES[K|M|G] --conns C [--mode restic|put] [--get]\n"
      "               [--seed X] [--timeout SECONDS] [--before-get CMD] [--restore-only]\n"
      "       loadgen --url ... --cacert CA.pem [--user U --password P] --conns C --head-names FILE\n"
      "  restic mode: POST URL/data/<sha256>; put mode: PUT URL/<sha256>.\n"
      "  --get: then GET every object back and verify its SHA-256.\n"
      "  --timeout: seconds allowed for any one socket operation (default 300).\n"
      "  --before-get: shell command run (untimed) between uploads and restores.\n"
      "  --restore-only: no uploads; GET what an earlier run (same objects, size, seed) stored.\n"
      "  --head-names: only HEAD URL/data/<name> for every name (64 hex digits a line) of FILE.\n");
  std::exit(2);
}

uint64_t ParseSize(const std::string& s) {
  if (s.empty()) Usage("empty number");
  size_t pos = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(s, &pos);
  } catch (...) {
    Usage(("bad number: " + s).c_str());
  }
  std::string suffix = s.substr(pos);
  uint64_t mult = 1;
  if (suffix == "" || suffix == "B")
    mult = 1;
  else if (suffix == "K" || suffix == "KiB" || suffix == "k")
    mult = 1ull << 10;
  else if (suffix == "M" || suffix == "MiB")
    mult = 1ull << 20;
  else if (suffix == "G" || suffix == "GiB")
    mult = 1ull << 30;
  else
    Usage(("bad size suffix: " + s).c_str());
  return v * mult;
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--url")
      o.url = value();
    else if (a == "--cacert")
      o.cacert = value();
    else if (a == "--user")
      o.user = value();
    else if (a == "--password")
      o.password = value();
    else if (a == "--objects")
      o.objects = ParseSize(value());
    else if (a == "--size")
      o.size = ParseSize(value());
    else if (a == "--conns")
      o.conns = static_cast<unsigned>(ParseSize(value()));
    else if (a == "--seed")
      o.seed = ParseSize(value());
    else if (a == "--timeout")
      o.timeout_s = static_cast<unsigned>(ParseSize(value()));
    else if (a == "--get")
      o.get = true;
    else if (a == "--restore-only")
      o.restore_only = o.get = true;
    else if (a == "--head-names")
      o.head_names = value();
    else if (a == "--before-get")
      o.before_get = value();
    else if (a == "--mode") {
      std::string m = value();
      if (m == "restic")
        o.restic = true;
      else if (m == "put")
        o.restic = false;
      else
        Usage("--mode is restic or put");
    } else if (a == "-h" || a == "--help")
      Usage(nullptr);
    else
      Usage(("unknown argument: " + a).c_str());
  }
  if (o.url.empty()) Usage("--url is required");
  if (o.objects == 0 && o.head_names.empty()) Usage("--objects must be > 0");
  if (o.size == 0 && o.head_names.empty()) Usage("--size must be > 0");
  if (o.conns == 0 || o.conns > 1024) Usage("--conns must be 1..1024 (one thread each)");
  if (o.timeout_s == 0) Usage("--timeout must be > 0");
  if (o.user.empty() != o.password.empty()) Usage("--user and --password go together");

  auto u = boost::urls::parse_uri(o.url);
  if (!u) Usage(("bad URL: " + o.url).c_str());
  if (u->scheme() != "https") Usage("the URL must be https://");
  o.host = u->host_address();
  if (o.host.empty()) Usage("the URL has no host");
  o.port = u->has_port() ? std::string(u->port()) : "443";
  o.prefix = u->encoded_path();
  if (o.prefix.empty() || o.prefix.front() != '/') o.prefix.insert(o.prefix.begin(), '/');
  if (o.prefix.back() != '/') o.prefix.push_back('/');
  return o;
}

// ---------------------------------------------------------------- bodies and hashes

uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Object `index` of the run: `size` bytes of xoshiro256** seeded by (seed, size, index).
void FillBody(uint64_t seed, uint64_t size, uint64_t index, std::string& out) {
  out.resize(size);
  uint64_t sm = seed * 0x100000001b3ull ^ size * 0xff51afd7ed558ccdull ^ index;
  uint64_t s[4];
  for (auto& w : s) w = SplitMix64(sm);
  auto rotl = [](uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
  char* p = out.data();
  size_t n = out.size();
  while (n > 0) {
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    size_t k = std::min<size_t>(n, 8);
    std::memcpy(p, &r, k);
    p += k;
    n -= k;
  }
}

using Digest = std::array<unsigned char, 32>;

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { Reset(); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Reset() {
    if (EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) std::abort();
  }
  void Update(const void* p, size_t n) {
    if (EVP_DigestUpdate(ctx_, p, n) != 1) std::abort();
  }
  Digest Final() {
    Digest d{};
    unsigned len = 0;
    if (EVP_DigestFinal_ex(ctx_, d.data(), &len) != 1 || len != 32) std::abort();
    return d;
  }

 private:
  EVP_MD_CTX* ctx_;
};

std::string Hex(const Digest& d) {
  static const char* kHex = "0123456789abcdef";
  std::string s(64, '0');
  for (size_t i = 0; i < 32; ++i) {
    s[2 * i] = kHex[d[i] >> 4];
    s[2 * i + 1] = kHex[d[i] & 15];
  }
  return s;
}

std::string Base64(const std::string& in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

// ---------------------------------------------------------------- TLS connection

std::string SslErrors() {
  std::string s;
  char buf[256];
  while (unsigned long e = ERR_get_error()) {
    ERR_error_string_n(e, buf, sizeof buf);
    if (!s.empty()) s += "; ";
    s += buf;
  }
  return s.empty() ? "unknown" : s;
}

// A blocking TLS client connection, usable by Beast as a SyncReadStream and SyncWriteStream.
class TlsConn {
 public:
  TlsConn() = default;
  TlsConn(const TlsConn&) = delete;
  TlsConn& operator=(const TlsConn&) = delete;
  ~TlsConn() { Close(false); }

  bool open() const { return ssl_ != nullptr; }

  // Connects to one of `addrs` and completes the handshake; on failure *error says why.
  bool Open(SSL_CTX* ctx, const addrinfo* addrs, const std::string& host, bool host_is_ip,
            unsigned timeout_s, std::string* error) {
    Close(false);
    for (const addrinfo* a = addrs; a != nullptr; a = a->ai_next) {
      int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      timeval tv{static_cast<time_t>(timeout_s), 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);  // also bounds connect()
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
        fd_ = fd;
        break;
      }
      *error = std::string("connect: ") + std::strerror(errno);
      ::close(fd);
    }
    if (fd_ < 0) return false;
    ssl_ = SSL_new(ctx);
    if (ssl_ == nullptr || SSL_set_fd(ssl_, fd_) != 1) {
      *error = "SSL_new: " + SslErrors();
      Close(false);
      return false;
    }
    if (host_is_ip) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), host.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl_, host.c_str());
      SSL_set1_host(ssl_, host.c_str());
    }
    ERR_clear_error();
    errno = 0;
    if (int r = SSL_connect(ssl_); r != 1) {
      int saved = errno;
      long v = SSL_get_verify_result(ssl_);
      int e = SSL_get_error(ssl_, r);
      std::string why = v != X509_V_OK       ? std::string(X509_verify_cert_error_string(v))
                        : e == SSL_ERROR_SSL ? SslErrors()
                        : saved == EAGAIN || saved == EWOULDBLOCK
                            ? "timed out after " + std::to_string(timeout_s) + " s"
                        : saved != 0 ? std::string(std::strerror(saved))
                                     : std::string("connection closed by the server");
      *error = "TLS handshake: " + why;
      Close(false);
      return false;
    }
    return true;
  }

  // Sends close_notify when `polite`, then closes the socket.
  void Close(bool polite) {
    if (ssl_ != nullptr) {
      if (polite) SSL_shutdown(ssl_);
      SSL_free(ssl_);
      ssl_ = nullptr;
    }
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

  const char* Cipher() const { return ssl_ ? SSL_get_cipher_name(ssl_) : "-"; }
  const char* Version() const { return ssl_ ? SSL_get_version(ssl_) : "-"; }

  // --- Beast SyncReadStream / SyncWriteStream
  template <class MutableBuffers>
  size_t read_some(const MutableBuffers& buffers, beast::error_code& ec) {
    ec = {};
    for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers);
         ++it) {
      asio::mutable_buffer b = *it;
      if (b.size() == 0) continue;
      size_t n = 0;
      ERR_clear_error();
      if (SSL_read_ex(ssl_, b.data(), b.size(), &n) == 1) return n;
      ec = Failure(SSL_get_error(ssl_, 0));
      return 0;
    }
    return 0;
  }
  template <class MutableBuffers>
  size_t read_some(const MutableBuffers& buffers) {
    beast::error_code ec;
    size_t n = read_some(buffers, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }
  template <class ConstBuffers>
  size_t write_some(const ConstBuffers& buffers, beast::error_code& ec) {
    ec = {};
    size_t total = 0;
    for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers);
         ++it) {
      asio::const_buffer b = *it;
      if (b.size() == 0) continue;
      size_t n = 0;
      ERR_clear_error();
      if (SSL_write_ex(ssl_, b.data(), b.size(), &n) != 1) {  // writes all of b (no partial mode)
        ec = Failure(SSL_get_error(ssl_, 0));
        return total;
      }
      total += n;
    }
    return total;
  }
  template <class ConstBuffers>
  size_t write_some(const ConstBuffers& buffers) {
    beast::error_code ec;
    size_t n = write_some(buffers, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }

 private:
  beast::error_code Failure(int ssl_error) {
    int saved = errno;
    if (ssl_error == SSL_ERROR_ZERO_RETURN) return asio::error::eof;
    if (ssl_error == SSL_ERROR_SYSCALL) {
      if (saved == EAGAIN || saved == EWOULDBLOCK) return asio::error::timed_out;
      if (saved == 0) return asio::error::eof;  // the peer closed without close_notify
      return beast::error_code(saved, boost::system::system_category());
    }
    if (ssl_error == SSL_ERROR_WANT_READ || ssl_error == SSL_ERROR_WANT_WRITE)
      return asio::error::timed_out;  // only with SO_RCVTIMEO/SO_SNDTIMEO on a blocking socket
    std::fprintf(stderr, "loadgen: TLS error: %s\n", SslErrors().c_str());
    return asio::error::connection_aborted;
  }

  int fd_ = -1;
  SSL* ssl_ = nullptr;
};

// ---------------------------------------------------------------- shared run state

struct Phase {
  std::atomic<uint64_t> next{0};
  std::atomic<uint64_t> ok_bytes{0};
  std::atomic<uint64_t> errors{0};
  std::mutex mu;
  std::vector<double> latencies_ms;  // merged from the workers at their end
};

struct Run {
  Options opt;
  std::string auth;  // "Basic ..." or empty
  SSL_CTX* ctx = nullptr;
  addrinfo* addrs = nullptr;
  bool host_is_ip = false;
  std::vector<Digest> names;  // filled by the upload phase
  std::vector<uint8_t> uploaded;
  std::atomic<unsigned> error_lines{0};

  void Error(const std::string& what) {
    if (error_lines.fetch_add(1) < 20) std::fprintf(stderr, "loadgen: error: %s\n", what.c_str());
  }
  std::string Target(const Digest& d) const {
    return opt.prefix + (opt.restic ? "data/" : "") + Hex(d);
  }
};

struct Conn {
  TlsConn tls;
  beast::flat_buffer buf;
};

// Opens (or reopens) the TLS connection of a worker; false after logging on failure.
bool Connect(Run& run, Conn& c) {
  c.buf.clear();
  std::string error;
  if (c.tls.Open(run.ctx, run.addrs, run.opt.host, run.host_is_ip, run.opt.timeout_s, &error))
    return true;
  run.Error(error);
  return false;
}

void Drop(Conn& c) {
  c.tls.Close(false);
  c.buf.clear();
}

// One upload; true on a 2xx answer. Keeps or drops the connection as the answer says.
bool Upload(Run& run, Conn& c, const std::string& body, const Digest& name) {
  http::request<http::span_body<const char>> req{
      run.opt.restic ? http::verb::post : http::verb::put, run.Target(name), 11};
  req.set(http::field::host, run.opt.host);
  req.set(http::field::content_type, "application/octet-stream");
  if (!run.auth.empty()) req.set(http::field::authorization, run.auth);
  req.body() = {body.data(), body.size()};
  req.prepare_payload();
  req.keep_alive(true);

  beast::error_code ec;
  http::write(c.tls, req, ec);
  if (ec) {
    run.Error("upload " + Hex(name) + ": write: " + ec.message());
    Drop(c);
    return false;
  }
  http::response_parser<http::string_body> parser;
  parser.body_limit(1 << 20);
  http::read(c.tls, c.buf, parser, ec);
  if (ec) {
    run.Error("upload " + Hex(name) + ": read answer: " + ec.message());
    Drop(c);
    return false;
  }
  auto& res = parser.get();
  bool ok = res.result_int() / 100 == 2;
  if (!ok) {
    run.Error("upload " + Hex(name) + ": HTTP " + std::to_string(res.result_int()) + " " +
              res.body().substr(0, 300));
  }
  if (!res.keep_alive()) Drop(c);
  return ok;
}

// A request without a body for one object, on a kept-alive connection.
http::request<http::empty_body> BodilessRequest(const Run& run, http::verb verb, const Digest& name) {
  http::request<http::empty_body> req{verb, run.Target(name), 11};
  req.set(http::field::host, run.opt.host);
  if (!run.auth.empty()) req.set(http::field::authorization, run.auth);
  req.keep_alive(true);
  return req;
}

// One GET, hashed as it streams in; true when the answer is 200 with the right length and hash.
bool Restore(Run& run, Conn& c, std::vector<char>& chunk, Sha256& sha, const Digest& name,
             uint64_t* bytes) {
  beast::error_code ec;
  http::write(c.tls, BodilessRequest(run, http::verb::get, name), ec);
  if (ec) {
    run.Error("restore " + Hex(name) + ": write: " + ec.message());
    Drop(c);
    return false;
  }
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);
  http::read_header(c.tls, c.buf, parser, ec);
  if (ec) {
    run.Error("restore " + Hex(name) + ": read header: " + ec.message());
    Drop(c);
    return false;
  }
  const int status = parser.get().result_int();
  sha.Reset();
  uint64_t got = 0;
  std::string error_body;
  while (!parser.is_done()) {
    parser.get().body().data = chunk.data();
    parser.get().body().size = chunk.size();
    http::read(c.tls, c.buf, parser, ec);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      run.Error("restore " + Hex(name) + ": read body: " + ec.message());
      Drop(c);
      return false;
    }
    size_t n = chunk.size() - parser.get().body().size;
    if (status == 200) {
      sha.Update(chunk.data(), n);
    } else if (error_body.size() < 300) {
      error_body.append(chunk.data(), std::min<size_t>(n, 300 - error_body.size()));
    }
    got += n;
  }
  bool ok = true;
  if (status != 200) {
    run.Error("restore " + Hex(name) + ": HTTP " + std::to_string(status) + " " + error_body);
    ok = false;
  } else if (got != run.opt.size) {
    run.Error("restore " + Hex(name) + ": " + std::to_string(got) + " bytes, expected " +
              std::to_string(run.opt.size));
    ok = false;
  } else if (sha.Final() != name) {
    run.Error("restore " + Hex(name) + ": SHA-256 of the body differs from its name");
    ok = false;
  }
  if (ok) *bytes = got;
  if (!parser.get().keep_alive()) Drop(c);
  return ok;
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

void OpenWorker(Run& run, Conn& c, Phase& phase) {
  if (c.tls.open()) return;
  if (!Connect(run, c)) {
    Drop(c);
    phase.errors++;
  }
}

// Names every object (untimed): the upload phase then only regenerates the bytes, which costs
// a tenth of hashing them, so the loader's core has more room for TLS.
void NameWorker(Run& run, Conn&, Phase& phase) {
  std::string body;
  Sha256 sha;
  for (uint64_t i; (i = phase.next.fetch_add(1)) < run.opt.objects;) {
    FillBody(run.opt.seed, run.opt.size, i, body);
    sha.Reset();
    sha.Update(body.data(), body.size());
    run.names[i] = sha.Final();
  }
}

void UploadWorker(Run& run, Conn& c, Phase& phase) {
  std::string body;
  std::vector<double> lat;
  for (uint64_t i; (i = phase.next.fetch_add(1)) < run.opt.objects;) {
    FillBody(run.opt.seed, run.opt.size, i, body);
    if (!c.tls.open() && !Connect(run, c)) {
      Drop(c);
      phase.errors++;
      continue;
    }
    auto t0 = Clock::now();
    bool ok = Upload(run, c, body, run.names[i]);
    auto t1 = Clock::now();
    if (ok) {
      lat.push_back(Ms(t1 - t0));
      phase.ok_bytes += body.size();
      run.uploaded[i] = 1;
    } else {
      phase.errors++;
    }
  }
  std::lock_guard lock(phase.mu);
  phase.latencies_ms.insert(phase.latencies_ms.end(), lat.begin(), lat.end());
}

// Runs `op(i, &bytes)` (true on success) for every uploaded object the phase has left, on the
// worker's connection (reopened as needed), timing each success.
template <class Op>
void EachUploaded(Run& run, Conn& c, Phase& phase, Op&& op) {
  std::vector<double> lat;
  for (uint64_t i; (i = phase.next.fetch_add(1)) < run.opt.objects;) {
    if (!run.uploaded[i]) continue;  // already counted as an upload error
    if (!c.tls.open() && !Connect(run, c)) {
      Drop(c);
      phase.errors++;
      continue;
    }
    uint64_t bytes = 0;
    auto t0 = Clock::now();
    if (op(i, &bytes)) {
      lat.push_back(Ms(Clock::now() - t0));
      phase.ok_bytes += bytes;
    } else {
      phase.errors++;
    }
  }
  std::lock_guard lock(phase.mu);
  phase.latencies_ms.insert(phase.latencies_ms.end(), lat.begin(), lat.end());
}

void RestoreWorker(Run& run, Conn& c, Phase& phase) {
  std::vector<char> chunk(1 << 18);
  Sha256 sha;
  EachUploaded(run, c, phase, [&](uint64_t i, uint64_t* bytes) {
    return Restore(run, c, chunk, sha, run.names[i], bytes);
  });
}

// One HEAD; true on a 200 answer.
bool Head(Run& run, Conn& c, const Digest& name) {
  beast::error_code ec;
  http::write(c.tls, BodilessRequest(run, http::verb::head, name), ec);
  http::response_parser<http::empty_body> parser;
  parser.skip(true);  // a HEAD answer has no body, whatever its Content-Length says
  if (!ec) http::read(c.tls, c.buf, parser, ec);
  if (ec) {
    run.Error("head " + Hex(name) + ": " + ec.message());
    Drop(c);
    return false;
  }
  if (parser.get().result_int() != 200) {
    run.Error("head " + Hex(name) + ": HTTP " + std::to_string(parser.get().result_int()));
  }
  if (!parser.get().keep_alive()) Drop(c);
  return parser.get().result_int() == 200;
}

void HeadWorker(Run& run, Conn& c, Phase& phase) {
  EachUploaded(run, c, phase, [&](uint64_t i, uint64_t*) { return Head(run, c, run.names[i]); });
}

// Reads 64-hex-digit names, one a line; exits on a malformed line.
std::vector<Digest> ReadNames(const std::string& path) {
  std::vector<Digest> names;
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) Usage(("cannot open " + path).c_str());
  char line[128];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    Digest d{};
    for (size_t i = 0; i < d.size(); ++i) {
      unsigned v = 0;
      if (std::sscanf(line + 2 * i, "%2x", &v) != 1) Usage(("bad name in " + path).c_str());
      d[i] = static_cast<uint8_t>(v);
    }
    names.push_back(d);
  }
  std::fclose(f);
  if (names.empty()) Usage(("no names in " + path).c_str());
  return names;
}

void CloseWorker(Run&, Conn& c, Phase&) { c.tls.Close(true); }

double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

double Percentile(std::vector<double> v, double p) {  // nearest rank
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

using WorkerFn = void (*)(Run&, Conn&, Phase&);

struct PhaseResult {
  Clock::duration wall{};
  double cpu_s = 0;
};

// Runs `fn` on one thread per connection; returns the wall and CPU time of the phase.
PhaseResult RunPhase(Run& run, std::vector<Conn>& conns, Phase& phase, WorkerFn fn) {
  PhaseResult r;
  double cpu0 = CpuSeconds();
  auto t0 = Clock::now();
  std::vector<std::thread> threads;
  threads.reserve(conns.size());
  for (auto& c : conns) threads.emplace_back([&run, &c, &phase, fn] { fn(run, c, phase); });
  for (auto& t : threads) t.join();
  r.wall = Clock::now() - t0;
  r.cpu_s = CpuSeconds() - cpu0;
  return r;
}

void Report(const Run& run, const char* op, const Phase& phase, const PhaseResult& r) {
  const double secs = std::chrono::duration<double>(r.wall).count();
  const double mib = static_cast<double>(phase.ok_bytes.load()) / (1 << 20);
  std::printf("%-7s %" PRIu64
              " x %.2f MiB over %u conns: %.1f MiB in %.2f s = %.1f MiB/s, "
              "latency p50 %.1f ms p99 %.1f ms, errors %" PRIu64 ", loader CPU %.2f s\n",
              op, run.opt.objects, static_cast<double>(run.opt.size) / (1 << 20), run.opt.conns,
              mib, secs, secs > 0 ? mib / secs : 0, Percentile(phase.latencies_ms, 0.50),
              Percentile(phase.latencies_ms, 0.99), phase.errors.load(), r.cpu_s);
  std::fflush(stdout);
}

void PrintResult(const Run& run, const char* op, const Phase& phase, const PhaseResult& r) {
  const double secs = std::chrono::duration<double>(r.wall).count();
  const double mib = static_cast<double>(phase.ok_bytes.load()) / (1 << 20);
  std::printf("RESULT op=%s objects=%" PRIu64 " size=%" PRIu64
              " conns=%u mib_s=%.1f p50_ms=%.2f "
              "p99_ms=%.2f errors=%" PRIu64 " seconds=%.3f loader_cpu_s=%.2f\n",
              op, run.opt.objects, run.opt.size, run.opt.conns, secs > 0 ? mib / secs : 0,
              Percentile(phase.latencies_ms, 0.50), Percentile(phase.latencies_ms, 0.99),
              phase.errors.load(), secs, r.cpu_s);
}

int Main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a peer that closes mid-upload is an error, not a death
  Run run;
  run.opt = ParseArgs(argc, argv);
  const Options& o = run.opt;
  if (!o.user.empty()) run.auth = "Basic " + Base64(o.user + ":" + o.password);
  if (!o.head_names.empty()) {
    run.names = ReadNames(o.head_names);
    run.opt.objects = run.names.size();
  } else {
    run.names.assign(o.objects, Digest{});
  }
  run.uploaded.assign(o.objects, 0);

  run.ctx = SSL_CTX_new(TLS_client_method());
  if (run.ctx == nullptr) {
    std::fprintf(stderr, "loadgen: SSL_CTX_new: %s\n", SslErrors().c_str());
    return 2;
  }
  SSL_CTX_set_min_proto_version(run.ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(run.ctx, SSL_VERIFY_PEER, nullptr);
  if (!o.cacert.empty()) {
    if (SSL_CTX_load_verify_locations(run.ctx, o.cacert.c_str(), nullptr) != 1) {
      std::fprintf(stderr, "loadgen: cannot load %s: %s\n", o.cacert.c_str(), SslErrors().c_str());
      return 2;
    }
  } else {
    SSL_CTX_set_default_verify_paths(run.ctx);
  }
  {
    beast::error_code ec;
    asio::ip::make_address(o.host, ec);
    run.host_is_ip = !ec;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (int rc = ::getaddrinfo(o.host.c_str(), o.port.c_str(), &hints, &run.addrs); rc != 0) {
      std::fprintf(stderr, "loadgen: resolve %s:%s: %s\n", o.host.c_str(), o.port.c_str(),
                   gai_strerror(rc));
      return 1;
    }
  }
  std::vector<Conn> conns(o.conns);

  std::printf("loadgen: %s %s%s, %" PRIu64 " objects of %" PRIu64
              " bytes, %u connections, "
              "seed %" PRIu64 "\n",
              !o.head_names.empty() ? "HEAD" : o.restic ? "POST" : "PUT", o.url.c_str(),
              o.restic ? "data/<sha256>" : "<sha256>",
              o.objects, o.size, o.conns, o.seed);

  // Connections are open before the clock starts.
  Phase open;
  RunPhase(run, conns, open, &OpenWorker);
  if (open.errors > 0) {
    std::fprintf(stderr, "loadgen: %" PRIu64 " of %u connections failed to open\n",
                 open.errors.load(), o.conns);
    return 1;
  }
  std::printf("loadgen: %s %s\n", conns[0].tls.Version(), conns[0].tls.Cipher());
  std::fflush(stdout);

  if (!o.head_names.empty()) {
    run.uploaded.assign(o.objects, 1);  // HEAD objects stored by others
    Phase head;
    PhaseResult head_r = RunPhase(run, conns, head, &HeadWorker);
    Report(run, "head", head, head_r);
    Phase close;
    RunPhase(run, conns, close, &CloseWorker);
    freeaddrinfo(run.addrs);
    SSL_CTX_free(run.ctx);
    PrintResult(run, "head", head, head_r);
    return head.errors == 0 ? 0 : 1;
  }

  Phase naming;
  PhaseResult naming_r = RunPhase(run, conns, naming, &NameWorker);
  std::printf("loadgen: named %" PRIu64 " objects (SHA-256) in %.2f s, before the clock starts\n",
              o.objects, std::chrono::duration<double>(naming_r.wall).count());
  std::fflush(stdout);

  Phase up;
  PhaseResult up_r;
  if (o.restore_only) {
    run.uploaded.assign(o.objects, 1);
  } else {
    up_r = RunPhase(run, conns, up, &UploadWorker);
    Report(run, "upload", up, up_r);
  }
  uint64_t errors = up.errors.load();

  Phase down;
  PhaseResult down_r;
  if (o.get) {
    if (!o.before_get.empty()) {
      std::fflush(stdout);
      int st = std::system(o.before_get.c_str());
      if (st != 0) {
        std::fprintf(stderr, "loadgen: --before-get command failed (status %d)\n", st);
        errors++;
      }
    }
    Phase reopen;  // reconnect what the upload phase dropped, before the clock starts
    RunPhase(run, conns, reopen, &OpenWorker);
    down.errors += reopen.errors.load();
    down_r = RunPhase(run, conns, down, &RestoreWorker);
    Report(run, "restore", down, down_r);
    errors += down.errors.load();
  }

  Phase close;
  RunPhase(run, conns, close, &CloseWorker);  // close_notify; errors here do not count
  freeaddrinfo(run.addrs);
  SSL_CTX_free(run.ctx);

  if (!o.restore_only) PrintResult(run, "upload", up, up_r);
  if (o.get) PrintResult(run, "restore", down, down_r);
  std::fflush(stdout);
  return errors == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loadgen: %s\n", e.what());
    return 1;
  }
}
