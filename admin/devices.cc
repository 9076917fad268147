// Devices of an account (create within the device limit, read, rename, append-only, rotate
// the token, delete: a device.purge job, admin/jobs/device_purge.cc) and the device report
// GET /devices?stale_for= ("computers not backing up").
// A device being deleted (closed until its purge, or its account's, has run) is on its way
// out: it takes no slot of the device limit, so that a partner replacing a decommissioned
// server can add the new one at once, and it is not reported as "not backing up".
#include <algorithm>
#include <boost/json/array.hpp>
#include <map>

#include "admin/internal.h"
#include "admin/jobs/jobs.h"

namespace cv::admin::internal {

namespace {

std::string DeviceTarget(const index::Id& account, const index::Id& device) {
  return "account/" + index::IdToHex(account) + "/device/" + index::IdToHex(device);
}

ApiError BadName() {
  return BadField("name", "must be 1-255 bytes without control characters").value();
}

ApiError Deleted() {
  return ApiError{409, "device_deleted",
                  "the device is deleted; cancel its purge job to change it again", {}};
}

// The device `device` of the visible account `account`; nullopt if either is not there.
struct Found {
  index::Account account;
  index::DeviceRecord device;
};
Result<std::optional<Found>> FindDevice(index::Txn& txn, const Caller& caller,
                                        const index::Id& account, const index::Id& device) {
  CV_TRY_ASSIGN(auto a, VisibleAccount(txn, caller, account));
  if (!a) return std::optional<Found>();
  CV_TRY_ASSIGN(auto d, txn.GetDevice(device));
  if (!d || d->account != account) return std::optional<Found>();
  return std::optional<Found>(Found{std::move(*a), std::move(*d)});
}

}  // namespace

Result<std::optional<ApiError>> DeviceLimitReached(index::Txn& txn, const index::Id& account) {
  CV_TRY_ASSIGN(auto a, txn.GetAccount(account));
  if (!a) return std::optional<ApiError>();  // no plan, no limit
  CV_TRY_ASSIGN(auto devices, txn.ListDevices(account));
  const size_t open = std::count_if(devices.begin(), devices.end(),
                                    [](const index::DeviceRecord& d) { return d.closed_ns == 0; });
  if (open < a->device_limit) return std::optional<ApiError>();
  return std::optional<ApiError>(ApiError{409,
                                          "device_limit",
                                          "the account has " + std::to_string(open) +
                                              " devices (not counting devices being deleted) "
                                              "and its plan allows " +
                                              std::to_string(a->device_limit),
                                          {}});
}

Response CreateDevice(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({"name", "kind", "append_only"}); !ok) {
    return FromApiError(ok.error());
  }
  auto name = JsonBody::Required(body->String("name"), "name");
  if (!name) return FromApiError(name.error());
  if (!ValidName(*name)) return FromApiError(BadName());
  auto kind = body->String("kind");
  if (!kind) return FromApiError(kind.error());
  auto append_only = body->Bool("append_only");
  if (!append_only) return FromApiError(append_only.error());
  index::DeviceRecord d;
  d.kind = index::DeviceKind::kComputer;
  if (*kind && **kind == "server") {
    d.kind = index::DeviceKind::kServer;
  } else if (*kind && **kind != "computer") {
    return FromApiError(BadField("kind", "must be \"computer\" or \"server\"").value());
  }
  d.id = index::NewId();
  d.account = *c.account;
  d.name = *name;
  d.append_only = append_only->value_or(true);
  const std::string token = NewToken();
  d.token_hash = HashToken(token);
  d.created_ns = c.now_ns;
  ClusterHooks* cluster = c.options->cluster;
  if (cluster) {
    // Nothing is published for an account the key may not see (checked again below).
    Response seen = InRead(c, [&](index::Txn& txn) -> Result<Outcome> {
      CV_TRY_ASSIGN(auto a, VisibleAccount(txn, c.caller, d.account));
      if (!a) return Outcome(tl::unexpected(NoSuch("account")));
      return Outcome(Response{});
    });
    if (seen.status != 200) return seen;
    if (Status st = cluster->PlaceDevice(d.id, d.account); !st) return FromClusterError(st.error());
  }
  Response r = InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto a, VisibleAccount(txn, c.caller, d.account));
    if (!a) return Outcome(tl::unexpected(NoSuch("account")));
    CV_TRY_ASSIGN(auto pending, jobs::PendingAccountPurge(txn, d.account));
    if (pending) {
      return Outcome(tl::unexpected(ApiError{
          409,
          "account_deleted",
          "the account is being deleted (job " + index::IdToHex(*pending) + "); cancel it first",
          {}}));
    }
    CV_TRY_ASSIGN(auto full, DeviceLimitReached(txn, d.account));
    if (full) return Outcome(tl::unexpected(std::move(*full)));
    CV_TRY_ASSIGN(auto existing, txn.GetDevice(d.id));
    if (existing) return Err(ErrorKind::kConflict, "device id collision");
    CV_TRY(txn.PutDevice(d));
    CV_TRY(AppendAudit(txn, c, "device.create", DeviceTarget(d.account, d.id), d.account,
                       a->partner, nullptr, DeviceJson(d)));
    json::object o = DeviceJson(d);
    o["token"] = token;  // shown once; only its SHA-256 is stored
    return Outcome(Reply(201, o));
  });
  if (cluster && r.status != 201) cluster->UnplaceDevice(d.id);
  return r;
}

Response ListAccountDevices(Call& c) {
  return InRead(c, [&](index::Txn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto a, VisibleAccount(txn, c.caller, *c.account));
    if (!a) return Outcome(tl::unexpected(NoSuch("account")));
    CV_TRY_ASSIGN(auto devices, txn.ListDevices(*c.account));
    json::array items;
    for (const auto& d : devices) items.push_back(DeviceJson(d));
    return Outcome(Reply(200, Page(std::move(items), std::nullopt)));
  });
}

Response GetDevice(Call& c) {
  return InRead(c, [&](index::Txn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto f, FindDevice(txn, c.caller, *c.account, *c.device));
    if (!f) return Outcome(tl::unexpected(NoSuch("device")));
    return Outcome(Reply(200, DeviceJson(f->device)));
  });
}

Response PatchDevice(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({"name", "append_only"}); !ok) return FromApiError(ok.error());
  if (body->Empty()) {
    return FromApiError(
        ApiError{400, "nothing_to_change", "give at least one of name, append_only", {}});
  }
  auto name = body->String("name");
  if (!name) return FromApiError(name.error());
  if (*name && !ValidName(**name)) return FromApiError(BadName());
  auto append_only = body->Bool("append_only");
  if (!append_only) return FromApiError(append_only.error());
  return InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto f, FindDevice(txn, c.caller, *c.account, *c.device));
    if (!f) return Outcome(tl::unexpected(NoSuch("device")));
    if (f->device.closed_ns != 0) return Outcome(tl::unexpected(Deleted()));
    const index::DeviceRecord& before = f->device;
    index::DeviceRecord after = before;
    if (*name) after.name = **name;
    if (*append_only) after.append_only = **append_only;
    CV_TRY(txn.PutDevice(after));
    CV_TRY(AppendAudit(txn, c, "device.update", DeviceTarget(after.account, after.id),
                       after.account, f->account.partner, DeviceJson(before), DeviceJson(after)));
    return Outcome(Reply(200, DeviceJson(after)));
  });
}

ApiResult<int64_t> PurgeGrace(const Call& c) {
  CV_TRY_ASSIGN(auto q, Query::Parse(c.query, {"grace"}));
  int64_t grace = c.options->purge_grace_ns;
  if (auto g = q.Get("grace")) {
    auto d = ParseDuration(*g);
    if (!d) {
      return tl::unexpected(ApiError{
          400, "invalid_query",
          "query parameter 'grace' must be a duration such as 7d, 24h or 0s", "grace"});
    }
    if (*d < grace && !c.caller.is_operator) {
      return tl::unexpected(ApiError{403, "operator_only",
                                     "only the operator may shorten the grace period below " +
                                         std::to_string(grace / 1000000000) + " s",
                                     "grace"});
    }
    grace = *d;
  }
  return grace;
}

Response DeleteDevice(Call& c) {
  if (!c.request.body.empty()) {
    return FromApiError(ApiError{400, "unexpected_body", "DELETE takes no body", {}});
  }
  auto parsed = PurgeGrace(c);
  if (!parsed) return FromApiError(parsed.error());
  const int64_t grace = *parsed;
  Response r = InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto f, FindDevice(txn, c.caller, *c.account, *c.device));
    if (!f) return Outcome(tl::unexpected(NoSuch("device")));
    index::DeviceRecord d = f->device;
    if (d.closed_ns != 0) {
      return Outcome(tl::unexpected(ApiError{
          409, "already_deleted", "the device is already deleted by job " + index::IdToHex(d.purge_job),
          {}}));
    }
    const jobs::DevicePurgeParams params{grace / 1000000000, d.name};
    index::Job job = jobs::NewJob(jobs::kPurgeDeviceJob, d.account, d.id, json::value_from(params),
                                  c.now_ns, c.now_ns + grace);
    const json::object before = DeviceJson(d);
    d.closed_ns = c.now_ns;
    d.purge_job = job.id;
    CV_TRY(txn.PutDevice(d));
    CV_TRY(txn.PutJob(job));
    json::object after = jobs::JobJson(job);
    CV_TRY(AppendAudit(txn, c, "device.delete", DeviceTarget(d.account, d.id), d.account,
                       f->account.partner, before, after));
    Response ok = Reply(202, after);
    ok.headers.emplace_back("Location", "/admin/v1/jobs/" + index::IdToHex(job.id));
    return Outcome(std::move(ok));
  });
  if (r.status == 202 && grace == 0 && c.runner) c.runner->Wake();
  return r;
}

Response RotateDeviceToken(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({}); !ok) return FromApiError(ok.error());
  const std::string token = NewToken();
  return InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto f, FindDevice(txn, c.caller, *c.account, *c.device));
    if (!f) return Outcome(tl::unexpected(NoSuch("device")));
    if (f->device.closed_ns != 0) return Outcome(tl::unexpected(Deleted()));
    index::DeviceRecord d = f->device;
    d.token_hash = HashToken(token);
    CV_TRY(txn.PutDevice(d));
    CV_TRY(AppendAudit(txn, c, "device.token_rotate", DeviceTarget(d.account, d.id), d.account,
                       f->account.partner, nullptr, nullptr));
    json::object o = DeviceJson(d);
    o["token"] = token;  // the old token stops working with this commit
    return Outcome(Reply(200, o));
  });
}

// A device is stale when its last completed backup (or, if it never completed one, its
// creation) is more than stale_for ago: a computer added a minute ago is not "not backing up".
Response ListDevices(Call& c) {
  auto q = Query::Parse(c.query, {"stale_for", "partner", "cursor", "limit"});
  if (!q) return FromApiError(q.error());
  std::optional<int64_t> stale_for;
  if (auto s = q->Get("stale_for")) {
    stale_for = ParseDuration(*s);
    if (!stale_for) {
      return FromApiError(ApiError{400, "invalid_parameter",
                                   "query parameter 'stale_for' must be a duration such as 72h, "
                                   "7d or 1d12h",
                                   "stale_for"});
    }
  }
  auto partner = q->Id("partner");
  if (!partner) return FromApiError(partner.error());
  auto cursor = q->Id("cursor");
  if (!cursor) return FromApiError(cursor.error());
  auto limit = q->Limit();
  if (!limit) return FromApiError(limit.error());
  std::optional<index::Id> scope = *partner;
  if (!c.caller.is_operator) {
    if (*partner && **partner != c.caller.partner) {
      return Reply(200, Page(json::array(), std::nullopt));
    }
    scope = c.caller.partner;
  }
  auto wanted = [&](const index::DeviceRecord& d) {
    if (*cursor && !(**cursor < d.id)) return false;
    if (!stale_for) return true;
    if (d.closed_ns != 0) return false;  // being deleted: nobody expects its backups
    const int64_t since = d.last_backup_ns != 0 ? d.last_backup_ns : d.created_ns;
    return c.now_ns - since > *stale_for;
  };
  return InRead(c, [&](index::Txn& txn) -> Result<Outcome> {
    std::vector<index::DeviceRecord> found;
    std::map<index::Id, std::optional<index::Id>> partner_of;  // account -> its partner
    if (scope) {
      // The partner's accounts, page by page, and their devices; sorted by id for the cursor.
      index::AccountQuery aq;
      aq.partner = scope;
      aq.limit = 1000;
      for (;;) {
        CV_TRY_ASSIGN(auto accounts, txn.ListAccounts(aq));
        for (const auto& a : accounts) {
          partner_of[a.id] = a.partner;
          CV_TRY_ASSIGN(auto devices, txn.ListDevices(a.id));
          for (auto& d : devices) {
            if (wanted(d)) found.push_back(std::move(d));
          }
        }
        if (accounts.size() < aq.limit) break;
        aq.start_after = accounts.back().id;
      }
      std::sort(found.begin(), found.end(),
                [](const auto& x, const auto& y) { return x.id < y.id; });
      if (found.size() > *limit) found.resize(*limit);
    } else {
      // Every device, in id order (devices of accounts without a record included).
      CV_TRY(txn.ForEachDevice([&](const index::DeviceRecord& d) {
        if (wanted(d)) found.push_back(d);
        return found.size() < *limit;
      }));
    }
    json::array items;
    for (const auto& d : found) {
      auto it = partner_of.find(d.account);
      if (it == partner_of.end()) {
        CV_TRY_ASSIGN(auto a, txn.GetAccount(d.account));
        it = partner_of.emplace(d.account, a ? a->partner : std::nullopt).first;
      }
      json::object o = DeviceJson(d);
      o["partner"] = it->second ? json::value(index::IdToHex(*it->second)) : json::value(nullptr);
      items.push_back(std::move(o));
    }
    std::optional<std::string> next;
    if (found.size() == *limit) next = index::IdToHex(found.back().id);
    return Outcome(Reply(200, Page(std::move(items), next)));
  });
}

}  // namespace cv::admin::internal
