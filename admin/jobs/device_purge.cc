// device.purge: deletes one device (DELETE /accounts/{a}/devices/{d}) once its grace period
// is over: its objects in batches, then the device, then compaction (purge.h). The receipt
// {objects_removed, bytes_removed, disk_bytes_reclaimed, started_at, finished_at} is the job's
// result and its audit record.
#include "admin/jobs/purge.h"

namespace cv::admin::jobs {

JobResult RunDevicePurgeJob(JobContext& ctx) {
  const index::Job& job = ctx.job;
  if (!job.device) return Err(ErrorKind::kInvalidArgument, "purge job without a device");
  PurgePlan plan;
  plan.devices = [&](index::Txn& txn) -> Result<std::vector<index::DeviceRecord>> {
    CV_TRY_ASSIGN(auto d, txn.GetDevice(*job.device));
    index::DeviceRecord gone;
    gone.id = *job.device;
    return std::vector<index::DeviceRecord>{d.value_or(gone)};
  };
  return RunPurge(ctx, plan);
}

}  // namespace cv::admin::jobs
