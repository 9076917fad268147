// server/fake_clock: a clock that tests move. `chunkvaultd --fake-clock-file PATH` (a hidden
// flag) makes NowNanos() answer the decimal nanoseconds since the epoch written in PATH, so
// that tests against a real server process can let trials, add-ons and admin keys expire and
// devices go stale. The file is re-read when its inode, size or mtime changes: write a new
// file and rename it over PATH to move time. Never used unless the flag is given.
//
// Thread-safety: the installed clock may be read from any thread.
#pragma once

#include <string>

#include "common/common.h"

namespace cv::server {

// Reads PATH once (it must hold a valid time) and installs the clock (SetClockForTesting).
Status UseFakeClockFile(const std::string& path);

}  // namespace cv::server
