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
// An upload reserves its Content-Length before its body is read (Reserve). The Reservation
// gives the bytes back once the upload's own index commit has put them in usage, or when the
// upload fails or its client goes away (Release, or its destructor). Reservations are kept in
// memory (index/reservations.h), so neither step waits for a commit.
//
// Thread-safety: functions are thread-safe; a Reservation belongs to one upload.
#pragma once

#include <cstdint>
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

// An upload that took no reservation (a re-upload of an object that was there, or an exempt
// lock: `exempt_lock`), checked again inside its own index transaction, since other uploads
// and deletes ran meanwhile. OK when the object is there (a re-upload adds nothing) or, for
// an exempt lock, while the device still holds fewer than kMaxExemptLocks locks; otherwise
// kUnavailable (503: the retry reserves, or is refused).
Status StillUnreserved(index::WriteTxn& txn, const index::ObjectKey& key, bool exempt_lock);

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
  Reservation(index::Index* index, const index::Id& account, uint64_t bytes)
      : index_(index), account_(account), bytes_(bytes) {}
  Reservation(Reservation&& other) noexcept { *this = std::move(other); }
  Reservation& operator=(Reservation&& other) noexcept;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation() { Release(); }

  // Gives the bytes back (Index::Release). After a successful upload, call it once the
  // object's commit is done: the bytes are in usage by then.
  void Release();
  bool held() const { return index_ != nullptr; }

 private:
  index::Index* index_ = nullptr;
  index::Id account_{};
  uint64_t bytes_ = 0;
};

// Reserves `bytes` against `account` (Index::Reserve): the decision, and, when granted, the
// Reservation that holds the bytes.
struct Reserved {
  index::QuotaDecision decision;
  Reservation reservation;
};
Result<Reserved> Reserve(index::Index& index, const index::Id& account, uint64_t bytes,
                         int64_t now_ns);

// 507 {"error":{"code":"quota_exceeded","message","quota_bytes","used_bytes","reserved_bytes",
// "requested_bytes"}}.
Reply QuotaExceededReply(const index::QuotaDecision& decision, uint64_t requested);

}  // namespace cv::server
