#include "server/quota.h"

#include <boost/json.hpp>

namespace cv::server {

namespace json = boost::json;

std::optional<Reply> AccountRefusal(const std::optional<index::Account>& account, int64_t now_ns,
                                    AgentAccess access, bool lock) {
  if (!account) return std::nullopt;
  const index::AccountStatus status = index::EffectiveStatus(*account, now_ns);
  json::object err;
  if (status == index::AccountStatus::kSuspended) {
    err["code"] = "account_suspended";
    err["message"] = "the account is suspended: no access until it is reactivated";
  } else if (status == index::AccountStatus::kExpired && access == AgentAccess::kWrite && !lock) {
    err["code"] = "account_expired";
    err["message"] =
        "the account is expired: it is read-only (restores work, uploads and deletes are "
        "refused) until it is renewed";
  } else {
    return std::nullopt;
  }
  err["status"] = index::AccountStatusName(status);
  json::object root;
  root["error"] = std::move(err);
  return JsonReply(403, json::serialize(root));
}

Result<bool> LockExempt(storage::ObjectStore& store, const index::ObjectKey& key, uint64_t size) {
  if (key.type != index::ObjectType::kLocks || size > kLockExemptBytes) return false;
  CV_TRY_ASSIGN(auto locks, store.List(key.device, index::ObjectType::kLocks, "", kMaxExemptLocks));
  return locks.size() < kMaxExemptLocks;
}

Status StillUnreserved(index::WriteTxn& txn, const index::ObjectKey& key, bool exempt_lock) {
  CV_TRY_ASSIGN(auto cur, txn.GetObject(key));
  if (cur) return {};  // a re-upload adds nothing
  if (!exempt_lock) {
    return Err(ErrorKind::kUnavailable,
               "the object was deleted while it was uploaded again; retry the upload");
  }
  CV_TRY_ASSIGN(auto locks,
                txn.ListObjects(key.device, index::ObjectType::kLocks, "", kMaxExemptLocks));
  if (locks.size() < kMaxExemptLocks) return {};
  return Err(ErrorKind::kUnavailable,
             "the device's locks reached " + std::to_string(kMaxExemptLocks) +
                 " while this one was uploaded; retry the upload");
}

Reservation& Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    Release();
    index_ = std::exchange(other.index_, nullptr);
    account_ = other.account_;
    bytes_ = other.bytes_;
  }
  return *this;
}

void Reservation::Release() {
  if (index::Index* index = std::exchange(index_, nullptr)) index->Release(account_, bytes_);
}

Result<Reserved> Reserve(index::Index& index, const index::Id& account, uint64_t bytes,
                         int64_t now_ns) {
  CV_TRY_ASSIGN(auto decision, index.Reserve(account, bytes, now_ns));
  Reserved r{decision, {}};
  if (decision.granted) r.reservation = Reservation(&index, account, bytes);
  return r;
}

Reply QuotaExceededReply(const index::QuotaDecision& d, uint64_t requested) {
  json::object err;
  err["code"] = "quota_exceeded";
  err["message"] = "this upload of " + std::to_string(requested) +
                   " bytes does not fit in the account's quota of " +
                   std::to_string(d.quota_bytes) + " bytes (" + std::to_string(d.used_bytes) +
                   " used, " + std::to_string(d.reserved_bytes) + " reserved by uploads in flight)";
  err["quota_bytes"] = d.quota_bytes;
  err["used_bytes"] = d.used_bytes;
  err["reserved_bytes"] = d.reserved_bytes;
  err["requested_bytes"] = requested;
  json::object root;
  root["error"] = std::move(err);
  return JsonReply(507, json::serialize(root));
}

}  // namespace cv::server
