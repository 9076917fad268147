// Partners and their admin keys (operator only; the router refuses partner keys).
#include <boost/json/array.hpp>

#include "admin/internal.h"

namespace cv::admin::internal {

namespace {

std::string PartnerTarget(const index::Id& id) { return "partner/" + index::IdToHex(id); }

}  // namespace

Response CreatePartner(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({"name"}); !ok) return FromApiError(ok.error());
  auto name = JsonBody::Required(body->String("name"), "name");
  if (!name) return FromApiError(name.error());
  if (!ValidName(*name)) {
    return FromApiError(BadField("name", "must be 1-255 bytes without control characters").value());
  }
  index::Partner p;
  p.id = index::NewId();
  p.name = *name;
  p.created_ns = c.now_ns;
  return InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto existing, txn.GetPartner(p.id));
    if (existing) return Err(ErrorKind::kConflict, "partner id collision");
    CV_TRY(txn.PutPartner(p));
    CV_TRY(AppendAudit(txn, c, "partner.create", PartnerTarget(p.id), std::nullopt, p.id, nullptr,
                       PartnerJson(p)));
    return Outcome(Reply(201, PartnerJson(p)));
  });
}

Response ListPartners(Call& c) {
  auto q = Query::Parse(c.query, {"cursor", "limit"});
  if (!q) return FromApiError(q.error());
  auto cursor = q->Id("cursor");
  if (!cursor) return FromApiError(cursor.error());
  auto limit = q->Limit();
  if (!limit) return FromApiError(limit.error());
  return InRead(c, [&](index::Txn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto page, txn.ListPartners(*cursor, *limit));
    json::array items;
    for (const auto& p : page) items.push_back(PartnerJson(p));
    std::optional<std::string> next;
    if (page.size() == *limit) next = index::IdToHex(page.back().id);
    return Outcome(Reply(200, Page(std::move(items), next)));
  });
}

Response GetPartner(Call& c) {
  return InRead(c, [&](index::Txn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto p, txn.GetPartner(*c.partner));
    if (!p) return Outcome(tl::unexpected(NoSuch("partner")));
    return Outcome(Reply(200, PartnerJson(*p)));
  });
}

Response CreatePartnerKey(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({"expires_at"}); !ok) return FromApiError(ok.error());
  auto expires = body->Time("expires_at", /*null_ok=*/true);
  if (!expires) return FromApiError(expires.error());
  if (*expires && **expires != 0 && **expires <= c.now_ns) {
    return FromApiError(BadField("expires_at", "must be in the future").value());
  }
  const std::string secret = NewToken();
  index::AdminKey k;
  k.id = index::NewId();
  k.role = index::AdminRole::kPartner;
  k.partner = *c.partner;
  k.secret_sha256 = HashToken(secret);
  k.created_ns = c.now_ns;
  k.expires_ns = expires->value_or(0);
  return InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto p, txn.GetPartner(k.partner));
    if (!p) return Outcome(tl::unexpected(NoSuch("partner")));
    CV_TRY(txn.PutAdminKey(k));
    CV_TRY(AppendAudit(txn, c, "partner_key.create", "admin_key/" + index::IdToHex(k.id),
                       std::nullopt, k.partner, nullptr, AdminKeyJson(k, c.now_ns)));
    json::object o = AdminKeyJson(k, c.now_ns);
    o["key"] = secret;  // shown once; only its SHA-256 is stored
    return Outcome(Reply(201, o));
  });
}

Response GetPartnerKey(Call& c) {
  return InRead(c, [&](index::Txn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto k, txn.GetAdminKey(*c.key));
    if (!k || k->role != index::AdminRole::kPartner || k->partner != *c.partner) {
      return Outcome(tl::unexpected(NoSuch("key")));
    }
    return Outcome(Reply(200, AdminKeyJson(*k, c.now_ns)));
  });
}

Response RevokePartnerKey(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({}); !ok) return FromApiError(ok.error());
  return InUpdate(c, [&](index::WriteTxn& txn) -> Result<Outcome> {
    CV_TRY_ASSIGN(auto k, txn.GetAdminKey(*c.key));
    if (!k || k->role != index::AdminRole::kPartner || k->partner != *c.partner) {
      return Outcome(tl::unexpected(NoSuch("key")));
    }
    // Kept, disabled: audit records keep naming a key that can be looked up.
    index::AdminKey after = *k;
    after.disabled = true;
    CV_TRY(txn.PutAdminKey(after));
    CV_TRY(AppendAudit(txn, c, "partner_key.revoke", "admin_key/" + index::IdToHex(after.id),
                       std::nullopt, after.partner, AdminKeyJson(*k, c.now_ns),
                       AdminKeyJson(after, c.now_ns)));
    return Outcome(Reply(200, AdminKeyJson(after, c.now_ns)));
  });
}

}  // namespace cv::admin::internal
