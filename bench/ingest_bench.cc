// Engine ingest benchmark: 16 MiB objects into an ObjectStore on 6 disk directories (4+2,
// durable), against a plain sequential write + fdatasync of the same number of expanded
// bytes (what the store writes to disk) on the same file system, in the same run.
//
//   ingest_bench [DIR] [objects] [rounds] [direct|buffered]
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "storage/storage.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

static double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

int main(int argc, char** argv) {
  const std::string base = argc > 1 ? argv[1] : "/tmp/cv-ingest-bench";
  const int objects = argc > 2 ? std::atoi(argv[2]) : 32;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 3;
  const bool direct = !(argc > 4 && std::string(argv[4]) == "buffered");
  const int threads = argc > 5 ? std::atoi(argv[5]) : 4;  // concurrent uploads
  const size_t size = 16 << 20;

  std::vector<std::string> bodies;
  std::mt19937_64 rng(1);
  for (int i = 0; i < objects; ++i) {
    std::string b(size, '\0');
    for (size_t j = 0; j < size; j += 8) {
      uint64_t v = rng();
      std::memcpy(b.data() + j, &v, 8);
    }
    bodies.push_back(std::move(b));
  }
  std::printf("command: %s %s %d %d %s %d\n", argv[0], base.c_str(), objects, rounds,
              direct ? "direct" : "buffered", threads);
  std::printf("%-6s %12s %12s %8s\n", "round", "engine MB/s", "raw MB/s", "ratio");
  std::vector<double> ratios;
  for (int r = 0; r < rounds; ++r) {
    fs::remove_all(base);
    cv::storage::StoreOptions o;
    for (int d = 0; d < 6; ++d) o.disks.push_back(base + "/d" + std::to_string(d));
    o.index_dir = base + "/index";
    o.try_direct = direct;
    auto store = cv::storage::ObjectStore::Open(o);
    if (!store) {
      std::fprintf(stderr, "open: %s\n", store.error().ToString().c_str());
      return 1;
    }
    const cv::index::Id dev = cv::index::NewId();
    auto t0 = Clock::now();
    std::atomic<int> next{0};
    std::atomic<bool> failed{false};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        for (int i; (i = next.fetch_add(1)) < objects;) {
          const std::string& b = bodies[i];
          cv::index::ObjectKey key{dev, cv::index::ObjectType::kData,
                                   cv::ToHex(cv::Sha256::Of(b))};
          auto res = (*store)->Put(key, b);
          if (!res) {
            std::fprintf(stderr, "put: %s\n", res.error().ToString().c_str());
            failed = true;
          }
        }
      });
    }
    for (auto& w : workers) w.join();
    if (failed) return 1;
    auto t1 = Clock::now();
    store->reset();
    const double engine = double(size) * objects / Seconds(t0, t1) / 1e6;

    // Baseline: the expanded bytes (x (k+m)/k), one file per disk dir, sequential, synced.
    const size_t expanded = size_t(double(size) * objects * 6 / 4);
    const size_t per_file = expanded / 6;
    std::vector<char> chunk(1 << 20, 'x');
    auto t2 = Clock::now();
    for (int d = 0; d < 6; ++d) {
      const std::string p = base + "/raw" + std::to_string(d);
      int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      for (size_t done = 0; done < per_file; done += chunk.size()) {
        if (::write(fd, chunk.data(), chunk.size()) < 0) return 1;
      }
      ::fdatasync(fd);
      ::close(fd);
    }
    auto t3 = Clock::now();
    const double raw = double(size) * objects / Seconds(t2, t3) / 1e6;  // client-byte equivalent
    ratios.push_back(engine / raw);
    std::printf("%-6d %12.1f %12.1f %8.3f\n", r + 1, engine, raw, engine / raw);
  }
  std::sort(ratios.begin(), ratios.end());
  std::printf("median ratio engine/raw: %.3f (goal >= 0.8)\n", ratios[ratios.size() / 2]);
  fs::remove_all(base);
  return 0;
}
