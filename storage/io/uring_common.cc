#include "storage/io/uring_common.h"

namespace cv::storage::detail {

int RegisterArena(io_uring* ring, const IoArena& arena) {
  const iovec region{arena.base(), arena.size()};
  return io_uring_register_buffers(ring, &region, 1);
}

bool PrepareSqe(io_uring_sqe* sqe, const IoRequest& r, int fd, uint8_t* buf, unsigned n,
                uint64_t offset, const IoArena* registered) {
  const bool fixed = r.op != IoRequest::Op::kSync && registered && registered->Contains(buf, n);
  switch (r.op) {
    case IoRequest::Op::kRead:
      if (fixed) {
        io_uring_prep_read_fixed(sqe, fd, buf, n, offset, 0);
      } else {
        io_uring_prep_read(sqe, fd, buf, n, offset);
      }
      break;
    case IoRequest::Op::kWrite:
      if (fixed) {
        io_uring_prep_write_fixed(sqe, fd, buf, n, offset, 0);
      } else {
        io_uring_prep_write(sqe, fd, buf, n, offset);
      }
      break;
    case IoRequest::Op::kSync:
      io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
      break;
  }
  return fixed;
}

}  // namespace cv::storage::detail
