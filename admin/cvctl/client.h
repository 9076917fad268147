// cvctl/client: one HTTPS request at a time to a node's admin listener. The node's
// certificate is verified against the given CA (and its host name or IP address); every
// step -- resolve, connect, handshake, write, read -- has a deadline. A failure to reach the
// node (no route, refused, timeout, TLS) is a transport error; any HTTP answer, 4xx and 5xx
// included, is an Answer.
//
// Thread-safety: an AdminClient is used by one thread.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <tl/expected.hpp>

namespace cv::cvctl {

struct Endpoint {
  std::string host;     // name, IPv4 or IPv6 address (without brackets)
  std::string port;     // decimal
  std::string ca_file;  // PEM bundle the node's certificate must chain to; empty = system CAs
  std::string key;      // the admin key, sent as "Authorization: Bearer KEY"
};

// "https://HOST[:PORT][/...]" -> host and port (443 by default). The path is ignored: routes
// always go under /admin/v1/. Error: a message for the user.
tl::expected<Endpoint, std::string> ParseAdminUrl(std::string_view url);

struct Answer {
  int status = 0;
  std::string body;
};

class AdminClient {
 public:
  AdminClient(Endpoint endpoint, std::chrono::seconds timeout)
      : endpoint_(std::move(endpoint)), timeout_(timeout) {}

  // METHOD /admin/v1/<path> with a JSON body (empty: none). Error: why the node could not be
  // reached or the exchange failed, for the user.
  tl::expected<Answer, std::string> Call(std::string_view method, std::string_view path,
                                         std::string_view body = {});

  // GET /admin/v1/<path>, a file answer, written to `fd` at offsets from `offset` on (the
  // request asks for "Range: bytes=OFFSET-" when offset > 0). `on_bytes` sees each chunk as
  // written. A 2xx answer is streamed and returns its status; any other is read into
  // Answer.body and nothing is written.
  tl::expected<Answer, std::string> Download(std::string_view path, int fd, uint64_t offset,
                                             const std::function<void(uint64_t)>& on_bytes);

  const Endpoint& endpoint() const { return endpoint_; }

 private:
  // Connects and runs `exchange` on the TLS stream.
  tl::expected<Answer, std::string> Exchange(
      std::string_view method, std::string_view path, std::string_view body, uint64_t range_from,
      int fd, const std::function<void(uint64_t)>* on_bytes);

  Endpoint endpoint_;
  std::chrono::seconds timeout_;
};

}  // namespace cv::cvctl
