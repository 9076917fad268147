// admin: the admin API as transport-free handlers. The server module owns the listener, TLS
// and HTTP parsing; it hands each complete request (method, target, Authorization header,
// body) to AdminApi::Handle and writes back the JSON answer.
//
// Keys (Authorization: Bearer KEY): the operator key (ROOT/run/admin.key; everything) and
// partner keys (made by the operator; only that partner's accounts). Only SHA-256 of a key
// is stored. A missing, wrong, expired or revoked key is 401. A partner key on an operator
// route is 403. A partner key on an account that is not its partner's -- another partner's,
// a released one, or one that does not exist -- is the same 404, and so are that account's
// devices, add-ons, usage and audit; nothing changes.
//
// Routes: admin/API.md lists every route under /admin/v1/ (method, path, who may call it,
// what it does), the one list; AdminRoutesTest.ApiMdListsExactlyTheRouteTable holds it to the route
// table in admin.cc (RouteTable below). Times are RFC 3339 UTC, sizes bytes, ids 32 hex digits;
// lists answer {"items":[...],"next_cursor"} (?cursor= for the next page, ?limit= 1..1000).
//
// Account status as answered ("status") is the effective one: a trial whose expires_at has
// passed is "expired" ("stored_status" says what was set). Expired = read-only for agents,
// suspended = no agent access. An active account's expires_at is informational: ending a paid
// plan is PATCH {"status":"expired"}.
//
// Jobs: long work with an id, kind, state (scheduled -> running -> done | failed, or
// cancelled while scheduled, and scrub, drain and courier jobs while running too), progress
// and result, stored in the index so that they survive restarts; a job that a crash
// interrupted resumes where its progress says (progress commits in the same index
// transaction as the work it counts). A device purge writes a device tombstone
// (storage/FORMAT.md), removes the objects in batches of purge_batch_objects (one
// short index transaction each, so other writers are not stalled), removes the device, then
// compacts; its receipt (objects, bytes, disk bytes reclaimed, start, end) is the job's result
// and an audit record ("device.purge", role "system").
//
// Who may change a job (cancel it, delete its images): a key may change only a job of a kind
// its role may create. The operator creates every kind; a partner key only device.purge and
// courier jobs, of its own accounts. A partner key that can see a job of another kind (the
// account.purge of its own account) gets 403 operator_only, and the attempt is audited
// ("job.cancel.refused", "courier.images_delete.refused"); nothing else changes. Reading jobs
// (GET /jobs, /jobs/{j}) follows the account scope alone. Jobs run on three lanes (threads),
// one per kind of work, so that none waits for another: purges (device.purge,
// account.purge; background compaction when idle), courier images, maintenance (scrub,
// repair, disk.drain).
//
// Every mutation appends an audit record (time, key id, role, action, target, before, after)
// in the same index transaction as the change, so that a crash or an error never leaves one
// without the other: disk changes and fsck's fix included (the store runs the record inside
// its own transaction). Two kinds of change are recorded around the change rather than in
// it: a job's work, which commits batch by batch with its progress, is recorded when it is
// scheduled (with the job) and by its receipt or failure (with the job's final state; a job
// a crash interrupted resumes, so the record follows); an index backup is files, not an index
// change, and its record follows the copy. Request bodies are strict: unknown or duplicate
// fields, wrong types, sizes beyond 1 EiB, malformed ids and dates are 400 and change nothing.
// Errors are {"error":{"code","message"[,"field"]}}, plus the numbers a client acts on where
// there are some (507 insufficient_storage: needed_bytes, free_bytes, held_bytes).
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
  // Not empty: instead of `body`, the server streams this file (application/octet-stream)
  // and answers the request's Range header itself (206, 416). For multi-GB courier images.
  std::string file;
};

struct Options {
  // Where a newly generated operator key is written, once, with mode 0600.
  std::string key_file;
  // Replace the stored operator key with a new one (the old key stops working).
  bool new_operator_key = false;

  // Jobs. run_jobs: run them on a background thread (see "Jobs" above).
  bool run_jobs = true;
  int64_t purge_grace_ns = int64_t{7} * 86400 * 1000000000;  // DELETE device: default grace
  uint32_t purge_batch_objects = 1000;   // objects removed per index transaction
  int64_t job_poll_ns = 1000000000;      // how often the runner looks for due jobs
  int64_t job_retry_ns = 60000000000;    // a job that failed for a transient reason retries
  uint32_t job_max_attempts = 10;        // ...and is "failed" after this many errors
  storage::CompactOptions compact;       // after purges and in the background
  int64_t compact_interval_ns = int64_t{3600} * 1000000000;  // background compaction; 0 = off
  // Background scrub: a pass whenever the last full one is older than this (0 = off), read at
  // what the disks hold / (interval / 2) per second, within [min, max].
  int64_t scrub_interval_ns = int64_t{30} * 86400 * 1000000000;
  uint64_t scrub_min_bytes_per_sec = 1 << 20;
  uint64_t scrub_max_bytes_per_sec = 50ull << 20;
  // Repair at once what a scrub found, what reads queued, and (every 10 minutes while it
  // lasts) the shards of failed disks.
  bool auto_repair = true;
  // Courier images (admin/jobs/courier.cc): written to courier_dir/<job>/, signed with the
  // Ed25519 key in courier_key_file (made on first use, mode 0600), at most
  // courier_bytes_per_sec read from the store (0 = unthrottled).
  std::string courier_dir;
  std::string courier_key_file;
  uint64_t courier_bytes_per_sec = 0;
  // A node of a cluster: what the admin API asks of the cluster (cluster/ implements it, and
  // server/ hands it in here). Null: a single node.
  class ClusterHooks* cluster = nullptr;
};

// What the admin API asks of the cluster on a node of one (cluster/placement.h implements it).
// kUnavailable from any of them: etcd cannot be reached, answered 503 etcd_unavailable with
// Retry-After, and nothing changes. Thread-safe.
class ClusterHooks {
 public:
  virtual ~ClusterHooks() = default;
  // GET /cluster's answer (JSON; admin/API.md).
  virtual Result<std::string> StatusJson() = 0;
  // Records in etcd, before the account is created here, that it lives on this node: an
  // account has one placement, written once.
  virtual Status PlaceAccount(const index::Id& account) = 0;
  // Records in etcd, before the device is created here, which account it belongs to.
  virtual Status PlaceDevice(const index::Id& device, const index::Id& account) = 0;
  // Takes back what PlaceAccount or PlaceDevice wrote when the creation was refused after all,
  // or when the account was purged; an account's devices' records go with it (best effort: a
  // placement of something that does not exist only answers 404).
  virtual void UnplaceAccount(const index::Id& account) = 0;
  virtual void UnplaceDevice(const index::Id& device) = 0;
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

// The index meta key holding the start (ns) of the last complete scrub pass (GET /status,
// and chunkvault_last_full_scrub_timestamp_seconds in server/'s metrics).
inline constexpr std::string_view kLastFullScrubMeta = "ops/last_full_scrub_ns";

// The routes AdminApi::Handle serves, in its matching order: method, path under /admin/v1/
// with {placeholders}, and whether only the operator key may call it.
struct RouteInfo {
  std::string_view method;
  std::string_view path;
  bool operator_only;
};
std::vector<RouteInfo> RouteTable();

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
// The JSON error body for an Error. 5xx errors get their public_message (which disks are
// full, ...) or else a generic one: details (paths, errno) go to the log.
std::string ErrorJson(const Error& error);

}  // namespace cv::admin
