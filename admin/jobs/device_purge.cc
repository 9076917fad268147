// device.purge: deletes one device (DELETE /accounts/{a}/devices/{d}) once its grace period
// is over: its objects in batches, then the device, then compaction (purge.h). The receipt
// {objects_removed, bytes_removed, disk_bytes_reclaimed, started_at, finished_at} is the job's
// result and its audit record.
#include "admin/jobs/purge.h"

namespace cv::admin::jobs {

JobResult RunDevicePurgeJob(JobContext& ctx) {
  index::Job& job = ctx.job;
  if (!job.device) return Err(ErrorKind::kInvalidArgument, "purge job without a device");
  PurgeProgress progress = FromJsonText<PurgeProgress>(job.progress_json);
  if (progress.phase.empty()) {
    std::vector<index::DeviceRecord> devices;
    {
      auto txn = ctx.store.Index().BeginRead();
      if (!txn) return tl::unexpected(txn.error());
      auto d = (*txn)->GetDevice(*job.device);
      if (!d) return tl::unexpected(d.error());
      index::DeviceRecord gone;
      gone.id = *job.device;
      devices.push_back(d->value_or(gone));
    }
    progress = StartPurge(std::move(progress), devices);
  }
  auto devices = PurgeDeviceIds(progress);
  if (!devices) return tl::unexpected(devices.error());
  auto deleted = DeleteDevices(ctx, progress, *devices, nullptr);
  if (!deleted) return tl::unexpected(deleted.error());
  if (!*deleted) return Stopped();
  return FinishPurge(ctx, progress, PurgeReceipt{});
}

}  // namespace cv::admin::jobs
