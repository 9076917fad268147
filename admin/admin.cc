#include "admin/admin.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <filesystem>
#include <optional>

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

std::string ErrorJson(std::string_view code, std::string_view message, std::string_view field) {
  json::object err;
  err["code"] = code;
  err["message"] = message;
  if (!field.empty()) err["field"] = field;
  json::object root;
  root["error"] = std::move(err);
  return json::serialize(root);
}

std::string ErrorJson(const Error& error) {
  if (HttpStatus(error.kind) >= 500) {
    // Server-side details (paths, errno) go to the log, not to clients.
    return ErrorJson(KindName(error.kind), "the node could not complete the request");
  }
  return ErrorJson(KindName(error.kind), error.context);
}

namespace {

constexpr std::string_view kOperatorKeyMeta = "admin/operator_key_sha256";

Response JsonError(int status, std::string_view code, std::string_view message,
                   std::string_view field = {}) {
  return Response{status, ErrorJson(code, message, field), {}};
}

Response FromError(const Error& e) {
  if (HttpStatus(e.kind) >= 500) Log(LogLevel::kError, "admin_error", {{"error", e.ToString()}});
  return Response{HttpStatus(e.kind), ErrorJson(e), {}};
}

Response Json(int status, const json::value& v) { return Response{status, json::serialize(v), {}}; }

// Writes `data` to `path` atomically (tmp + fsync + rename + fsync dir), mode 0600.
Status WriteSecretFile(const std::string& path, std::string_view data) {
  std::filesystem::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  if (ec)
    return Err(ErrorKind::kIOError, "create " + p.parent_path().string() + ": " + ec.message());
  std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError(errno, "open " + tmp);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return ErrnoError(e, "write " + tmp);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    return ErrnoError(e, "fsync " + tmp);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoError(errno, "rename " + tmp);
  std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

std::vector<std::string_view> SplitPath(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    parts.push_back(path.substr(i, j - i));
    i = j + 1;
  }
  return parts;
}

const char* KindText(index::DeviceKind k) {
  return k == index::DeviceKind::kServer ? "server" : "computer";
}

json::object DeviceJson(const index::DeviceRecord& d) {
  json::object o;
  o["id"] = index::IdToHex(d.id);
  o["account"] = index::IdToHex(d.account);
  o["name"] = d.name;
  o["kind"] = KindText(d.kind);
  o["append_only"] = d.append_only;
  o["created_ns"] = d.created_ns;
  o["bytes"] = d.bytes;
  o["objects"] = d.objects;
  o["last_upload_ns"] = d.last_upload_ns;
  o["last_backup_ns"] = d.last_backup_ns;
  return o;
}

// Strict JSON object parsing: the body must be one object; every key must be known; each
// value's type is checked by the caller through the typed getters, which name the field.
class Fields {
 public:
  static std::optional<Fields> Parse(std::string_view body, Response* error) {
    json::error_code ec;
    json::value v = json::parse(body, ec);
    if (ec) {
      *error = JsonError(400, "invalid_json", "body is not valid JSON: " + ec.message());
      return std::nullopt;
    }
    if (!v.is_object()) {
      *error = JsonError(400, "invalid_json", "body must be a JSON object");
      return std::nullopt;
    }
    return Fields(std::move(v.as_object()));
  }
  // Fails on the first key not in `known`.
  bool OnlyKnown(std::initializer_list<std::string_view> known, Response* error) const {
    for (const auto& kv : obj_) {
      bool ok = false;
      for (auto k : known) ok = ok || kv.key() == k;
      if (!ok) {
        *error = JsonError(400, "unknown_field", "unknown field '" + std::string(kv.key()) + "'",
                           kv.key());
        return false;
      }
    }
    return true;
  }
  // nullopt + no error = absent; nullopt + error = wrong type.
  std::optional<std::string> String(std::string_view key, Response* error, bool* bad) const {
    auto* v = obj_.if_contains(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) {
      *error =
          JsonError(400, "invalid_field", "field '" + std::string(key) + "' must be a string", key);
      *bad = true;
      return std::nullopt;
    }
    return std::string(v->as_string());
  }
  std::optional<bool> Bool(std::string_view key, Response* error, bool* bad) const {
    auto* v = obj_.if_contains(key);
    if (!v) return std::nullopt;
    if (!v->is_bool()) {
      *error = JsonError(400, "invalid_field",
                         "field '" + std::string(key) + "' must be true or false", key);
      *bad = true;
      return std::nullopt;
    }
    return v->as_bool();
  }

 private:
  explicit Fields(json::object o) : obj_(std::move(o)) {}
  json::object obj_;
};

bool ValidDeviceName(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

class AdminApiImpl : public AdminApi {
 public:
  AdminApiImpl(storage::ObjectStore& store, Sha256Digest key_hash)
      : store_(store), key_hash_(key_hash) {}

  Response Handle(const Request& req) override {
    if (!Authorized(req.authorization)) {
      Response r = JsonError(401, "unauthenticated", "a valid operator key is required");
      r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"chunkvault-admin\"");
      return r;
    }
    std::string_view target = req.target;
    std::string_view path = target.substr(0, target.find('?'));
    if (path.find('%') != std::string_view::npos) {
      return JsonError(400, "invalid_path", "percent-encoded paths are not accepted");
    }
    constexpr std::string_view kPrefix = "/admin/v1/";
    if (!path.starts_with(kPrefix)) return JsonError(404, "not_found", "no such route");
    auto parts = SplitPath(path.substr(kPrefix.size()));
    const std::string& m = req.method;
    // accounts
    if (parts.size() == 1 && parts[0] == "accounts") {
      if (m != "POST") return MethodNotAllowed();
      return CreateAccount(req);
    }
    if (parts.size() >= 3 && parts[0] == "accounts" && parts[2] == "devices") {
      auto acct = index::IdFromHex(parts[1]);
      if (!acct) return JsonError(404, "not_found", "no such account");
      if (parts.size() == 3) {
        if (m != "POST") return MethodNotAllowed();
        return CreateDevice(*acct, req);
      }
      if (parts.size() == 4) {
        auto dev = index::IdFromHex(parts[3]);
        if (!dev) return JsonError(404, "not_found", "no such device");
        if (m == "GET") return GetDevice(*acct, *dev);
        if (m == "PATCH") return PatchDevice(*acct, *dev, req);
        return MethodNotAllowed();
      }
    }
    return JsonError(404, "not_found", "no such route");
  }

 private:
  static Response MethodNotAllowed() {
    return JsonError(405, "method_not_allowed", "method not allowed on this route");
  }

  bool Authorized(std::string_view header) const {
    constexpr std::string_view kBearer = "Bearer ";
    // Hash even when the header is malformed so that timing says nothing about the key.
    std::string_view key = header.starts_with(kBearer) ? header.substr(kBearer.size()) : "";
    bool ok = DigestEqual(HashToken(key), key_hash_);
    return ok && !key.empty();
  }

  Response CreateAccount(const Request& req) {
    if (!req.body.empty()) {
      Response err;
      auto f = Fields::Parse(req.body, &err);
      if (!f) return err;
      if (!f->OnlyKnown({}, &err)) return err;
    }
    // Accounts are stored with the accounts issue; until then a fresh id is all there is.
    json::object o;
    o["id"] = index::IdToHex(index::NewId());
    return Json(201, o);
  }

  Response CreateDevice(const index::Id& account, const Request& req) {
    Response err;
    auto f = Fields::Parse(req.body, &err);
    if (!f) return err;
    if (!f->OnlyKnown({"name", "kind", "append_only"}, &err)) return err;
    bool bad = false;
    auto name = f->String("name", &err, &bad);
    if (bad) return err;
    auto kind = f->String("kind", &err, &bad);
    if (bad) return err;
    auto append_only = f->Bool("append_only", &err, &bad);
    if (bad) return err;
    if (!name) return JsonError(400, "missing_field", "field 'name' is required", "name");
    if (!ValidDeviceName(*name)) {
      return JsonError(400, "invalid_field", "field 'name' must be 1-255 printable bytes", "name");
    }
    index::DeviceRecord d;
    d.kind = index::DeviceKind::kComputer;
    if (kind) {
      if (*kind == "server") {
        d.kind = index::DeviceKind::kServer;
      } else if (*kind != "computer") {
        return JsonError(400, "invalid_field", "field 'kind' must be \"computer\" or \"server\"",
                         "kind");
      }
    }
    d.id = index::NewId();
    d.account = account;
    d.name = *name;
    d.append_only = append_only.value_or(true);
    std::string token = NewToken();
    d.token_hash = HashToken(token);
    d.created_ns = NowNanos();
    auto st = store_.Index().Update([&](index::WriteTxn& txn) -> Status {
      auto existing = txn.GetDevice(d.id);
      if (!existing) return tl::unexpected(existing.error());
      if (*existing) return Err(ErrorKind::kConflict, "device id collision");
      return txn.PutDevice(d);
    });
    if (!st) return FromError(st.error());
    Log(LogLevel::kInfo, "admin_device_created",
        {{"account", index::IdToHex(account)}, {"device", index::IdToHex(d.id)}});
    json::object o = DeviceJson(d);
    o["token"] = token;
    return Json(201, o);
  }

  Response GetDevice(const index::Id& account, const index::Id& dev) {
    auto txn = store_.Index().BeginRead();
    if (!txn) return FromError(txn.error());
    auto d = (*txn)->GetDevice(dev);
    if (!d) return FromError(d.error());
    if (!*d || (*d)->account != account) return JsonError(404, "not_found", "no such device");
    return Json(200, DeviceJson(**d));
  }

  Response PatchDevice(const index::Id& account, const index::Id& dev, const Request& req) {
    Response err;
    auto f = Fields::Parse(req.body, &err);
    if (!f) return err;
    if (!f->OnlyKnown({"name", "append_only"}, &err)) return err;
    bool bad = false;
    auto name = f->String("name", &err, &bad);
    if (bad) return err;
    auto append_only = f->Bool("append_only", &err, &bad);
    if (bad) return err;
    if (name && !ValidDeviceName(*name)) {
      return JsonError(400, "invalid_field", "field 'name' must be 1-255 printable bytes", "name");
    }
    index::DeviceRecord after;
    bool found = false;
    auto st = store_.Index().Update([&](index::WriteTxn& txn) -> Status {
      auto d = txn.GetDevice(dev);
      if (!d) return tl::unexpected(d.error());
      found = *d && (*d)->account == account;
      if (!found) return {};
      after = **d;
      if (name) after.name = *name;
      if (append_only) after.append_only = *append_only;
      return txn.PutDevice(after);
    });
    if (!st) return FromError(st.error());
    if (!found) return JsonError(404, "not_found", "no such device");
    Log(LogLevel::kInfo, "admin_device_updated",
        {{"account", index::IdToHex(account)},
         {"device", index::IdToHex(dev)},
         {"append_only", after.append_only ? "true" : "false"}});
    return Json(200, DeviceJson(after));
  }

  storage::ObjectStore& store_;
  const Sha256Digest key_hash_;
};

}  // namespace

Result<std::unique_ptr<AdminApi>> AdminApi::Open(storage::ObjectStore& store,
                                                 const Options& options) {
  std::optional<Sha256Digest> hash;
  if (!options.new_operator_key) {
    auto txn = store.Index().BeginRead();
    if (!txn) return tl::unexpected(txn.error());
    auto v = (*txn)->GetMeta(kOperatorKeyMeta);
    if (!v) return tl::unexpected(v.error());
    if (*v) {
      Sha256Digest d;
      if (!FromHex(**v, d))
        return Err(ErrorKind::kCorruption, "stored operator key hash is not hex");
      hash = d;
    }
  }
  if (!hash) {
    // The file first, then the hash: a crash in between leaves no key stored, and the next
    // start simply makes another one.
    std::string key = NewToken();
    CV_TRY(WriteSecretFile(options.key_file, key + "\n"));
    Sha256Digest d = HashToken(key);
    CV_TRY(store.Index().Update(
        [&](index::WriteTxn& txn) { return txn.PutMeta(kOperatorKeyMeta, ToHex(d)); }));
    hash = d;
    Log(LogLevel::kInfo, "admin_key_created", {{"file", options.key_file}});
  } else if (::access(options.key_file.c_str(), F_OK) != 0) {
    Log(LogLevel::kWarn, "admin_key_file_missing",
        {{"file", options.key_file},
         {"hint",
          "the stored key cannot be shown again; start with --new-admin-key to replace it"}});
  }
  return std::unique_ptr<AdminApi>(new AdminApiImpl(store, *hash));
}

}  // namespace cv::admin
