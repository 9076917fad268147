// account.purge: deletes a whole account (DELETE /accounts/{a}, operator only) once its grace
// period is over: every device the account had when the job started, one after the other
// (purge.h), and then the account itself with its add-ons, in the transaction that removes
// the last device; then compaction. The receipt adds devices_removed to a device purge's. On a
// node of a cluster, the account's placement and its devices' records leave etcd at the end.
#include "admin/jobs/purge.h"

namespace cv::admin::jobs {

JobResult RunAccountPurgeJob(JobContext& ctx) {
  const index::Job& job = ctx.job;
  if (!job.account) {
    return Err(ErrorKind::kInvalidArgument, "account purge job without an account");
  }
  PurgePlan plan;
  plan.devices = [&](index::Txn& txn) { return txn.ListDevices(*job.account); };
  // The account goes with its last device (an account without devices: at once).
  plan.at_end = [&](index::WriteTxn& txn) -> Status {
    CV_TRY_ASSIGN(auto a, txn.GetAccount(*job.account));
    if (a) CV_TRY(txn.DeleteAccount(*job.account));  // and its add-ons
    return {};
  };
  plan.count_devices = true;
  JobResult result = RunPurge(ctx, plan);
  // Done: the account is gone from this node, so it goes from the cluster's placements too,
  // with its devices' records (best effort; a record left over points at nothing: 404).
  if (result && *result && ctx.options.cluster) ctx.options.cluster->UnplaceAccount(*job.account);
  return result;
}

}  // namespace cv::admin::jobs
