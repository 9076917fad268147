// admin/jobs/purge: what device.purge (device_purge.cc) and account.purge (account_purge.cc)
// share, internal to admin/jobs/. A purge removes its devices one after the other, each in
// batches of purge_batch_objects objects (one short index transaction each, so that other
// writers are not stalled), then each device's record, then hands the dead space to
// compaction.
//
// Progress (PurgeProgress): {"phase": "delete" | "compact" | "done", devices [ids],
// device_index, objects_done, bytes_done, objects_total, bytes_total}. Each batch's progress
// commits with the batch, so a resumed purge removes nothing twice and its counts stay exact.
#pragma once

#include <functional>
#include <vector>

#include "admin/jobs/jobs.h"

namespace cv::admin::jobs {

// What a kind of purge removes.
struct PurgePlan {
  // The devices, in the order they go: read once, in one index read transaction, when the
  // purge starts (the progress keeps them).
  std::function<Result<std::vector<index::DeviceRecord>>(index::Txn&)> devices;
  // Runs in the transaction that removes the last device (or at once when there is none);
  // may be null.
  std::function<Status(index::WriteTxn&)> at_end;
  // Whether the receipt says how many devices went (devices_removed).
  bool count_devices = false;
};

// The purge as the plan says, from where its progress says: the receipt (PurgeReceipt) when
// done, nullopt when it stopped (the node stops, or the job was cancelled).
JobResult RunPurge(JobContext& ctx, const PurgePlan& plan);

}  // namespace cv::admin::jobs
