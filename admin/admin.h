// admin: the admin API as transport-free handlers. The server module owns the listener, TLS
// and HTTP parsing; it hands each complete request (method, target, Authorization header,
// body) to AdminApi::Handle and writes back the JSON answer. This part: the operator
// key and devices; accounts, plans, add-ons, jobs and audit come with the accounts issue.
//
// Routes (all under /admin/v1/, bearer operator key, JSON in and out):
//   POST  /accounts                          -> 201 {"id"}  (not persisted yet)
//   POST  /accounts/{acct}/devices           {"name","kind","append_only"} -> 201
//   {"id","token",...} GET   /accounts/{acct}/devices/{dev}     -> 200 device PATCH
//   /accounts/{acct}/devices/{dev}     {"name"?, "append_only"?} -> 200 device
// Errors are {"error":{"code","message"[,"field"]}} with the status from HttpStatus().
//
// Thread-safety: AdminApi::Handle may be called from many threads at once.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/common.h"
#include "storage/storage.h"

namespace cv::admin {

struct Request {
  std::string method;         // "GET", "POST", "PATCH", ...
  std::string target;         // origin-form path and query, as received
  std::string authorization;  // value of the Authorization header; empty if absent
  std::string body;           // the complete body (the server caps its size)
};

struct Response {
  int status = 200;
  std::string body;                                          // JSON
  std::vector<std::pair<std::string, std::string>> headers;  // extra header fields
};

struct Options {
  // Where a newly generated operator key is written, once, with mode 0600.
  std::string key_file;
  // Replace the stored operator key with a new one (the old key stops working).
  bool new_operator_key = false;
};

class AdminApi {
 public:
  // Makes sure an operator key exists: when the index has none (or new_operator_key is set),
  // generates one, writes its plaintext to options.key_file and stores only its SHA-256 in the
  // index. Fails if the key file cannot be written or the index cannot be updated.
  static Result<std::unique_ptr<AdminApi>> Open(storage::ObjectStore& store,
                                                const Options& options);
  virtual ~AdminApi() = default;
  virtual Response Handle(const Request& request) = 0;
};

// ---- device credentials (shared with the agent API in server/) ----
// A new device token: 32 random bytes as 64 lowercase hex digits.
std::string NewToken();
// What the index stores for a token: SHA-256 of its ASCII text.
Sha256Digest HashToken(std::string_view token);
// Constant-time equality of two digests (CRYPTO_memcmp).
bool DigestEqual(const Sha256Digest& a, const Sha256Digest& b);

// ---- the one mapping from error kinds to HTTP status codes (server/ uses it too) ----
int HttpStatus(ErrorKind kind);
// {"error":{"code":code,"message":message}} (plus "field" when not empty).
std::string ErrorJson(std::string_view code, std::string_view message, std::string_view field = {});
// The JSON error body for an Error. 5xx errors get a generic message (details go to the log).
std::string ErrorJson(const Error& error);

}  // namespace cv::admin
