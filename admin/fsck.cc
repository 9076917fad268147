// GET /fsck: the store's consistency check plus the account model's (usage recomputed from the
// objects, partner and device indexes). POST /fsck {"fix": true}: the same, correcting the
// usage counters and extent accounting on the way (audited as node.fsck_fix).
#include <boost/json/array.hpp>

#include "admin/internal.h"

namespace cv::admin::internal {

namespace {

Response RunFsck(Call& c, bool fix) {
  auto report = c.store.Fsck(fix);
  if (!report) return FromError(report.error());
  auto txn = c.store.Index().BeginRead();
  if (!txn) return FromError(txn.error());
  auto accounts = index::CheckAccounts(**txn);
  txn->reset();
  if (!accounts) return FromError(accounts.error());
  json::array problems;
  for (const auto& p : report->problems) problems.push_back(json::value(p));
  for (const auto& p : *accounts) problems.push_back(json::value(p));
  json::object o;
  o["clean"] = problems.empty();
  o["objects"] = report->objects;
  o["bytes"] = report->bytes;
  o["problems"] = std::move(problems);
  if (fix) {
    json::array fixed;
    for (const auto& f : report->fixed) fixed.push_back(json::value(f));
    o["fixed"] = std::move(fixed);
    if (!report->fixed.empty()) {
      if (auto st = AuditNodeAction(c, "node.fsck_fix", "index", o); !st) {
        return FromError(st.error());
      }
    }
  }
  return Reply(200, o);
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
