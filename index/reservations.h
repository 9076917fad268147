// index/reservations: the bytes that uploads in flight have reserved against their accounts'
// quotas (the "Quota protocol" in index.h). They belong to the running process, so they live
// in memory, not in LMDB: taking or giving back a reservation writes nothing and waits for no
// commit. Reads of an Account through a Txn show them as Account::reserved_bytes.
//
// Thread-safety: every member is thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>

#include "common/common.h"
#include "index/index.h"

namespace cv::index::internal {

class Reservations {
 public:
  // What the decision needs from the index, read from a snapshot taken after the lock (so
  // that every commit whose reservation was given back before is in it).
  struct Usage {
    uint64_t used_bytes = 0;   // Account::bytes
    uint64_t quota_bytes = 0;  // plan + live add-ons
  };
  // Grants when used + reserved + bytes <= quota, and then holds the bytes. `read` runs
  // under the lock; its error is returned as is.
  Result<QuotaDecision> Reserve(const Id& account, uint64_t bytes,
                                const std::function<Result<Usage>()>& read);
  // Gives bytes back (never below 0).
  void Release(const Id& account, uint64_t bytes);
  uint64_t Of(const Id& account) const;

 private:
  mutable std::mutex mu_;
  std::map<Id, uint64_t> reserved_;  // no entry = 0
};

}  // namespace cv::index::internal
