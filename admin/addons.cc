// Storage add-ons: extra quota bytes for one account, each with an optional expiry.
#include <boost/json/array.hpp>

#include "admin/internal.h"

namespace cv::admin::internal {

namespace {

std::string AddOnTarget(const index::Id& account, const index::Id& addon) {
  return "account/" + index::IdToHex(account) + "/addon/" + index::IdToHex(addon);
}

}  // namespace

Response CreateAddOn(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({"bytes", "expires_at"}); !ok) return FromApiError(ok.error());
  auto bytes = JsonBody::Required(body->Unsigned("bytes", 1, kMaxBytes), "bytes");
  if (!bytes) return FromApiError(bytes.error());
  auto expires = body->Time("expires_at", /*null_ok=*/true);
  if (!expires) return FromApiError(expires.error());
  if (*expires && **expires != 0 && **expires <= c.now_ns) {
    return FromApiError(BadField("expires_at", "must be in the future").value());
  }
  index::AddOn x;
  x.id = index::NewId();
  x.account = *c.account;
  x.bytes = *bytes;
  x.expires_ns = expires->value_or(0);
  x.created_ns = c.now_ns;
  return InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto a, VisibleAccount(txn, c.caller, x.account));
    if (!a) return Outcome(tl::unexpected(NoSuch("account")));
    CV_TRY_ASSIGN(auto existing, txn.GetAddOn(x.account, x.id));
    if (existing) return Err(ErrorKind::kConflict, "add-on id collision");
    CV_TRY(txn.PutAddOn(x));
    CV_TRY(AppendAudit(txn, c, "addon.create", AddOnTarget(x.account, x.id), x.account, a->partner,
                       nullptr, AddOnJson(x, c.now_ns)));
    return Outcome(Reply(201, AddOnJson(x, c.now_ns)));
  });
}

Response ListAddOns(Call& c) {
  return InRead(c, [&](index::Txn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto a, VisibleAccount(txn, c.caller, *c.account));
    if (!a) return Outcome(tl::unexpected(NoSuch("account")));
    CV_TRY_ASSIGN(auto addons, txn.ListAddOns(*c.account));
    json::array items;
    for (const auto& x : addons) items.push_back(AddOnJson(x, c.now_ns));
    return Outcome(Reply(200, Page(std::move(items), std::nullopt)));
  });
}

Response DeleteAddOn(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({}); !ok) return FromApiError(ok.error());
  return InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto a, VisibleAccount(txn, c.caller, *c.account));
    if (!a) return Outcome(tl::unexpected(NoSuch("account")));
    CV_TRY_ASSIGN(auto x, txn.GetAddOn(*c.account, *c.addon));
    if (!x) return Outcome(tl::unexpected(NoSuch("add-on")));
    CV_TRY(txn.DeleteAddOn(*c.account, *c.addon));
    CV_TRY(AppendAudit(txn, c, "addon.delete", AddOnTarget(*c.account, *c.addon), *c.account,
                       a->partner, AddOnJson(*x, c.now_ns), nullptr));
    return Outcome(Reply(200, AddOnJson(*x, c.now_ns)));
  });
}

}  // namespace cv::admin::internal
