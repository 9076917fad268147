// The discarding Env of the null-disk node (bench only; see NewDiscardEnv in io.h).
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "storage/io/io.h"

namespace cv::storage {

namespace {

// Extent files are the ones under a data disk's extents/ folder (storage/disk_set.cc).
bool IsExtent(const File* file) {
  return file != nullptr && file->path().find("/extents/") != std::string::npos;
}

class DiscardEnv final : public Env {
 public:
  explicit DiscardEnv(std::unique_ptr<Env> base) : base_(std::move(base)) {}

  Result<std::unique_ptr<File>> Open(const std::string& path, bool create,
                                     bool want_direct) override {
    return base_->Open(path, create, want_direct);
  }

  Status Execute(std::span<IoRequest> requests) override {
    std::vector<IoRequest> passed;  // everything that is not an extent's goes to the base Env
    std::vector<size_t> where;
    for (size_t i = 0; i < requests.size(); ++i) {
      IoRequest& r = requests[i];
      if (!IsExtent(r.file)) {
        passed.push_back(r);
        where.push_back(i);
        continue;
      }
      switch (r.op) {
        case IoRequest::Op::kWrite:
          r.result = static_cast<int64_t>(r.len);
          break;
        case IoRequest::Op::kRead:
          std::memset(r.buf, 0, r.len);  // nothing was kept: reads see zeros
          r.result = static_cast<int64_t>(r.len);
          break;
        case IoRequest::Op::kSync:
          r.result = 0;
          break;
      }
    }
    if (passed.empty()) return {};
    Status s = base_->Execute(passed);
    for (size_t j = 0; j < passed.size(); ++j) requests[where[j]].result = passed[j].result;
    return s;
  }

  Status Allocate(File& file, uint64_t offset, uint64_t len) override {
    if (IsExtent(&file)) return {};  // nothing will be written: take no space
    return base_->Allocate(file, offset, len);
  }
  Result<uint64_t> Size(File& file) override { return base_->Size(file); }
  Status CreateDirs(const std::string& path) override { return base_->CreateDirs(path); }
  Status SyncDir(const std::string& path) override { return base_->SyncDir(path); }
  Status Remove(const std::string& path) override { return base_->Remove(path); }
  Result<std::vector<std::string>> ListDir(const std::string& path) override {
    return base_->ListDir(path);
  }
  Result<FsStats> StatFs(const std::string& path) override { return base_->StatFs(path); }
  const char* Name() const override { return "discard"; }
  IoBuffer AllocateIo(size_t len) override { return base_->AllocateIo(len); }
  IoCounters Counters() const override { return base_->Counters(); }
  // None: a ring would read the (empty) extent files for real. Reads go through Execute.

 private:
  std::unique_ptr<Env> base_;
};

}  // namespace

std::unique_ptr<Env> NewDiscardEnv(std::unique_ptr<Env> base) {
  return std::make_unique<DiscardEnv>(std::move(base));
}

}  // namespace cv::storage
