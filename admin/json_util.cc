#include "admin/json_util.h"

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>
#include <boost/url/parse_query.hpp>
#include <charconv>
#include <limits>
#include <set>
#include <vector>

namespace cv::admin {

namespace json = boost::json;

tl::unexpected<ApiError> Refuse(int status, std::string code, std::string message,
                                std::string field) {
  return tl::unexpected(ApiError{status, std::move(code), std::move(message), std::move(field)});
}

tl::unexpected<ApiError> BadField(std::string_view field, std::string_view what) {
  return Refuse(400, "invalid_field", "field '" + std::string(field) + "' " + std::string(what),
                std::string(field));
}

// ---- time ----

namespace {

constexpr int64_t kNsPerSec = 1'000'000'000;

bool Digits(std::string_view s, size_t at, size_t n, int* out) {
  if (at + n > s.size()) return false;
  int v = 0;
  for (size_t i = at; i < at + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

bool LeapYear(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int DaysInMonth(int y, int m) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && LeapYear(y) ? 29 : kDays[m - 1];
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
int64_t DaysFromCivil(int y, int m, int d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

void CivilFromDays(int64_t z, int* y, int* m, int* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  *d = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  *m = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  *y = static_cast<int>(yoe + era * 400 + (*m <= 2));
}

}  // namespace

std::optional<int64_t> ParseRfc3339(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|+00:00)
  int y, mo, d, h, mi, sec;
  if (s.size() < 20 || s.size() > 40) return std::nullopt;
  if (!Digits(s, 0, 4, &y) || s[4] != '-' || !Digits(s, 5, 2, &mo) || s[7] != '-' ||
      !Digits(s, 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !Digits(s, 11, 2, &h) ||
      s[13] != ':' || !Digits(s, 14, 2, &mi) || s[16] != ':' || !Digits(s, 17, 2, &sec)) {
    return std::nullopt;
  }
  if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > DaysInMonth(y, mo) || h > 23 ||
      mi > 59 || sec > 59) {
    return std::nullopt;
  }
  size_t i = 19;
  int64_t frac = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    size_t digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (digits < 9) frac = frac * 10 + (s[i] - '0');
      ++digits;
      ++i;
    }
    if (digits == 0 || digits > 9) return std::nullopt;
    for (size_t k = digits; k < 9; ++k) frac *= 10;
  }
  std::string_view zone = s.substr(i);
  if (zone != "Z" && zone != "z" && zone != "+00:00") return std::nullopt;
  const int64_t secs = ((DaysFromCivil(y, mo, d) * 24 + h) * 60 + mi) * 60 + sec;
  // Nanoseconds in an int64 end in April 2262.
  if (secs > (std::numeric_limits<int64_t>::max() - frac) / kNsPerSec) return std::nullopt;
  return secs * kNsPerSec + frac;
}

std::string FormatRfc3339(int64_t ns) {
  int64_t secs = ns / kNsPerSec, frac = ns % kNsPerSec;
  if (frac < 0) {
    frac += kNsPerSec;
    secs -= 1;
  }
  int64_t days = secs / 86400, rem = secs % 86400;
  if (rem < 0) {
    rem += 86400;
    days -= 1;
  }
  int y, m, d;
  CivilFromDays(days, &y, &m, &d);
  char buf[64];
  int n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d", y, m, d,
                        static_cast<int>(rem / 3600), static_cast<int>(rem / 60 % 60),
                        static_cast<int>(rem % 60));
  std::string out(buf, static_cast<size_t>(n));
  if (frac != 0) {
    char f[16];
    if (frac % 1'000'000 == 0) {
      std::snprintf(f, sizeof f, ".%03d", static_cast<int>(frac / 1'000'000));
    } else if (frac % 1000 == 0) {
      std::snprintf(f, sizeof f, ".%06d", static_cast<int>(frac / 1000));
    } else {
      std::snprintf(f, sizeof f, ".%09d", static_cast<int>(frac));
    }
    out += f;
  }
  return out + "Z";
}

std::optional<int64_t> ParseDuration(std::string_view s) {
  constexpr int64_t kMax = int64_t{100} * 366 * 86400 * kNsPerSec;
  if (s.empty() || s.size() > 32) return std::nullopt;
  int64_t total = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    if (i == start || i == s.size() || i - start > 12) return std::nullopt;
    int64_t n = 0;
    std::from_chars(s.data() + start, s.data() + i, n);
    int64_t unit;
    switch (s[i]) {
      case 'd':
        unit = 86400 * kNsPerSec;
        break;
      case 'h':
        unit = 3600 * kNsPerSec;
        break;
      case 'm':
        unit = 60 * kNsPerSec;
        break;
      case 's':
        unit = kNsPerSec;
        break;
      default:
        return std::nullopt;
    }
    ++i;
    if (n > kMax / unit) return std::nullopt;
    total += n * unit;
    if (total > kMax) return std::nullopt;
  }
  return total;
}

bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

// ---- JSON bodies ----

namespace {

// Finds duplicate keys in any object of a document (json::parse keeps one of them silently,
// which would let `{"bytes":1,"bytes":2}` mean whatever the parser picks).
struct DuplicateKeyFinder {
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);

  std::vector<std::set<std::string, std::less<>>> open;
  std::string key;
  std::optional<std::string> duplicate;

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }
  bool on_array_begin(json::error_code&) { return true; }
  bool on_array_end(std::size_t, json::error_code&) { return true; }
  bool on_object_begin(json::error_code&) {
    open.emplace_back();
    return true;
  }
  bool on_object_end(std::size_t, json::error_code&) {
    open.pop_back();
    return true;
  }
  bool on_string_part(json::string_view, std::size_t, json::error_code&) { return true; }
  bool on_string(json::string_view, std::size_t, json::error_code&) { return true; }
  bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
    key.append(s.data(), s.size());
    return true;
  }
  bool on_key(json::string_view s, std::size_t, json::error_code& ec) {
    key.append(s.data(), s.size());
    if (!open.back().insert(key).second && !duplicate) duplicate = key;
    key.clear();
    if (duplicate) ec = json::error::syntax;  // stop: the caller reports the duplicate
    return !duplicate;
  }
  bool on_number_part(json::string_view, json::error_code&) { return true; }
  bool on_int64(int64_t, json::string_view, json::error_code&) { return true; }
  bool on_uint64(uint64_t, json::string_view, json::error_code&) { return true; }
  bool on_double(double, json::string_view, json::error_code&) { return true; }
  bool on_bool(bool, json::error_code&) { return true; }
  bool on_null(json::error_code&) { return true; }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }
};

std::optional<std::string> FindDuplicateKey(std::string_view body) {
  json::basic_parser<DuplicateKeyFinder> p(json::parse_options{});
  json::error_code ec;
  p.write_some(false, body.data(), body.size(), ec);
  return p.handler().duplicate;
}

std::string Quoted(std::string_view key) { return "field '" + std::string(key) + "'"; }

}  // namespace

ApiResult<JsonBody> JsonBody::Parse(std::string_view body) {
  if (body.empty()) return JsonBody(json::object{});
  json::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec) return Refuse(400, "invalid_json", "body is not valid JSON: " + ec.message());
  if (!v.is_object()) return Refuse(400, "invalid_json", "body must be a JSON object");
  if (auto dup = FindDuplicateKey(body)) {
    return Refuse(400, "duplicate_field", Quoted(*dup) + " appears more than once", *dup);
  }
  return JsonBody(std::move(v.as_object()));
}

ApiResult<void> JsonBody::OnlyKnown(std::initializer_list<std::string_view> known) const {
  for (const auto& kv : obj_) {
    bool ok = false;
    for (auto k : known) ok = ok || kv.key() == k;
    if (!ok) {
      return Refuse(400, "unknown_field", "unknown " + Quoted(kv.key()), std::string(kv.key()));
    }
  }
  return {};
}

ApiResult<std::optional<std::string>> JsonBody::String(std::string_view key) const {
  const json::value* v = obj_.if_contains(key);
  if (!v) return std::nullopt;
  if (!v->is_string()) return BadField(key, "must be a string");
  return std::string(v->as_string());
}

ApiResult<std::optional<bool>> JsonBody::Bool(std::string_view key) const {
  const json::value* v = obj_.if_contains(key);
  if (!v) return std::nullopt;
  if (!v->is_bool()) return BadField(key, "must be true or false");
  return v->as_bool();
}

ApiResult<std::optional<uint64_t>> JsonBody::Unsigned(std::string_view key, uint64_t min,
                                                      uint64_t max) const {
  const json::value* v = obj_.if_contains(key);
  if (!v) return std::nullopt;
  const std::string range =
      "must be an integer from " + std::to_string(min) + " to " + std::to_string(max);
  uint64_t n;
  if (v->is_int64()) {
    if (v->as_int64() < 0) return BadField(key, "must not be negative (" + range + ")");
    n = static_cast<uint64_t>(v->as_int64());
  } else if (v->is_uint64()) {
    n = v->as_uint64();
  } else {
    return BadField(key, range);
  }
  if (n < min || n > max) return BadField(key, range);
  return n;
}

ApiResult<std::optional<int64_t>> JsonBody::Time(std::string_view key, bool null_ok) const {
  const json::value* v = obj_.if_contains(key);
  if (!v) return std::nullopt;
  if (v->is_null() && null_ok) return int64_t{0};
  const char* what = null_ok ? "must be an RFC 3339 UTC time such as \"2030-01-31T00:00:00Z\", "
                               "or null"
                             : "must be an RFC 3339 UTC time such as \"2030-01-31T00:00:00Z\"";
  if (!v->is_string()) return BadField(key, what);
  auto t = ParseRfc3339(v->as_string());
  if (!t) return BadField(key, what);
  return *t;
}

ApiResult<std::optional<index::Id>> JsonBody::Id(std::string_view key) const {
  const json::value* v = obj_.if_contains(key);
  if (!v) return std::nullopt;
  std::optional<index::Id> id;
  if (v->is_string()) id = index::IdFromHex(v->as_string());
  if (!id) return BadField(key, "must be an id (32 lowercase hex digits)");
  return *id;
}

// ---- query strings ----

ApiResult<Query> Query::Parse(std::string_view query,
                              std::initializer_list<std::string_view> known) {
  // Boost.URL splits and percent-decodes ('+' is a space, as forms send it); the strict rules
  // (known keys only, each once) are ours.
  // Boost 1.81's parse_query measures its input again with strlen (boostorg/url#757): it must
  // be given a string that ends where the query ends.
  const std::string terminated(query);
  auto params = boost::urls::parse_query(terminated);
  if (!params) return Refuse(400, "invalid_query", "malformed percent-encoding");
  boost::urls::encoding_opts form;
  form.space_as_plus = true;
  Query q;
  for (const auto& param : *params) {
    if (param.key.empty() && !param.has_value) continue;  // "a=1&&b=2", a trailing '&'
    std::string key = param.key.decode(form);
    std::string value = param.has_value ? param.value.decode(form) : std::string();
    bool ok = false;
    for (auto k : known) ok = ok || key == k;
    if (!ok) {
      std::string shown = key.substr(0, 64);
      return Refuse(400, "unknown_parameter", "unknown query parameter '" + shown + "'", shown);
    }
    if (!q.params_.emplace(key, std::move(value)).second) {
      return Refuse(400, "invalid_query", "query parameter '" + key + "' appears more than once",
                    key);
    }
  }
  return q;
}

std::optional<std::string> Query::Get(std::string_view key) const {
  auto it = params_.find(key);
  if (it == params_.end()) return std::nullopt;
  return it->second;
}

ApiResult<std::optional<index::Id>> Query::Id(std::string_view key) const {
  auto v = Get(key);
  if (!v) return std::nullopt;
  auto id = index::IdFromHex(*v);
  if (!id) {
    return Refuse(400, "invalid_parameter",
                  "query parameter '" + std::string(key) +
                      "' must be an id (32 lowercase hex "
                      "digits)",
                  std::string(key));
  }
  return *id;
}

ApiResult<size_t> Query::Limit() const {
  auto v = Get("limit");
  if (!v) return kDefaultPageLimit;
  size_t n = 0;
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (v->empty() || ec != std::errc() || p != v->data() + v->size() || n < 1 || n > kMaxPageLimit) {
    return Refuse(
        400, "invalid_parameter",
        "query parameter 'limit' must be an integer from 1 to " + std::to_string(kMaxPageLimit),
        "limit");
  }
  return n;
}

}  // namespace cv::admin
