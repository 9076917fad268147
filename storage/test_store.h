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
    for (int i = 0; i < 3; ++i) options_.disks.push_back(dir_ / ("d" + std::to_string(i)));
    options_.index_dir = dir_ / "index";
    options_.k = 2;
    options_.m = 1;
    options_.extent_bytes = 8 << 20;
    options_.index_initial_map_bytes = 16 << 20;
    Reopen();
  }

  // Closes the store (REQUIRES: nothing uses it any more) and opens it again from what the
  // disks and the index hold: what a restart of the node sees.
  void Reopen() {
    store_.reset();
    auto s = ObjectStore::Open(options_);
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
  StoreOptions options_;
  std::unique_ptr<ObjectStore> store_;
};

}  // namespace cv::storage
