// cluster/cache: a node's copy of what the cluster keeps in etcd under /chunkvault/v1/ (nodes,
// account placements, devices), loaded with one range and then kept current by a watch, so
// that reading it costs no etcd call. It knows the etcd revision it reflects: every change up
// to `revision()` is in it. When the watch breaks (etcd down, a member lost) the cache keeps
// what it has, says so (`watching()` false), and starts the watch again from where it stopped,
// every second; when etcd has compacted that revision away it loads everything again.
//
// Thread-safety: the watch runs on the cache's own thread; every reader may call from any
// thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cluster/etcd.h"

namespace cv::cluster {

inline constexpr std::string_view kClusterPrefix = "/chunkvault/v1/";

class ClusterCache {
 public:
  // Starts loading and watching `prefix` at once, on a thread of its own.
  static std::unique_ptr<ClusterCache> Start(Etcd& etcd,
                                             std::string prefix = std::string(kClusterPrefix));
  ~ClusterCache();  // stops the watch (within 200 ms) and the thread
  ClusterCache(const ClusterCache&) = delete;
  ClusterCache& operator=(const ClusterCache&) = delete;

  // The etcd revision the cache reflects; 0 until the first load.
  int64_t revision() const;
  // The watch is running: the cache follows etcd as it changes.
  bool watching() const { return watching_.load(); }
  std::optional<KeyValue> Get(const std::string& key) const;
  // Every key under `prefix`, in key order.
  std::vector<KeyValue> Prefix(const std::string& prefix) const;
  // Everything the cache holds and its revision, read at one moment.
  struct View {
    int64_t revision = 0;
    std::map<std::string, KeyValue> kvs;
    std::vector<KeyValue> Under(std::string_view prefix) const;
  };
  View Snapshot() const;
  // Waits up to `timeout` until the cache has reached etcd revision `revision` (a write this
  // node made is then visible in it). false: not in time.
  bool WaitFor(int64_t revision, std::chrono::milliseconds timeout) const;

 private:
  ClusterCache(Etcd& etcd, std::string prefix) : etcd_(etcd), prefix_(std::move(prefix)) {}
  void Loop();
  void Apply(std::vector<WatchEvent>&& events);

  Etcd& etcd_;
  const std::string prefix_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> watching_{false};
  mutable std::mutex mu_;
  mutable std::condition_variable changed_;  // revision_ moved, or stop_
  std::map<std::string, KeyValue> kvs_;
  int64_t revision_ = 0;
  std::thread thread_;
};

}  // namespace cv::cluster
