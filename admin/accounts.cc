// Accounts: create, list, read, change (plan, device limit, status, expiry), release, usage,
// delete (an account.purge job, admin/jobs/account_purge.cc).
#include <boost/json/array.hpp>

#include "admin/internal.h"
#include "admin/jobs/jobs.h"

namespace cv::admin::internal {

namespace {

constexpr int64_t kNsPerDay = int64_t{86400} * 1'000'000'000;

std::string AccountTarget(const index::Id& id) { return "account/" + index::IdToHex(id); }

ApiError TrialNeedsExpiry() {
  return ApiError{400, "missing_field",
                  "a trial needs an end: give 'expires_at' (or 'trial_days' when creating)",
                  "expires_at"};
}

}  // namespace

Response CreateAccount(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown(
          {"partner", "plan_quota_bytes", "device_limit", "status", "expires_at", "trial_days"});
      !ok) {
    return FromApiError(ok.error());
  }
  auto partner = body->Id("partner");
  if (!partner) return FromApiError(partner.error());
  auto quota =
      JsonBody::Required(body->Unsigned("plan_quota_bytes", 0, kMaxBytes), "plan_quota_bytes");
  if (!quota) return FromApiError(quota.error());
  auto limit =
      JsonBody::Required(body->Unsigned("device_limit", 0, kMaxDeviceLimit), "device_limit");
  if (!limit) return FromApiError(limit.error());
  auto status_name = JsonBody::Required(body->String("status"), "status");
  if (!status_name) return FromApiError(status_name.error());
  auto status = index::ParseAccountStatus(*status_name);
  if (!status ||
      (*status != index::AccountStatus::kTrial && *status != index::AccountStatus::kActive)) {
    return FromApiError(BadField("status", "must be \"trial\" or \"active\"").value());
  }
  auto expires = body->Time("expires_at", /*null_ok=*/true);
  if (!expires) return FromApiError(expires.error());
  auto trial_days = body->Unsigned("trial_days", 1, kMaxTrialDays);
  if (!trial_days) return FromApiError(trial_days.error());
  if (*trial_days && *expires) {
    return FromApiError(
        BadField("trial_days", "cannot be given together with 'expires_at'").value());
  }
  if (*trial_days && *status != index::AccountStatus::kTrial) {
    return FromApiError(BadField("trial_days", "is only for status \"trial\"").value());
  }
  int64_t expires_ns = expires->value_or(0);
  if (*trial_days) expires_ns = c.now_ns + static_cast<int64_t>(**trial_days) * kNsPerDay;
  if (expires_ns != 0 && expires_ns <= c.now_ns) {
    return FromApiError(BadField("expires_at", "must be in the future").value());
  }
  if (*status == index::AccountStatus::kTrial && expires_ns == 0) {
    return FromApiError(TrialNeedsExpiry());
  }

  index::Account a;
  a.id = index::NewId();
  // A partner key creates accounts of its own partner; naming another one is the same as
  // naming one that does not exist.
  a.partner = c.caller.is_operator ? *partner : std::optional<index::Id>(c.caller.partner);
  const bool foreign = !c.caller.is_operator && *partner && **partner != c.caller.partner;
  a.status = *status;
  a.plan_quota_bytes = *quota;
  a.device_limit = static_cast<uint32_t>(*limit);
  a.expires_ns = expires_ns;
  a.created_ns = c.now_ns;
  // The partner must exist and be the key's own (checked before anything is published, and
  // again in the transaction).
  auto partner_refusal = [&](index::Txn& txn) -> Result<std::optional<Outcome>> {
    if (!a.partner) return std::nullopt;
    CV_TRY_ASSIGN(auto p, txn.GetPartner(*a.partner));
    if (!p || foreign) {
      return Outcome(BadField("partner", "names no partner (or one this key may not use)"));
    }
    return std::nullopt;
  };
  ClusterHooks* cluster = c.options->cluster;
  if (cluster) {
    Response seen = InRead(c, [&](index::Txn& txn) -> Result<Outcome> {
      CV_TRY_ASSIGN(auto refused, partner_refusal(txn));
      return refused ? std::move(*refused) : Outcome(Response{});
    });
    if (seen.status != 200) return seen;
    if (Status st = cluster->PlaceAccount(a.id); !st) return FromClusterError(st.error());
  }
  Response r = InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto refused, partner_refusal(txn));
    if (refused) return std::move(*refused);
    CV_TRY_ASSIGN(auto existing, txn.GetAccount(a.id));
    if (existing) return Err(ErrorKind::kConflict, "account id collision");
    CV_TRY(txn.PutAccount(a));
    CV_TRY(AppendAudit(txn, c, "account.create", AccountTarget(a.id), a.id, a.partner, nullptr,
                       AccountSettingsJson(a)));
    return Outcome(Reply(201, AccountJson(a, {}, c.now_ns)));
  });
  if (cluster && r.status != 201) cluster->UnplaceAccount(a.id);
  return r;
}

Response ListAccounts(Call& c) {
  auto q = Query::Parse(c.query, {"partner", "status", "cursor", "limit"});
  if (!q) return FromApiError(q.error());
  auto partner = q->Id("partner");
  if (!partner) return FromApiError(partner.error());
  auto cursor = q->Id("cursor");
  if (!cursor) return FromApiError(cursor.error());
  auto limit = q->Limit();
  if (!limit) return FromApiError(limit.error());
  index::AccountQuery query;
  if (auto s = q->Get("status")) {
    query.status = index::ParseAccountStatus(*s);
    if (!query.status) {
      return FromApiError(ApiError{400, "invalid_parameter",
                                   "query parameter 'status' must be trial, active, expired or "
                                   "suspended",
                                   "status"});
    }
  }
  query.partner = *partner;
  if (!c.caller.is_operator) {
    // Another partner's accounts look like those of a partner that does not exist: none.
    if (*partner && **partner != c.caller.partner) {
      return Reply(200, Page(json::array(), std::nullopt));
    }
    query.partner = c.caller.partner;
  }
  query.now_ns = c.now_ns;
  query.start_after = *cursor;
  query.limit = *limit;
  return InRead(c, [&](index::Txn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto page, txn.ListAccounts(query));
    json::array items;
    for (const auto& a : page) {
      CV_TRY_ASSIGN(auto addons, txn.ListAddOns(a.id));
      items.push_back(AccountJson(a, addons, c.now_ns));
    }
    std::optional<std::string> next;
    if (page.size() == *limit) next = index::IdToHex(page.back().id);
    return Outcome(Reply(200, Page(std::move(items), next)));
  });
}

Response GetAccount(Call& c) {
  return InRead(c, [&](index::Txn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto a, VisibleAccount(txn, c.caller, *c.account));
    if (!a) return Outcome(tl::unexpected(NoSuch("account")));
    CV_TRY_ASSIGN(auto addons, txn.ListAddOns(a->id));
    return Outcome(Reply(200, AccountJson(*a, addons, c.now_ns)));
  });
}

Response PatchAccount(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({"plan_quota_bytes", "device_limit", "status", "expires_at"});
      !ok) {
    return FromApiError(ok.error());
  }
  if (body->Empty()) {
    return FromApiError(ApiError{400,
                                 "nothing_to_change",
                                 "give at least one of plan_quota_bytes, device_limit, status, "
                                 "expires_at",
                                 {}});
  }
  auto quota = body->Unsigned("plan_quota_bytes", 0, kMaxBytes);
  if (!quota) return FromApiError(quota.error());
  auto limit = body->Unsigned("device_limit", 0, kMaxDeviceLimit);
  if (!limit) return FromApiError(limit.error());
  auto status_name = body->String("status");
  if (!status_name) return FromApiError(status_name.error());
  std::optional<index::AccountStatus> status;
  if (*status_name) {
    status = index::ParseAccountStatus(**status_name);
    if (!status) {
      return FromApiError(
          BadField("status", "must be \"trial\", \"active\", \"expired\" or \"suspended\"")
              .value());
    }
  }
  // An expiry in the past is allowed here: it ends a trial now.
  auto expires = body->Time("expires_at", /*null_ok=*/true);
  if (!expires) return FromApiError(expires.error());

  return InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto a, VisibleAccount(txn, c.caller, *c.account));
    if (!a) return Outcome(tl::unexpected(NoSuch("account")));
    const index::Account before = *a;
    index::Account after = before;
    if (*quota) after.plan_quota_bytes = **quota;
    if (*limit) after.device_limit = static_cast<uint32_t>(**limit);
    if (status) after.status = *status;
    if (*expires) after.expires_ns = **expires;
    if (after.status == index::AccountStatus::kTrial && after.expires_ns == 0) {
      return Outcome(tl::unexpected(TrialNeedsExpiry()));
    }
    CV_TRY(txn.PutAccount(after));
    CV_TRY(AppendAudit(txn, c, "account.update", AccountTarget(after.id), after.id, after.partner,
                       AccountSettingsJson(before), AccountSettingsJson(after)));
    CV_TRY_ASSIGN(auto addons, txn.ListAddOns(after.id));
    return Outcome(Reply(200, AccountJson(after, addons, c.now_ns)));
  });
}

Response ReleaseAccount(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({}); !ok) return FromApiError(ok.error());
  return InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto a, VisibleAccount(txn, c.caller, *c.account));
    if (!a) return Outcome(tl::unexpected(NoSuch("account")));
    const index::Account before = *a;
    if (!before.partner) {  // only the operator sees released accounts
      return Outcome(
          tl::unexpected(ApiError{409, "already_released", "the account has no partner", {}}));
    }
    index::Account after = before;
    after.partner.reset();
    CV_TRY(txn.PutAccount(after));
    // Recorded under the old partner, so that its audit view shows the release.
    CV_TRY(AppendAudit(txn, c, "account.release", AccountTarget(after.id), after.id, before.partner,
                       AccountSettingsJson(before), AccountSettingsJson(after)));
    CV_TRY_ASSIGN(auto addons, txn.ListAddOns(after.id));
    return Outcome(Reply(200, AccountJson(after, addons, c.now_ns)));
  });
}

Response GetUsage(Call& c) {
  return InRead(c, [&](index::Txn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto a, VisibleAccount(txn, c.caller, *c.account));
    if (!a) return Outcome(tl::unexpected(NoSuch("account")));
    CV_TRY_ASSIGN(auto addons, txn.ListAddOns(a->id));
    CV_TRY_ASSIGN(auto devices, txn.ListDevices(a->id));
    const index::Account& acct = *a;
    json::object o;
    o["account"] = index::IdToHex(acct.id);
    o["status"] = index::AccountStatusName(index::EffectiveStatus(acct, c.now_ns));
    o["quota_bytes"] = index::QuotaBytes(acct, addons, c.now_ns);
    o["plan_quota_bytes"] = acct.plan_quota_bytes;
    json::array addon_items;
    for (const auto& x : addons) addon_items.push_back(AddOnJson(x, c.now_ns));
    o["addons"] = std::move(addon_items);
    o["used_bytes"] = acct.bytes;
    o["objects"] = acct.objects;
    o["reserved_bytes"] = acct.reserved_bytes;
    o["device_limit"] = acct.device_limit;
    json::array device_items;
    for (const auto& d : devices) {
      json::object x;
      x["id"] = index::IdToHex(d.id);
      x["name"] = d.name;
      x["kind"] = d.kind == index::DeviceKind::kServer ? "server" : "computer";
      x["bytes"] = d.bytes;
      x["objects"] = d.objects;
      x["last_upload_at"] = TimeOrNull(d.last_upload_ns);
      x["last_backup_at"] = TimeOrNull(d.last_backup_ns);
      device_items.push_back(std::move(x));
    }
    o["devices"] = std::move(device_items);
    return Outcome(Reply(200, o));
  });
}

Response DeleteAccount(Call& c) {
  if (!c.request.body.empty()) {
    return FromApiError(ApiError{400, "unexpected_body", "DELETE takes no body", {}});
  }
  auto grace = PurgeGrace(c);
  if (!grace) return FromApiError(grace.error());
  Response r = InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto a, VisibleAccount(txn, c.caller, *c.account));
    if (!a) return Outcome(tl::unexpected(NoSuch("account")));
    CV_TRY_ASSIGN(auto pending, jobs::PendingAccountPurge(txn, *c.account));
    if (pending) {
      return Outcome(tl::unexpected(
          ApiError{409,
                   "already_deleted",
                   "the account is already deleted by job " + index::IdToHex(*pending),
                   {}}));
    }
    CV_TRY_ASSIGN(auto devices, txn.ListDevices(*c.account));
    const jobs::AccountPurgeParams params{*grace / 1000000000, devices.size()};
    index::Job job = jobs::NewJob(jobs::kPurgeAccountJob, *c.account, std::nullopt,
                                  json::value_from(params), c.now_ns, c.now_ns + *grace);
    for (index::DeviceRecord d : devices) {
      if (d.closed_ns != 0) continue;  // already closed by a device purge of its own
      d.closed_ns = c.now_ns;
      d.purge_job = job.id;
      CV_TRY(txn.PutDevice(d));
    }
    CV_TRY(txn.PutJob(job));
    json::object after = jobs::JobJson(job);
    CV_TRY(AppendAudit(txn, c, "account.delete", "account/" + index::IdToHex(*c.account),
                       *c.account, a->partner, AccountSettingsJson(*a), after));
    Response ok = Reply(202, after);
    ok.headers.emplace_back("Location", "/admin/v1/jobs/" + index::IdToHex(job.id));
    return Outcome(std::move(ok));
  });
  if (r.status == 202 && *grace == 0 && c.runner) c.runner->Wake();
  return r;
}

}  // namespace cv::admin::internal
