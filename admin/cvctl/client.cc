// The admin client: Beast over OpenSSL, one step at a time with a deadline on each
// (cluster/blocking_io.h).
#include "admin/cvctl/client.h"

#include <openssl/ssl.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <charconv>
#include <optional>
#include <cerrno>
#include <cstring>
#include <unistd.h>
#include <vector>

#include "cluster/blocking_io.h"

namespace cv::cvctl {

namespace net = boost::asio;
namespace ssl = net::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using boost::system::error_code;

namespace {

constexpr uint64_t kMaxAnswerBytes = 256ull << 20;

bool IsAddress(const std::string& host) {
  error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

std::string Describe(const error_code& ec) {
  if (ec == beast::error::timeout) return "timed out";
  return ec.message();
}

}  // namespace

tl::expected<Endpoint, std::string> ParseAdminUrl(std::string_view url) {
  // Boost.URL parses; what an admin endpoint may be (https, a host, a port, nothing else) is
  // checked here.
  const std::string shown = "'" + std::string(url) + "'";
  auto u = boost::urls::parse_absolute_uri(url);
  if (!u || u->scheme_id() != boost::urls::scheme::https) {
    return tl::unexpected("the admin URL must be https://HOST[:PORT] (got " + shown + ")");
  }
  if (u->has_userinfo() || u->has_query() || u->has_fragment() ||
      !(u->encoded_path().empty() || u->encoded_path() == "/")) {
    return tl::unexpected("the admin URL is https://HOST[:PORT] only, no user, path or query (got " +
                          shown + ")");
  }
  Endpoint e;
  e.host = std::string(u->host_address());
  if (e.host.empty()) return tl::unexpected("no host in " + shown);
  const std::string_view port = u->port();
  e.port = u->has_port() ? std::string(port) : "443";
  unsigned number = 0;
  auto [end, ec] = std::from_chars(e.port.data(), e.port.data() + e.port.size(), number);
  if (e.port.empty() || ec != std::errc() || end != e.port.data() + e.port.size() || number == 0 ||
      number > 65535) {
    return tl::unexpected("bad port in " + shown);
  }
  return e;
}

tl::expected<Answer, std::string> AdminClient::Call(std::string_view method,
                                                    std::string_view path,
                                                    std::string_view body) {
  return Exchange(method, path, body, 0, -1, nullptr);
}

tl::expected<Answer, std::string> AdminClient::Download(
    std::string_view path, int fd, uint64_t offset, const std::function<void(uint64_t)>& on_bytes) {
  return Exchange("GET", path, {}, offset, fd, &on_bytes);
}

tl::expected<Answer, std::string> AdminClient::Exchange(
    std::string_view method, std::string_view path, std::string_view body, uint64_t range_from,
    int fd, const std::function<void(uint64_t)>* on_bytes) {
  const std::string where = endpoint_.host + ":" + endpoint_.port;
  net::io_context ioc;
  ssl::context ctx(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  error_code ec;
  if (endpoint_.ca_file.empty()) {
    ctx.set_default_verify_paths(ec);
  } else {
    ctx.load_verify_file(endpoint_.ca_file, ec);
  }
  if (ec) {
    return tl::unexpected("cannot load the CA certificate " + endpoint_.ca_file + ": " +
                          ec.message());
  }
  ctx.set_verify_mode(ssl::verify_peer);

  auto endpoints = cluster::ResolveWithin(ioc, endpoint_.host, endpoint_.port, timeout_);
  if (!endpoints) return tl::unexpected(endpoints.error());

  beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
  stream.set_verify_callback(ssl::host_name_verification(endpoint_.host));
  if (!IsAddress(endpoint_.host)) {
    SSL_set_tlsext_host_name(stream.native_handle(), endpoint_.host.c_str());
  }
  auto& tcp_layer = beast::get_lowest_layer(stream);

  tcp_layer.expires_after(timeout_);
  ec = cluster::RunOne(ioc, [&](auto handler) { tcp_layer.async_connect(*endpoints, std::move(handler)); });
  if (ec) return tl::unexpected("cannot connect to " + where + ": " + Describe(ec));

  tcp_layer.expires_after(timeout_);
  ec = cluster::RunOne(ioc, [&](auto handler) {
    stream.async_handshake(ssl::stream_base::client, std::move(handler));
  });
  if (ec) return tl::unexpected("TLS handshake with " + where + " failed: " + Describe(ec));

  http::request<http::string_body> req{http::string_to_verb(method),
                                       "/admin/v1/" + std::string(path), 11};
  req.set(http::field::host, endpoint_.host);
  req.set(http::field::user_agent, "cvctl");
  req.set(http::field::authorization, "Bearer " + endpoint_.key);
  req.set(http::field::accept, "application/json");
  if (!body.empty() || method == "POST" || method == "PATCH") {
    req.set(http::field::content_type, "application/json");
    req.body() = std::string(body);
  }
  if (range_from > 0) req.set(http::field::range, "bytes=" + std::to_string(range_from) + "-");
  req.prepare_payload();

  tcp_layer.expires_after(timeout_);
  ec = cluster::RunOne(ioc, [&](auto handler) { http::async_write(stream, req, std::move(handler)); });
  if (ec) return tl::unexpected("sending the request to " + where + " failed: " + Describe(ec));

  beast::flat_buffer buffer;
  Answer a;
  if (fd >= 0) {
    // A file: the header first; a 2xx body goes to fd a chunk at a time.
    http::response_parser<http::buffer_body> fp;
    fp.body_limit(boost::none);
    tcp_layer.expires_after(timeout_);
    ec = cluster::RunOne(ioc, [&](auto handler) { http::async_read_header(stream, buffer, fp, std::move(handler)); });
    if (ec) return tl::unexpected("reading the answer from " + where + " failed: " + Describe(ec));
    a.status = static_cast<int>(fp.get().result_int());
    const bool ok = a.status / 100 == 2;
    std::vector<char> chunk(1 << 20);
    uint64_t pos = range_from;
    while (!fp.is_done()) {
      fp.get().body().data = chunk.data();
      fp.get().body().size = chunk.size();
      tcp_layer.expires_after(timeout_);
      ec = cluster::RunOne(ioc, [&](auto handler) { http::async_read(stream, buffer, fp, std::move(handler)); });
      if (ec == http::error::need_buffer) ec = {};
      if (ec) return tl::unexpected("reading the file from " + where + " failed: " + Describe(ec));
      const size_t got = chunk.size() - fp.get().body().size;
      if (!ok) {
        if (a.body.size() < (1 << 20)) a.body.append(chunk.data(), got);
        continue;
      }
      size_t done = 0;
      while (done < got) {
        ssize_t w = ::pwrite(fd, chunk.data() + done, got - done, static_cast<off_t>(pos));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return tl::unexpected(std::string("writing the download failed: ") + std::strerror(errno));
        done += static_cast<size_t>(w);
        pos += static_cast<uint64_t>(w);
      }
      if (got > 0 && on_bytes && *on_bytes) (*on_bytes)(got);
    }
  } else {
    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxAnswerBytes);
    tcp_layer.expires_after(timeout_);
    ec = cluster::RunOne(ioc, [&](auto handler) { http::async_read(stream, buffer, parser, std::move(handler)); });
    if (ec) return tl::unexpected("reading the answer from " + where + " failed: " + Describe(ec));
    a.status = static_cast<int>(parser.get().result_int());
    a.body = std::move(parser.get().body());
  }

  // A polite close; the answer is complete whatever happens here.
  tcp_layer.expires_after(std::chrono::seconds(2));
  cluster::RunOne(ioc, [&](auto handler) { stream.async_shutdown(std::move(handler)); });
  return a;
}

}  // namespace cv::cvctl
