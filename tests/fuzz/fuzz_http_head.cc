// fuzz_http_head: an agent request head as the server reads it. The input's first byte picks:
//   even: the rest is raw bytes on the wire, parsed by Beast's request parser with the
//         server's header limits (common/config.h); a complete head is then routed as
//         agent_routes.cc does (ParseAgentTarget, ParseAuthorization, Accept, Range,
//         ObjectKeyFor);
//   odd:  the rest is "target \n authorization": the two parsers on bytes Beast would refuse.
// Properties: no crash or sanitizer report; a routed target re-assembles into the path it
// came from with only allowed bytes; credentials are what the header says.
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>

#include "server/agent_api.h"
#include "server/auth.h"
#include "common/config.h"
#include "tests/fuzz/fuzz_input.h"

namespace http = boost::beast::http;
using cv::fuzz::FuzzInput;
using cv::server::AgentTarget;
using cv::server::Credentials;

namespace {

bool PathByteOk(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}
bool SegmentOk(std::string_view s) {
  if (s == "." || s == "..") return false;
  for (char c : s) {
    if (!PathByteOk(c)) return false;
  }
  return true;
}
bool IEqualsPrefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  }
  return true;
}

void CheckTarget(std::string_view target) {
  const AgentTarget t = cv::server::ParseAgentTarget(target);
  using K = AgentTarget::Kind;
  const size_t q = target.find('?');
  const std::string_view path = target.substr(0, q);
  if (q != std::string_view::npos && t.kind != K::kNone) {
    CV_FUZZ_CHECK(t.query == target.substr(q + 1));
  }
  switch (t.kind) {
    case K::kNone:
      CV_FUZZ_CHECK(target.empty() || target[0] != '/' || path.size() == 1 || path[1] == '/');
      return;
    case K::kInvalidPath:
      CV_FUZZ_CHECK(!t.error.empty());
      return;
    case K::kNoRoute:
      CV_FUZZ_CHECK(SegmentOk(t.device) && !t.device.empty());
      return;
    case K::kRepo:
      CV_FUZZ_CHECK(path == "/" + t.device || path == "/" + t.device + "/");
      break;
    case K::kConfig:
      CV_FUZZ_CHECK(path == "/" + t.device + "/config");
      break;
    case K::kExists:
      CV_FUZZ_CHECK(path == "/" + t.device + "/v1/exists");
      break;
    case K::kUsage:
      CV_FUZZ_CHECK(path == "/" + t.device + "/v1/usage");
      break;
    case K::kList:
      CV_FUZZ_CHECK(path == "/" + t.device + "/" + t.type + "/");
      CV_FUZZ_CHECK(!t.type.empty() && SegmentOk(t.type));
      break;
    case K::kObject: {
      CV_FUZZ_CHECK(path == "/" + t.device + "/" + t.type + "/" + t.name);
      CV_FUZZ_CHECK(!t.type.empty() && SegmentOk(t.type) && SegmentOk(t.name));
      // Routing an object: the key must be exactly what storage accepts.
      auto key = cv::server::ObjectKeyFor(cv::index::Id{}, t.type, t.name);
      if (key) {
        CV_FUZZ_CHECK(key->name == t.name);
        CV_FUZZ_CHECK(cv::index::ObjectTypeName(key->type) == t.type);
        CV_FUZZ_CHECK(cv::storage::ValidateName(key->type, key->name).has_value());
      } else {
        CV_FUZZ_CHECK(key.error().kind == cv::ErrorKind::kInvalidArgument);
      }
      break;
    }
  }
  CV_FUZZ_CHECK(!t.device.empty() && SegmentOk(t.device));
}

void CheckAuthorization(std::string_view header) {
  const Credentials c = cv::server::ParseAuthorization(header);
  using S = Credentials::Scheme;
  switch (c.scheme) {
    case S::kNone:
      CV_FUZZ_CHECK(header.empty());
      break;
    case S::kMalformed:
      CV_FUZZ_CHECK(!header.empty() && c.user.empty() && c.secret.empty());
      break;
    case S::kBasic:
      CV_FUZZ_CHECK(IEqualsPrefix(header, "basic "));
      CV_FUZZ_CHECK(c.user.find(':') == std::string::npos);
      // base64 yields 3 bytes per 4 characters, less padding.
      CV_FUZZ_CHECK(c.user.size() + 1 + c.secret.size() <= (header.size() - 6) / 4 * 3);
      break;
    case S::kBearer:
      CV_FUZZ_CHECK(IEqualsPrefix(header, "bearer "));
      CV_FUZZ_CHECK(!c.secret.empty() && c.secret.size() <= 1024);
      CV_FUZZ_CHECK(header.substr(7) == c.secret);
      break;
  }
}

void CheckRange(std::string_view header, uint64_t size) {
  cv::server::ByteRange r;
  if (cv::server::ParseRange(header, size, &r) == cv::server::RangeParse::kPartial) {
    CV_FUZZ_CHECK(r.length > 0 && r.offset < size && r.length <= size - r.offset);
  }
}

void ParseWire(std::string_view wire) {
  static const cv::Config cfg;
  http::request_parser<http::buffer_body> parser;
  parser.header_limit(cfg.header_limit_bytes);
  parser.body_limit(cfg.max_object_bytes);
  parser.eager(false);
  boost::system::error_code ec;
  parser.put(boost::asio::buffer(wire.data(), wire.size()), ec);
  if (ec || !parser.is_header_done()) return;
  const auto& req = parser.get();
  const size_t fields = static_cast<size_t>(std::distance(req.begin(), req.end()));
  if (fields > cfg.max_header_fields) return;  // 431 before routing
  CheckTarget(req.target());
  CheckAuthorization(req[http::field::authorization]);
  (void)cv::server::WantsV2(req[http::field::accept]);
  CheckRange(req[http::field::range], parser.content_length().value_or(12345));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  if (in.Byte() % 2 == 0) {
    ParseWire(in.Rest());
  } else {
    CheckTarget(in.Until('\n'));
    CheckAuthorization(in.Rest());
  }
  return 0;
}
