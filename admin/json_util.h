// admin/json_util: strict reading of admin requests (internal to admin/). A request body is
// one JSON object whose every key the route knows and whose every value has the documented
// type and range; a query string has only the parameters the route knows, each once. Every
// refusal is an ApiError that names the field, so the portal can show it next to the input.
//
// Times are RFC 3339 in UTC ("2025-01-31T12:00:00Z", optional fraction, "Z" or "+00:00"),
// from 1970 to 2262 (nanoseconds in 64 bits); durations are "<n>d", "<n>h", "<n>m", "<n>s"
// and sums ("1d12h").
//
// Thread-safety: pure functions and value types.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tl/expected.hpp>

#include "index/index.h"

namespace cv::admin {

// A refusal to send back as {"error":{"code","message"[,"field"][,details...]}}.
struct ApiError {
  int status = 400;
  std::string code;
  std::string message;
  std::string field;  // empty: not about one field
  // More members of the "error" object: the numbers a client acts on (needed_bytes and
  // free_bytes of 507 insufficient_storage, the job of 409 already_running).
  boost::json::object details{};
};
template <class T>
using ApiResult = tl::expected<T, ApiError>;

tl::unexpected<ApiError> Refuse(int status, std::string code, std::string message,
                                std::string field = {});
// 400 invalid_field "field 'f' <what>".
tl::unexpected<ApiError> BadField(std::string_view field, std::string_view what);

inline constexpr uint64_t kMaxBytes = uint64_t{1} << 60;  // 1 EiB: larger sizes are typos
inline constexpr uint32_t kMaxDeviceLimit = 100000;
inline constexpr int64_t kMaxTrialDays = 3650;
inline constexpr size_t kDefaultPageLimit = 100;
inline constexpr size_t kMaxPageLimit = 1000;

// "2025-01-31T12:00:00Z" -> ns since the epoch; nullopt unless valid RFC 3339 in UTC and
// representable.
std::optional<int64_t> ParseRfc3339(std::string_view text);
// ns since the epoch -> RFC 3339 UTC with as many fraction digits as needed (none, 3, 6, 9).
std::string FormatRfc3339(int64_t ns);
// "72h" -> ns; at most 100 years; nullopt on anything else (zero is allowed).
std::optional<int64_t> ParseDuration(std::string_view text);
// 1-255 bytes, no control characters (names of partners and devices).
bool ValidName(std::string_view name);

// A request body: exactly one JSON object. The typed getters return nullopt for an absent
// field and an error naming the field for a present one of the wrong type or range.
class JsonBody {
 public:
  // An empty body reads as {} (POSTs that take no fields may send nothing). Duplicate keys,
  // anything but an object, and invalid JSON are refused.
  static ApiResult<JsonBody> Parse(std::string_view body);

  // Refuses the first key not in `known` (400 unknown_field).
  ApiResult<void> OnlyKnown(std::initializer_list<std::string_view> known) const;
  bool Has(std::string_view key) const { return obj_.contains(key); }
  bool Empty() const { return obj_.empty(); }

  ApiResult<std::optional<std::string>> String(std::string_view key) const;
  ApiResult<std::optional<bool>> Bool(std::string_view key) const;
  // A JSON integer in [min, max] (no fraction, no exponent).
  ApiResult<std::optional<uint64_t>> Unsigned(std::string_view key, uint64_t min,
                                              uint64_t max) const;
  // An RFC 3339 UTC string, or null (returned as 0 = never) when `null_ok`.
  ApiResult<std::optional<int64_t>> Time(std::string_view key, bool null_ok) const;
  ApiResult<std::optional<index::Id>> Id(std::string_view key) const;
  // A required field: 400 missing_field when absent.
  template <class T>
  static ApiResult<T> Required(ApiResult<std::optional<T>> got, std::string_view key);

 private:
  explicit JsonBody(boost::json::object o) : obj_(std::move(o)) {}
  boost::json::object obj_;
};

// A query string (after '?'), percent-decoded; each key at most once and known to the route.
class Query {
 public:
  static ApiResult<Query> Parse(std::string_view query,
                                std::initializer_list<std::string_view> known);
  std::optional<std::string> Get(std::string_view key) const;
  ApiResult<std::optional<index::Id>> Id(std::string_view key) const;
  // `limit`: kDefaultPageLimit when absent, else 1..kMaxPageLimit.
  ApiResult<size_t> Limit() const;

 private:
  std::map<std::string, std::string, std::less<>> params_;
};

template <class T>
ApiResult<T> JsonBody::Required(ApiResult<std::optional<T>> got, std::string_view key) {
  CV_TRY(got);
  if (!*got) {
    return Refuse(400, "missing_field", "field '" + std::string(key) + "' is required",
                  std::string(key));
  }
  return std::move(**got);
}

}  // namespace cv::admin
