// cvctl: what its files share -- the exit codes scripts rely on, and the offline commands.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cv::cvctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRefused = 1;      // the node answered 4xx/5xx; an offline step failed
inline constexpr int kExitUsage = 2;        // bad arguments
inline constexpr int kExitUnreachable = 3;  // no node at the address, timeout, TLS failure
inline constexpr int kExitProblems = 4;     // the check ran and found problems

struct RebuildArgs {
  std::string root;         // the node's root folder (as chunkvaultd --root)
  std::string config_file;  // as chunkvaultd --config; empty: the embedded default
  std::string backup_dir;   // made by `cvctl index backup`
  bool without_backup = false;
  bool json = false;
};

// `cvctl index rebuild`: takes the root's lock (refused while chunkvaultd runs), then
// rebuilds the index from the extents (storage::ObjectStore::RebuildIndex) with the
// accounts, devices and tokens of the backup. Returns the exit code.
int RebuildIndex(const RebuildArgs& args);

}  // namespace cv::cvctl

namespace cv::cvctl {

class AdminClient;

// `cvctl courier verify`: offline check of a courier image (courier): the file system
// structures, the signature of SHA256SUMS by the node's courier key, then every file's SHA-256
// against SHA256SUMS (and that every file is listed). Prints each problem, the first bad file
// first. Returns kExitOk, kExitProblems, or kExitUsage (unreadable image or key).
int VerifyCourierImage(const std::string& image, const std::string& pubkey_file, bool json);

// One image of a done courier job, as its result lists it.
struct CourierImageInfo {
  int drive = 0;
  uint64_t bytes = 0;
  std::string sha256;  // hex
};
// Downloads the images of courier job `job` to `out` (one image: `out` itself, a file or a
// block device; several: files out-1-of-N, ...). A partial regular file is resumed with a
// Range request; each image's SHA-256 is checked against the job's result afterwards.
// Returns an exit code (messages on stderr).
int DownloadCourierImages(AdminClient& client, const std::string& job,
                          const std::vector<CourierImageInfo>& images, const std::string& out,
                          bool progress);

}  // namespace cv::cvctl
