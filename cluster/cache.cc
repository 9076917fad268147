#include "cluster/cache.h"

namespace cv::cluster {

std::unique_ptr<ClusterCache> ClusterCache::Start(Etcd& etcd, std::string prefix) {
  std::unique_ptr<ClusterCache> c(new ClusterCache(etcd, std::move(prefix)));
  c->thread_ = std::thread([p = c.get()] { p->Loop(); });
  return c;
}

ClusterCache::~ClusterCache() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int64_t ClusterCache::revision() const {
  std::lock_guard lock(mu_);
  return revision_;
}

std::optional<KeyValue> ClusterCache::Get(const std::string& key) const {
  std::lock_guard lock(mu_);
  auto it = kvs_.find(key);
  if (it == kvs_.end()) return std::nullopt;
  return it->second;
}

std::vector<KeyValue> ClusterCache::Prefix(const std::string& prefix) const {
  return Snapshot().Under(prefix);
}

ClusterCache::View ClusterCache::Snapshot() const {
  std::lock_guard lock(mu_);
  return View{revision_, kvs_};
}

std::vector<KeyValue> ClusterCache::View::Under(std::string_view prefix) const {
  std::vector<KeyValue> out;
  for (auto it = kvs.lower_bound(std::string(prefix));
       it != kvs.end() && it->first.starts_with(prefix); ++it) {
    out.push_back(it->second);
  }
  return out;
}

bool ClusterCache::WaitFor(int64_t revision, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [&] { return revision_ >= revision || stop_; }) &&
         revision_ >= revision;
}

void ClusterCache::Apply(std::vector<WatchEvent>&& events) {
  {
    std::lock_guard lock(mu_);
    for (WatchEvent& e : events) {
      revision_ = std::max(revision_, e.kv.mod_revision);
      if (e.deleted) {
        kvs_.erase(e.kv.key);
      } else {
        kvs_[e.kv.key] = std::move(e.kv);
      }
    }
  }
  changed_.notify_all();
}

void ClusterCache::Loop() {
  bool loaded = false;
  bool logged = false;  // the current outage is in the log
  while (!stop_) {
    if (!loaded) {
      auto all = etcd_.Range(prefix_);
      if (all) {
        {
          std::lock_guard lock(mu_);
          kvs_.clear();
          for (KeyValue& kv : all->kvs) kvs_[kv.key] = std::move(kv);
          revision_ = all->revision;
        }
        changed_.notify_all();
        loaded = true;
        Log(LogLevel::kInfo, "cluster_cache_loaded",
            {{"keys", std::to_string(all->kvs.size())},
             {"revision", std::to_string(all->revision)}});
      } else if (!logged) {
        logged = true;
        Log(LogLevel::kWarn, "cluster_cache_stale",
            {{"error", all.error().ToString()},
             {"effect", "not loaded yet; retrying every second"}});
      }
    }
    if (loaded) {
      auto opened = [&] {
        watching_ = true;
        if (logged) {
          Log(LogLevel::kInfo, "cluster_cache_watching",
              {{"revision", std::to_string(revision())}});
        }
        logged = false;
      };
      Status st = etcd_.Watch(
          prefix_, revision() + 1, opened,
          [this](std::vector<WatchEvent>&& e) { Apply(std::move(e)); }, stop_);
      watching_ = false;
      if (stop_) break;
      if (!st && st.error().kind == ErrorKind::kGone) loaded = false;
      if (!st && !logged) {
        logged = true;
        Log(LogLevel::kWarn, "cluster_cache_stale",
            {{"error", st.error().ToString()},
             {"revision", std::to_string(revision())},
             {"effect", "reads answer from the last state seen; retrying every second"}});
      }
    }
    std::unique_lock lock(mu_);
    changed_.wait_for(lock, std::chrono::seconds(1), [&] { return stop_.load(); });
  }
}

}  // namespace cv::cluster
