// GET /fsck: the store's consistency check plus the account model's (usage recomputed from the
// objects, partner and device indexes). POST /fsck {"fix": true}: the same, correcting the
// usage counters and extent accounting on the way (audited as node.fsck_fix, in the same
// transaction as the fix).
#include <boost/json/array.hpp>

#include "admin/internal.h"

namespace cv::admin::internal {

namespace {

json::object FsckJson(const storage::FsckReport& report, const std::vector<std::string>& accounts,
                      bool fix) {
  json::array problems;
  for (const auto& p : report.problems) problems.push_back(json::value(p));
  for (const auto& p : accounts) problems.push_back(json::value(p));
  json::object o;
  o["clean"] = problems.empty();
  o["objects"] = report.objects;
  o["bytes"] = report.bytes;
  o["problems"] = std::move(problems);
  if (fix) {
    json::array fixed;
    for (const auto& f : report.fixed) fixed.push_back(json::value(f));
    o["fixed"] = std::move(fixed);
  }
  return o;
}

Response RunFsck(Call& c, bool fix) {
  if (!fix) {
    auto report = c.store.Fsck(false);
    if (!report) return FromError(report.error());
    auto txn = c.store.Index().BeginRead();
    if (!txn) return FromError(txn.error());
    auto accounts = index::CheckAccounts(**txn);
    txn->reset();
    if (!accounts) return FromError(accounts.error());
    return Reply(200, FsckJson(*report, *accounts, false));
  }
  // The fix, the account model's check after it and the audit record of what was fixed, in
  // the fix's one index transaction: a fix is never committed without its record.
  storage::FsckReport report;
  return InStoreTxn(
      [&](const TxnFn& in) -> Status {
        auto done = c.store.Fsck(true, [&](index::WriteTxn& txn, const storage::FsckReport& r) {
          report = r;
          return in(txn);
        });
        return done ? Status{} : Status(tl::unexpected(done.error()));
      },
      [&](index::WriteTxn& txn) -> Result<Outcome> {
        CV_TRY_ASSIGN(auto accounts, index::CheckAccounts(txn));
        json::object o = FsckJson(report, accounts, true);
        if (!report.fixed.empty()) CV_TRY(AuditNodeAction(txn, c, "node.fsck_fix", "index", o));
        return Outcome(Reply(200, o));
      });
}

}  // namespace

Response Fsck(Call& c) { return RunFsck(c, false); }

Response FixFsck(Call& c) {
  auto body = JsonBody::Parse(c.request.body);
  if (!body) return FromApiError(body.error());
  if (auto ok = body->OnlyKnown({"fix"}); !ok) return FromApiError(ok.error());
  auto fix = JsonBody::Required(body->Bool("fix"), "fix");
  if (!fix) return FromApiError(fix.error());
  return RunFsck(c, *fix);
}

}  // namespace cv::admin::internal
