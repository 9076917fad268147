// cluster/fake_etcd: an in-memory Etcd for unit tests (test-only): leases the test can end,
// availability it can switch off (every call then fails with kUnavailable, as when no endpoint
// answers), and direct access to the keys.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cluster/etcd.h"

namespace cv::cluster {

class FakeEtcd final : public Etcd {
 public:
  Result<int64_t> Grant(int64_t) override {
    std::lock_guard lock(mu_);
    CV_TRY(Up());
    leases_.insert(++next_lease_);
    return next_lease_;
  }
  Result<int64_t> KeepAlive(int64_t lease) override {
    std::lock_guard lock(mu_);
    CV_TRY(Up());
    return leases_.count(lease) ? int64_t{10} : int64_t{0};
  }
  Status Revoke(int64_t lease) override {
    std::lock_guard lock(mu_);
    CV_TRY(Up());
    if (!leases_.erase(lease)) return Err(ErrorKind::kNotFound, "lease not found");
    DropKeysOf(lease);
    return {};
  }
  Result<std::vector<KeyValue>> Range(const std::string& prefix, int64_t) override {
    std::lock_guard lock(mu_);
    CV_TRY(Up());
    std::vector<KeyValue> out;
    for (const auto& [k, kv] : kvs_) {
      if (k.starts_with(prefix)) out.push_back(kv);
    }
    return out;
  }
  Result<int64_t> PutIf(const std::string& key, const std::string& value, int64_t expected,
                        int64_t lease) override {
    std::lock_guard lock(mu_);
    CV_TRY(Up());
    auto it = kvs_.find(key);
    const int64_t current = it == kvs_.end() ? 0 : it->second.mod_revision;
    if (current != expected) return int64_t{0};
    if (lease != 0 && !leases_.count(lease)) return Err(ErrorKind::kNotFound, "lease not found");
    KeyValue kv{key, value, it == kvs_.end() ? revision_ + 1 : it->second.create_revision,
                ++revision_, lease};
    kvs_[key] = kv;
    return revision_;
  }

  Status Delete(const std::string& key) override {
    std::lock_guard lock(mu_);
    CV_TRY(Up());
    kvs_.erase(key);
    ++revision_;
    return {};
  }

  // What the test does to it.
  void SetDown(bool down) {
    std::lock_guard lock(mu_);
    down_ = down;
  }
  void ExpireAll() {
    std::lock_guard lock(mu_);
    for (int64_t l : leases_) DropKeysOf(l);
    leases_.clear();
  }
  void PutRaw(const std::string& key, const std::string& value) {
    std::lock_guard lock(mu_);
    kvs_[key] = KeyValue{key, value, revision_ + 1, ++revision_, 0};
  }
  std::optional<KeyValue> Get(const std::string& key) {
    std::lock_guard lock(mu_);
    auto it = kvs_.find(key);
    if (it == kvs_.end()) return std::nullopt;
    return it->second;
  }
  size_t Leases() {
    std::lock_guard lock(mu_);
    return leases_.size();
  }

 private:
  Status Up() const {
    if (down_) return Err(ErrorKind::kUnavailable, "etcd unreachable (fake)");
    return {};
  }
  void DropKeysOf(int64_t lease) {
    std::erase_if(kvs_, [&](const auto& e) { return e.second.lease == lease; });
  }

  std::mutex mu_;
  bool down_ = false;
  int64_t next_lease_ = 100;
  int64_t revision_ = 1;
  std::set<int64_t> leases_;
  std::map<std::string, KeyValue> kvs_;
};

}  // namespace cv::cluster
