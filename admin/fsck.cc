// GET /fsck: the store's consistency check plus the account model's (usage recomputed from the
// objects, partner and device indexes), until cvctl offers the same.
#include <boost/json/array.hpp>

#include "admin/internal.h"

namespace cv::admin::internal {

Response Fsck(Call& c) {
  auto report = c.store.Fsck();
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
  return Reply(200, o);
}

}  // namespace cv::admin::internal
