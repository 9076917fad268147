// ec_bench: is cv::erasure::Codec::Encode as fast as a bare ISA-L loop, and how much does
// xxHash's runtime CPU dispatch buy for shard checksums?
//
//   ec_bench [seconds-per-measurement] [K+M]   (defaults 2 and 4+2)
//
// (a) bare ec_encode_data and (b) Codec::Encode run in the same process on the same
// 32-byte-aligned K+M stripe of 1 MiB shards, alternated three times so that frequency
// drift and noisy neighbours hit both alike. Throughput counts data bytes (k * 1 MiB per
// stripe). Then XXH3_64bits (the library's default build) against XXH3_64bits_dispatch
// (picks SSE2/AVX2/AVX-512 at run time) on a 1 MiB buffer. Each encode run also prints a line
//   RESULT ec k=K m=M run=R bare_mib_s=... codec_mib_s=...
// for bench/run.sh.
#include <isa-l/erasure_code.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>
#define XXH_DISPATCH_DISABLE_REPLACE  // keep XXH3_64bits the plain function
#include <xxh_x86dispatch.h>
#include <xxhash.h>

#include "erasure/erasure.h"

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kShard = size_t{1} << 20;
constexpr int kRepeats = 3;
constexpr double kMiB = 1024.0 * 1024.0;

uint8_t* AlignedBuffer(size_t len, uint32_t seed) {
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(cv::erasure::kAlignment, len));
  if (p == nullptr) {
    std::fprintf(stderr, "out of memory\n");
    std::exit(1);
  }
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < len; ++i) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    p[i] = static_cast<uint8_t>(x);
  }
  return p;
}

// Calls fn until `seconds` have passed (after a short warm-up); returns calls per second.
template <class Fn>
double Rate(double seconds, Fn&& fn) {
  for (int i = 0; i < 8; ++i) fn();
  const auto start = Clock::now();
  const auto until = start + std::chrono::duration<double>(seconds);
  long calls = 0;
  Clock::time_point now;
  do {
    fn();
    ++calls;
    now = Clock::now();
  } while (now < until);
  return calls / std::chrono::duration<double>(now - start).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 2.0;
  int kK = 4, kM = 2;
  if (argc > 1) seconds = std::atof(argv[1]);
  if (!(seconds > 0) || (argc > 2 && std::sscanf(argv[2], "%d+%d", &kK, &kM) != 2) ||
      kK < 1 || kM < 1 || kK + kM > 32) {
    std::fprintf(stderr, "usage: %s [seconds-per-measurement] [K+M]\n", argv[0]);
    return 2;
  }
  std::string cmdline;
  for (int i = 0; i < argc; ++i) cmdline += (i ? " " : "") + std::string(argv[i]);
  std::printf("command: %s\ncpu: %s\n", cmdline.c_str(), CpuModel().c_str());

  // ---- erasure coding: bare ISA-L vs Codec, same buffers ----
  std::vector<uint8_t*> shards;
  for (int i = 0; i < kK + kM; ++i) shards.push_back(AlignedBuffer(kShard, i + 1));
  std::vector<unsigned char*> srcs(kK), dests(kM);
  std::vector<const uint8_t*> data(kK);
  std::vector<uint8_t*> parity(kM);
  for (int i = 0; i < kK; ++i) srcs[i] = shards[i], data[i] = shards[i];
  for (int i = 0; i < kM; ++i) dests[i] = shards[kK + i], parity[i] = shards[kK + i];

  std::vector<unsigned char> matrix((kK + kM) * kK), tables(32 * kK * kM);
  gf_gen_cauchy1_matrix(matrix.data(), kK + kM, kK);
  ec_init_tables(kK, kM, &matrix[kK * kK], tables.data());

  auto codec = cv::erasure::Codec::Create(kK, kM);
  if (!codec) {
    std::fprintf(stderr, "Codec::Create: %s\n", codec.error().ToString().c_str());
    return 1;
  }

  // Both must compute the same parity, or the comparison means nothing.
  std::vector<uint8_t> bare_parity(kM * kShard);
  ec_encode_data(static_cast<int>(kShard), kK, kM, tables.data(), srcs.data(), dests.data());
  for (int i = 0; i < kM; ++i) std::memcpy(&bare_parity[i * kShard], dests[i], kShard);
  (*codec)->Encode(kShard, data, parity);
  for (int i = 0; i < kM; ++i) {
    if (std::memcmp(&bare_parity[i * kShard], parity[i], kShard) != 0) {
      std::fprintf(stderr, "parity mismatch between bare ISA-L and Codec\n");
      return 1;
    }
  }

  const double stripe_mib = kK * kShard / kMiB;
  std::printf("\nerasure encode %d+%d, %zu KiB shards, %.1f s per measurement (MiB/s of data)\n",
              kK, kM, kShard / 1024, seconds);
  std::printf("%-6s %14s %14s %12s\n", "run", "bare ISA-L", "Codec", "codec/bare");
  std::vector<double> bare_rates, codec_rates;
  for (int r = 0; r < kRepeats; ++r) {
    const double bare = stripe_mib * Rate(seconds, [&] {
                          ec_encode_data(static_cast<int>(kShard), kK, kM, tables.data(), srcs.data(), dests.data());
                        });
    const double wrapped =
        stripe_mib * Rate(seconds, [&] { (*codec)->Encode(kShard, data, parity); });
    bare_rates.push_back(bare);
    codec_rates.push_back(wrapped);
    std::printf("%-6d %14.0f %14.0f %12.3f\n", r + 1, bare, wrapped, wrapped / bare);
    std::printf("RESULT ec k=%d m=%d run=%d bare_mib_s=%.0f codec_mib_s=%.0f\n", kK, kM, r + 1,
                bare, wrapped);
  }
  std::printf("%-6s %14.0f %14.0f %12.3f\n", "median", Median(bare_rates), Median(codec_rates),
              Median(codec_rates) / Median(bare_rates));

  // ---- shard checksums: XXH3_64bits vs XXH3_64bits_dispatch ----
  uint8_t* buf = shards[0];
  volatile XXH64_hash_t sink = 0;
  if (XXH3_64bits(buf, kShard) != XXH3_64bits_dispatch(buf, kShard)) {
    std::fprintf(stderr, "XXH3 dispatch disagrees with XXH3_64bits\n");
    return 1;
  }
  const double xxh_seconds = seconds / 2;
  std::printf("\nXXH3 64-bit over %zu KiB buffers, %.1f s per measurement (GB/s, 1e9 bytes)\n",
              kShard / 1024, xxh_seconds);
  std::printf("%-6s %14s %14s %12s\n", "run", "XXH3_64bits", "_dispatch", "dispatch/plain");
  std::vector<double> plain_rates, dispatch_rates;
  for (int r = 0; r < kRepeats; ++r) {
    const double plain =
        kShard / 1e9 * Rate(xxh_seconds, [&] { sink = sink + XXH3_64bits(buf, kShard); });
    const double dispatch =
        kShard / 1e9 * Rate(xxh_seconds, [&] { sink = sink + XXH3_64bits_dispatch(buf, kShard); });
    plain_rates.push_back(plain);
    dispatch_rates.push_back(dispatch);
    std::printf("%-6d %14.2f %14.2f %12.3f\n", r + 1, plain, dispatch, dispatch / plain);
  }
  std::printf("%-6s %14.2f %14.2f %12.3f\n", "median", Median(plain_rates), Median(dispatch_rates),
              Median(dispatch_rates) / Median(plain_rates));

  for (uint8_t* p : shards) std::free(p);
  return 0;
}
