// Answers, transactions, scoping and audit records: what every handler uses.
#include <boost/json/serialize.hpp>

#include "admin/internal.h"

namespace cv::admin::internal {

Response Reply(int status, const json::value& body) {
  return Response{status, json::serialize(body), {}, {}};
}

Response FromApiError(const ApiError& e) {
  json::object err = ErrorObject(e.code, e.message, e.field);
  // ErrorObject made the strings valid UTF-8; the details are ours.
  for (const auto& kv : e.details) err[kv.key()] = kv.value();
  json::object root;
  root["error"] = std::move(err);
  return Response{e.status, json::serialize(root), {}, {}};
}

Response FromError(const Error& e) {
  if (HttpStatus(e.kind) >= 500) Log(LogLevel::kError, "admin_error", {{"error", e.ToString()}});
  return Response{HttpStatus(e.kind), ErrorJson(e), {}, {}};
}

ApiError NoSuch(std::string_view what) {
  return ApiError{404, "not_found", "no such " + std::string(what), {}};
}

Response InUpdate(Call& c, const std::function<Result<Outcome>(index::WriteTxn&)>& fn) {
  return InStoreTxn([&](const TxnFn& in) { return c.store.Index().Update(in); }, fn);
}

Response InStoreTxn(const std::function<Status(const TxnFn&)>& commit,
                    const std::function<Result<Outcome>(index::WriteTxn&)>& fn) {
  std::optional<Outcome> outcome;
  auto st = commit([&](index::WriteTxn& txn) -> Status {
    outcome.reset();  // a retry after map growth starts over
    CV_TRY_ASSIGN(auto r, fn(txn));
    outcome = std::move(r);
    if (!*outcome) return Err(ErrorKind::kInvalidArgument, "refused");  // rolls back
    return {};
  });
  if (outcome && !*outcome) return FromApiError(outcome->error());
  if (!st) return FromError(st.error());
  if (!outcome) return FromError(Error{ErrorKind::kInternal, 0, "update ran no transaction"});
  return std::move(**outcome);
}

Response InRead(Call& c, const std::function<Result<Outcome>(index::Txn&)>& fn) {
  auto txn = c.store.Index().BeginRead();
  if (!txn) return FromError(txn.error());
  auto r = fn(**txn);
  txn->reset();
  if (!r) return FromError(r.error());
  if (!*r) return FromApiError(r->error());
  return std::move(**r);
}

bool Visible(const Caller& caller, const index::Account& account) {
  return caller.is_operator || account.partner == caller.partner;
}

Result<std::optional<index::Account>> VisibleAccount(index::Txn& txn, const Caller& caller,
                                                     const index::Id& id) {
  auto a = txn.GetAccount(id);
  CV_TRY(a);
  if (!*a || !Visible(caller, **a)) return std::optional<index::Account>();
  return a;
}

namespace {

Status Append(index::WriteTxn& txn, int64_t now_ns, const index::Id& key_id, std::string role,
              std::string_view action, std::string target, std::optional<index::Id> account,
              std::optional<index::Id> partner, const json::value& before,
              const json::value& after) {
  index::AuditRecord r;
  r.time_ns = now_ns;
  r.key_id = key_id;
  r.role = std::move(role);
  r.action = std::string(action);
  r.target = std::move(target);
  r.account = account;
  r.partner = partner;
  r.before_json = json::serialize(before);
  r.after_json = json::serialize(after);
  CV_TRY(txn.AppendAudit(r));
  return {};
}

}  // namespace

Status AppendAudit(index::WriteTxn& txn, const Call& call, std::string_view action,
                   std::string target, std::optional<index::Id> account,
                   std::optional<index::Id> partner, const json::value& before,
                   const json::value& after) {
  return Append(txn, call.now_ns, call.caller.key_id, call.caller.role, action, std::move(target),
                account, partner, before, after);
}

Status AppendSystemAudit(index::WriteTxn& txn, int64_t now_ns, std::string_view action,
                         std::string target, std::optional<index::Id> account,
                         std::optional<index::Id> partner, const json::value& before,
                         const json::value& after) {
  return Append(txn, now_ns, index::Id{}, "system", action, std::move(target), account, partner,
                before, after);
}

}  // namespace cv::admin::internal
