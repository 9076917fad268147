// server/auth: who is calling. Agents authenticate per device: HTTP Basic with user = device
// id (32 hex) and password = device token, or `Bearer <token>` checked against the device in
// the request path. The index stores only SHA-256(token); comparisons are constant-time.
//
//   no credentials                         -> kMissing     (401)
//   wrong or malformed credentials         -> kWrong       (401, counted, slowed down)
//   valid credentials of device A on B's path -> kOtherDevice (404 as if B did not exist)
//   valid credentials for the path's device   -> kOk
//   the last credentials of a device that a purge removed, its account still there
//                                             -> kDeleted     (410 device_deleted)
//
// A Bearer token is found by its SHA-256 (index devices_by_token), so a token of device A on
// B's path is kOtherDevice (404) too. Neither answer tells whether B exists. A purged device
// is found only by its last token's hash (index purged_devices): any other secret on its id
// is kWrong, exactly as a wrong password of a live device, and its old credentials on
// another path are kOtherDevice. (A device deleted but not yet purged authenticates as kOk;
// the session refuses it with the same 410.)
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/common.h"
#include "index/index.h"

namespace cv::server {

struct Credentials {
  enum class Scheme { kNone, kBasic, kBearer, kMalformed };
  Scheme scheme = Scheme::kNone;
  std::string user;    // Basic only
  std::string secret;  // Basic password or Bearer token
};
Credentials ParseAuthorization(std::string_view header);

enum class AuthOutcome { kOk, kMissing, kWrong, kOtherDevice, kDeleted };
struct AuthResult {
  AuthOutcome outcome = AuthOutcome::kMissing;
  index::DeviceRecord device;             // set when kOk
  std::optional<index::Account> account;  // kOk: the device's account, if it has a record
};
// `path_device` is the raw first path segment. Errors only when the index cannot be read.
// The device and its account are read from one snapshot.
Result<AuthResult> AuthenticateDevice(index::Index& index, const Credentials& credentials,
                                      std::string_view path_device);

// Slows down guessing: after `free_failures` wrong credentials from one address within the
// window, each further 401 to that address waits delay * 2^(n - free - 1), at most max_delay.
// Success does not reset the count (one valid device must not unlock unlimited guesses on
// others); failures are forgotten `window` after the last one.
// Thread-safety: safe to use from many threads.
class FailureThrottle {
 public:
  FailureThrottle(uint32_t free_failures, std::chrono::milliseconds delay,
                  std::chrono::milliseconds max_delay, std::chrono::seconds window);
  // Records one failure from `address` and returns how long to wait before answering.
  std::chrono::milliseconds Failed(const std::string& address);

 private:
  struct Entry {
    uint32_t failures = 0;
    std::chrono::steady_clock::time_point last;
  };
  const uint32_t free_failures_;
  const std::chrono::milliseconds delay_, max_delay_;
  const std::chrono::seconds window_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace cv::server
