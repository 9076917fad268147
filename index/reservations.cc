#include "index/reservations.h"

#include <algorithm>

#include "index/accounts.h"

namespace cv::index::internal {

Result<QuotaDecision> Reservations::Reserve(const Id& account, uint64_t bytes,
                                            const std::function<Result<Usage>()>& read) {
  std::lock_guard lock(mu_);
  CV_TRY_ASSIGN(const Usage usage, read());
  auto it = reserved_.find(account);
  const uint64_t held = it == reserved_.end() ? 0 : it->second;
  QuotaDecision d;
  d.quota_bytes = usage.quota_bytes;
  d.used_bytes = usage.used_bytes;
  d.reserved_bytes = held;
  if (SatAdd(SatAdd(usage.used_bytes, held), bytes) > usage.quota_bytes) return d;
  // Cannot wrap: the sum above is at most the quota.
  if (bytes > 0) reserved_[account] = held + bytes;
  d.granted = true;
  d.reserved_bytes = held + bytes;
  return d;
}

void Reservations::Release(const Id& account, uint64_t bytes) {
  std::lock_guard lock(mu_);
  auto it = reserved_.find(account);
  if (it == reserved_.end()) return;
  it->second -= std::min(it->second, bytes);
  if (it->second == 0) reserved_.erase(it);
}

uint64_t Reservations::Of(const Id& account) const {
  std::lock_guard lock(mu_);
  auto it = reserved_.find(account);
  return it == reserved_.end() ? 0 : it->second;
}

}  // namespace cv::index::internal
