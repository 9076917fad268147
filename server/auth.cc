#include "server/auth.h"

#include <openssl/evp.h>

#include "admin/admin.h"

namespace cv::server {

namespace {

// Strict base64 (RFC 4648, with padding). EVP_DecodeBlock accepts some junk and reports
// padding as output bytes, so the length is checked and corrected here.
std::optional<std::string> Base64Decode(std::string_view in) {
  if (in.empty() || in.size() % 4 != 0 || in.size() > 4096) return std::nullopt;
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/' || (c == '=' && i >= in.size() - 2);
    if (!ok) return std::nullopt;
  }
  size_t pad = in.ends_with("==") ? 2 : in.ends_with('=') ? 1 : 0;
  if (pad == 1 && in[in.size() - 2] == '=') return std::nullopt;
  std::string out(in.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0 || static_cast<size_t>(n) != out.size()) return std::nullopt;
  out.resize(out.size() - pad);
  return out;
}

bool CaseInsensitivePrefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) !=
        std::tolower(static_cast<unsigned char>(prefix[i]))) {
      return false;
    }
  }
  return true;
}

}  // namespace

Credentials ParseAuthorization(std::string_view header) {
  Credentials c;
  if (header.empty()) return c;
  c.scheme = Credentials::Scheme::kMalformed;
  if (CaseInsensitivePrefix(header, "Basic ")) {
    auto decoded = Base64Decode(header.substr(6));
    if (!decoded) return c;
    size_t colon = decoded->find(':');
    if (colon == std::string::npos) return c;
    c.scheme = Credentials::Scheme::kBasic;
    c.user = decoded->substr(0, colon);
    c.secret = decoded->substr(colon + 1);
  } else if (CaseInsensitivePrefix(header, "Bearer ")) {
    std::string_view token = header.substr(7);
    if (token.empty() || token.size() > 1024) return c;
    c.scheme = Credentials::Scheme::kBearer;
    c.secret = std::string(token);
  }
  return c;
}

Result<AuthResult> AuthenticateDevice(index::Index& idx, const Credentials& cred,
                                      std::string_view path_device) {
  AuthResult r;
  if (cred.scheme == Credentials::Scheme::kNone) return r;  // kMissing
  r.outcome = AuthOutcome::kWrong;
  if (cred.scheme != Credentials::Scheme::kBasic && cred.scheme != Credentials::Scheme::kBearer) {
    return r;
  }
  const Sha256Digest hash = admin::HashToken(cred.secret);
  std::optional<index::DeviceRecord> device;
  std::optional<index::Account> account;
  std::optional<index::PurgedDevice> purged;
  {
    CV_TRY_ASSIGN(auto txn, idx.BeginRead());
    const bool bearer = cred.scheme == Credentials::Scheme::kBearer;
    const std::optional<index::Id> claimed = bearer ? std::nullopt : index::IdFromHex(cred.user);
    if (bearer) {
      // The token names its device: looked up by its hash, as admin keys are.
      CV_TRY_ASSIGN(auto d, txn->GetDeviceByTokenHash(hash));
      device = std::move(d);
    } else if (claimed) {
      CV_TRY_ASSIGN(auto d, txn->GetDevice(*claimed));
      device = std::move(d);
    }
    if (device) {
      CV_TRY_ASSIGN(auto a, txn->GetAccount(device->account));
      account = std::move(a);
    } else if (bearer || claimed) {
      // A purged device, found only by the hash of its last token (and its id, for Basic).
      CV_TRY_ASSIGN(auto p, txn->GetPurgedDevice(hash, claimed));
      purged = std::move(p);
    }
  }
  // Compare in every case, against a dummy when there is no device, so that the time taken
  // does not tell whether a Basic user's device exists.
  static const Sha256Digest kNoDevice = admin::HashToken("no such device");
  bool match = admin::DigestEqual(hash, device ? device->token_hash : kNoDevice);
  auto path_id = index::IdFromHex(path_device);
  if (purged && !cred.secret.empty()) {
    r.outcome =
        path_id && *path_id == purged->id ? AuthOutcome::kDeleted : AuthOutcome::kOtherDevice;
    return r;
  }
  if (!device || !match || cred.secret.empty()) return r;  // kWrong

  if (!path_id || *path_id != device->id) {
    r.outcome = AuthOutcome::kOtherDevice;
    return r;
  }
  r.outcome = AuthOutcome::kOk;
  r.device = std::move(*device);
  r.account = std::move(account);
  return r;
}

FailureThrottle::FailureThrottle(uint32_t free_failures, std::chrono::milliseconds delay,
                                 std::chrono::milliseconds max_delay, std::chrono::seconds window)
    : free_failures_(free_failures), delay_(delay), max_delay_(max_delay), window_(window) {}

std::chrono::milliseconds FailureThrottle::Failed(const std::string& address) {
  auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  if (entries_.size() > 100000) {
    // Bound memory under a flood of addresses: forget the expired ones, and everything if
    // that is not enough (slowing down then fails open rather than running out of memory).
    std::erase_if(entries_, [&](const auto& kv) { return now - kv.second.last > window_; });
    if (entries_.size() > 100000) entries_.clear();
  }
  Entry& e = entries_[address];
  if (now - e.last > window_) e.failures = 0;
  e.failures++;
  e.last = now;
  if (e.failures <= free_failures_) return std::chrono::milliseconds(0);
  uint32_t excess = std::min<uint32_t>(e.failures - free_failures_ - 1, 20);
  auto d = delay_ * (int64_t{1} << excess);
  return std::min(d, max_delay_);
}

}  // namespace cv::server
