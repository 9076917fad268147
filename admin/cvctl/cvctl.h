// cvctl: what its files share -- the exit codes scripts rely on, and the offline commands.
#pragma once

#include <string>

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
