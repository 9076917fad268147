// server/session_internal: what the files of class Session share (internal to server/; which
// file holds which part is listed in server/session.h): one request's Exchange and a few
// one-line helpers.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "server/agent_api.h"
#include "server/session.h"

namespace cv::server {

struct Session::Exchange {
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  std::string method = "-";
  std::string route = "unknown";
  std::string device;  // hex, once authenticated
  int status = 0;      // 0 = no answer was sent (client gone or timed out)
  uint64_t in = 0, out = 0;
  bool head = false;
};

namespace internal {

// Every asynchronous step reports errors as values; nothing throws across a handler.
constexpr auto kTuple = boost::asio::as_tuple(boost::asio::use_awaitable);
// Body bytes moved per step out (downloads, files). Uploads read into the Writer's own buffers.
constexpr size_t kChunk = 256 * 1024;

inline std::chrono::seconds Seconds(int s) { return std::chrono::seconds(s); }

inline Reply Empty200() {
  Reply r;
  r.status = 200;
  r.content_type.clear();
  return r;
}

inline Reply MethodNotAllowed(std::string_view allow) {
  Reply r = ErrorReply(405, "method_not_allowed", "allowed: " + std::string(allow));
  r.headers.emplace_back("Allow", std::string(allow));
  return r;
}

}  // namespace internal
}  // namespace cv::server
