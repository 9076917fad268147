// What the io_uring Env (uring_env.cc) and AsyncRing (async_ring.cc) share: registering the
// Env's buffer region with a ring, and preparing one request's submission. Internal to
// storage/io.
#pragma once

#include <liburing.h>

#include <cstdint>

#include "storage/io/internal.h"

namespace cv::storage::detail {

// Registers `arena` as fixed buffer 0 of `ring`. Returns 0, or -errno (RLIMIT_MEMLOCK...).
int RegisterArena(io_uring* ring, const IoArena& arena);

// Prepares `sqe` for `r` on `fd`: its fdatasync, or the transfer of n bytes between `buf` and
// `offset`, as READ_FIXED/WRITE_FIXED when `registered` (the ring's registered region, or
// nullptr) holds them. Returns whether it went through the registered region.
bool PrepareSqe(io_uring_sqe* sqe, const IoRequest& r, int fd, uint8_t* buf, unsigned n,
                uint64_t offset, const IoArena* registered);

}  // namespace cv::storage::detail
