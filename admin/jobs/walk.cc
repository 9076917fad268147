// What the long walks over the index (scrub, drain) share: their progress saved once a second,
// the total they count against, the capped lists of problems they keep, and the object key
// they resume after.
#include "admin/jobs/jobs.h"

namespace cv::admin::jobs {

bool ProgressSaver::Tick(const std::function<json::value()>& make) {
  if (ctx_.stopping()) {
    cancelled_ = ctx_.cancelled();
    return false;
  }
  const auto now = std::chrono::steady_clock::now();
  if (now - last_ < std::chrono::seconds(1)) return true;
  last_ = now;
  auto saved = ctx_.SaveProgress(make());
  if (!saved) {
    error_ = saved.error();
    return false;
  }
  cancelled_ = !*saved;
  return *saved;
}

Result<uint64_t> CountObjects(storage::ObjectStore& store) {
  uint64_t total = 0;
  CV_TRY_ASSIGN(auto txn, store.Index().BeginRead());
  CV_TRY(txn->ForEachObject([&](const index::ObjectKey&, const index::ObjectRecord&) {
    ++total;
    return true;
  }));
  return total;
}

std::vector<std::string> AppendCapped(std::vector<std::string> base,
                                      const std::vector<std::string>& lines, size_t cap) {
  for (const auto& line : lines) {
    if (base.size() >= cap) break;
    base.push_back(line);
  }
  return base;
}

ObjectKeyJson KeyJson(const index::ObjectKey& k) {
  return ObjectKeyJson{index::IdToHex(k.device), std::string(index::ObjectTypeName(k.type)),
                       k.name};
}

std::optional<index::ObjectKey> KeyFromJson(const std::optional<ObjectKeyJson>& k) {
  if (!k) return std::nullopt;
  auto id = index::IdFromHex(k->device);
  auto t = index::ParseObjectType(k->type);
  if (!id || !t) return std::nullopt;
  return index::ObjectKey{*id, *t, k->name};
}

}  // namespace cv::admin::jobs
