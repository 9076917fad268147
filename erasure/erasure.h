// erasure: Reed-Solomon erasure coding over ISA-L with a Cauchy matrix, so that ANY k of the
// k+m shards of a stripe rebuild it (a Vandermonde matrix does not guarantee that).
// Pure functions on caller-owned buffers: no I/O, no allocation on the hot path.
//
//   stripe of k*L data bytes (the last stripe of an object is zero-padded)
//   +--------+--------+-----+--------+   +--------+-----+--------+
//   | data 0 | data 1 | ... | data k-1|  | par 0  | ... | par m-1 |
//   +--------+--------+-----+--------+   +--------+-----+--------+
//     L bytes each                          L bytes each
//   shard i (0 <= i < k+m) goes to a distinct disk.
//
// Thread-safety: a Codec may be used from many threads at once; the decode-table cache is
// guarded internally.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/common.h"

namespace cv::erasure {

inline constexpr int kMaxShards = 32;  // k + m <= kMaxShards
inline constexpr size_t kAlignment = 32;  // buffers should be 32-byte aligned for speed

class Codec {
 public:
  // REQUIRES nothing; returns kInvalidArgument unless 1 <= k, 1 <= m, k + m <= kMaxShards.
  static Result<std::unique_ptr<Codec>> Create(int k, int m);
  virtual ~Codec() = default;

  virtual int k() const = 0;
  virtual int m() const = 0;

  // Computes the m parity shards of k data shards, each `len` bytes.
  // REQUIRES: data.size() == k, parity.size() == m, every buffer holds `len` bytes.
  virtual void Encode(size_t len, std::span<const uint8_t* const> data,
                      std::span<uint8_t* const> parity) const = 0;

  // Rebuilds, in place, every shard i with present[i] == false from the shards with
  // present[i] == true. shards.size() == present.size() == k + m, each buffer `len` bytes.
  // Returns kUnavailable when fewer than k shards are present; then no buffer is changed.
  // Returns kInvalidArgument when shards.size() or present.size() != k + m. Nothing missing
  // is a no-op success. Uses the first k present shards; present buffers are only read.
  // The decode tables of each erasure pattern are cached (bounded), so after the first use
  // of a pattern this allocates nothing.
  virtual Status Reconstruct(size_t len, std::span<uint8_t* const> shards,
                             std::span<const bool> present) const = 0;
};

}  // namespace cv::erasure
