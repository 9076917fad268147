// Engine ingest benchmark: 16 MiB objects into an ObjectStore on K+M disk directories (default
// 4+2, durable), against a plain sequential write + fdatasync of the same number of expanded
// bytes (what the store writes to disk) on the same file system, in the same run. It also
// reports the bytes the engine made the kernel write (/proc/self/io write_bytes: shard records,
// LMDB) per client byte.
//
//   ingest_bench [DIR] [objects] [rounds] [direct|buffered] [threads] [K+M] [registered MiB]
//
// The last argument sizes the io_uring registered-buffer region (0 = none, default: the
// store's default Env), for comparing runs with and without it.
//
// Each round also prints a line for bench/run.sh:
//   RESULT ingest k=K m=M round=R engine_mb_s=... raw_mb_s=... written_per_byte=...
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "storage/io/io.h"
#include "storage/storage.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

static double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Bytes this process has caused to be sent to the storage layer (all its threads, io_uring
// workers included); 0 if the kernel does not account I/O.
static uint64_t WriteBytes() {
  std::ifstream in("/proc/self/io");
  std::string key;
  uint64_t value = 0;
  while (in >> key >> value) {
    if (key == "write_bytes:") return value;
  }
  return 0;
}

int main(int argc, char** argv) {
  const std::string base = argc > 1 ? argv[1] : "/tmp/cv-ingest-bench";
  const int objects = argc > 2 ? std::atoi(argv[2]) : 32;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 3;
  const bool direct = !(argc > 4 && std::string(argv[4]) == "buffered");
  const int threads = argc > 5 ? std::atoi(argv[5]) : 4;  // concurrent uploads
  int k = 4, m = 2;
  if (argc > 6 && (std::sscanf(argv[6], "%d+%d", &k, &m) != 2 || k < 1 || m < 1)) {
    std::fprintf(stderr, "usage: %s [DIR] [objects] [rounds] [direct|buffered] [threads] [K+M]\n",
                 argv[0]);
    return 2;
  }
  const long registered_mib = argc > 7 ? std::atol(argv[7]) : -1;
  std::unique_ptr<cv::storage::Env> env;
  if (registered_mib >= 0) {
    auto made = cv::storage::NewUringEnv(256, size_t(registered_mib) << 20);
    if (!made) {
      std::fprintf(stderr, "io_uring: %s\n", made.error().ToString().c_str());
      return 1;
    }
    env = std::move(*made);
  }
  const int disks = k + m;
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
  // The names (SHA-256 of each body) are the client's work, as restic computes them before
  // uploading: outside the timed part. The store hashes each body again to check it.
  std::vector<std::string> names;
  for (const std::string& b : bodies) names.push_back(cv::ToHex(cv::Sha256::Of(b)));
  std::printf("command: %s %s %d %d %s %d %d+%d%s\n", argv[0], base.c_str(), objects, rounds,
              direct ? "direct" : "buffered", threads, k, m,
              registered_mib >= 0 ? (" " + std::to_string(registered_mib)).c_str() : "");
  std::printf("%-6s %12s %12s %8s\n", "round", "engine MB/s", "raw MB/s", "ratio");
  std::vector<double> ratios;
  for (int r = 0; r < rounds; ++r) {
    fs::remove_all(base);
    cv::storage::StoreOptions o;
    for (int d = 0; d < disks; ++d) o.disks.push_back(base + "/d" + std::to_string(d));
    o.k = k;
    o.m = m;
    o.index_dir = base + "/index";
    o.try_direct = direct;
    o.env = env.get();
    auto store = cv::storage::ObjectStore::Open(o);
    if (!store) {
      std::fprintf(stderr, "open: %s\n", store.error().ToString().c_str());
      return 1;
    }
    const cv::index::Id dev = cv::index::NewId();
    const uint64_t written0 = WriteBytes();
    auto t0 = Clock::now();
    std::atomic<int> next{0};
    std::atomic<bool> failed{false};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        for (int i; (i = next.fetch_add(1)) < objects;) {
          cv::index::ObjectKey key{dev, cv::index::ObjectType::kData, names[i]};
          auto res = (*store)->Put(key, bodies[i]);
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
    const cv::storage::IoCounters io = env ? env->Counters() : cv::storage::IoCounters{};
    store->reset();
    const double written_per_byte = double(WriteBytes() - written0) / (double(size) * objects);
    const double engine = double(size) * objects / Seconds(t0, t1) / 1e6;

    // Baseline: the expanded bytes (x (k+m)/k), one file per disk dir, sequential, synced.
    const size_t expanded = size_t(double(size) * objects * disks / k);
    const size_t per_file = expanded / disks;
    std::vector<char> chunk(1 << 20, 'x');
    auto t2 = Clock::now();
    for (int d = 0; d < disks; ++d) {
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
    std::printf("%-6d %12.1f %12.1f %8.3f", r + 1, engine, raw, engine / raw);
    if (env) std::printf("   (registered %llu of %llu requests so far)",
                         (unsigned long long)io.registered_requests,
                         (unsigned long long)io.requests);
    std::printf("\n");
    std::printf("RESULT ingest k=%d m=%d round=%d engine_mb_s=%.1f raw_mb_s=%.1f "
                "written_per_byte=%.3f\n", k, m, r + 1, engine, raw, written_per_byte);
  }
  std::sort(ratios.begin(), ratios.end());
  std::printf("median ratio engine/raw: %.3f (goal >= 0.8)\n", ratios[ratios.size() / 2]);
  fs::remove_all(base);
  return 0;
}
