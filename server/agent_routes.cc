// Session::ServeAgent: an agent request's route (server/agent_api.h), the device's
// authentication and the account's status, then the answer or the upload or download.
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/verb.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "server/agent_api.h"
#include "server/auth.h"
#include "server/quota.h"
#include "server/session_internal.h"

namespace cv::server {

namespace net = boost::asio;
namespace http = boost::beast::http;
using internal::Empty200;
using internal::MethodNotAllowed;

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

}  // namespace cv::server
