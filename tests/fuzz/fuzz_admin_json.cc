// fuzz_admin_json: what an admin client sends. Input: selector byte, then
//   0: a request body -> JsonBody::Parse, OnlyKnown and every typed getter on the admin keys;
//   1: a query string -> Query::Parse with the list routes' parameters, Get, Id, Limit;
//   2: "duration \n time" -> ParseDuration, ParseRfc3339, FormatRfc3339, ValidName;
//   3: auth byte, then "METHOD \n target \n body" -> AdminApi::Handle on a store in a temp
//      directory (operator key, no key, or the input's bytes as the key).
// Properties: no crash or sanitizer report; getters only succeed inside their documented
// ranges; times round-trip through FormatRfc3339; every Handle answer is 2xx or 4xx (never
// 5xx on a healthy store) with a body that is one JSON object, an "error" for 4xx.
//
// Mode 3 keeps its store between inputs (accounts, devices and jobs that earlier inputs made
// let later ones reach deeper), so a crash there may need the inputs before it: rerun with
// the whole corpus. POST /index/backup is skipped: it would create directories anywhere.
#include <stdlib.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

#include "admin/admin.h"
#include "admin/json_util.h"
#include "common/common.h"
#include "storage/storage.h"
#include "tests/fuzz/fuzz_input.h"

namespace admin = cv::admin;
using cv::fuzz::FuzzInput;

namespace {

constexpr std::string_view kKeys[] = {
    "name",       "bytes",      "expires_at", "status",   "partner",     "plan_quota_bytes",
    "device_limit", "trial_days", "append_only", "kind",   "path",       "include_failed_disks"};

void CheckBody(std::string_view body) {
  auto parsed = admin::JsonBody::Parse(body);
  if (!parsed) {
    CV_FUZZ_CHECK(parsed.error().status == 400 && !parsed.error().code.empty());
    return;
  }
  (void)parsed->OnlyKnown({"name", "bytes", "expires_at"});
  for (std::string_view k : kKeys) {
    (void)parsed->String(k);
    (void)parsed->Bool(k);
    if (auto u = parsed->Unsigned(k, 1, admin::kMaxBytes); u && *u) {
      CV_FUZZ_CHECK(**u >= 1 && **u <= admin::kMaxBytes);
    }
    (void)parsed->Unsigned(k, 0, UINT64_MAX);
    if (auto t = parsed->Time(k, true); t && *t && **t != 0) {
      CV_FUZZ_CHECK(admin::ParseRfc3339(admin::FormatRfc3339(**t)) == **t);
    }
    (void)parsed->Id(k);
    auto req = admin::JsonBody::Required(parsed->String(k), k);
    CV_FUZZ_CHECK(req.has_value() || !req.error().code.empty());
  }
}

void CheckQuery(std::string_view query) {
  auto q = admin::Query::Parse(query, {"cursor", "limit", "partner", "status", "account",
                                       "stale_for", "grace", "state"});
  if (!q) {
    CV_FUZZ_CHECK(q.error().status >= 400 && q.error().status < 500);
    return;
  }
  for (auto k : {"cursor", "partner", "status", "grace"}) (void)q->Get(k);
  (void)q->Id("account");
  if (auto limit = q->Limit()) CV_FUZZ_CHECK(*limit >= 1 && *limit <= admin::kMaxPageLimit);
}

void CheckTimes(std::string_view duration, std::string_view time) {
  if (auto d = admin::ParseDuration(duration)) {
    CV_FUZZ_CHECK(*d >= 0 && *d <= int64_t{100} * 366 * 86400 * 1000000000);
  }
  if (auto t = admin::ParseRfc3339(time)) {
    const std::string formatted = admin::FormatRfc3339(*t);
    CV_FUZZ_CHECK(admin::ParseRfc3339(formatted) == *t);
  }
  (void)admin::ValidName(time);
}

// One store for the whole run, removed at exit.
struct Node {
  std::string dir;
  std::unique_ptr<cv::storage::ObjectStore> store;
  std::unique_ptr<admin::AdminApi> api;
  std::string operator_key;

  Node() {
    cv::SetLogLevel(cv::LogLevel::kError);
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/fuzz_admin.XXXXXX";
    CV_FUZZ_CHECK(mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
    cv::storage::StoreOptions o;
    for (int i = 0; i < 3; ++i) o.disks.push_back(dir + "/d" + std::to_string(i));
    o.index_dir = dir + "/index";
    o.k = 2;
    o.m = 1;
    o.extent_bytes = 1 << 20;
    o.index_initial_map_bytes = 64 << 20;
    o.try_direct = false;
    auto s = cv::storage::ObjectStore::Open(o);
    CV_FUZZ_CHECK(s.has_value());
    store = std::move(*s);
    admin::Options ao;
    ao.key_file = dir + "/admin.key";
    ao.run_jobs = false;
    ao.compact_interval_ns = 0;
    auto a = admin::AdminApi::Open(*store, ao);
    CV_FUZZ_CHECK(a.has_value());
    api = std::move(*a);
    std::ifstream(ao.key_file) >> operator_key;
  }
  ~Node() {
    api.reset();
    store.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

void CheckHandle(FuzzInput& in) {
  static Node node;
  const uint8_t auth = in.Byte();
  admin::Request req;
  req.method = std::string(in.Until('\n'));
  req.target = std::string(in.Until('\n'));
  req.body = std::string(in.Rest());
  if (req.target.find("backup") != std::string::npos) return;
  switch (auth % 4) {
    case 0:
    case 1:
      req.authorization = "Bearer " + node.operator_key;
      break;
    case 2:
      break;
    case 3:
      req.authorization = "Bearer " + req.body.substr(0, 64);
      break;
  }
  const admin::Response r = node.api->Handle(req);
  CV_FUZZ_CHECK((r.status >= 200 && r.status < 300) || (r.status >= 400 && r.status < 500));
  boost::json::error_code ec;
  boost::json::value v = boost::json::parse(r.body, ec);
  if (ec || !v.is_object()) {
    std::fprintf(stderr, "status %d, body not a JSON object: %s\n", r.status, r.body.c_str());
  }
  CV_FUZZ_CHECK(!ec && v.is_object());
  if (r.status >= 400) CV_FUZZ_CHECK(v.as_object().contains("error"));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  switch (in.Byte() % 4) {
    case 0:
      CheckBody(in.Rest());
      break;
    case 1:
      CheckQuery(in.Rest());
      break;
    case 2: {
      const std::string_view duration = in.Until('\n');
      CheckTimes(duration, in.Rest());
      break;
    }
    case 3:
      CheckHandle(in);
      break;
  }
  return 0;
}
