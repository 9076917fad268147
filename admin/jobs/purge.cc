// The steps of a purge (purge.h): start, delete device by device in batches, compact, and
// the receipt.
#include "admin/jobs/purge.h"

namespace cv::admin::jobs {

namespace {

// Removes a purged device's record. While its account exists the index remembers it, with its
// last token's hash, so that its old agent hears "deleted" (410) rather than "wrong password".
Status Forget(index::WriteTxn& txn, const index::DeviceRecord& d, const index::Job& job) {
  CV_TRY(txn.DeleteDevice(d.id));
  CV_TRY_ASSIGN(auto a, txn.GetAccount(d.account));
  if (!a) return {};
  return txn.PutPurgedDevice(
      index::PurgedDevice{d.id, d.account, d.token_hash, NowNanos(), job.id});
}

// `progress` of a purge that starts now (phase "delete") over `devices`, in order; the
// runner's count of attempts stays.
PurgeProgress StartPurge(PurgeProgress progress, const std::vector<index::DeviceRecord>& devices) {
  progress.phase = "delete";
  progress.devices.clear();
  progress.device_index = progress.objects_done = progress.bytes_done = 0;
  progress.objects_total = progress.bytes_total = 0;
  for (const auto& d : devices) {
    progress.devices.push_back(index::IdToHex(d.id));
    progress.objects_total += d.objects;
    progress.bytes_total += d.bytes;
  }
  return progress;
}

// The devices that `progress` names, in order.
Result<std::vector<index::Id>> PurgeDeviceIds(const PurgeProgress& progress) {
  std::vector<index::Id> devices;
  for (const std::string& hex : progress.devices) {
    auto id = index::IdFromHex(hex);
    if (!id) return Err(ErrorKind::kCorruption, "purge job progress names a bad device id");
    devices.push_back(*id);
  }
  return devices;
}

// Phase "delete": removes the objects of `devices` (as PurgeDeviceIds read them), from
// device_index on, and then each device. `at_end` runs in the transaction that ends the
// phase. true: the phase is over; false: the job stopped.
Result<bool> DeleteDevices(JobContext& ctx, PurgeProgress& progress,
                           const std::vector<index::Id>& devices,
                           const std::function<Status(index::WriteTxn&)>& at_end) {
  index::Job& job = ctx.job;
  while (progress.phase == "delete") {
    const size_t at = progress.device_index;
    const bool last = at + 1 >= devices.size();
    PurgeProgress next;
    if (at >= devices.size()) {  // an account without devices
      next = progress;
      next.phase = "compact";
      CV_TRY_ASSIGN(auto saved, ctx.SaveProgress(next, [&](index::WriteTxn& txn) -> Status {
        return at_end ? at_end(txn) : Status{};
      }));
      if (!saved) return false;
      progress = std::move(next);
      break;
    }
    const index::Id device = devices[at];
    // Once per device and run: the deletion must survive an index rebuild before anything
    // of the device is removed.
    CV_TRY(ctx.store.WriteDeviceTombstone(device));
    while (true) {
      if (ctx.stopping()) return false;
      CV_TRY_ASSIGN(
          auto batch,
          ctx.store.PurgeObjects(device, ctx.options.purge_batch_objects,
                                 [&](index::WriteTxn& txn, const storage::PurgeBatch& b) -> Status {
                                   next = progress;
                                   next.objects_done += b.objects;
                                   next.bytes_done += b.bytes;
                                   if (b.objects == 0) {
                                     // Nothing left: the device goes, and a late upload can no
                                     // longer land.
                                     CV_TRY_ASSIGN(auto d, txn.GetDevice(device));
                                     if (d) CV_TRY(Forget(txn, *d, job));
                                     CV_TRY(txn.PutMeta(index::PurgedDeviceMetaKey(device),
                                                        index::IdToHex(job.id)));
                                     next.device_index = at + 1;
                                     if (last) {
                                       next.phase = "compact";
                                       if (at_end) CV_TRY(at_end(txn));
                                     }
                                   }
                                   index::Job j = job;
                                   j.progress_json = ToJsonText(next);
                                   return txn.PutJob(j);
                                 }));
      progress = std::move(next);
      job.progress_json = ToJsonText(progress);
      if (batch.objects == 0) break;
    }
  }
  return true;
}

// Phases "compact" and "done": compacts, and returns the receipt, `receipt` completed.
JobResult FinishPurge(JobContext& ctx, PurgeProgress& progress, PurgeReceipt receipt) {
  // Hand the dead space to compaction; the receipt counts what it returned (other dead space
  // it found on the way included).
  CV_TRY_ASSIGN(auto rep, ctx.store.Compact(ctx.options.compact));
  const int64_t now = NowNanos();
  receipt.objects_removed = progress.objects_done;
  receipt.bytes_removed = progress.bytes_done;
  receipt.disk_bytes_reclaimed = rep.bytes_reclaimed;
  receipt.started_at = TimeOf(ctx.job.started_ns);
  receipt.finished_at = TimeOf(now);
  progress.phase = "done";
  CV_TRY(ctx.SaveProgress(progress));
  return Done(receipt);
}

}  // namespace

JobResult RunPurge(JobContext& ctx, const PurgePlan& plan) {
  PurgeProgress progress = FromJsonText<PurgeProgress>(ctx.job.progress_json);
  if (progress.phase.empty()) {
    std::vector<index::DeviceRecord> devices;
    {
      CV_TRY_ASSIGN(auto txn, ctx.store.Index().BeginRead());
      CV_TRY_ASSIGN(auto listed, plan.devices(*txn));
      devices = std::move(listed);
    }
    progress = StartPurge(std::move(progress), devices);
  }
  CV_TRY_ASSIGN(auto devices, PurgeDeviceIds(progress));
  CV_TRY_ASSIGN(auto deleted, DeleteDevices(ctx, progress, devices, plan.at_end));
  if (!deleted) return Stopped();
  PurgeReceipt receipt;
  if (plan.count_devices) receipt.devices_removed = devices.size();
  return FinishPurge(ctx, progress, receipt);
}

}  // namespace cv::admin::jobs
