#include <gtest/gtest.h>
#include <isa-l/erasure_code.h>

#include <array>
#include <atomic>
#include <bit>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "erasure/erasure.h"

// Counts heap allocations made by the current thread while g_count_allocs is set, to prove
// that a cached pattern reconstructs without touching the heap.
namespace {
thread_local bool g_count_allocs = false;
std::atomic<long> g_allocs{0};
}  // namespace

// noinline: GCC would otherwise inline these into gtest's new/delete pairs and warn about
// free() on memory from operator new, not seeing that this operator new is malloc.
__attribute__((noinline)) void* operator new(size_t size) {
  if (g_count_allocs) g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
__attribute__((noinline)) void operator delete(void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace cv::erasure {
namespace {

struct Profile {
  int k;
  int m;
};
void PrintTo(const Profile& p, std::ostream* os) { *os << p.k << "+" << p.m; }

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void FillRandom(uint8_t* p, size_t len, uint64_t seed) {
  uint64_t state = seed;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    const uint64_t v = SplitMix64(state);
    std::memcpy(p + i, &v, 8);
  }
  const uint64_t v = SplitMix64(state);
  std::memcpy(p + i, &v, len - i);
}

// k+m shard buffers, each `len` bytes starting `offset` bytes past a 32-byte boundary.
// Data shards hold seeded random bytes; parity shards are filled by Encode.
class Stripe {
 public:
  Stripe(Profile p, size_t len, size_t offset = 0, uint64_t seed = 1)
      : k_(p.k), m_(p.m), len_(len) {
    for (int i = 0; i < k_ + m_; ++i) {
      storage_.emplace_back(len + offset + kAlignment);
      auto base = reinterpret_cast<uintptr_t>(storage_.back().data());
      const uintptr_t aligned = (base + kAlignment - 1) & ~uintptr_t{kAlignment - 1};
      shards_.push_back(reinterpret_cast<uint8_t*>(aligned + offset));
      if (i < k_) FillRandom(shards_.back(), len, seed * 1000 + i);
    }
  }
  Stripe(const Stripe&) = delete;

  void EncodeWith(const Codec& codec) {
    std::vector<const uint8_t*> data(shards_.begin(), shards_.begin() + k_);
    codec.Encode(len_, data, std::span<uint8_t* const>(shards_).subspan(k_));
  }
  void CopyFrom(const Stripe& other) {
    for (size_t i = 0; i < shards_.size(); ++i) std::memcpy(shards_[i], other.shards_[i], len_);
  }
  // Overwrites every shard in `mask` with junk, as a lost disk would leave it.
  void Scribble(uint32_t mask) {
    for (size_t i = 0; i < shards_.size(); ++i) {
      if (mask & (uint32_t{1} << i)) std::memset(shards_[i], 0xA5, len_);
    }
  }
  bool Equals(const Stripe& other) const {
    for (size_t i = 0; i < shards_.size(); ++i) {
      if (std::memcmp(shards_[i], other.shards_[i], len_) != 0) return false;
    }
    return true;
  }
  Status Reconstruct(const Codec& codec, uint32_t missing) {
    std::array<bool, kMaxShards> present{};
    for (size_t i = 0; i < shards_.size(); ++i) present[i] = !(missing & (uint32_t{1} << i));
    return codec.Reconstruct(len_, shards_, std::span<const bool>(present.data(), shards_.size()));
  }

  uint8_t* shard(int i) { return shards_[i]; }
  std::span<uint8_t* const> shards() const { return shards_; }
  size_t len() const { return len_; }

 private:
  int k_, m_;
  size_t len_;
  std::vector<std::vector<uint8_t>> storage_;
  std::vector<uint8_t*> shards_;
};

std::unique_ptr<Codec> MakeCodec(Profile p) {
  auto codec = Codec::Create(p.k, p.m);
  EXPECT_TRUE(codec.has_value()) << codec.error().ToString();
  return std::move(*codec);
}

// Every mask over n shards with between lo and hi bits set.
std::vector<uint32_t> Patterns(int n, int lo, int hi) {
  std::vector<uint32_t> out;
  for (uint32_t mask = 1; mask < (uint32_t{1} << n); ++mask) {
    const int c = std::popcount(mask);
    if (c >= lo && c <= hi) out.push_back(mask);
  }
  return out;
}

std::string MaskString(uint32_t mask, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += (mask & (uint32_t{1} << i)) ? 'x' : '.';
  return s;
}

// Parity computed by ISA-L's portable reference routine from independently built tables.
void ReferenceParity(Profile p, Stripe& stripe, std::vector<std::vector<uint8_t>>& parity) {
  std::vector<unsigned char> matrix(size_t(p.k + p.m) * p.k);
  std::vector<unsigned char> tables(size_t{32} * p.k * p.m);
  gf_gen_cauchy1_matrix(matrix.data(), p.k + p.m, p.k);
  ec_init_tables(p.k, p.m, &matrix[size_t(p.k) * p.k], tables.data());
  std::vector<unsigned char*> srcs, dests;
  for (int i = 0; i < p.k; ++i) srcs.push_back(stripe.shard(i));
  parity.assign(p.m, std::vector<uint8_t>(stripe.len()));
  for (auto& d : parity) dests.push_back(d.data());
  ec_encode_data_base(static_cast<int>(stripe.len()), p.k, p.m, tables.data(), srcs.data(),
                      dests.data());
}

class CodecProfileTest : public ::testing::TestWithParam<Profile> {};

TEST_P(CodecProfileTest, ParityMatchesIsalBaseFunction) {
  const Profile p = GetParam();
  auto codec = MakeCodec(p);
  for (size_t len : {1, 15, 31, 32, 33, 63, 64, 1000, 4097, 65537}) {
    for (size_t offset : {0, 1, 7}) {
      Stripe stripe(p, len, offset, len + offset);
      stripe.EncodeWith(*codec);
      std::vector<std::vector<uint8_t>> want;
      ReferenceParity(p, stripe, want);
      for (int j = 0; j < p.m; ++j) {
        ASSERT_EQ(std::memcmp(stripe.shard(p.k + j), want[j].data(), len), 0)
            << "parity " << j << " len " << len << " offset " << offset;
      }
    }
  }
}

// The parity of each byte is the GF(2^8) dot product of the Cauchy row with the data
// column: checked with gf_mul alone, independent of ISA-L's expanded tables.
TEST_P(CodecProfileTest, ParityIsCauchyRowTimesDataColumn) {
  const Profile p = GetParam();
  auto codec = MakeCodec(p);
  Stripe stripe(p, 97, 0, 3);
  stripe.EncodeWith(*codec);
  for (int j = 0; j < p.m; ++j) {
    for (size_t b = 0; b < stripe.len(); ++b) {
      unsigned char want = 0;
      for (int i = 0; i < p.k; ++i) {
        // Cauchy row k+j, column i: 1 / ((k+j) xor i).
        const unsigned char coef = gf_inv(static_cast<unsigned char>((p.k + j) ^ i));
        want ^= gf_mul(coef, stripe.shard(i)[b]);
      }
      ASSERT_EQ(stripe.shard(p.k + j)[b], want) << "parity " << j << " byte " << b;
    }
  }
}

TEST_P(CodecProfileTest, AnyKOfKPlusMRebuildsEveryPattern) {
  const Profile p = GetParam();
  const int n = p.k + p.m;
  auto codec = MakeCodec(p);
  int binomial = 1, expected = 0;  // C(n, i), built up as i goes from 1 to m
  for (int i = 1; i <= p.m; ++i) expected += (binomial = binomial * (n - i + 1) / i);
  const int kExpectedPatterns = expected;  // 21, 129, 231, 1470 for the profiles below
  for (size_t len : {1000, 4096}) {
    Stripe good(p, len, 0, 7);
    good.EncodeWith(*codec);
    Stripe work(p, len);
    int tried = 0;
    for (uint32_t missing : Patterns(n, 1, p.m)) {
      work.CopyFrom(good);
      work.Scribble(missing);
      auto st = work.Reconstruct(*codec, missing);
      ASSERT_TRUE(st.has_value()) << MaskString(missing, n) << ": " << st.error().ToString();
      ASSERT_TRUE(work.Equals(good)) << "pattern " << MaskString(missing, n) << " len " << len;
      ++tried;
    }
    EXPECT_EQ(tried, kExpectedPatterns) << "sum of C(k+m, i) for i = 1..m";
  }
}

TEST_P(CodecProfileTest, UnalignedLengthsAndAddressesRebuild) {
  const Profile p = GetParam();
  const int n = p.k + p.m;
  auto codec = MakeCodec(p);
  const uint32_t first_m = (uint32_t{1} << p.m) - 1;
  std::vector<uint32_t> patterns = {first_m, first_m << p.k, first_m << (p.k / 2)};
  for (int i = 0; i < n; ++i) patterns.push_back(uint32_t{1} << i);
  uint64_t rng = 42;
  const auto all = Patterns(n, 1, p.m);
  for (int i = 0; i < 8; ++i) patterns.push_back(all[SplitMix64(rng) % all.size()]);

  for (size_t len : {1, 31, 33, 4097, 65537}) {
    for (size_t offset : {0, 1, 5}) {
      Stripe good(p, len, offset, len ^ offset);
      good.EncodeWith(*codec);
      Stripe work(p, len, offset);
      for (uint32_t missing : patterns) {
        work.CopyFrom(good);
        work.Scribble(missing);
        ASSERT_TRUE(work.Reconstruct(*codec, missing).has_value());
        ASSERT_TRUE(work.Equals(good))
            << MaskString(missing, n) << " len " << len << " offset " << offset;
      }
    }
  }
}

TEST_P(CodecProfileTest, FewerThanKPresentIsUnavailableAndChangesNothing) {
  const Profile p = GetParam();
  const int n = p.k + p.m;
  auto codec = MakeCodec(p);
  Stripe good(p, 64, 0, 9);
  good.EncodeWith(*codec);
  Stripe work(p, 64);
  Stripe before(p, 64);
  for (uint32_t missing : Patterns(n, p.m + 1, n)) {
    work.CopyFrom(good);
    work.Scribble(missing);
    before.CopyFrom(work);
    auto st = work.Reconstruct(*codec, missing);
    ASSERT_FALSE(st.has_value()) << MaskString(missing, n);
    ASSERT_EQ(st.error().kind, ErrorKind::kUnavailable) << MaskString(missing, n);
    ASSERT_TRUE(work.Equals(before)) << "buffers changed for " << MaskString(missing, n);
  }
}

TEST_P(CodecProfileTest, NothingMissingIsANoOp) {
  const Profile p = GetParam();
  auto codec = MakeCodec(p);
  Stripe good(p, 100, 0, 11);
  good.EncodeWith(*codec);
  Stripe work(p, 100);
  work.CopyFrom(good);
  ASSERT_TRUE(work.Reconstruct(*codec, 0).has_value());
  EXPECT_TRUE(work.Equals(good));
}

INSTANTIATE_TEST_SUITE_P(Profiles, CodecProfileTest,
                         ::testing::Values(Profile{4, 2}, Profile{6, 3}, Profile{8, 3},
                                           Profile{10, 4}),
                         [](const ::testing::TestParamInfo<Profile>& info) {
                           return std::to_string(info.param.k) + "plus" +
                                  std::to_string(info.param.m);
                         });

TEST(CodecTest, CreateRejectsProfilesOutsideOneToThirtyTwoShards) {
  for (auto [k, m] : std::vector<std::pair<int, int>>{{0, 2},
                                                      {2, 0},
                                                      {0, 0},
                                                      {-1, 2},
                                                      {2, -1},
                                                      {30, 3},
                                                      {32, 1},
                                                      {1, 32},
                                                      {33, 1},
                                                      {INT_MAX, 1},
                                                      {1, INT_MAX},
                                                      {INT_MIN, 1}}) {
    auto codec = Codec::Create(k, m);
    ASSERT_FALSE(codec.has_value()) << k << "+" << m;
    EXPECT_EQ(codec.error().kind, ErrorKind::kInvalidArgument) << k << "+" << m;
  }
}

TEST(CodecTest, LargestProfilesRebuildLostShards) {
  for (Profile p : {Profile{1, 1}, Profile{31, 1}, Profile{1, 31}, Profile{16, 16}}) {
    auto codec = MakeCodec(p);
    ASSERT_EQ(codec->k(), p.k);
    ASSERT_EQ(codec->m(), p.m);
    const int n = p.k + p.m;
    Stripe good(p, 300, 0, 5);
    good.EncodeWith(*codec);
    Stripe work(p, 300);
    const uint32_t first_m = (uint32_t{1} << p.m) - 1;
    for (uint32_t missing : {first_m, first_m << p.k, uint32_t{1} << (n - 1)}) {
      work.CopyFrom(good);
      work.Scribble(missing);
      ASSERT_TRUE(work.Reconstruct(*codec, missing).has_value()) << p.k << "+" << p.m;
      ASSERT_TRUE(work.Equals(good)) << p.k << "+" << p.m << " " << MaskString(missing, n);
    }
  }
}

TEST(CodecTest, WrongShardCountIsInvalidArgument) {
  auto codec = MakeCodec({4, 2});
  Stripe stripe({4, 2}, 64);
  std::array<bool, 6> present{false, true, true, true, true, true};
  auto five = stripe.shards().first(5);
  auto st = codec->Reconstruct(64, five, present);
  ASSERT_FALSE(st.has_value());
  EXPECT_EQ(st.error().kind, ErrorKind::kInvalidArgument);
  st = codec->Reconstruct(64, stripe.shards(), std::span<const bool>(present).first(5));
  ASSERT_FALSE(st.has_value());
  EXPECT_EQ(st.error().kind, ErrorKind::kInvalidArgument);
}

TEST(CodecTest, CachedPatternReconstructsWithoutHeapAllocation) {
  const Profile p{8, 3};
  auto codec = MakeCodec(p);
  Stripe good(p, 4096, 0, 13);
  good.EncodeWith(*codec);
  Stripe work(p, 4096);
  const uint32_t missing = 0b10000100001;
  work.CopyFrom(good);

  g_allocs = 0;
  g_count_allocs = true;
  auto first = work.Reconstruct(*codec, missing);
  g_count_allocs = false;
  ASSERT_TRUE(first.has_value());
  EXPECT_GT(g_allocs.load(), 0) << "the first use of a pattern builds its plan";

  g_allocs = 0;
  g_count_allocs = true;
  auto second = work.Reconstruct(*codec, missing);
  g_count_allocs = false;
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(g_allocs.load(), 0);
  EXPECT_TRUE(work.Equals(good));
}

// 10+4 has 1470 patterns of up to 4 losses, more than the plan cache holds, so while the
// threads read plans others insert them and the cache is cleared under their feet.
TEST(CodecTest, ConcurrentReconstructWithDifferentPatternsIsCorrect) {
  const Profile p{10, 4};
  const int n = p.k + p.m;
  auto codec = MakeCodec(p);
  Stripe good(p, 1024, 0, 17);
  good.EncodeWith(*codec);
  const auto patterns = Patterns(n, 1, p.m);
  constexpr int kThreads = 4;
  constexpr std::array<size_t, kThreads> kStrides = {1, 11, 13, 17};
  std::atomic<int> failures{0};
  std::atomic<uint32_t> first_bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Stripe work(p, 1024);
      for (int round = 0; round < 2; ++round) {
        for (size_t i = 0; i < patterns.size(); ++i) {
          // Each thread walks all patterns from its own start with its own stride (coprime
          // to 1470 = 2*3*5*7*7), so at any moment the threads use different patterns.
          const size_t j = (i * kStrides[t] + t * patterns.size() / kThreads) % patterns.size();
          const uint32_t missing = patterns[j];
          work.CopyFrom(good);
          work.Scribble(missing);
          if (!work.Reconstruct(*codec, missing).has_value() || !work.Equals(good)) {
            if (failures.fetch_add(1) == 0) first_bad = missing;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0) << "first bad pattern " << MaskString(first_bad.load(), n);
}

}  // namespace
}  // namespace cv::erasure
