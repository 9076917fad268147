// Device purge benchmark (issue 5): how fast a decommissioned device's objects are removed
// (objects/s, GB/s of logical data), how long until its disk space is back (compaction), and
// what the purge does to the upload latency of other devices, all in the same run:
//
//   1. fill: device S with `small` small objects, device L with `large` 16 MiB objects;
//   2. baseline: `writers` threads upload 1 MiB objects to other devices for `seconds` s,
//      recording each upload's latency;
//   3. the same load again while S is purged (device tombstone + batches of 1000, exactly
//      what the purge job does), then L, stopped when the purges end; then compaction; purge
//      rate, space returned, the time from the purges' start until it is back, and the p99
//      during the purge vs the baseline p99 (with the load average of each phase: the
//      machine may be shared).
//
//   purge_bench [DIR] [small] [large] [seconds] [writers]
#include <sys/statvfs.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/common.h"
#include "storage/storage.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using cv::index::Id;
using cv::index::ObjectKey;
using cv::index::ObjectType;

namespace {

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string RandomBody(std::mt19937_64& rng, size_t size) {
  std::string b(size, '\0');
  for (size_t j = 0; j + 8 <= size; j += 8) {
    uint64_t v = rng();
    std::memcpy(b.data() + j, &v, 8);
  }
  return b;
}

ObjectKey DataKey(const Id& dev, const std::string& body) {
  return ObjectKey{dev, ObjectType::kData, cv::ToHex(cv::Sha256::Of(body))};
}

uint64_t UsedBytes(const std::string& path) {
  struct statvfs s {};
  if (::statvfs(path.c_str(), &s) != 0) return 0;
  return (s.f_blocks - s.f_bfree) * s.f_frsize;
}

// The 1-minute load average: the machine is shared, so each figure says how busy it was.
double LoadAverage() {
  double one = 0;
  if (std::FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &one) != 1) one = 0;
    std::fclose(f);
  }
  return one;
}

// Puts `count` objects of `size` bytes to `dev` from `threads` threads; false on any error.
bool Fill(cv::storage::ObjectStore& store, const Id& dev, int count, size_t size, int threads) {
  std::atomic<int> next{0};
  std::atomic<bool> ok{true};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(1000 + t);
      for (int i = next++; i < count && ok; i = next++) {
        std::string b = RandomBody(rng, size);
        b.replace(0, sizeof i, reinterpret_cast<const char*>(&i), sizeof i);
        if (auto r = store.Put(DataKey(dev, b), b); !r) {
          std::fprintf(stderr, "put: %s\n", r.error().ToString().c_str());
          ok = false;
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  return ok;
}

// Uploads 1 MiB objects from `writers` threads until `stop`; returns each upload's latency.
std::vector<double> Load(cv::storage::ObjectStore& store, int writers, std::atomic<bool>& stop,
                         uint64_t seed) {
  std::vector<std::vector<double>> per(writers);
  std::vector<std::thread> ts;
  for (int w = 0; w < writers; ++w) {
    ts.emplace_back([&, w] {
      std::mt19937_64 rng(seed * 100 + w);
      const Id dev = cv::index::NewId();
      while (!stop) {
        std::string b = RandomBody(rng, 1 << 20);
        const auto t0 = Clock::now();
        if (auto r = store.Put(DataKey(dev, b), b); !r) {
          std::fprintf(stderr, "load put: %s\n", r.error().ToString().c_str());
          return;
        }
        per[w].push_back(Seconds(t0, Clock::now()));
      }
    });
  }
  for (auto& t : ts) t.join();
  std::vector<double> all;
  for (auto& v : per) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  return all;
}

double Pct(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  return sorted[std::min(sorted.size() - 1, static_cast<size_t>(p * (sorted.size() - 1)))];
}

struct Purged {
  uint64_t objects = 0, bytes = 0;
  double seconds = 0;
};

Purged Purge(cv::storage::ObjectStore& store, const Id& dev) {
  Purged p;
  const auto t0 = Clock::now();
  if (auto s = store.WriteDeviceTombstone(dev); !s) {
    std::fprintf(stderr, "tombstone: %s\n", s.error().ToString().c_str());
    return p;
  }
  while (true) {
    auto b = store.PurgeObjects(dev, 1000, [](cv::index::WriteTxn&, const auto&) -> cv::Status {
      return {};
    });
    if (!b) {
      std::fprintf(stderr, "purge: %s\n", b.error().ToString().c_str());
      break;
    }
    if (b->objects == 0) break;
    p.objects += b->objects;
    p.bytes += b->bytes;
  }
  p.seconds = Seconds(t0, Clock::now());
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string base = argc > 1 ? argv[1] : "/var/tmp/cv-purge-bench";
  const int small = argc > 2 ? std::atoi(argv[2]) : 100000;
  const int large = argc > 3 ? std::atoi(argv[3]) : 64;
  const int seconds = argc > 4 ? std::atoi(argv[4]) : 10;
  const int writers = argc > 5 ? std::atoi(argv[5]) : 4;
  std::printf("command: %s %s %d %d %d %d\n", argv[0], base.c_str(), small, large, seconds,
              writers);
  fs::remove_all(base);
  cv::storage::StoreOptions o;
  for (int d = 0; d < 6; ++d) o.disks.push_back(base + "/d" + std::to_string(d));
  o.index_dir = base + "/index";
  o.extent_bytes = 64ull << 20;
  auto opened = cv::storage::ObjectStore::Open(o);
  if (!opened) {
    std::fprintf(stderr, "open: %s\n", opened.error().ToString().c_str());
    return 1;
  }
  cv::storage::ObjectStore& store = **opened;
  const Id small_dev = cv::index::NewId(), large_dev = cv::index::NewId();

  auto t0 = Clock::now();
  if (!Fill(store, small_dev, small, 512, 16)) return 1;
  std::printf("fill: %d x 512 B objects in %.1f s (%.0f objects/s)\n", small,
              Seconds(t0, Clock::now()), small / Seconds(t0, Clock::now()));
  t0 = Clock::now();
  if (!Fill(store, large_dev, large, 16 << 20, 4)) return 1;
  std::printf("fill: %d x 16 MiB objects in %.1f s\n", large, Seconds(t0, Clock::now()));

  // Baseline: the load alone.
  std::atomic<bool> stop{false};
  std::vector<double> base_lat;
  const double base_load = LoadAverage();
  {
    std::thread loader([&] { base_lat = Load(store, writers, stop, 1); });
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
    stop = true;
    loader.join();
  }
  // The same load while the two devices are purged.
  stop = false;
  std::vector<double> during_lat;
  Purged ps, pl;
  const uint64_t used_before = UsedBytes(base);
  const double purge_load = LoadAverage();
  std::thread loader([&] { during_lat = Load(store, writers, stop, 2); });
  const auto load_start = Clock::now();
  ps = Purge(store, small_dev);
  pl = Purge(store, large_dev);
  const double purge_done = Seconds(load_start, Clock::now());
  stop = true;  // only uploads that ran beside the purge count
  loader.join();
  // Then the space: compaction of what the purge left dead.
  t0 = Clock::now();
  cv::storage::CompactOptions co;
  auto rep = store.Compact(co);
  const double compact_s = Seconds(t0, Clock::now());
  const double space_back_s = Seconds(load_start, Clock::now());
  const uint64_t used_after = UsedBytes(base);
  if (!rep) {
    std::fprintf(stderr, "compact: %s\n", rep.error().ToString().c_str());
    return 1;
  }

  std::printf("purge small: %llu objects in %.2f s = %.0f objects/s\n",
              (unsigned long long)ps.objects, ps.seconds, ps.objects / std::max(ps.seconds, 1e-9));
  std::printf("purge large: %llu objects, %.2f GB in %.2f s = %.2f GB/s (logical)\n",
              (unsigned long long)pl.objects, pl.bytes / 1e9, pl.seconds,
              pl.bytes / 1e9 / std::max(pl.seconds, 1e-9));
  std::printf("purges done %.2f s into the load; compaction %.2f s: %llu extents removed, %.2f GB "
              "reclaimed (statvfs used %.2f -> %.2f GB, includes the load's uploads)\n",
              purge_done, compact_s, (unsigned long long)rep->extents_removed,
              rep->bytes_reclaimed / 1e9, used_before / 1e9, used_after / 1e9);
  std::printf("space back %.2f s after the purges started (purges, then compaction)\n",
              space_back_s);
  std::printf("upload p50/p99 without purge: %.1f / %.1f ms (%zu uploads, load %.2f)\n",
              1e3 * Pct(base_lat, 0.5), 1e3 * Pct(base_lat, 0.99), base_lat.size(), base_load);
  std::printf("upload p50/p99 during purge:  %.1f / %.1f ms (%zu uploads, load %.2f)\n",
              1e3 * Pct(during_lat, 0.5), 1e3 * Pct(during_lat, 0.99), during_lat.size(),
              purge_load);
  std::printf("ratio p99 during/without: %.2f (goal <= 1.5)\n",
              Pct(during_lat, 0.99) / std::max(Pct(base_lat, 0.99), 1e-9));
  opened->reset();
  fs::remove_all(base);
  return 0;
}
