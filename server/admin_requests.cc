// Session::ServeAdmin: a request on the admin listener, its small JSON body read and handed to
// admin::AdminApi (admin/ routes it); its answer sent, or the file it names (courier images,
// file_send.cc).
#include <boost/beast/http/field.hpp>
#include <functional>
#include <string>

#include "admin/admin.h"
#include "server/off_thread.h"
#include "server/session_internal.h"

namespace cv::server {

namespace net = boost::asio;
namespace http = boost::beast::http;

net::awaitable<bool> Session::ServeAdmin(Exchange& x) {
  auto& req = parser_->get();
  x.route = "admin";
  if (IsOperational(req.target())) co_return co_await ServeOperational(x);
  Reply err;
  auto body = co_await ReadSmallBody(x, ctx_.config.max_json_body_bytes, &err);
  if (!body) co_return err.status ? co_await Send(x, std::move(err)) : false;
  admin::Request ar{std::string(req.method_string()), std::string(req.target()),
                    std::string(req[http::field::authorization]), std::move(*body)};
  // On the admin threads (ServerContext::admin_pool), while this worker serves the others.
  auto start = [&](std::function<void(admin::Response)> deliver) {
    net::post(ctx_.admin_pool, [&ar, &api = ctx_.admin, deliver = std::move(deliver)] {
      admin::Response r;
      try {
        r = api.Handle(ar);
      } catch (const std::exception& e) {  // a bug; the pool's thread must live on
        Log(LogLevel::kError, "session_exception", {{"what", e.what()}, {"where", "admin"}});
        r = admin::Response{500, admin::ErrorJson("internal", "internal error"), {}, {}};
      } catch (...) {
        Log(LogLevel::kError, "session_exception", {{"what", "unknown"}, {"where", "admin"}});
        r = admin::Response{500, admin::ErrorJson("internal", "internal error"), {}, {}};
      }
      deliver(std::move(r));
    });
  };
  admin::Response resp = co_await internal::AwaitOffThread<admin::Response>(start);
  if (!resp.file.empty() && resp.status == 200) co_return co_await SendFile(x, resp.file);
  Reply r;
  r.status = resp.status;
  r.body = std::move(resp.body);
  r.headers = std::move(resp.headers);
  if (r.status == 401)
    co_return co_await SendUnauthorized(x, std::move(r), !ar.authorization.empty());
  co_return co_await Send(x, std::move(r));
}

}  // namespace cv::server
