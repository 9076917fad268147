// Courier image benchmark: the real courier job (admin API, job runner, admin/jobs/courier.cc)
// writing one device's objects as a drive image, against a plain sequential O_DIRECT read of
// the same number of bytes from a file on the same file system, in the same run.
//
//   courier_bench [DIR] [objects] [rounds] [IMAGE_DIR]
//
// IMAGE_DIR (default DIR/courier) is where the job writes its images: on the store's own file
// system the job's rate is bounded by that file system's write rate (printed for context);
// a separate target (e.g. /dev/shm, standing in for a fast external drive) shows what the
// pipeline itself sustains.
// The store: 6 disk directories under DIR, 4+2, O_DIRECT where the file system allows it;
// `objects` data objects of 16 MiB (plus a config) in one device. Each round runs a courier
// job (timed from POST to "done": snapshot, streaming every object through the store's
// verifying Reader, SHA-256 of every object and of the image, write + fsync of the image)
// and then reads a plain file of the image's size with O_DIRECT in 1 MiB requests. For context
// it also prints the rate of writing that plain file (1 MiB writes + fdatasync): the image is
// written to the same file system, so that rate bounds the job's.
// The bound: the result lists each image's SHA-256, one stream hashed on one thread, so no job
// can write an image faster than one core hashes it. Each round also times one SHA-256 pass
// over as many bytes (in memory) and prints sha256/read: the highest courier/read ratio any
// job could reach in that round.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "admin/admin.h"
#include "storage/storage.h"

namespace fs = std::filesystem;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "courier_bench: %s\n", what.c_str());
  std::exit(1);
}

json::object Call(cv::admin::AdminApi& api, const std::string& key, const std::string& method,
                  const std::string& path, const std::string& body, int want) {
  cv::admin::Request req{method, "/admin/v1/" + path, "Bearer " + key, body};
  cv::admin::Response r = api.Handle(req);
  if (r.status != want) Die(method + " " + path + ": " + std::to_string(r.status) + " " + r.body);
  return json::parse(r.body).as_object();
}

// Sequential O_DIRECT read of `path`, 1 MiB at a time; returns seconds.
double ReadPlain(const std::string& path, uint64_t bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  if (fd < 0) fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) Die("open " + path);
  void* buf = nullptr;
  if (::posix_memalign(&buf, 4096, 1 << 20) != 0) Die("memory");
  const auto t0 = Clock::now();
  uint64_t pos = 0;
  while (pos < bytes) {
    ssize_t n = ::pread(fd, buf, 1 << 20, static_cast<off_t>(pos));
    if (n <= 0) Die("read " + path);
    pos += static_cast<uint64_t>(n);
  }
  const double s = Seconds(t0, Clock::now());
  std::free(buf);
  ::close(fd);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string base = argc > 1 ? argv[1] : "/var/tmp/cv-courier-bench";
  const int objects = argc > 2 ? std::atoi(argv[2]) : 32;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 3;
  constexpr size_t kSize = 16 << 20;
  fs::remove_all(base);
  fs::create_directories(base);

  cv::storage::StoreOptions so;
  for (int i = 0; i < 6; ++i) so.disks.push_back(base + "/disks/d" + std::to_string(i));
  so.index_dir = base + "/index";
  auto store = cv::storage::ObjectStore::Open(so);
  if (!store) Die("open store: " + store.error().ToString());
  cv::admin::Options ao;
  ao.key_file = base + "/admin.key";
  ao.courier_dir = argc > 4 ? std::string(argv[4]) + "/cv-courier-bench" : base + "/courier";
  ao.courier_key_file = base + "/courier.key";
  ao.job_poll_ns = 10000000;
  ao.compact_interval_ns = 0;
  ao.scrub_interval_ns = 0;
  ao.auto_repair = false;
  auto api = cv::admin::AdminApi::Open(**store, ao);
  if (!api) Die("admin: " + api.error().ToString());
  std::string key;
  std::ifstream(ao.key_file) >> key;

  auto account = Call(**api, key, "POST", "accounts",
                      R"({"plan_quota_bytes":1125899906842624,"device_limit":10,"status":"active"})",
                      201);
  const std::string acc(account["id"].as_string());
  auto device = Call(**api, key, "POST", "accounts/" + acc + "/devices", R"({"name":"bench"})", 201);
  const std::string dev_hex(device["id"].as_string());
  auto dev = cv::index::IdFromHex(dev_hex);
  if (!dev) Die("device id");

  // The repository: a config and `objects` random 16 MiB data objects.
  if (!(*store)->Put({*dev, cv::index::ObjectType::kConfig, ""}, "bench config"))
    Die("put config");
  std::mt19937_64 rng(7);
  std::string body(kSize, '\0');
  for (int i = 0; i < objects; ++i) {
    for (size_t j = 0; j < kSize; j += 8) {
      uint64_t v = rng();
      std::memcpy(body.data() + j, &v, 8);
    }
    const std::string name = cv::ToHex(cv::Sha256::Of(body));
    auto put = (*store)->Put({*dev, cv::index::ObjectType::kData, name}, body);
    if (!put) Die("put: " + put.error().ToString());
  }
  body.clear();
  body.shrink_to_fit();

  // For the record: how fast the store alone streams the objects out (verifying reader).
  {
    auto list = (*store)->List(*dev, cv::index::ObjectType::kData, "", 100000);
    if (!list) Die("list");
    std::vector<uint8_t> buf(1 << 20);
    uint64_t total = 0;
    const auto t0 = Clock::now();
    for (const auto& o : *list) {
      auto r = (*store)->Open(o.key, 0, o.size);
      if (!r) Die("open");
      while (true) {
        auto n = (*r)->Read(buf);
        if (!n) Die("read: " + n.error().ToString());
        if (*n == 0) break;
        total += *n;
      }
    }
    std::printf("store reader alone: %.1f MB/s over %llu bytes\n",
                total / Seconds(t0, Clock::now()) / 1e6, static_cast<unsigned long long>(total));
  }
  std::printf("command: %s %s %d %d %s\n", argv[0], base.c_str(), objects, rounds,
              ao.courier_dir.c_str());
  std::printf("%-6s %14s %14s %14s %8s %14s %8s %12s %8s\n", "round", "image bytes",
              "courier MB/s", "read MB/s", "ratio", "write MB/s", "c/write", "sha256 MB/s",
              "bound");
  std::vector<double> ratios, bounds;
  std::vector<uint8_t> hash_input(64 << 20);
  for (auto& b : hash_input) b = static_cast<uint8_t>(rng());
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = Clock::now();
    auto job = Call(**api, key, "POST", "accounts/" + acc + "/devices/" + dev_hex + "/courier",
                    "{}", 202);
    const std::string id(job["id"].as_string());
    json::object done;
    while (true) {
      done = Call(**api, key, "GET", "jobs/" + id, "", 200);
      const std::string state(done["state"].as_string());
      if (state == "done") break;
      if (state == "failed") Die("job failed: " + json::serialize(done));
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const double job_s = Seconds(t0, Clock::now());
    const auto& img = done["result"].as_object().at("images").as_array()[0].as_object();
    const uint64_t bytes = img.at("bytes").to_number<uint64_t>();
    const std::string image = ao.courier_dir + "/" + id + "/" + std::string(img.at("file").as_string());

    // The baseline: a plain file of the same size on the same file system, read sequentially.
    const std::string plain = base + "/plain.bin";
    const auto w0 = Clock::now();
    {
      int fd = ::open(plain.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      // Random bytes like the objects' (a constant pattern may be deduplicated or compressed
      // below the file system by a virtual disk).
      std::vector<uint64_t> chunk((1 << 20) / 8);
      for (uint64_t w = 0; w < bytes; w += chunk.size() * 8) {
        for (auto& v : chunk) v = rng();
        if (::write(fd, chunk.data(), chunk.size() * 8) <= 0) Die("write plain");
      }
      ::fdatasync(fd);
      ::close(fd);
    }
    const double write_s = Seconds(w0, Clock::now());
    const double read_s = ReadPlain(plain, bytes);
    fs::remove(plain);
    fs::remove(image);
    const auto h0 = Clock::now();
    {
      cv::Sha256 sha;
      for (uint64_t done = 0; done < bytes; done += hash_input.size()) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(hash_input.size(), bytes - done));
        sha.Update(std::span<const uint8_t>(hash_input.data(), n));
      }
      (void)sha.Final();
    }
    const double hash_s = Seconds(h0, Clock::now());
    const double courier = bytes / job_s / 1e6, read = bytes / read_s / 1e6,
                 write = bytes / write_s / 1e6, hash = bytes / hash_s / 1e6;
    ratios.push_back(courier / read);
    bounds.push_back(hash / read);
    std::printf("%-6d %14llu %14.1f %14.1f %8.3f %14.1f %8.3f %12.1f %8.3f\n", r + 1,
                static_cast<unsigned long long>(bytes), courier, read, courier / read, write,
                courier / write, hash, hash / read);
    std::fflush(stdout);
  }
  std::sort(ratios.begin(), ratios.end());
  std::sort(bounds.begin(), bounds.end());
  std::printf("median ratio courier/read: %.3f (goal >= 0.7)\n", ratios[ratios.size() / 2]);
  std::printf("median bound sha256/read: %.3f (one SHA-256 pass over the image's bytes on one "
              "core vs the plain read)\n", bounds[bounds.size() / 2]);
  api->reset();
  store->reset();
  fs::remove_all(base);
  fs::remove_all(ao.courier_dir);
  return 0;
}
