// GET /audit: the audit log, oldest first, by account or partner.
#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <charconv>

#include "admin/internal.h"

namespace cv::admin::internal {

namespace {

json::value StoredJson(const std::string& text) {
  json::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return json::value(text);  // never expected: we wrote it
  return v;
}

json::object AuditJson(const index::AuditRecord& r) {
  json::object o;
  o["seq"] = r.seq;
  o["time"] = TimeOrNull(r.time_ns);
  o["key_id"] = index::IdToHex(r.key_id);
  o["role"] = r.role;
  o["action"] = r.action;
  o["target"] = r.target;
  o["account"] = r.account ? json::value(index::IdToHex(*r.account)) : json::value(nullptr);
  o["partner"] = r.partner ? json::value(index::IdToHex(*r.partner)) : json::value(nullptr);
  o["before"] = StoredJson(r.before_json);
  o["after"] = StoredJson(r.after_json);
  return o;
}

}  // namespace

// A partner key sees the records made while an account belonged to its partner (its own
// actions, the operator's on its accounts, the release that ended them) and nothing after.
Response ListAudit(Call& c) {
  auto q = Query::Parse(c.query, {"account", "partner", "cursor", "limit"});
  if (!q) return FromApiError(q.error());
  auto account = q->Id("account");
  if (!account) return FromApiError(account.error());
  auto partner = q->Id("partner");
  if (!partner) return FromApiError(partner.error());
  auto limit = q->Limit();
  if (!limit) return FromApiError(limit.error());
  uint64_t after = 0;
  if (auto s = q->Get("cursor")) {
    auto [p, ec] = std::from_chars(s->data(), s->data() + s->size(), after);
    if (s->empty() || ec != std::errc() || p != s->data() + s->size()) {
      return FromApiError(ApiError{400, "invalid_parameter",
                                   "query parameter 'cursor' must be a sequence number", "cursor"});
    }
  }
  index::AuditQuery aq;
  aq.account = *account;
  aq.partner = *partner;
  aq.after_seq = after;
  aq.limit = *limit;
  if (!c.caller.is_operator) {
    if (*partner && **partner != c.caller.partner) {
      return Reply(200, Page(json::array(), std::nullopt));
    }
    aq.partner = c.caller.partner;
  }
  return InRead(c, [&](index::Txn& txn) -> Result<Outcome> {
    if (aq.account) {
      CV_TRY_ASSIGN(auto a, VisibleAccount(txn, c.caller, *aq.account));
      // The operator may read the history of an account that is gone; a partner may not.
      if (!a && !c.caller.is_operator) return Outcome(tl::unexpected(NoSuch("account")));
    }
    CV_TRY_ASSIGN(auto page, txn.ListAudit(aq));
    json::array items;
    for (const auto& r : page) items.push_back(AuditJson(r));
    std::optional<std::string> next;
    if (page.size() == *limit) next = std::to_string(page.back().seq);
    return Outcome(Reply(200, Page(std::move(items), next)));
  });
}

}  // namespace cv::admin::internal
