// What the long walks over the index (scrub, drain) share: their progress saved once a second,
// the total they count against, the capped lists of problems they keep, and the object key
// they resume after.
#include "admin/jobs/jobs.h"

namespace cv::admin::jobs {

bool ProgressSaver::Tick(const std::function<json::object()>& make) {
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
  auto txn = store.Index().BeginRead();
  if (!txn) return tl::unexpected(txn.error());
  CV_TRY((*txn)->ForEachObject([&](const index::ObjectKey&, const index::ObjectRecord&) {
    ++total;
    return true;
  }));
  return total;
}

json::array AppendCapped(const json::value* base, const std::vector<std::string>& lines,
                         size_t cap) {
  json::array out = base && base->is_array() ? base->as_array() : json::array{};
  for (const auto& line : lines) {
    if (out.size() >= cap) break;
    out.push_back(json::value(line));
  }
  return out;
}

json::object KeyJson(const index::ObjectKey& k) {
  return json::object{{"device", index::IdToHex(k.device)},
                      {"type", index::ObjectTypeName(k.type)},
                      {"name", k.name}};
}

std::optional<index::ObjectKey> KeyFromJson(const json::value* v) {
  if (!v || !v->is_object()) return std::nullopt;
  const json::object& o = v->as_object();
  auto str = [&](const char* f) -> std::optional<std::string> {
    const json::value* x = o.if_contains(f);
    if (!x || !x->is_string()) return std::nullopt;
    return std::string(x->as_string());
  };
  auto dev = str("device"), type = str("type"), name = str("name");
  if (!dev || !type || !name) return std::nullopt;
  auto id = index::IdFromHex(*dev);
  auto t = index::ParseObjectType(*type);
  if (!id || !t) return std::nullopt;
  return index::ObjectKey{*id, *t, *name};
}

}  // namespace cv::admin::jobs
