// server/agent_api: the agent protocol, restic's REST backend v2 with one repository per
// device, minus the streaming parts (object bodies in and out live in upload.cc and
// download.cc; agent_routes.cc routes with the validation here). Routes, relative to
// /{device_id}:
//
//   POST   /?create=true       200, nothing to do (the device is the repository)
//   HEAD   /config             200 + Content-Length | 404
//   GET    /config             the config, honouring Range
//   POST   /config             store the config (not content-addressed; immutable: 409 if
//   different) GET    /{type}/            list: v2 [{"name","size"}] when Accept asks for
//                              application/vnd.x.restic.rest.v2, else v1 ["name", ...]
//   HEAD   /{type}/{name}      200 + Content-Length | 404
//   GET    /{type}/{name}      200 | 206 (Range) | 416 | 404
//   POST   /{type}/{name}      200 (exactly; restic treats 201/204 as errors)
//   DELETE /{type}/{name}      200 | 404; append-only devices may delete only locks (else 403)
//   POST   /v1/exists          [{"type","name"}] -> the present ones [{"type","name","size"}]
//   GET    /v1/usage           {"bytes","objects","last_upload_ns","last_backup_ns", and of the
//                              account: "quota_bytes","account_used_bytes",
//                              "account_reserved_bytes","status" (null without an account)}
//
// Accounts (server/quota.h): suspended -> 403 for everything; expired -> uploads and deletes
// 403 (except locks), reads work; uploads reserve their Content-Length first: over the quota
// -> 507 "quota_exceeded" before the body is read.
//
// Decisions (documented for clients):
//   - Same name, different content: 409 "conflict" (rest-server answers 403).
//   - Range: one range only. Malformed (bad syntax, several ranges, last < first) -> 400
//     "invalid_range"; unsatisfiable (starts at or past the end) -> 416 with
//     Content-Range: bytes */SIZE. `bytes=0-` of an empty object is served as 200.
//   - Paths are taken literally: '%' anywhere in the path, or any byte outside [A-Za-z0-9._-/],
//     is 400 "invalid_path" (so %2e%2e, %2f and %00 never reach name validation).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/common.h"
#include "index/index.h"
#include "storage/storage.h"

namespace cv::server {

// A complete answer that fits in memory.
struct Reply {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::optional<uint64_t> head_length;  // HEAD: the Content-Length to announce without a body
  bool close = false;                   // close the connection after this answer
};
Reply ErrorReply(int status, std::string_view code, std::string_view message);
Reply ErrorReply(const Error& error);  // status from admin::HttpStatus
Reply JsonReply(int status, std::string body);

struct AgentTarget {
  enum class Kind {
    kNone,
    kRepo,
    kConfig,
    kList,
    kObject,
    kExists,
    kUsage,
    kInvalidPath,
    kNoRoute
  };
  Kind kind = Kind::kNone;
  std::string device;  // the raw first segment
  std::string type;    // kList, kObject: the raw type segment
  std::string name;    // kObject: the raw name segment
  std::string query;   // after '?', raw
  std::string error;   // kInvalidPath: why
};
// Splits an origin-form request target. kNone: no device segment ("/" or not origin-form).
AgentTarget ParseAgentTarget(std::string_view target);

// The key of (type, name) of `device` after checking both: unknown type, config used as a
// directory, a name that is not valid for its type -> kInvalidArgument (400).
Result<index::ObjectKey> ObjectKeyFor(const index::Id& device, std::string_view type,
                                      std::string_view name);

struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};
enum class RangeParse { kWhole, kPartial, kMalformed, kUnsatisfiable };
// Parses a Range header against an object of `size` bytes. kWhole when there is no header (or
// `bytes=0-` of an empty object); kPartial fills `out`.
RangeParse ParseRange(std::string_view header, uint64_t size, ByteRange* out);

class AgentApi {
 public:
  explicit AgentApi(storage::ObjectStore& store) : store_(store) {}

  Reply List(const index::Id& device, std::string_view type, bool v2);
  Reply Head(const index::ObjectKey& key);
  Reply Delete(const index::DeviceRecord& device, const index::ObjectKey& key);
  Reply Exists(const index::Id& device, std::string_view body);
  // `account`: the device's, if it has a record (adds its quota, usage and status).
  Reply Usage(const index::DeviceRecord& device, const std::optional<index::Account>& account);
  // What an upload's own index transaction adds (CommitUpload's `also`): a `snapshots`
  // object marks a completed backup (the device's last_backup_ns). Empty for other types.
  static std::function<Status(index::WriteTxn&)> UploadCommittedIn(const index::ObjectKey& key,
                                                                   int64_t now_ns);

 private:
  storage::ObjectStore& store_;
};

// True when an Accept header asks for the v2 listing format.
bool WantsV2(std::string_view accept);
inline constexpr std::string_view kResticV2 = "application/vnd.x.restic.rest.v2";

}  // namespace cv::server
