// cluster/fake_etcd: an in-memory Etcd for unit tests (test-only), and Eventually: leases the test
// can end, availability it can switch off (every call then fails with kUnavailable, as when no
// endpoint answers), and direct access to the keys.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
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
  Result<Ranged> Range(const std::string& prefix, int64_t) override {
    std::lock_guard lock(mu_);
    CV_TRY(Up());
    Ranged out;
    out.revision = revision_;
    for (const auto& [k, kv] : kvs_) {
      if (k.starts_with(prefix)) out.kvs.push_back(kv);
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
    Set(KeyValue{key, value, it == kvs_.end() ? revision_ + 1 : it->second.create_revision,
                 revision_ + 1, lease});
    if (lose_next_answer_) {
      lose_next_answer_ = false;
      return Err(ErrorKind::kUnavailable, "answer lost (fake)");
    }
    return revision_;
  }

  Status Delete(const std::string& key) override {
    std::lock_guard lock(mu_);
    CV_TRY(Up());
    Erase(key);
    return {};
  }

  Status Watch(const std::string& prefix, int64_t from, const std::function<void()>& on_open,
               const std::function<void(std::vector<WatchEvent>&&)>& on_events,
               const std::atomic<bool>& stop) override {
    {
      std::lock_guard lock(mu_);
      CV_TRY(Up());
    }
    on_open();
    size_t seen = 0;  // events of log_ looked at
    for (;;) {
      std::vector<WatchEvent> batch;
      {
        std::lock_guard lock(mu_);
        CV_TRY(Up());
        if (from <= compacted_) return Err(ErrorKind::kGone, "compacted (fake)");
        for (; seen < log_.size(); ++seen) {
          const WatchEvent& e = log_[seen];
          if (e.kv.mod_revision >= from && e.kv.key.starts_with(prefix)) batch.push_back(e);
        }
      }
      if (!batch.empty()) on_events(std::move(batch));
      if (stop.load()) return {};
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
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
    Set(KeyValue{key, value, revision_ + 1, revision_ + 1, 0});
  }
  // The next PutIf is applied, but its caller hears kUnavailable (a timeout after the commit).
  void LoseNextAnswer() {
    std::lock_guard lock(mu_);
    lose_next_answer_ = true;
  }
  // Forgets the history up to now: a watch from an older revision gets kGone.
  void Compact() {
    std::lock_guard lock(mu_);
    compacted_ = revision_;
  }
  int64_t revision() {
    std::lock_guard lock(mu_);
    return revision_;
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
    std::vector<std::string> keys;
    for (const auto& [k, kv] : kvs_) {
      if (kv.lease == lease) keys.push_back(k);
    }
    for (const std::string& k : keys) Erase(k);
  }
  // Every change goes through these two: a new revision, and an event for the watches.
  void Set(KeyValue kv) {
    revision_ = kv.mod_revision;
    log_.push_back(WatchEvent{false, kv});
    kvs_[kv.key] = std::move(kv);
  }
  void Erase(const std::string& key) {
    if (!kvs_.erase(key)) return;
    ++revision_;
    WatchEvent e;
    e.deleted = true;
    e.kv.key = key;
    e.kv.mod_revision = revision_;
    log_.push_back(std::move(e));
  }

  std::mutex mu_;
  bool down_ = false;
  bool lose_next_answer_ = false;
  int64_t next_lease_ = 100;
  int64_t revision_ = 1;
  int64_t compacted_ = 0;
  std::set<int64_t> leases_;
  std::map<std::string, KeyValue> kvs_;
  std::vector<WatchEvent> log_;
};

// Polls `cond` every 10 ms for up to `limit` (the threads under test work on their own
// schedule): whether it became true.
template <class F>
bool Eventually(F cond, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cond();
}

}  // namespace cv::cluster
