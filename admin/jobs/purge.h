// admin/jobs/purge: the steps that device.purge (device_purge.cc) and account.purge
// (account_purge.cc) share, internal to admin/jobs/. A purge removes its devices one after
// the other, each in batches of purge_batch_objects objects (one short index transaction
// each, so that other writers are not stalled), then hands the dead space to compaction.
//
// Progress (PurgeProgress): {"phase": "delete" | "compact" | "done", devices [ids],
// device_index, objects_done, bytes_done, objects_total, bytes_total}. Each batch's progress
// commits with the batch, so a resumed purge removes nothing twice and its counts stay exact.
#pragma once

#include <functional>
#include <vector>

#include "admin/jobs/jobs.h"

namespace cv::admin::jobs {

// `progress` of a purge that starts now (phase "delete") over `devices`, in order.
PurgeProgress StartPurge(PurgeProgress progress, const std::vector<index::DeviceRecord>& devices);
// The devices that `progress` names, in order.
Result<std::vector<index::Id>> PurgeDeviceIds(const PurgeProgress& progress);
// Phase "delete": removes the objects of `devices` (as PurgeDeviceIds read them), from
// device_index on, and then each device (its old agent hears "deleted" for as long as its
// account exists). `at_end` runs in the transaction that ends the phase. true: the phase is
// over; false: the job stopped (the node stops, or it was cancelled).
Result<bool> DeleteDevices(JobContext& ctx, PurgeProgress& progress,
                           const std::vector<index::Id>& devices,
                           const std::function<Status(index::WriteTxn&)>& at_end);
// Phases "compact" and "done": compacts, and returns the receipt: `receipt` (with what the
// kind adds) completed with objects_removed, bytes_removed, disk_bytes_reclaimed, started_at
// and finished_at.
JobResult FinishPurge(JobContext& ctx, PurgeProgress& progress, PurgeReceipt receipt);

}  // namespace cv::admin::jobs
