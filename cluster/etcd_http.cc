// MakeEtcd: etcd's v3 JSON gateway over Beast (cluster/etcd.h says why this and not gRPC).
// Asynchronous operations run to completion one at a time on a private io_context, so that
// tcp_stream's per-operation deadlines apply, as in cvctl's admin client.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <charconv>
#include <functional>
#include <optional>

#include "cluster/blocking_io.h"
#include "cluster/etcd.h"

namespace cv::cluster {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = net::ip::tcp;
using boost::system::error_code;

constexpr uint64_t kMaxAnswerBytes = 64ull << 20;

std::string Base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::optional<std::string> Unbase64(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out(3 * (in.size() / 4), '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  if (n < 0) return std::nullopt;
  size_t len = static_cast<size_t>(n);
  // EVP_DecodeBlock counts the padding as zero bytes.
  if (!in.empty() && in.back() == '=') --len;
  if (in.size() > 1 && in[in.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

// etcd's JSON carries 64-bit numbers as strings ("revision":"12"), and small ones sometimes
// as numbers.
int64_t Int(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (!v) return 0;
  if (v->is_int64()) return v->as_int64();
  if (v->is_uint64()) return static_cast<int64_t>(v->as_uint64());
  if (!v->is_string()) return 0;
  const json::string& s = v->as_string();
  int64_t n = 0;
  std::from_chars(s.data(), s.data() + s.size(), n);
  return n;
}

// The end of the range of keys that start with `prefix` (etcd's range_end).
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(prefix.back());
    if (last < 0xff) {
      ++last;
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');  // every key
}

// A "kv" of etcd's JSON: key and value in base64 (absent when empty).
Result<KeyValue> ParseKv(const json::value& v) {
  if (!v.is_object()) return Err(ErrorKind::kInternal, "etcd: a kv is not an object");
  const json::object& o = v.as_object();
  auto text = [&](std::string_view field) -> std::optional<std::string> {
    const json::value* f = o.if_contains(field);
    if (!f) return std::string();
    if (!f->is_string()) return std::nullopt;
    return Unbase64(f->as_string());
  };
  auto key = text("key");
  auto value = text("value");
  if (!key || !value) return Err(ErrorKind::kInternal, "etcd: bad base64 in a kv");
  KeyValue kv;
  kv.key = std::move(*key);
  kv.value = std::move(*value);
  kv.create_revision = Int(o, "create_revision");
  kv.mod_revision = Int(o, "mod_revision");
  kv.lease = Int(o, "lease");
  return kv;
}

int64_t HeaderRevision(const json::object& answer) {
  const json::value* header = answer.if_contains("header");
  return header && header->is_object() ? Int(header->as_object(), "revision") : 0;
}

struct Target {
  std::string host;
  std::string port;
  std::string shown;  // as configured, for messages
};

std::string Describe(const error_code& ec) {
  return ec == beast::error::timeout ? "timed out" : ec.message();
}

class HttpEtcd final : public Etcd {
 public:
  HttpEtcd(std::vector<Target> targets, std::chrono::milliseconds timeout)
      : targets_(std::move(targets)), timeout_(timeout) {}

  Result<int64_t> Grant(int64_t ttl_s) override {
    json::object req{{"TTL", ttl_s}, {"ID", 0}};
    CV_TRY_ASSIGN(auto answer, Call("/v3/lease/grant", req));
    const int64_t id = Int(answer, "ID");
    if (id == 0)
      return Err(ErrorKind::kInternal, "etcd granted no lease: " + json::serialize(answer));
    return id;
  }

  Result<int64_t> KeepAlive(int64_t lease) override {
    json::object req{{"ID", std::to_string(lease)}};
    CV_TRY_ASSIGN(auto answer, Call("/v3/lease/keepalive", req));
    // A stream of {"result":{...}} messages, one per line; this call sends one request.
    const json::value* result = answer.if_contains("result");
    if (!result || !result->is_object()) {
      return Err(ErrorKind::kInternal, "unexpected keepalive answer: " + json::serialize(answer));
    }
    return Int(result->as_object(), "TTL");  // absent (0) once the lease is gone
  }

  Status Revoke(int64_t lease) override {
    json::object req{{"ID", std::to_string(lease)}};
    CV_TRY_ASSIGN(auto answer, Call("/v3/lease/revoke", req));
    (void)answer;
    return {};
  }

  Result<Ranged> Range(const std::string& prefix, int64_t limit) override {
    json::object req{{"key", Base64(prefix)}, {"range_end", Base64(PrefixEnd(prefix))}};
    if (limit > 0) req["limit"] = std::to_string(limit);
    CV_TRY_ASSIGN(auto answer, Call("/v3/kv/range", req));
    Ranged out;
    out.revision = HeaderRevision(answer);
    const json::value* kvs = answer.if_contains("kvs");
    if (!kvs) return out;  // no key
    if (!kvs->is_array()) return Err(ErrorKind::kInternal, "etcd range: kvs is not an array");
    for (const json::value& v : kvs->as_array()) {
      CV_TRY_ASSIGN(KeyValue kv, ParseKv(v));
      out.kvs.push_back(std::move(kv));
    }
    return out;
  }

  Result<int64_t> PutIf(const std::string& key, const std::string& value,
                        int64_t expected_mod_revision, int64_t lease) override {
    json::object compare{{"key", Base64(key)}, {"result", "EQUAL"}};
    if (expected_mod_revision == 0) {
      compare["target"] = "CREATE";
      compare["create_revision"] = "0";
    } else {
      compare["target"] = "MOD";
      compare["mod_revision"] = std::to_string(expected_mod_revision);
    }
    json::object put{{"key", Base64(key)}, {"value", Base64(value)}};
    if (lease != 0) put["lease"] = std::to_string(lease);
    json::object req{{"compare", json::array{compare}},
                     {"success", json::array{json::object{{"request_put", put}}}}};
    CV_TRY_ASSIGN(auto answer, Call("/v3/kv/txn", req));
    const json::value* ok = answer.if_contains("succeeded");
    if (!ok || !ok->is_bool() || !ok->as_bool()) return int64_t{0};
    // The transaction's revision is the one its put wrote.
    const int64_t revision = HeaderRevision(answer);
    if (revision <= 0) return Err(ErrorKind::kInternal, "etcd txn: no revision in the answer");
    return revision;
  }

  Status Delete(const std::string& key) override {
    json::object req{{"key", Base64(key)}};
    CV_TRY(Call("/v3/kv/deleterange", req));
    return {};
  }

  Status Watch(const std::string& prefix, int64_t from, const std::function<void()>& on_open,
               const std::function<void(std::vector<WatchEvent>&&)>& on_events,
               const std::atomic<bool>& stop) override {
    std::string tried;
    const size_t first = preferred_.load();
    for (size_t i = 0; i < targets_.size(); ++i) {
      const size_t at = (first + i) % targets_.size();
      std::string failure;
      auto st = WatchOn(targets_[at], prefix, from, on_open, on_events, stop, &failure);
      if (failure.empty()) return st;  // the stream ran here; the caller starts it again
      tried += (tried.empty() ? "" : "; ") + targets_[at].shown + ": " + failure;
    }
    return Err(ErrorKind::kUnavailable, "etcd unreachable (" + tried + ")");
  }

 private:
  // One watch stream on one endpoint. *failure: why it could not start (try another one);
  // empty once the stream is open, and then the result says how it ended.
  Status WatchOn(const Target& t, const std::string& prefix, int64_t from,
                 const std::function<void()>& on_open,
                 const std::function<void(std::vector<WatchEvent>&&)>& on_events,
                 const std::atomic<bool>& stop, std::string* failure) {
    net::io_context ioc;
    auto endpoints = ResolveWithin(ioc, t.host, t.port, timeout_);
    if (!endpoints) {
      *failure = endpoints.error();
      return {};
    }
    beast::tcp_stream stream(ioc);
    stream.expires_after(timeout_);
    error_code ec =
        RunOne(ioc, [&](auto handler) { stream.async_connect(*endpoints, std::move(handler)); });
    if (ec) {
      *failure = "cannot connect: " + Describe(ec);
      return {};
    }
    // A stream that goes quiet must still end when etcd or the way to it is gone: TCP
    // keepalive notices a dead peer within about 25 s; a member cut off from its leader ends
    // the watch itself (hasleader); progress notifications keep a quiet stream alive.
    {
      const int fd = stream.socket().native_handle();
      const int on = 1, idle = 10, interval = 5, count = 3;
      ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
    }
    json::object create{{"key", Base64(prefix)},
                        {"range_end", Base64(PrefixEnd(prefix))},
                        {"start_revision", std::to_string(from)},
                        {"progress_notify", true}};
    http::request<http::string_body> req{http::verb::post, "/v3/watch", 11};
    req.set(http::field::host, t.host);
    req.set("Grpc-Metadata-hasleader", "true");
    req.set(http::field::content_type, "application/json");
    req.body() = json::serialize(json::object{{"create_request", create}});
    req.prepare_payload();
    stream.expires_after(timeout_);
    ec = RunOne(ioc, [&](auto handler) { http::async_write(stream, req, std::move(handler)); });
    if (ec) {
      *failure = "sending failed: " + Describe(ec);
      return {};
    }
    beast::flat_buffer buffer;
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(boost::none);  // a stream
    stream.expires_after(timeout_);
    ec = RunOne(ioc, [&](auto handler) {
      http::async_read_header(stream, buffer, parser, std::move(handler));
    });
    if (ec) {
      *failure = "reading the answer failed: " + Describe(ec);
      return {};
    }
    if (parser.get().result_int() != 200) {
      *failure = "answered " + std::to_string(parser.get().result_int());
      return {};
    }
    preferred_.store(static_cast<size_t>(&t - targets_.data()));
    stream.expires_never();
    on_open();

    Status result;
    bool ended = false;
    std::string pending;  // bytes of a message not yet complete (messages end with a newline)
    net::steady_timer timer(ioc);  // looks at `stop`
    auto finish = [&](Status st) {
      if (ended) return;
      ended = true;
      result = std::move(st);
      timer.cancel();
      error_code ignored;
      stream.socket().close(ignored);
    };
    // One message: {"result":{"header","events":[{"type"?,"kv"}],"created"?,"canceled"?,
    // "compact_revision"?}} or {"error":{...}}.
    auto message = [&](std::string_view line) {
      error_code pec;
      json::value v = json::parse(line, pec);
      const json::value* r = !pec && v.is_object() ? v.as_object().if_contains("result") : nullptr;
      if (!r || !r->is_object())
        return finish(
            Err(ErrorKind::kUnavailable, "etcd watch: " + std::string(line.substr(0, 200))));
      const json::object& o = r->as_object();
      if (Int(o, "compact_revision") > 0) {
        return finish(Err(ErrorKind::kGone,
                          "etcd watch: revision " + std::to_string(from) + " was compacted"));
      }
      const json::value* canceled = o.if_contains("canceled");
      if (canceled && canceled->is_bool() && canceled->as_bool()) {
        return finish(Err(ErrorKind::kUnavailable, "etcd cancelled the watch"));
      }
      const json::value* events = o.if_contains("events");
      if (!events || !events->is_array()) return;
      std::vector<WatchEvent> out;
      for (const json::value& e : events->as_array()) {
        if (!e.is_object()) continue;
        const json::value* kv = e.as_object().if_contains("kv");
        if (!kv) continue;
        auto parsed = ParseKv(*kv);
        if (!parsed) return finish(tl::unexpected(parsed.error()));
        const json::value* type = e.as_object().if_contains("type");
        WatchEvent we;
        we.deleted = type && type->is_string() && type->as_string() == "DELETE";
        we.kv = std::move(*parsed);
        out.push_back(std::move(we));
      }
      if (!out.empty()) on_events(std::move(out));
    };
    std::vector<char> chunk(64 * 1024);
    std::function<void()> read_more = [&] {
      parser.get().body().data = chunk.data();
      parser.get().body().size = chunk.size();
      http::async_read_some(stream, buffer, parser, [&](error_code rec, size_t) {
        pending.append(chunk.data(), chunk.size() - parser.get().body().size);
        size_t eol;
        while (!ended && (eol = pending.find('\n')) != std::string::npos) {
          std::string line = pending.substr(0, eol);
          pending.erase(0, eol + 1);
          if (!line.empty()) message(line);
        }
        if (rec == http::error::need_buffer) rec = {};
        if (ended) return;
        if (stop.load()) return finish({});
        if (rec || parser.is_done()) {
          return finish(Err(ErrorKind::kUnavailable,
                            "etcd watch stream ended: " + (rec ? Describe(rec) : "by etcd")));
        }
        read_more();
      });
    };
    std::function<void()> check_stop = [&] {
      timer.expires_after(std::chrono::milliseconds(200));
      timer.async_wait([&](error_code tec) {
        if (tec || ended) return;
        if (stop.load()) return finish({});
        check_stop();
      });
    };
    read_more();
    check_stop();
    ioc.restart();
    ioc.run();
    return result;
  }

  // POSTs `body` to each endpoint in turn, the last one that answered well first, until one
  // answers: an endpoint that cannot be reached, answers 5xx or with what is not JSON (a
  // member without a leader, a proxy's page) is skipped. etcd's refusals ({"error","code"} of
  // a request it understood, such as an unknown lease) are errors with its message.
  Result<json::object> Call(std::string_view path, const json::object& body) {
    const std::string text = json::serialize(body);
    std::string tried;
    const size_t first = preferred_.load();
    for (size_t i = 0; i < targets_.size(); ++i) {
      const size_t at = (first + i) % targets_.size();
      std::string answer;
      int status = 0;
      std::string failure = Exchange(targets_[at], path, text, &status, &answer);
      json::value v;
      if (failure.empty()) {
        // A streaming answer (keepalive) is one JSON message per line: the first is ours.
        const size_t eol = answer.find('\n');
        if (eol != std::string::npos) answer.resize(eol);
        error_code ec;
        v = json::parse(answer, ec);
        if (ec || !v.is_object()) {
          failure = "answered " + std::to_string(status) + " without a JSON object";
        } else if (status >= 500) {
          failure = "answered " + std::to_string(status) + ": " + answer.substr(0, 200);
        }
      }
      if (!failure.empty()) {
        tried += (tried.empty() ? "" : "; ") + targets_[at].shown + ": " + failure;
        continue;
      }
      preferred_.store(at);
      json::object& o = v.as_object();
      if (const json::value* e = o.if_contains("error")) {
        const json::value* inner = e->is_object() ? e->as_object().if_contains("message") : e;
        std::string message =
            inner && inner->is_string() ? std::string(inner->as_string()) : json::serialize(*e);
        // gRPC's NOT_FOUND (5), as for an unknown lease.
        const ErrorKind kind = Int(o, "code") == 5 ? ErrorKind::kNotFound : ErrorKind::kInternal;
        return Err(kind, "etcd " + std::string(path) + ": " + message);
      }
      if (status != 200) {
        return Err(ErrorKind::kInternal,
                   "etcd " + std::string(path) + " answered " + std::to_string(status));
      }
      return std::move(o);
    }
    return Err(ErrorKind::kUnavailable, "etcd unreachable (" + tried + ")");
  }

  // One request on a fresh connection, all of it (connect, send, answer) within timeout_.
  // Empty: an answer arrived (any status); else why not.
  std::string Exchange(const Target& t, std::string_view path, const std::string& body, int* status,
                       std::string* answer) {
    net::io_context ioc;
    auto endpoints = ResolveWithin(ioc, t.host, t.port, timeout_);
    if (!endpoints) return endpoints.error();
    beast::tcp_stream stream(ioc);
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    stream.expires_at(deadline);
    error_code ec =
        RunOne(ioc, [&](auto handler) { stream.async_connect(*endpoints, std::move(handler)); });
    if (ec) return "cannot connect: " + Describe(ec);

    http::request<http::string_body> req{http::verb::post, std::string(path), 11};
    req.set(http::field::host, t.host);
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    stream.expires_at(deadline);
    ec = RunOne(ioc, [&](auto handler) { http::async_write(stream, req, std::move(handler)); });
    if (ec) return "sending failed: " + Describe(ec);

    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxAnswerBytes);
    stream.expires_at(deadline);
    ec = RunOne(
        ioc, [&](auto handler) { http::async_read(stream, buffer, parser, std::move(handler)); });
    if (ec) return "reading the answer failed: " + Describe(ec);
    *status = static_cast<int>(parser.get().result_int());
    *answer = std::move(parser.get().body());
    error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    return {};
  }

  const std::vector<Target> targets_;
  const std::chrono::milliseconds timeout_;
  std::atomic<size_t> preferred_{0};
};

}  // namespace

Result<std::unique_ptr<Etcd>> MakeEtcd(const std::vector<std::string>& endpoints,
                                       std::chrono::milliseconds timeout) {
  if (endpoints.empty()) return Err(ErrorKind::kInvalidArgument, "no etcd endpoint");
  std::vector<Target> targets;
  for (const std::string& e : endpoints) {
    auto u = boost::urls::parse_absolute_uri(e);
    if (!u || u->scheme_id() != boost::urls::scheme::http || u->host_address().empty() ||
        !u->has_port() || u->has_userinfo() || u->has_query() || u->has_fragment() ||
        !(u->encoded_path().empty() || u->encoded_path() == "/")) {
      return Err(ErrorKind::kInvalidArgument, "etcd endpoint '" + e + "' is not http://HOST:PORT");
    }
    targets.push_back(Target{std::string(u->host_address()), std::string(u->port()), e});
  }
  return std::unique_ptr<Etcd>(new HttpEtcd(std::move(targets), timeout));
}

}  // namespace cv::cluster
