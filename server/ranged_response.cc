#include "server/ranged_response.h"

#include <boost/beast/http/field.hpp>
#include <boost/beast/http/status.hpp>
#include <string>

namespace cv::server {

namespace http = boost::beast::http;

RangeRequest ParseRangeRequest(std::string_view header, uint64_t size, std::string_view what) {
  RangeRequest out;
  const RangeParse rp = ParseRange(header, size, &out.range);
  if (rp == RangeParse::kMalformed) {
    out.refusal = ErrorReply(400, "invalid_range",
                             "Range must be one of bytes=FIRST-LAST, bytes=FIRST-, bytes=-SUFFIX");
  } else if (rp == RangeParse::kUnsatisfiable) {
    out.refusal = ErrorReply(416, "range_not_satisfiable",
                             "the range starts at or past the end of the " + std::string(what) +
                                 " (" + std::to_string(size) + " bytes)");
    out.refusal->headers.emplace_back("Content-Range", "bytes */" + std::to_string(size));
  }
  out.partial = rp == RangeParse::kPartial;
  if (!out.partial) out.range = ByteRange{0, size};
  return out;
}

http::response<http::buffer_body> RangedResponse(unsigned version, bool partial, ByteRange range,
                                                 uint64_t size, bool keep) {
  http::response<http::buffer_body> res{partial ? http::status::partial_content : http::status::ok,
                                        version};
  res.set(http::field::server, "chunkvault");
  res.set(http::field::content_type, "application/octet-stream");
  res.set(http::field::accept_ranges, "bytes");
  if (partial) {
    res.set(http::field::content_range, "bytes " + std::to_string(range.offset) + "-" +
                                            std::to_string(range.offset + range.length - 1) +
                                            "/" + std::to_string(size));
  }
  res.content_length(range.length);
  res.keep_alive(keep);
  res.body().data = nullptr;
  res.body().more = true;
  return res;
}

}  // namespace cv::server
