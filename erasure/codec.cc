// The ISA-L implementation of cv::erasure::Codec.
//
// Encode matrix ((k+m) x k, row-major), from gf_gen_cauchy1_matrix:
//
//              col 0 .. k-1
//   row 0      [ 1 0 .. 0 ]  -+
//   ...        [   ..     ]   |  identity: data shard i is row i
//   row k-1    [ 0 .. 0 1 ]  -+
//   row k      [ c c .. c ]  -+
//   ...        [   ..     ]   |  Cauchy, c = 1/(i xor j): parity shard k+p is row k+p
//   row k+m-1  [ c c .. c ]  -+
//
// Every square submatrix of a Cauchy matrix is invertible, so any k rows of the whole
// matrix are too: any k shards rebuild the stripe.
//
// Reconstruct takes the first k present shards ("sources"), inverts the k x k submatrix of
// their rows (Inv maps sources to data), and for each missing shard builds one decode row:
// Inv's row for a missing data shard, (encode row x Inv) for a missing parity shard. The
// expanded ISA-L tables of those rows are cached per erasure pattern, so a repeated pattern
// costs one shared-lock lookup and no heap allocation.
#include <isa-l/erasure_code.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <cstring>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "erasure/erasure.h"

namespace cv::erasure {
namespace {

static_assert(kMaxShards <= 32, "shard masks are uint32_t");

// ISA-L takes an int length; longer buffers are coded in slices. A multiple of 64 keeps
// every slice but the last on the SIMD fast path.
constexpr size_t kMaxSlice = size_t{1} << 30;

// Beyond this many distinct erasure patterns the cache starts over; with k+m <= 32 and at
// most m losses a real node sees few patterns at a time, so this bounds memory, not speed.
constexpr size_t kMaxCachedPatterns = 1024;

// Runs ec_encode_data over `len` bytes, slicing lengths that do not fit in an int.
void EncodeSliced(size_t len, int k, int rows, unsigned char* tables, unsigned char** srcs,
                  unsigned char** dests) {
  std::array<unsigned char*, kMaxShards> src_at{};
  std::array<unsigned char*, kMaxShards> dest_at{};
  for (size_t off = 0; off < len; off += kMaxSlice) {
    const size_t n = std::min(kMaxSlice, len - off);
    for (int i = 0; i < k; ++i) src_at[i] = srcs[i] + off;
    for (int i = 0; i < rows; ++i) dest_at[i] = dests[i] + off;
    ec_encode_data(static_cast<int>(n), k, rows, tables, src_at.data(), dest_at.data());
  }
}

// The decode plan of one erasure pattern. Immutable once built; shared by every thread
// that reconstructs the same pattern, and kept alive by its users if the cache is cleared.
struct DecodePlan {
  std::array<uint8_t, kMaxShards> sources{};  // shard indices, the first k present
  std::array<uint8_t, kMaxShards> targets{};  // shard indices of the missing shards
  int num_targets = 0;
  std::vector<unsigned char> tables;  // ec_init_tables(k, num_targets, ...): 32*k*num_targets
};

class IsalCodec final : public Codec {
 public:
  IsalCodec(int k, int m) : k_(k), m_(m) {
    gf_gen_cauchy1_matrix(encode_matrix_.data(), k + m, k);
    encode_tables_.resize(size_t{32} * k * m);
    ec_init_tables(k, m, &encode_matrix_[size_t(k) * k], encode_tables_.data());
  }

  int k() const override { return k_; }
  int m() const override { return m_; }

  void Encode(size_t len, std::span<const uint8_t* const> data,
              std::span<uint8_t* const> parity) const override {
    assert(data.size() == size_t(k_) && parity.size() == size_t(m_));
    if (len == 0) return;
    // ISA-L's signature is not const-correct; it only reads sources and tables.
    std::array<unsigned char*, kMaxShards> srcs{};
    std::array<unsigned char*, kMaxShards> dests{};
    for (int i = 0; i < k_; ++i) srcs[i] = const_cast<unsigned char*>(data[i]);
    for (int i = 0; i < m_; ++i) dests[i] = parity[i];
    EncodeSliced(len, k_, m_, const_cast<unsigned char*>(encode_tables_.data()), srcs.data(),
                 dests.data());
  }

  Status Reconstruct(size_t len, std::span<uint8_t* const> shards,
                     std::span<const bool> present) const override {
    const size_t n = size_t(k_) + m_;
    if (shards.size() != n || present.size() != n) {
      return Err(ErrorKind::kInvalidArgument, "erasure reconstruct: expected " + std::to_string(n) +
                                                  " shards, got " + std::to_string(shards.size()) +
                                                  " buffers and " + std::to_string(present.size()) +
                                                  " flags");
    }
    uint32_t missing = 0;
    uint32_t sources = 0;
    int num_present = 0;
    for (size_t i = 0; i < n; ++i) {
      if (!present[i]) {
        missing |= uint32_t{1} << i;
      } else if (num_present++ < k_) {
        sources |= uint32_t{1} << i;
      }
    }
    if (num_present < k_) {
      return Err(ErrorKind::kUnavailable, "erasure reconstruct: " + std::to_string(num_present) +
                                              " of " + std::to_string(n) +
                                              " shards present, need " + std::to_string(k_));
    }
    if (missing == 0 || len == 0) return {};

    auto plan = FindPlan(sources, missing);
    if (!plan) {
      CV_TRY_ASSIGN(auto built, BuildPlan(sources, missing));
      plan = Remember(sources, missing, std::move(built));
    }

    std::array<unsigned char*, kMaxShards> srcs{};
    std::array<unsigned char*, kMaxShards> dests{};
    for (int i = 0; i < k_; ++i) srcs[i] = shards[plan->sources[i]];
    for (int i = 0; i < plan->num_targets; ++i) dests[i] = shards[plan->targets[i]];
    EncodeSliced(len, k_, plan->num_targets, const_cast<unsigned char*>(plan->tables.data()),
                 srcs.data(), dests.data());
    return {};
  }

 private:
  // The sources are a function of the missing set, but keying on both keeps the key
  // self-describing should the choice of sources ever change.
  static uint64_t PatternKey(uint32_t sources, uint32_t missing) {
    return (uint64_t{sources} << 32) | missing;
  }

  std::shared_ptr<const DecodePlan> FindPlan(uint32_t sources, uint32_t missing) const {
    std::shared_lock lock(mu_);
    auto it = plans_.find(PatternKey(sources, missing));
    return it == plans_.end() ? nullptr : it->second;
  }

  std::shared_ptr<const DecodePlan> Remember(uint32_t sources, uint32_t missing,
                                             std::shared_ptr<const DecodePlan> plan) const {
    std::unique_lock lock(mu_);
    if (plans_.size() >= kMaxCachedPatterns) plans_.clear();
    // Another thread may have built the same plan meanwhile; both are identical, keep one.
    auto [it, inserted] = plans_.try_emplace(PatternKey(sources, missing), std::move(plan));
    return it->second;
  }

  Result<std::shared_ptr<const DecodePlan>> BuildPlan(uint32_t sources, uint32_t missing) const {
    const int k = k_;
    auto plan = std::make_shared<DecodePlan>();
    int s = 0;
    for (uint32_t bits = sources; bits != 0; bits &= bits - 1) {
      plan->sources[s++] = static_cast<uint8_t>(std::countr_zero(bits));
    }
    for (uint32_t bits = missing; bits != 0; bits &= bits - 1) {
      plan->targets[plan->num_targets++] = static_cast<uint8_t>(std::countr_zero(bits));
    }
    assert(s == k && plan->num_targets <= m_);

    // sub = the encode rows of the sources; inv = sub^-1 maps source shards to data shards.
    std::array<unsigned char, kMaxShards * kMaxShards> sub{};
    std::array<unsigned char, kMaxShards * kMaxShards> inv{};
    for (int r = 0; r < k; ++r) {
      std::memcpy(&sub[size_t(r) * k], &encode_matrix_[size_t(plan->sources[r]) * k], k);
    }
    if (gf_invert_matrix(sub.data(), inv.data(), k) != 0) {
      // Impossible for a Cauchy matrix; kept so a broken matrix cannot write garbage.
      return Err(ErrorKind::kInternal, "erasure reconstruct: singular decode matrix");
    }

    std::array<unsigned char, kMaxShards * kMaxShards> rows{};
    for (int t = 0; t < plan->num_targets; ++t) {
      unsigned char* row = &rows[size_t(t) * k];
      const int target = plan->targets[t];
      if (target < k) {
        std::memcpy(row, &inv[size_t(target) * k], k);
        continue;
      }
      const unsigned char* enc = &encode_matrix_[size_t(target) * k];
      for (int c = 0; c < k; ++c) {
        unsigned char acc = 0;
        for (int j = 0; j < k; ++j) acc ^= gf_mul(enc[j], inv[size_t(j) * k + c]);
        row[c] = acc;
      }
    }
    plan->tables.resize(size_t{32} * k * plan->num_targets);
    ec_init_tables(k, plan->num_targets, rows.data(), plan->tables.data());
    return plan;
  }

  const int k_;
  const int m_;
  std::array<unsigned char, kMaxShards * kMaxShards> encode_matrix_{};  // (k+m) x k
  std::vector<unsigned char> encode_tables_;  // expanded parity rows, 32*k*m bytes

  mutable std::shared_mutex mu_;  // guards plans_
  mutable std::unordered_map<uint64_t, std::shared_ptr<const DecodePlan>> plans_;
};

}  // namespace

Result<std::unique_ptr<Codec>> Codec::Create(int k, int m) {
  if (k < 1 || m < 1 || k > kMaxShards || m > kMaxShards || k + m > kMaxShards) {
    return Err(ErrorKind::kInvalidArgument,
               "erasure profile " + std::to_string(k) + "+" + std::to_string(m) +
                   ": need k >= 1, m >= 1, k + m <= " + std::to_string(kMaxShards));
  }
  return std::unique_ptr<Codec>(new IsalCodec(k, m));
}

}  // namespace cv::erasure
