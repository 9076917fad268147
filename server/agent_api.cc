#include "server/agent_api.h"

#include <boost/json.hpp>
#include <charconv>

#include "admin/admin.h"

namespace cv::server {

namespace json = boost::json;

Reply ErrorReply(int status, std::string_view code, std::string_view message) {
  Reply r;
  r.status = status;
  r.body = admin::ErrorJson(code, message);
  return r;
}

Reply ErrorReply(const Error& error) {
  Reply r;
  r.status = admin::HttpStatus(error.kind);
  r.body = admin::ErrorJson(error);
  if (r.status >= 500) Log(LogLevel::kError, "request_failed", {{"error", error.ToString()}});
  return r;
}

Reply JsonReply(int status, std::string body) {
  Reply r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

namespace {

bool PathByteOk(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == '/';
}

bool ParseU64(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

AgentTarget ParseAgentTarget(std::string_view target) {
  AgentTarget t;
  if (target.empty() || target[0] != '/') return t;  // kNone
  size_t q = target.find('?');
  std::string_view path = target.substr(0, q);  // with its leading '/'
  if (q != std::string_view::npos) t.query = std::string(target.substr(q + 1));
  // A refused path still tells the caller which device the request is for (it is
  // authenticated first).
  auto invalid = [&](std::string error) {
    t.kind = AgentTarget::Kind::kInvalidPath;
    t.error = std::move(error);
    t.device = std::string(path.substr(1, path.find('/', 1) - 1));
    return t;
  };
  for (char c : path) {
    if (!PathByteOk(c)) {
      return invalid(c == '%' ? "percent-encoded bytes are not accepted in paths"
                              : "the path contains a byte that is not allowed");
    }
  }
  auto segments = PathSegments(path);
  if (!segments) return invalid("'.' and '..' are not allowed in paths");
  const std::vector<std::string_view>& parts = *segments;
  if (parts.empty() || parts[0].empty()) return t;  // kNone
  t.device = std::string(parts[0]);
  using K = AgentTarget::Kind;
  if (parts.size() == 1 || (parts.size() == 2 && parts[1].empty())) {
    t.kind = K::kRepo;
  } else if (parts.size() == 2 && parts[1] == "config") {
    t.kind = K::kConfig;
  } else if (parts.size() == 3 && parts[1] == "v1" && parts[2] == "exists") {
    t.kind = K::kExists;
  } else if (parts.size() == 3 && parts[1] == "v1" && parts[2] == "usage") {
    t.kind = K::kUsage;
  } else if (parts.size() == 3 && !parts[1].empty() && parts[2].empty()) {
    t.kind = K::kList;
    t.type = std::string(parts[1]);
  } else if (parts.size() == 3 && !parts[1].empty()) {
    t.kind = K::kObject;
    t.type = std::string(parts[1]);
    t.name = std::string(parts[2]);
  } else {
    t.kind = K::kNoRoute;
  }
  return t;
}

Result<index::ObjectKey> ObjectKeyFor(const index::Id& device, std::string_view type,
                                      std::string_view name) {
  auto ot = index::ParseObjectType(type);
  if (!ot)
    return Err(ErrorKind::kInvalidArgument,
               "unknown object type '" + std::string(type.substr(0, 32)) + "'");
  if (name.size() > index::kMaxNameBytes)
    return Err(ErrorKind::kInvalidArgument, "object name is too long");
  if (name == "." || name == ".." || name.find('/') != std::string_view::npos ||
      name.find('\0') != std::string_view::npos) {
    return Err(ErrorKind::kInvalidArgument, "invalid object name");
  }
  if (*ot == index::ObjectType::kConfig && !name.empty()) {
    return Err(ErrorKind::kInvalidArgument, "config is a single object at /{device}/config");
  }
  if (*ot != index::ObjectType::kConfig && name.empty()) {
    return Err(ErrorKind::kInvalidArgument, "missing object name");
  }
  auto st = storage::ValidateName(*ot, name);
  if (!st) return Err(ErrorKind::kInvalidArgument, st.error().context);
  return index::ObjectKey{device, *ot, std::string(name)};
}

RangeParse ParseRange(std::string_view header, uint64_t size, ByteRange* out) {
  header = Trim(header);
  if (header.empty()) return RangeParse::kWhole;
  constexpr std::string_view kUnit = "bytes=";
  if (header.size() < kUnit.size()) return RangeParse::kMalformed;
  for (size_t i = 0; i < kUnit.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(header[i])) != kUnit[i])
      return RangeParse::kMalformed;
  }
  std::string_view spec = Trim(header.substr(kUnit.size()));
  if (spec.find(',') != std::string_view::npos) return RangeParse::kMalformed;  // one range only
  size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return RangeParse::kMalformed;
  std::string_view first = Trim(spec.substr(0, dash)), last = Trim(spec.substr(dash + 1));
  uint64_t a = 0, b = 0;
  if (first.empty()) {  // suffix: the last b bytes
    if (!ParseU64(last, &b)) return RangeParse::kMalformed;
    if (b == 0) return RangeParse::kUnsatisfiable;
    if (b >= size) {
      if (size == 0) return RangeParse::kUnsatisfiable;
      b = size;
    }
    *out = ByteRange{size - b, b};
    return RangeParse::kPartial;
  }
  if (!ParseU64(first, &a)) return RangeParse::kMalformed;
  if (last.empty()) {
    if (a == 0 && size == 0) return RangeParse::kWhole;
    if (a >= size) return RangeParse::kUnsatisfiable;
    *out = ByteRange{a, size - a};
    return RangeParse::kPartial;
  }
  if (!ParseU64(last, &b)) return RangeParse::kMalformed;
  if (b < a) return RangeParse::kMalformed;
  if (a >= size) return RangeParse::kUnsatisfiable;
  if (b >= size) b = size - 1;
  *out = ByteRange{a, b - a + 1};
  return RangeParse::kPartial;
}

bool WantsV2(std::string_view accept) {
  // Media types are case-insensitive; a plain substring search is enough for one exact type.
  std::string lower(accept);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower.find(kResticV2) != std::string::npos;
}

Reply AgentApi::List(const index::Id& device, std::string_view type, bool v2) {
  auto ot = index::ParseObjectType(type);
  if (!ot)
    return ErrorReply(400, "invalid_argument",
                      "unknown object type '" + std::string(type.substr(0, 32)) + "'");
  if (*ot == index::ObjectType::kConfig) {
    return ErrorReply(400, "invalid_argument", "config is not a directory");
  }
  // Built in memory: a listing is names and sizes only (~90 bytes per object). Names are
  // validated ASCII (ValidateName), so they need no UTF-8 repair.
  boost::json::array items;
  std::string after;
  constexpr size_t kPage = 10000;
  while (true) {
    auto page = store_.List(device, *ot, after, kPage);
    if (!page) return ErrorReply(page.error());
    for (const auto& info : *page) {
      if (v2) {
        items.push_back(boost::json::object{{"name", info.key.name}, {"size", info.size}});
      } else {
        items.push_back(boost::json::string(info.key.name));
      }
    }
    if (page->size() < kPage) break;
    after = page->back().key.name;
  }
  std::string body = boost::json::serialize(items);
  Reply r = JsonReply(200, std::move(body));
  r.content_type = v2 ? std::string(kResticV2) : "application/vnd.x.restic.rest.v1";
  return r;
}

Reply AgentApi::Head(const index::ObjectKey& key) {
  auto info = store_.Head(key);
  if (!info) return ErrorReply(info.error());
  if (!*info) {
    Reply r = ErrorReply(404, "not_found", "no such object");
    return r;
  }
  Reply r;
  r.status = 200;
  r.content_type = "application/octet-stream";
  r.head_length = (*info)->size;
  return r;
}

Reply AgentApi::Delete(const index::DeviceRecord& device, const index::ObjectKey& key) {
  if (device.append_only && key.type != index::ObjectType::kLocks) {
    return ErrorReply(403, "append_only",
                      "this device is append-only: agents may delete only locks (an operator can "
                      "allow deletes for this device)");
  }
  auto st = store_.Delete(key);
  if (!st) return ErrorReply(st.error());
  return Reply{200, "", "application/json", {}, std::nullopt, false};
}

Reply AgentApi::Exists(const index::Id& device, std::string_view body) {
  json::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec) return ErrorReply(400, "invalid_json", "body is not valid JSON: " + ec.message());
  if (!v.is_array())
    return ErrorReply(400, "invalid_json", "body must be a JSON array of {\"type\",\"name\"}");
  const auto& items = v.as_array();
  constexpr size_t kMaxItems = 10000;
  if (items.size() > kMaxItems) {
    return ErrorReply(413, "too_large",
                      "at most " + std::to_string(kMaxItems) + " entries per request");
  }
  std::vector<index::ObjectKey> keys;
  keys.reserve(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    std::string where = "[" + std::to_string(i) + "]";
    if (!items[i].is_object())
      return ErrorReply(400, "invalid_field", where + " must be an object");
    const auto& o = items[i].as_object();
    for (const auto& kv : o) {
      if (kv.key() != "type" && kv.key() != "name") {
        return ErrorReply(400, "unknown_field",
                          where + ": unknown field '" + std::string(kv.key()) + "'");
      }
    }
    const auto* type = o.if_contains("type");
    const auto* name = o.if_contains("name");
    if (!type || !type->is_string())
      return ErrorReply(400, "invalid_field", where + ".type must be a string");
    if (!name || !name->is_string())
      return ErrorReply(400, "invalid_field", where + ".name must be a string");
    auto key = ObjectKeyFor(device, type->as_string(), name->as_string());
    if (!key) return ErrorReply(400, "invalid_argument", where + ": " + key.error().context);
    keys.push_back(std::move(*key));
  }
  json::array present;
  for (const auto& key : keys) {
    auto info = store_.Head(key);
    if (!info) return ErrorReply(info.error());
    if (!*info) continue;
    json::object o;
    o["type"] = index::ObjectTypeName(key.type);
    o["name"] = key.name;
    o["size"] = (*info)->size;
    present.push_back(std::move(o));
  }
  return JsonReply(200, json::serialize(present));
}

Reply AgentApi::Usage(const index::DeviceRecord& d, const std::optional<index::Account>& account) {
  json::object o;
  o["bytes"] = d.bytes;
  o["objects"] = d.objects;
  o["last_upload_ns"] = d.last_upload_ns;
  o["last_backup_ns"] = d.last_backup_ns;
  // The account's side (null for devices without an account record: no quota).
  o["quota_bytes"] = nullptr;
  o["account_used_bytes"] = nullptr;
  o["account_reserved_bytes"] = nullptr;
  o["status"] = nullptr;
  if (account) {
    const int64_t now = NowNanos();
    auto txn = store_.Index().BeginRead();
    if (!txn) return ErrorReply(txn.error());
    // Fresh numbers: the account read at authentication may be a request old.
    auto a = (*txn)->GetAccount(account->id);
    if (!a) return ErrorReply(a.error());
    auto addons = (*txn)->ListAddOns(account->id);
    if (!addons) return ErrorReply(addons.error());
    const index::Account& acct = *a ? **a : *account;
    o["quota_bytes"] = index::QuotaBytes(acct, *addons, now);
    o["account_used_bytes"] = acct.bytes;
    o["account_reserved_bytes"] = acct.reserved_bytes;
    o["status"] = index::AccountStatusName(index::EffectiveStatus(acct, now));
  }
  return JsonReply(200, json::serialize(o));
}

std::function<Status(index::WriteTxn&)> AgentApi::UploadCommittedIn(const index::ObjectKey& key,
                                                                     int64_t now_ns) {
  if (key.type != index::ObjectType::kSnapshots) return nullptr;
  return [device = key.device, now_ns](index::WriteTxn& txn) -> Status {
    CV_TRY_ASSIGN(auto d, txn.GetDevice(device));
    if (!d) return {};  // deleted meanwhile
    index::DeviceRecord rec = *d;
    rec.last_backup_ns = std::max(rec.last_backup_ns, now_ns);
    return txn.PutDevice(rec);
  };
}

}  // namespace cv::server
