// server/ranged_response: the Range handling of a GET, shared by Session::Download
// (download.cc) and Session::SendFile (file_send.cc): the Range header read against the size of
// what is asked for, and the head of the 200 or 206 answer whose body follows in pieces.
#pragma once

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/message.hpp>
#include <cstdint>
#include <optional>
#include <string_view>

#include "server/agent_api.h"

namespace cv::server {

// A GET's Range header against `size` bytes of `what` ("object", "file").
struct RangeRequest {
  std::optional<Reply> refusal;  // 400 or 416: answer this instead
  bool partial = false;          // 206 with `range`, else 200 with the whole
  ByteRange range;
};
RangeRequest ParseRangeRequest(std::string_view header, uint64_t size, std::string_view what);

// The head of a 200 (all `size` bytes) or 206 (`range` of them) answer whose body is written
// afterwards in pieces (WriteBodyPiece).
boost::beast::http::response<boost::beast::http::buffer_body> RangedResponse(
    unsigned version, bool partial, ByteRange range, uint64_t size, bool keep);

}  // namespace cv::server
