// For tests only (needs GoogleTest): a small ObjectStore in a fresh temporary directory, for
// the unit tests of the modules above storage. Three disks, 2+1, 8 MiB extents, a 16 MiB
// index map; the store is closed and the directory removed when the TempStore is destroyed.
#pragma once

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "common/test_temp_dir.h"
#include "storage/storage.h"

namespace cv::storage {

class TempStore {
 public:
  // On failure the test fails and ok() is false.
  explicit TempStore(const std::string& prefix) : dir_(prefix) {
    StoreOptions o;
    for (int i = 0; i < 3; ++i) o.disks.push_back(dir_ / ("d" + std::to_string(i)));
    o.index_dir = dir_ / "index";
    o.k = 2;
    o.m = 1;
    o.extent_bytes = 8 << 20;
    o.index_initial_map_bytes = 16 << 20;
    auto s = ObjectStore::Open(o);
    if (!s) {
      ADD_FAILURE() << "ObjectStore::Open: " << s.error().ToString();
      return;
    }
    store_ = std::move(*s);
  }

  bool ok() const { return store_ != nullptr; }
  ObjectStore& operator*() const { return *store_; }
  ObjectStore* operator->() const { return store_.get(); }
  const TempDir& dir() const { return dir_; }

 private:
  TempDir dir_;                         // declared first: removed after the store is closed
  std::unique_ptr<ObjectStore> store_;
};

}  // namespace cv::storage
