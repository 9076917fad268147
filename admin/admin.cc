#include "admin/admin.h"

#include <openssl/crypto.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <cerrno>
#include <optional>

#include "admin/internal.h"
#include "admin/jobs/jobs.h"
#include "index/index.h"

namespace cv::admin {

namespace json = boost::json;

// ---- shared helpers ----

std::string NewToken() { return RandomHex(32); }

Sha256Digest HashToken(std::string_view token) { return Sha256::Of(token); }

bool DigestEqual(const Sha256Digest& a, const Sha256Digest& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

int HttpStatus(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument:
      return 400;
    case ErrorKind::kUnauthenticated:
      return 401;
    case ErrorKind::kPermissionDenied:
      return 403;
    case ErrorKind::kNotFound:
      return 404;
    case ErrorKind::kConflict:
      return 409;
    case ErrorKind::kGone:
      return 410;
    case ErrorKind::kTooLarge:
      return 413;
    case ErrorKind::kNoSpace:
      return 507;
    case ErrorKind::kQuotaExceeded:
      return 507;
    case ErrorKind::kUnavailable:
      return 503;
    case ErrorKind::kTimeout:
      return 503;  // a server-side wait ran out, not the client's fault
    case ErrorKind::kCorruption:
      return 500;
    case ErrorKind::kIOError:
      return 500;
    case ErrorKind::kInternal:
      return 500;
  }
  return 500;
}

json::object internal::ErrorObject(std::string_view code, std::string_view message,
                                   std::string_view field) {
  json::object err;
  err["code"] = ValidUtf8(code);
  err["message"] = ValidUtf8(message);
  if (!field.empty()) err["field"] = ValidUtf8(field);
  return err;
}

std::string ErrorJson(std::string_view code, std::string_view message, std::string_view field) {
  json::object root;
  root["error"] = internal::ErrorObject(code, message, field);
  return json::serialize(root);
}

std::string ErrorJson(const Error& error) {
  if (HttpStatus(error.kind) >= 500) {
    // Server-side details (paths, errno) go to the log, not to clients; a public message
    // was written for them.
    return ErrorJson(KindName(error.kind), error.public_message.empty()
                                               ? "the node could not complete the request"
                                               : error.public_message);
  }
  return ErrorJson(KindName(error.kind), error.context);
}

namespace {

using internal::Call;
using internal::Caller;

constexpr std::string_view kOperatorKeyMeta = "admin/operator_key_sha256";
// The operator key's id in audit records; a new operator key gets a new id.
constexpr std::string_view kOperatorKeyIdMeta = "admin/operator_key_id";

// The segments of a route pattern ("accounts/{account}"): our own constants, not URLs (braces
// are not path characters); requests' paths are split by Boost.URL in Handle.
std::vector<std::string_view> PatternSegments(std::string_view pattern) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i <= pattern.size()) {
    size_t j = pattern.find('/', i);
    if (j == std::string_view::npos) j = pattern.size();
    parts.push_back(pattern.substr(i, j - i));
    i = j + 1;
  }
  return parts;
}

// The route table (documented in admin/API.md). A path segment in braces is an id that the
// handler finds in the Call member of that name.
struct Route {
  std::string_view method;
  std::string_view path;
  bool operator_only;
  Response (*handler)(Call&);
};
constexpr Route kRoutes[] = {
    {"POST", "partners", true, internal::CreatePartner},
    {"GET", "partners", true, internal::ListPartners},
    {"GET", "partners/{partner}", true, internal::GetPartner},
    {"POST", "partners/{partner}/keys", true, internal::CreatePartnerKey},
    {"GET", "partners/{partner}/keys/{key}", true, internal::GetPartnerKey},
    {"DELETE", "partners/{partner}/keys/{key}", true, internal::RevokePartnerKey},
    {"POST", "accounts", false, internal::CreateAccount},
    {"GET", "accounts", false, internal::ListAccounts},
    {"GET", "accounts/{account}", false, internal::GetAccount},
    {"PATCH", "accounts/{account}", false, internal::PatchAccount},
    {"DELETE", "accounts/{account}", true, internal::DeleteAccount},
    {"POST", "accounts/{account}/release", false, internal::ReleaseAccount},
    {"POST", "accounts/{account}/addons", false, internal::CreateAddOn},
    {"GET", "accounts/{account}/addons", false, internal::ListAddOns},
    {"DELETE", "accounts/{account}/addons/{addon}", false, internal::DeleteAddOn},
    {"GET", "accounts/{account}/usage", false, internal::GetUsage},
    {"POST", "accounts/{account}/devices", false, internal::CreateDevice},
    {"GET", "accounts/{account}/devices", false, internal::ListAccountDevices},
    {"GET", "accounts/{account}/devices/{device}", false, internal::GetDevice},
    {"PATCH", "accounts/{account}/devices/{device}", false, internal::PatchDevice},
    {"DELETE", "accounts/{account}/devices/{device}", false, internal::DeleteDevice},
    {"POST", "accounts/{account}/devices/{device}/token", false, internal::RotateDeviceToken},
    {"GET", "devices", false, internal::ListDevices},
    {"GET", "jobs", false, internal::ListJobs},
    {"GET", "jobs/{job}", false, internal::GetJob},
    {"POST", "jobs/{job}/cancel", false, internal::CancelJob},
    {"GET", "audit", false, internal::ListAudit},
    {"GET", "fsck", true, internal::Fsck},
    {"POST", "fsck", true, internal::FixFsck},
    {"GET", "status", true, internal::NodeStatus},
    {"GET", "cluster", true, internal::ClusterStatus},
    {"POST", "scrub", true, internal::Scrub},
    {"POST", "repair", true, internal::Repair},
    {"POST", "index/backup", true, internal::BackupIndex},
    {"GET", "disks", true, internal::ListDisks},
    {"POST", "disks", true, internal::AddDisk},
    {"POST", "disks/{disk}/drain", true, internal::DrainDisk},
    {"POST", "disks/{disk}/remove", true, internal::RemoveDisk},
    {"GET", "courier/pubkey", false, internal::CourierPubkey},
    {"POST", "accounts/{account}/devices/{device}/courier", false, internal::CreateCourier},
    {"GET", "jobs/{job}/images/{drive}", false, internal::CourierImage},
    {"DELETE", "jobs/{job}/images", false, internal::DeleteCourierImages},
};
}  // namespace

std::vector<RouteInfo> RouteTable() {
  std::vector<RouteInfo> out;
  for (const Route& r : kRoutes) out.push_back({r.method, r.path, r.operator_only});
  return out;
}

namespace {

// Routes whose handler reads the query string; the others refuse any parameter.
bool TakesQuery(Response (*h)(Call&)) {
  return h == internal::ListPartners || h == internal::ListAccounts || h == internal::ListDevices ||
         h == internal::ListAudit || h == internal::DeleteDevice || h == internal::ListJobs ||
         h == internal::DeleteAccount;
}

// A decimal number path segment without leading zeros (at most 6 digits); zero only if
// `zero_ok`.
std::optional<size_t> PathNumber(std::string_view part, bool zero_ok) {
  if (part.empty() || part.size() > 6) return std::nullopt;
  if (part[0] == '0' && (part.size() > 1 || !zero_ok)) return std::nullopt;
  size_t n = 0;
  for (char ch : part) {
    if (ch < '0' || ch > '9') return std::nullopt;
    n = n * 10 + static_cast<size_t>(ch - '0');
  }
  return n;
}

std::optional<index::Id> Call::*IdSlot(std::string_view name) {
  if (name == "partner") return &Call::partner;
  if (name == "account") return &Call::account;
  if (name == "addon") return &Call::addon;
  if (name == "device") return &Call::device;
  if (name == "key") return &Call::key;
  if (name == "job") return &Call::job;
  return nullptr;
}

bool Matches(std::string_view pattern, const std::vector<std::string_view>& parts) {
  auto pp = PatternSegments(pattern);
  if (pp.size() != parts.size()) return false;
  for (size_t i = 0; i < pp.size(); ++i) {
    if (!pp[i].starts_with('{') && pp[i] != parts[i]) return false;
  }
  return true;
}

Response Error(int status, std::string_view code, std::string_view message,
               std::string_view field = {}) {
  return Response{status, ErrorJson(code, message, field), {}, {}};
}

class AdminApiImpl : public AdminApi {
 public:
  AdminApiImpl(storage::ObjectStore& store, const Options& options, Sha256Digest key_hash,
               index::Id key_id)
      : store_(store), options_(options), operator_hash_(key_hash), operator_id_(key_id) {
    if (options_.run_jobs) runner_ = std::make_unique<jobs::JobRunner>(store_, options_);
  }

  Response Handle(const Request& req) override {
    const int64_t now = NowNanos();
    auto caller = Authenticate(req.authorization, now);
    if (!caller) return internal::FromError(caller.error());
    if (!*caller) {
      Response r = Error(401, "unauthenticated", "a valid admin key is required");
      r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"chunkvault-admin\"");
      return r;
    }
    auto target = boost::urls::parse_origin_form(req.target);
    if (!target) {
      return Error(400, "invalid_target",
                   "the request target must be a path and an optional query with every byte "
                   "outside RFC 3986's characters percent-encoded");
    }
    const std::string_view path = target->encoded_path();
    const std::string_view query = target->encoded_query();
    if (path.find('%') != std::string_view::npos) {
      return Error(400, "invalid_path", "percent-encoded paths are not accepted");
    }
    // /admin/v1/a/b -> a, b
    auto segments = PathSegments(path);
    if (!segments) {
      return Error(400, "invalid_path",
                   "the path must start with '/' and have no '.' or '..' segment");
    }
    std::vector<std::string_view> parts = std::move(*segments);
    if (parts.size() < 2 || parts[0] != "admin" || parts[1] != "v1") {
      return Error(404, "not_found", "no such route");
    }
    parts.erase(parts.begin(), parts.begin() + 2);

    const Route* route = nullptr;
    std::string allowed;
    for (const Route& r : kRoutes) {
      if (!Matches(r.path, parts)) continue;
      if (r.method == req.method) route = &r;
      allowed += (allowed.empty() ? "" : ", ") + std::string(r.method);
    }
    if (allowed.empty()) return Error(404, "not_found", "no such route");
    if (!route) {
      Response r = Error(405, "method_not_allowed", "allowed: " + allowed);
      r.headers.emplace_back("Allow", allowed);
      return r;
    }
    if (route->operator_only && !(*caller)->is_operator) {
      return Error(403, "operator_only", "this route needs the operator key");
    }
    Call call{store_, **caller, req, now, query, {}, {}, {}, {}, {}, {}, 0, 0, &options_, runner_.get()};
    auto pattern = PatternSegments(route->path);
    for (size_t i = 0; i < pattern.size(); ++i) {
      if (!pattern[i].starts_with('{')) continue;
      std::string_view name = pattern[i].substr(1, pattern[i].size() - 2);
      if (name == "drive" || name == "disk") {  // drives count from 1, disk positions from 0
        auto n = PathNumber(parts[i], name == "disk");
        if (!n) {
          return Error(400, "invalid_" + std::string(name),
                       name == "disk" ? "the disk in the path must be its position: 0, 1, ..."
                                      : "the drive in the path must be 1, 2, ...",
                       name);
        }
        if (name == "disk") {
          call.disk = *n;
        } else {
          call.drive = static_cast<uint32_t>(*n);
        }
        continue;
      }
      auto id = index::IdFromHex(parts[i]);
      if (!id) {
        return Error(400, "invalid_id",
                     "the " + std::string(name) + " id in the path must be 32 lowercase hex digits",
                     name);
      }
      call.*IdSlot(name) = *id;
    }
    if (!TakesQuery(route->handler) && !query.empty()) {
      auto q = Query::Parse(query, {});
      if (!q) return internal::FromApiError(q.error());
    }
    if (route->method == "GET" && !req.body.empty()) {
      return Error(400, "unexpected_body", "GET requests take no body");
    }
    return route->handler(call);
  }

 private:
  // nullopt: no valid key (401). Errors only when the index cannot be read.
  Result<std::optional<Caller>> Authenticate(std::string_view header, int64_t now) const {
    constexpr std::string_view kBearer = "Bearer ";
    // Hash even when the header is malformed so that timing says nothing about the key.
    std::string_view key = header.starts_with(kBearer) ? header.substr(kBearer.size()) : "";
    const Sha256Digest hash = HashToken(key);
    if (key.empty()) return std::nullopt;
    if (DigestEqual(hash, operator_hash_)) {
      return Caller{operator_id_, true, {}, "operator"};
    }
    CV_TRY_ASSIGN(auto txn, store_.Index().BeginRead());
    CV_TRY_ASSIGN(auto k, txn->GetAdminKeyBySecretHash(hash));
    if (!k || !index::AdminKeyUsable(*k, now)) return std::nullopt;
    const bool op = k->role == index::AdminRole::kOperator;
    return Caller{k->id, op, op ? index::Id{} : k->partner, index::AdminRoleName(*k)};
  }

  storage::ObjectStore& store_;
  const Options options_;
  const Sha256Digest operator_hash_;
  const index::Id operator_id_;
  std::unique_ptr<jobs::JobRunner> runner_;  // last: stops before the rest goes
};

}  // namespace

Result<std::unique_ptr<AdminApi>> AdminApi::Open(storage::ObjectStore& store,
                                                 const Options& options) {
  std::optional<Sha256Digest> hash;
  std::optional<index::Id> id;
  if (!options.new_operator_key) {
    CV_TRY_ASSIGN(auto txn, store.Index().BeginRead());
    CV_TRY_ASSIGN(auto v, txn->GetMeta(kOperatorKeyMeta));
    if (v) {
      Sha256Digest d;
      if (!FromHex(*v, d))
        return Err(ErrorKind::kCorruption, "stored operator key hash is not hex");
      hash = d;
    }
    CV_TRY_ASSIGN(auto i, txn->GetMeta(kOperatorKeyIdMeta));
    if (i) {
      id = index::IdFromHex(*i);
      if (!id) return Err(ErrorKind::kCorruption, "stored operator key id is not an id");
    }
  }
  if (!hash) {
    // The file first, then the hash: a crash in between leaves no key stored, and the next
    // start simply makes another one.
    CV_TRY_ASSIGN(auto key, WriteNewSecret(options.key_file));
    Sha256Digest d = HashToken(key);
    index::Id new_id = index::NewId();
    CV_TRY(store.Index().Update([&](index::WriteTxn& txn) -> Status {
      CV_TRY(txn.PutMeta(kOperatorKeyMeta, ToHex(d)));
      return txn.PutMeta(kOperatorKeyIdMeta, index::IdToHex(new_id));
    }));
    hash = d;
    id = new_id;
    Log(LogLevel::kInfo, "admin_key_created", {{"file", options.key_file}});
  } else if (::access(options.key_file.c_str(), F_OK) != 0) {
    Log(LogLevel::kWarn, "admin_key_file_missing",
        {{"file", options.key_file},
         {"hint",
          "the stored key cannot be shown again; start with --new-admin-key to replace it"}});
  }
  if (!id) {  // a key from before key ids: give it one
    index::Id new_id = index::NewId();
    CV_TRY(store.Index().Update([&](index::WriteTxn& txn) {
      return txn.PutMeta(kOperatorKeyIdMeta, index::IdToHex(new_id));
    }));
    id = new_id;
  }
  return std::unique_ptr<AdminApi>(new AdminApiImpl(store, options, *hash, *id));
}

}  // namespace cv::admin
