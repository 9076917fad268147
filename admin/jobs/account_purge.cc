// account.purge: deletes a whole account (DELETE /accounts/{a}, operator only) once its grace
// period is over: every device the account had when the job started, one after the other
// (purge.h), and then the account itself with its add-ons, in the transaction that removes
// the last device; then compaction. The receipt adds devices_removed to a device purge's.
#include "admin/jobs/purge.h"

namespace cv::admin::jobs {

JobResult RunAccountPurgeJob(JobContext& ctx) {
  index::Job& job = ctx.job;
  if (!job.account) {
    return Err(ErrorKind::kInvalidArgument, "account purge job without an account");
  }
  PurgeProgress progress = FromJsonText<PurgeProgress>(job.progress_json);
  if (progress.phase.empty()) {
    std::vector<index::DeviceRecord> devices;
    {
      auto txn = ctx.store.Index().BeginRead();
      if (!txn) return tl::unexpected(txn.error());
      auto all = (*txn)->ListDevices(*job.account);
      if (!all) return tl::unexpected(all.error());
      devices = std::move(*all);
    }
    progress = StartPurge(std::move(progress), devices);
  }
  auto devices = PurgeDeviceIds(progress);
  if (!devices) return tl::unexpected(devices.error());
  // The account goes with its last device (an account without devices: at once).
  auto deleted = DeleteDevices(ctx, progress, *devices, [&](index::WriteTxn& txn) -> Status {
    auto a = txn.GetAccount(*job.account);
    if (!a) return tl::unexpected(a.error());
    if (*a) CV_TRY(txn.DeleteAccount(*job.account));  // and its add-ons
    return {};
  });
  if (!deleted) return tl::unexpected(deleted.error());
  if (!*deleted) return Stopped();
  PurgeReceipt receipt;
  receipt.devices_removed = devices->size();
  return FinishPurge(ctx, progress, receipt);
}

}  // namespace cv::admin::jobs
