// index_bench: the LMDB index alone (cv::index::Index, no storage, no HTTP): insert rate and
// lookup latency as the number of stored objects grows, and the size of data.mdb per object.
//
//   index_bench DIR N1,N2,... [lookups] [batch] [--device HEX --start S --names FILE]
//   (defaults: 10000 lookups, 1000 objects per batch)
//
// Objects are inserted in ascending steps up to N1, then N2, ...: each step's insert rate counts
// durable commits (Update: one LMDB transaction and fdatasync per batch of `batch` objects, as a
// purge or a busy node's grouped commits do). Each object is what a 4 MiB restic pack stored
// 4+2 looks like: 4 stripes of 6 shard locations, a random 64-hex-digit name, spread over 16
// devices (with device records, so every insert also updates its device's counters). After each
// step, `lookups` random stored keys are looked up one at a time, each in its own read
// transaction, and timed. One line per step for bench/run.sh:
//   RESULT index objects=N insert_per_s=... lookup_p50_us=... lookup_p99_us=... bytes_per_object=...
// (bytes_per_object: data.mdb's size on disk / N). DIR is created afresh unless --start says
// that an earlier call stored S objects there (a run continues where the last one stopped, so
// that a caller can check its time budget between steps); it is kept at the end.
//
// With --device, DIR is the index of a stopped chunkvaultd and every object goes to that
// existing device (created through the admin API), which then serves them. --names FILE gets
// `lookups` random stored names, one a line, for `loadgen --head-names` (the end-to-end HEAD
// latency of bench/run.sh). The records point at shards that do not exist: such a node is only
// good for HEAD and listing.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "index/index.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using cv::index::Id;
using cv::index::ObjectKey;
using cv::index::ObjectRecord;

constexpr int kDevices = 16;

// The same ids in every call, so that a later call (--start) continues the same devices.
Id DeviceId(int d) {
  std::mt19937_64 g(0xDE71CE + d);
  Id id{};
  for (auto& b : id) b = static_cast<uint8_t>(g());
  return id;
}

// Object i's key: a name derived from i (so lookups can rebuild it), the device i % kDevices.
ObjectKey KeyOf(const std::vector<Id>& devices, uint64_t i) {
  std::mt19937_64 g(i * 0x9E3779B97F4A7C15ull + 1);
  char name[65];
  for (int w = 0; w < 4; ++w) std::snprintf(name + 16 * w, 17, "%016llx", (unsigned long long)g());
  return ObjectKey{devices[i % kDevices], cv::index::ObjectType::kData, std::string(name, 64)};
}

ObjectRecord RecordOf(uint64_t i) {
  ObjectRecord r;
  r.size = 4u << 20;
  r.created_ns = static_cast<int64_t>(i);
  r.layout = cv::index::Layout::kErasure;
  r.k = 4;
  r.m = 2;
  r.shard_unit = 256 * 1024;
  for (int s = 0; s < 4 * 6; ++s) {
    r.shards.push_back({static_cast<uint16_t>(s % 6), static_cast<uint32_t>(i / 64),
                        (i % 64) * (1u << 20) + s * 4096u});
  }
  r.sha256[0] = static_cast<uint8_t>(i);
  return r;
}

double Percentile(std::vector<double>& v, double p) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "index_bench: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> pos;
  std::string device_hex, names_file;
  uint64_t stored = 0;
  std::string cmdline = argv[0];
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    cmdline += " " + a;
    const bool flag = a == "--device" || a == "--start" || a == "--names";
    if (flag && i + 1 < argc) {
      const std::string v = argv[++i];
      cmdline += " " + v;
      if (a == "--device") device_hex = v;
      if (a == "--names") names_file = v;
      if (a == "--start") stored = std::stoull(v);
    } else {
      pos.push_back(a);
    }
  }
  if (pos.size() < 2) {
    std::fprintf(stderr, "usage: %s DIR N1,N2,... [lookups] [batch] [--device HEX --start S "
                 "--names FILE]\n", argv[0]);
    return 2;
  }
  const std::string dir = pos[0];
  std::vector<uint64_t> steps;
  {
    std::stringstream ss(pos[1]);
    for (std::string item; std::getline(ss, item, ',');) steps.push_back(std::stoull(item));
  }
  const int lookups = pos.size() > 2 ? std::atoi(pos[2].c_str()) : 10000;
  const uint64_t batch = pos.size() > 3 ? std::stoull(pos[3]) : 1000;
  std::printf("command: %s\n", cmdline.c_str());

  std::vector<Id> devices;
  if (!device_hex.empty()) {
    auto id = cv::index::IdFromHex(device_hex);
    if (!id) return Fail("--device: not a device id: " + device_hex);
    devices.assign(kDevices, *id);
  } else {
    if (stored == 0) fs::remove_all(dir);
    for (int d = 0; d < kDevices; ++d) devices.push_back(DeviceId(d));
  }
  auto index = cv::index::Index::Open({.dir = dir});
  if (!index) return Fail("open: " + index.error().ToString());
  const Id account = cv::index::NewId();
  const bool new_devices = device_hex.empty() && stored == 0;
  cv::Status s = !new_devices ? cv::Status{} : (*index)->Update([&](cv::index::WriteTxn& txn) -> cv::Status {
    for (const Id& id : devices) {
      cv::index::DeviceRecord dev;
      dev.id = id;
      dev.account = account;
      dev.name = "bench";
      if (auto st = txn.PutDevice(dev); !st) return st;
    }
    return {};
  });
  if (!s) return Fail("devices: " + s.error().ToString());

  std::mt19937_64 pick(7);
  for (uint64_t target : steps) {
    const auto t0 = Clock::now();
    const uint64_t from = stored;
    while (stored < target) {
      const uint64_t end = std::min(target, stored + batch);
      s = (*index)->Update([&](cv::index::WriteTxn& txn) -> cv::Status {
        for (uint64_t i = stored; i < end; ++i) {
          if (auto st = txn.PutObject(KeyOf(devices, i), RecordOf(i)); !st) return st;
        }
        return {};
      });
      if (!s) return Fail("insert: " + s.error().ToString());
      stored = end;
    }
    const double insert_s = std::chrono::duration<double>(Clock::now() - t0).count();

    std::vector<double> us;
    for (int l = 0; l < lookups && stored > 0; ++l) {
      const ObjectKey key = KeyOf(devices, pick() % stored);
      const auto a = Clock::now();
      auto txn = (*index)->BeginRead();
      if (!txn) return Fail("read: " + txn.error().ToString());
      auto rec = (*txn)->GetObject(key);
      if (!rec || !rec->has_value()) return Fail("lookup: a stored object is missing");
      txn->reset();
      us.push_back(std::chrono::duration<double>(Clock::now() - a).count() * 1e6);
    }
    struct stat st {};
    const uint64_t file_bytes =
        ::stat((dir + "/data.mdb").c_str(), &st) == 0 ? uint64_t(st.st_blocks) * 512 : 0;
    std::printf("RESULT index objects=%llu insert_per_s=%.0f lookup_p50_us=%.1f "
                "lookup_p99_us=%.1f bytes_per_object=%.0f\n",
                (unsigned long long)stored, insert_s > 0 ? (stored - from) / insert_s : 0,
                Percentile(us, 0.50), Percentile(us, 0.99),
                stored ? double(file_bytes) / stored : 0);
    std::fflush(stdout);
  }
  index->reset();
  if (!names_file.empty()) {
    FILE* f = std::fopen(names_file.c_str(), "w");
    if (f == nullptr) return Fail("cannot write " + names_file);
    for (int l = 0; l < lookups && stored > 0; ++l) {
      std::fprintf(f, "%s\n", KeyOf(devices, pick() % stored).name.c_str());
    }
    std::fclose(f);
  }
  return 0;
}
