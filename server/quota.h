// server/quota: what a device's account lets agents do, and the hard quota's reservations in
// the upload path (the protocol itself is in index/index.h, "Quota protocol").
//
//   account status     reads (GET, HEAD, lists)   uploads              deletes
//   trial, active      yes                        within the quota     yes (append-only rules)
//   expired            yes                        locks only           locks only
//   suspended          403                        403                  403
//   no record          yes                        no quota             yes   (pre-account devices)
//
// restic takes a lock (a few hundred bytes) even to restore, and removes it afterwards. So
// that restores keep working from an expired or over-quota account, a lock upload of at most
// kLockExemptBytes to a device holding fewer than kMaxExemptLocks locks is neither refused for
// an expired account nor checked against the quota (LockExempt); it still counts in usage like
// every object. The bound keeps locks from being a way around the quota: at most
// kMaxExemptLocks * kLockExemptBytes per device.
//
// An upload reserves its Content-Length before its body is read (ReserveIn); the upload's
// own index commit gives the bytes back (ReleaseIn), so that they move from reserved to used
// at once. On failure, and when the client goes away, the Reservation gives them back in the
// store's next commit group (Release, or its destructor). Index updates go through the
// store's commit thread (server/store_commits.h): the worker thread never waits for them.
//
// Thread-safety: functions are thread-safe; a Reservation belongs to one upload.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>

#include "common/common.h"
#include "index/index.h"
#include "server/agent_api.h"
#include "storage/storage.h"

namespace cv::server {

inline constexpr uint64_t kLockExemptBytes = 64 * 1024;
inline constexpr size_t kMaxExemptLocks = 32;

// True for an upload of `size` bytes to `key` that the rules above let through (a small lock
// while its device holds few).
Result<bool> LockExempt(storage::ObjectStore& store, const index::ObjectKey& key, uint64_t size);

enum class AgentAccess { kRead, kWrite };
// nullopt when `account` (the device's, if it has a record) allows the access at now_ns;
// otherwise the 403 to answer: {"error":{"code":"account_suspended"|"account_expired",
// "message","status"}}. `lock`: the write is a lock upload/delete (see above).
std::optional<Reply> AccountRefusal(const std::optional<index::Account>& account, int64_t now_ns,
                                    AgentAccess access, bool lock);

// Bytes reserved for one upload; moves, releases once.
class Reservation {
 public:
  Reservation() = default;
  Reservation(storage::ObjectStore* store, const index::Id& account, uint64_t bytes)
      : store_(store), account_(account), bytes_(bytes) {}
  Reservation(Reservation&& other) noexcept { *this = std::move(other); }
  Reservation& operator=(Reservation&& other) noexcept;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation() { Release(); }

  // Gives the bytes back in the store's next commit group, without waiting (UpdateAsync:
  // whatever is queued after it, the client's next Reserve too, sees them free). A failure is
  // logged: the bytes then stay reserved until the next start clears all reservations.
  void Release();
  // The same as an index update for the upload's own commit (CommitUpload's `also`), so
  // that the object's bytes and the reservation's release commit together; call Forget once
  // that commit succeeded. Empty when nothing is held.
  std::function<Status(index::WriteTxn&)> ReleaseIn() const;
  void Forget() { store_ = nullptr; }
  bool held() const { return store_ != nullptr; }

 private:
  storage::ObjectStore* store_ = nullptr;
  index::Id account_{};
  uint64_t bytes_ = 0;
};

// The index update that reserves `bytes` against `account`, with its decision in *decision
// (for an Update, or UpdateIndex off the event loop).
std::function<Status(index::WriteTxn&)> ReserveIn(const index::Id& account, uint64_t bytes,
                                                  int64_t now_ns, index::QuotaDecision* decision);
// The reservation that a granted decision holds (nothing when refused).
Reservation ReservationFor(storage::ObjectStore& store, const index::Id& account, uint64_t bytes,
                     const index::QuotaDecision& decision);

// 507 {"error":{"code":"quota_exceeded","message","quota_bytes","used_bytes","reserved_bytes",
// "requested_bytes"}}.
Reply QuotaExceededReply(const index::QuotaDecision& decision, uint64_t requested);

}  // namespace cv::server
