// Splitting a backup over drives: first fit, largest first, counted in clusters with the
// same rules the layout uses, then every drive re-planned for real.
#include <algorithm>
#include <map>
#include <numeric>

#include "courier/format.h"

namespace cv::courier {

using namespace fmt;

namespace {

class Drive {
 public:
  Drive(uint32_t cluster_bytes, uint64_t root_fixed, std::string manifest_path)
      : cb_(cluster_bytes), manifest_path_(std::move(manifest_path)) {
    dirs_[""] = root_fixed;
    used_ = 1;  // the root directory's cluster
  }

  uint64_t used() const { return used_; }
  uint64_t manifest_bytes() const { return manifest_bytes_; }

  // Clusters that adding the file (or, with is_dir, the directory) would take.
  Result<uint64_t> Cost(const std::string& path, uint64_t size, bool is_dir) const {
    std::map<std::string, uint64_t> grown;  // dir -> new entry bytes
    std::string parent;
    size_t pos = 0;
    while (true) {
      size_t slash = path.find('/', pos);
      bool last = slash == std::string::npos;
      std::string comp = path.substr(pos, last ? std::string::npos : slash - pos);
      std::string here = parent.empty() ? comp : parent + "/" + comp;
      std::u16string name;
      if (!Utf8ToUtf16(comp, &name))
        return Err(ErrorKind::kInvalidArgument, "path '" + path + "' is not UTF-8");
      bool exists = dirs_.count(here) || grown.count(here);
      if (!exists && (!last || is_dir)) {
        grown[parent] = Bytes(grown, parent) + EntrySetBytes(name.size());
        grown[here] = 0;
      } else if (last && !is_dir) {
        grown[parent] = Bytes(grown, parent) + EntrySetBytes(name.size());
      }
      if (last) break;
      parent = here;
      pos = slash + 1;
    }
    uint64_t cost = DivUp(size, cb_);
    for (const auto& [dir, bytes] : grown) {
      auto it = dirs_.find(dir);
      uint64_t before = it == dirs_.end() ? 0 : Clusters(it->second);
      cost += Clusters(bytes) - before;
    }
    if (!manifest_path_.empty() && !is_dir && path != manifest_path_ &&
        path != manifest_path_ + ".sig") {
      cost += DivUp(manifest_bytes_ + Sha256SumsLineBytes(path), cb_) - DivUp(manifest_bytes_, cb_);
    }
    return cost;
  }

  Status Add(const std::string& path, uint64_t size, bool is_dir) {
    CV_TRY_ASSIGN(auto cost, Cost(path, size, is_dir));
    used_ += cost;
    std::string parent;
    size_t pos = 0;
    while (true) {
      size_t slash = path.find('/', pos);
      bool last = slash == std::string::npos;
      std::string comp = path.substr(pos, last ? std::string::npos : slash - pos);
      std::string here = parent.empty() ? comp : parent + "/" + comp;
      std::u16string name;
      Utf8ToUtf16(comp, &name);
      if (!dirs_.count(here) && (!last || is_dir)) {
        dirs_[parent] += EntrySetBytes(name.size());
        dirs_[here] = 0;
      } else if (last && !is_dir) {
        dirs_[parent] += EntrySetBytes(name.size());
      }
      if (last) break;
      parent = here;
      pos = slash + 1;
    }
    if (!manifest_path_.empty() && !is_dir && path != manifest_path_ &&
        path != manifest_path_ + ".sig") {
      manifest_bytes_ += Sha256SumsLineBytes(path);
    }
    return {};
  }

 private:
  uint64_t Clusters(uint64_t dir_bytes) const {
    return std::max<uint64_t>(1, DivUp(dir_bytes, cb_));
  }
  uint64_t Bytes(const std::map<std::string, uint64_t>& grown, const std::string& dir) const {
    if (auto it = grown.find(dir); it != grown.end()) return it->second;
    auto it = dirs_.find(dir);
    return it == dirs_.end() ? 0 : it->second;
  }

  uint32_t cb_;
  std::string manifest_path_;
  std::map<std::string, uint64_t> dirs_;  // "" = root -> bytes of entries inside
  uint64_t used_ = 0;
  uint64_t manifest_bytes_ = 0;
};

std::vector<FileSpec> DriveFiles(const std::vector<FileSpec>& common,
                                 const std::vector<FileSpec>& data, const DrivePlan& plan,
                                 std::string_view manifest_path) {
  std::vector<FileSpec> files = common;
  for (size_t i : plan.data_files) files.push_back(data[i]);
  if (!manifest_path.empty()) files.push_back({std::string(manifest_path), plan.manifest_bytes});
  return files;
}

}  // namespace

Result<std::vector<DrivePlan>> PlanSplit(const std::vector<FileSpec>& common,
                                         const std::vector<FileSpec>& data,
                                         const LayoutOptions& options,
                                         std::string_view manifest_path) {
  if (options.image_bytes == 0) return Err(ErrorKind::kInvalidArgument, "split needs a drive size");
  // The common files alone, planned for real: checks them and gives the geometry.
  DrivePlan empty;
  for (const auto& f : common) {
    if (!manifest_path.empty() && f.path != manifest_path &&
        f.path != std::string(manifest_path) + ".sig") {
      empty.manifest_bytes += Sha256SumsLineBytes(f.path);
    }
  }
  auto layout = Layout::Plan(DriveFiles(common, data, empty, manifest_path), options);
  if (!layout) {
    if (layout.error().kind == ErrorKind::kNoSpace) {
      return Err(ErrorKind::kNoSpace, "the files every drive needs do not fit a drive of " +
                                          std::to_string(options.image_bytes) +
                                          " bytes: " + layout.error().context);
    }
    return tl::unexpected(layout.error());
  }
  const Layout::Impl& L = LayoutAccess::Get(*layout);
  const uint32_t cb = L.geo.cluster_bytes();
  Drive base(cb, L.label.empty() ? 2 * kEntry : 3 * kEntry, std::string(manifest_path));
  for (const auto& f : common) CV_TRY(base.Add(f.path, f.size, false));
  for (const auto& dir : options.empty_dirs) CV_TRY(base.Add(dir, 0, true));
  // The manifest's entry; its clusters grow with every file added (Drive::Cost).
  if (!manifest_path.empty()) CV_TRY(base.Add(std::string(manifest_path), 0, false));
  const uint64_t capacity = L.geo.cluster_count - L.geo.bitmap_clusters() - L.upcase_clusters;
  std::vector<size_t> order(data.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return data[a].size > data[b].size; });
  std::vector<Drive> drives;
  std::vector<DrivePlan> plans;
  for (size_t i : order) {
    const FileSpec& f = data[i];
    bool placed = false;
    for (size_t k = 0; k < drives.size() && !placed; ++k) {
      if (drives[k].used() + DivUp(f.size, cb) > capacity) continue;
      CV_TRY_ASSIGN(auto c, drives[k].Cost(f.path, f.size, false));
      if (drives[k].used() + c <= capacity) {
        CV_TRY(drives[k].Add(f.path, f.size, false));
        plans[k].data_files.push_back(i);
        placed = true;
      }
    }
    if (placed) continue;
    Drive fresh = base;
    CV_TRY_ASSIGN(auto c, fresh.Cost(f.path, f.size, false));
    if (fresh.used() + c > capacity) {
      return Err(ErrorKind::kNoSpace, "file '" + f.path + "' (" + std::to_string(f.size) +
                                          " bytes) does not fit on a drive of " +
                                          std::to_string(options.image_bytes) +
                                          " bytes next to the common files");
    }
    CV_TRY(fresh.Add(f.path, f.size, false));
    drives.push_back(std::move(fresh));
    plans.push_back({{i}, 0});
  }
  if (drives.empty()) {
    drives.push_back(base);
    plans.push_back({});
  }
  for (size_t k = 0; k < plans.size(); ++k) {
    plans[k].manifest_bytes = manifest_path.empty() ? 0 : drives[k].manifest_bytes();
    std::sort(plans[k].data_files.begin(), plans[k].data_files.end());
    auto check = Layout::Plan(DriveFiles(common, data, plans[k], manifest_path), options);
    if (!check) {
      return Err(ErrorKind::kInternal, "split plan for drive " + std::to_string(k + 1) +
                                           " does not fit after all: " + check.error().context);
    }
  }
  return plans;
}

}  // namespace cv::courier
