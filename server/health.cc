// Session::ServeOperational: GET /healthz, /readyz (open to anyone) and /metrics (with the
// scrape token), on both listeners.
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <boost/json/serialize.hpp>
#include <string>
#include <string_view>

#include "server/metrics.h"
#include "server/session_internal.h"
#include "server/tls.h"

namespace cv::server {

namespace net = boost::asio;
namespace http = boost::beast::http;
using internal::MethodNotAllowed;

namespace {

// {"<key>": value}. Built outside the coroutines: g++ 12 cannot compile a braced
// initializer list inside a co_await expression.
std::string StatusJson(std::string_view key, boost::json::value value) {
  boost::json::object o;
  o[key] = std::move(value);
  return boost::json::serialize(o);
}

}  // namespace

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
  if (target == "/healthz") co_return co_await Send(x, JsonReply(200, StatusJson("status", "ok")));
  if (target == "/readyz") {
    if (ctx_.store.Ready()) co_return co_await Send(x, JsonReply(200, StatusJson("ready", true)));
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

}  // namespace cv::server
