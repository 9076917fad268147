// admin/internal: what the route handlers share (internal to admin/). admin.cc authenticates
// the caller, matches the route and hands a Call to one handler; each resource has its own
// file (partners.cc, accounts.cc, addons.cc, devices.cc, job_routes.cc, audit.cc, fsck.cc,
// ops.cc, disks.cc, courier.cc). The jobs those routes schedule run in admin/jobs/
// (jobs/jobs.h).
//
// Scoping: a partner key sees the accounts whose partner is its partner, and the devices and
// add-ons of those accounts. Anything else -- another partner's account, a released account,
// an account that does not exist -- is the same 404 (VisibleAccount), checked inside the
// transaction that acts on it. Every mutation appends its audit record (AppendAudit) in that
// same transaction, so a change and its record commit or roll back together; a change the
// store commits itself (disks, fsck's fix) takes the record into its transaction (InStoreTxn).
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "admin/admin.h"
#include "admin/json_util.h"
#include "index/index.h"
#include "storage/storage.h"

namespace cv::admin::jobs {
class JobRunner;  // admin/jobs/jobs.h
}  // namespace cv::admin::jobs

namespace cv::admin::internal {

namespace json = boost::json;

// Who is calling: the operator key, or one partner's key.
struct Caller {
  index::Id key_id{};
  bool is_operator = false;
  index::Id partner{};  // partner keys only
  std::string role;     // AdminRoleName: "operator" or "partner:<hex>"
};

// One request, matched to its route.
struct Call {
  storage::ObjectStore& store;
  const Caller& caller;
  const Request& request;
  int64_t now_ns = 0;
  std::string_view query;  // after '?', raw
  // The ids named in the path, by the route's placeholders.
  std::optional<index::Id> partner, account, addon, device, key, job;
  uint32_t drive = 0;  // the {drive} placeholder (1..n) of courier image routes
  size_t disk = 0;     // the {disk} placeholder (a position, 0..) of disk routes
  const Options* options = nullptr;
  jobs::JobRunner* runner = nullptr;  // null when the API runs no jobs
};

// ---- answers ----
Response Reply(int status, const json::value& body);
// The "error" member of an error answer, its strings made valid UTF-8 (admin.cc; ErrorJson
// writes it).
json::object ErrorObject(std::string_view code, std::string_view message,
                         std::string_view field = {});
Response FromApiError(const ApiError& e);
// 5xx details go to the log; the client gets a generic message.
Response FromError(const Error& e);

// What a handler's transaction decides: an answer, or a refusal that rolls it back.
using Outcome = ApiResult<Response>;
// Runs fn in one Index::Update (fn may run more than once: no side effects outside txn). A
// refusal rolls back everything fn did and is answered as it is; index errors become 5xx.
Response InUpdate(Call& c, const std::function<Result<Outcome>(index::WriteTxn&)>& fn);
// The same inside the index transaction of a change that the store commits itself (a disk
// change, fsck's fix): `commit` makes the change and runs the function it is given in that
// change's transaction, so that the change, fn's records and fn's refusal commit or roll
// back together. Errors of `commit` itself (before fn runs) become 4xx/5xx as usual.
using TxnFn = std::function<Status(index::WriteTxn&)>;
Response InStoreTxn(const std::function<Status(const TxnFn&)>& commit,
                    const std::function<Result<Outcome>(index::WriteTxn&)>& fn);
// Runs fn on one read snapshot.
Response InRead(Call& c, const std::function<Result<Outcome>(index::Txn&)>& fn);
// The ApiError of "no such <what>" (404), identical whether absent or out of scope.
ApiError NoSuch(std::string_view what);

// ---- scoping ----
bool Visible(const Caller& caller, const index::Account& account);
// The account if it exists and the caller may see it; nullopt otherwise (-> 404).
Result<std::optional<index::Account>> VisibleAccount(index::Txn& txn, const Caller& caller,
                                                     const index::Id& id);

// ---- JSON of records (times as RFC 3339 UTC, null for "never") ----
json::value TimeOrNull(int64_t ns);
json::object PartnerJson(const index::Partner& p);
json::object AdminKeyJson(const index::AdminKey& k, int64_t now_ns);
// The settings of an account (what PATCH changes; also the audit's before/after).
json::object AccountSettingsJson(const index::Account& a);
// Settings plus status as of now, quota and usage.
json::object AccountJson(const index::Account& a, const std::vector<index::AddOn>& addons,
                         int64_t now_ns);
json::object AddOnJson(const index::AddOn& a, int64_t now_ns);
json::object DeviceJson(const index::DeviceRecord& d);
// {"items": [...], "next_cursor": cursor or null}
json::object Page(json::array items, std::optional<std::string> next_cursor);

// ---- audit ----
// Appends the record of a mutation by the caller. `before`/`after` are null for creation and
// removal.
Status AppendAudit(index::WriteTxn& txn, const Call& call, std::string_view action,
                   std::string target, std::optional<index::Id> account,
                   std::optional<index::Id> partner, const json::value& before,
                   const json::value& after);
// The same for work the node does by itself (jobs): key id zero, role "system".
Status AppendSystemAudit(index::WriteTxn& txn, int64_t now_ns, std::string_view action,
                         std::string target, std::optional<index::Id> account,
                         std::optional<index::Id> partner, const json::value& before,
                         const json::value& after);

// ---- jobs: who may see and change one (job_routes.cc); the jobs are admin/jobs/ ----
// The job if it exists and the caller may see it: the operator sees every job, a partner the
// jobs of its accounts.
Result<std::optional<index::Job>> VisibleJob(index::Txn& txn, const Caller& caller,
                                             const index::Id& id);
// The rule of every route that changes a job (POST /jobs/{j}/cancel, DELETE
// /jobs/{j}/images): a key may change only a job of a kind its role may create. The operator
// creates every kind; a partner key device.purge and courier jobs of its own accounts, never
// account.purge, scrub, repair or disk.drain. Reading (GET /jobs, /jobs/{j}, an image) is
// scoped by VisibleJob alone: a partner sees the account.purge job of its own account but
// cannot cancel it. Check VisibleJob first: what a key cannot see is 404, not 403.
bool MayChangeJob(const Caller& caller, std::string_view kind);
// The answer to a caller that may not change job j: 403 operator_only, and an audit record
// of the attempt ("<action>.refused", before = the job as it stays, after = {"refused":
// {status, code, message}}) appended to txn, which then commits with nothing else changed.
Result<Outcome> RefuseJobChange(index::WriteTxn& txn, const Call& c, const index::Job& j,
                                std::string_view action);
// ?grace= of a DELETE that schedules a purge (of a device or a whole account; devices.cc):
// the configured default, longer for anyone, shorter (0 included) only for the operator.
ApiResult<int64_t> PurgeGrace(const Call& c);

// ---- handlers, by resource ----
Response CreatePartner(Call& c);
Response ListPartners(Call& c);
Response GetPartner(Call& c);
Response CreatePartnerKey(Call& c);
Response GetPartnerKey(Call& c);
Response RevokePartnerKey(Call& c);

Response CreateAccount(Call& c);
Response ListAccounts(Call& c);
Response GetAccount(Call& c);
Response PatchAccount(Call& c);
Response ReleaseAccount(Call& c);
Response GetUsage(Call& c);
Response DeleteAccount(Call& c);  // operator only -> 202 account.purge job

Response CreateAddOn(Call& c);
Response ListAddOns(Call& c);
Response DeleteAddOn(Call& c);

Response CreateDevice(Call& c);
Response ListAccountDevices(Call& c);
Response GetDevice(Call& c);
Response PatchDevice(Call& c);
Response RotateDeviceToken(Call& c);
Response ListDevices(Call& c);  // GET /devices?stale_for=
// devices.cc: the 409 device_limit refusal when the account (if it has a record) has no room
// for one more open device; devices being deleted do not count. nullopt: there is room.
Result<std::optional<ApiError>> DeviceLimitReached(index::Txn& txn, const index::Id& account);

Response DeleteDevice(Call& c);  // -> 202 device.purge job

Response ListJobs(Call& c);
Response GetJob(Call& c);
Response CancelJob(Call& c);

Response ListAudit(Call& c);
Response Fsck(Call& c);
Response FixFsck(Call& c);  // POST /fsck {"fix": true}

// ops.cc: the operator's view and upkeep of the node (cvctl)
Response NodeStatus(Call& c);   // GET /status
Response ClusterStatus(Call& c);  // GET /cluster
// A ClusterHooks error: kUnavailable (etcd cannot be reached) is 503 etcd_unavailable with
// Retry-After; the others as FromError.
Response FromClusterError(const Error& e);
Response Scrub(Call& c);        // POST /scrub
Response Repair(Call& c);       // POST /repair
Response BackupIndex(Call& c);  // POST /index/backup
// ops.cc, shared with disks.cc:
// A node-level job asked for by the operator, with its params (json::value_from of the kind's
// params struct, admin/jobs/job_json.h): 202 with the job, or 409 naming the one of that kind
// already scheduled or running.
Response ScheduleOpsJob(Call& c, std::string_view kind, const json::value& params);
// The same in txn (with its audit record "job.schedule"): the job, or that 409. The caller
// wakes the runner once txn committed.
Result<ApiResult<index::Job>> ScheduleOpsJobIn(index::WriteTxn& txn, const Call& c,
                                               std::string_view kind, const json::value& params);
// 202 with the job and its Location.
Response JobScheduled(const index::Job& job);
// Records an operator action on the node (not on an account) in the audit log, in the
// transaction of the change.
Status AuditNodeAction(index::WriteTxn& txn, const Call& c, std::string_view action,
                       std::string target, const json::value& after);
// A body that must be a JSON object with no fields (or empty); the refusal otherwise.
std::optional<Response> RefuseFields(const Call& c);
// "4+2" -> {4, 2}.
std::optional<std::pair<int, int>> ParseProfile(std::string_view s);
// The stripe census of GET /status is cached for a few seconds; work that changes where
// shards are (the scrub, repair and drain jobs) drops it.
void ForgetCensus();

// disks.cc
json::object DiskJson(const storage::DiskStatus& d);
// Sets disk d's state (ObjectStore::SetDiskState) with fn in the same index transaction
// (InStoreTxn), given the disk as the change leaves it (DiskJson).
Response ChangeDiskState(
    Call& c, size_t d, storage::DiskState state,
    const std::function<Result<Outcome>(index::WriteTxn&, const json::object& disk)>& fn);
Response ListDisks(Call& c);   // GET /disks
Response AddDisk(Call& c);     // POST /disks {"path"}
Response DrainDisk(Call& c);   // POST /disks/{disk}/drain -> 202 disk.drain job
Response RemoveDisk(Call& c);  // POST /disks/{disk}/remove {"force"?}

// courier.cc: drive images for courier recovery
Response CourierPubkey(Call& c);   // GET /courier/pubkey
Response CreateCourier(Call& c);   // POST /accounts/{a}/devices/{d}/courier -> 202 job
Response CourierImage(Call& c);    // GET /jobs/{j}/images/{drive}: Response::file
Response DeleteCourierImages(Call& c);  // DELETE /jobs/{j}/images

}  // namespace cv::admin::internal
