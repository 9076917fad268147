// The conversions of job_json.h. Each struct's fields are listed once (Fields below), in the
// order the API answers them; the same list writes a struct (Writer) and reads it back
// (Reader), so that the two cannot name a field differently.
#include "admin/jobs/job_json.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <limits>

namespace cv::admin::jobs {

namespace {

const json::object& ObjectOf(const json::value& v) {
  static const json::object kEmpty;
  return v.is_object() ? v.as_object() : kEmpty;
}

std::optional<uint64_t> OptUint(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v ? AsUint(*v) : std::nullopt;
}

std::optional<std::string> OptString(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (!v || !v->is_string()) return std::nullopt;
  return std::string(v->as_string());
}

json::array StringArray(const std::vector<std::string>& v) {
  json::array a;
  a.reserve(v.size());
  for (const auto& s : v) a.push_back(json::value(s));
  return a;
}

// How a field is written and read follows from its type: numbers, bools, strings, lists of
// strings or of structs, raw JSON (a job's params, progress and result) as they are; a
// std::optional<std::string> or std::optional<std::vector<std::string>> as null when nullopt;
// another struct as an object of its own fields. And from the call: Optional(key, x) leaves
// out a nullopt; Flat(key, group) writes an optional group of fields into the object itself,
// read back when `key`, its first field, is there; Attempts(x) is the runner's count, left
// out while 0.
class Writer {
 public:
  template <class T>
  using Ref = const T&;

  void operator()(std::string_view k, uint64_t v) { o_[k] = v; }
  void operator()(std::string_view k, int64_t v) { o_[k] = v; }
  void operator()(std::string_view k, bool v) { o_[k] = v; }
  void operator()(std::string_view k, const std::string& v) { o_[k] = v; }
  void operator()(std::string_view k, const json::value& v) { o_[k] = v; }
  void operator()(std::string_view k, const std::vector<std::string>& v) { o_[k] = StringArray(v); }
  void operator()(std::string_view k, const std::optional<std::string>& v) {
    o_[k] = v ? json::value(*v) : json::value(nullptr);
  }
  void operator()(std::string_view k, const std::optional<std::vector<std::string>>& v) {
    o_[k] = v ? json::value(StringArray(*v)) : json::value(nullptr);
  }
  template <class T>
  void operator()(std::string_view k, const T& group) {
    o_[k] = Write(group);
  }
  template <class T>
  void operator()(std::string_view k, const std::vector<T>& groups) {
    json::array a;
    for (const T& g : groups) a.push_back(Write(g));
    o_[k] = std::move(a);
  }
  template <class T>
  void Optional(std::string_view k, const std::optional<T>& v) {
    if (v) (*this)(k, *v);
  }
  template <class T>
  void Flat(std::string_view, const std::optional<T>& group) {
    if (group) Fields(*this, *group);
  }
  void Attempts(const JobAttempts& a) {
    if (a.attempts == 0) return;
    (*this)("attempts", a.attempts);
    (*this)("last_error", a.last_error);
  }

  template <class T>
  static json::object Write(const T& x) {
    Writer w;
    Fields(w, x);
    return std::move(w.o_);
  }

 private:
  json::object o_;
};

class Reader {
 public:
  template <class T>
  using Ref = T&;

  explicit Reader(const json::value& v) : o_(ObjectOf(v)) {}

  void operator()(std::string_view k, uint64_t& v) { v = UintField(o_, k); }
  void operator()(std::string_view k, int64_t& v) {
    const json::value* p = o_.if_contains(k);
    v = 0;
    if (p && p->is_int64()) v = p->as_int64();
    if (p && p->is_uint64() && p->as_uint64() <= uint64_t(std::numeric_limits<int64_t>::max())) {
      v = static_cast<int64_t>(p->as_uint64());
    }
  }
  void operator()(std::string_view k, bool& v) { v = BoolField(o_, k); }
  void operator()(std::string_view k, std::string& v) { v = StringField(o_, k); }
  void operator()(std::string_view k, json::value& v) {
    const json::value* p = o_.if_contains(k);
    v = p ? *p : json::value(nullptr);
  }
  // Elements that are not strings read as "".
  void operator()(std::string_view k, std::vector<std::string>& v) {
    v.clear();
    const json::value* p = o_.if_contains(k);
    if (!p || !p->is_array()) return;
    for (const json::value& e : p->as_array()) {
      v.push_back(e.is_string() ? std::string(e.as_string()) : std::string());
    }
  }
  void operator()(std::string_view k, std::optional<std::string>& v) { v = OptString(o_, k); }
  void operator()(std::string_view k, std::optional<std::vector<std::string>>& v) {
    const json::value* p = o_.if_contains(k);
    if (!p || !p->is_array()) return v.reset();
    (*this)(k, v.emplace());
  }
  // Elements that are not objects are left out.
  template <class T>
  void operator()(std::string_view k, std::vector<T>& groups) {
    groups.clear();
    const json::value* p = o_.if_contains(k);
    if (!p || !p->is_array()) return;
    for (const json::value& e : p->as_array()) {
      if (e.is_object()) groups.push_back(Read<T>(e));
    }
  }
  void Optional(std::string_view k, std::optional<uint64_t>& v) { v = OptUint(o_, k); }
  void Optional(std::string_view k, std::optional<std::string>& v) { v = OptString(o_, k); }
  void Optional(std::string_view k, std::optional<bool>& v) {
    const json::value* p = o_.if_contains(k);
    v = p && p->is_bool() ? std::optional<bool>(p->as_bool()) : std::nullopt;
  }
  // A key is all three strings, or none.
  void Optional(std::string_view k, std::optional<ObjectKeyJson>& v) {
    v.reset();
    const json::value* p = o_.if_contains(k);
    if (!p || !p->is_object()) return;
    const json::object& key = p->as_object();
    auto device = OptString(key, "device"), type = OptString(key, "type");
    auto name = OptString(key, "name");
    if (device && type && name) v = ObjectKeyJson{*device, *type, *name};
  }
  template <class T>
  void Optional(std::string_view k, std::optional<T>& group) {
    const json::value* p = o_.if_contains(k);
    if (!p || !p->is_object()) return group.reset();
    group = Read<T>(*p);
  }
  template <class T>
  void Flat(std::string_view k, std::optional<T>& group) {
    if (!o_.contains(k)) return group.reset();
    Fields(*this, group.emplace());
  }
  void Attempts(JobAttempts& a) {
    (*this)("attempts", a.attempts);
    (*this)("last_error", a.last_error);
  }

  template <class T>
  static T Read(const json::value& v) {
    Reader r(v);
    T x;
    Fields(r, x);
    return x;
  }

 private:
  const json::object& o_;
};

// ---- the fields of each struct, in the order the API answers them ----

template <class IO>
void Fields(IO& io, typename IO::template Ref<JobView> x) {
  io("id", x.id);
  io("kind", x.kind);
  io("state", x.state);
  io("account", x.account);
  io("device", x.device);
  io("params", x.params);
  io("progress", x.progress);
  io("result", x.result);
  io("created_at", x.created_at);
  io("run_after", x.run_after);
  io("started_at", x.started_at);
  io("finished_at", x.finished_at);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<JobAttempts> x) {
  io.Attempts(x);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<JobFailure> x) {
  io("error", x.error);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<ObjectKeyJson> x) {
  io("device", x.device);
  io("type", x.type);
  io("name", x.name);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<DevicePurgeParams> x) {
  io("grace_seconds", x.grace_seconds);
  io("device_name", x.device_name);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<AccountPurgeParams> x) {
  io("grace_seconds", x.grace_seconds);
  io("devices", x.devices);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<PurgeProgress> x) {
  io("phase", x.phase);
  io("devices", x.devices);
  io("device_index", x.device_index);
  io("objects_done", x.objects_done);
  io("bytes_done", x.bytes_done);
  io("objects_total", x.objects_total);
  io("bytes_total", x.bytes_total);
  io.Attempts(x.attempts);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<PurgeReceipt> x) {
  io.Optional("devices_removed", x.devices_removed);
  io("objects_removed", x.objects_removed);
  io("bytes_removed", x.bytes_removed);
  io("disk_bytes_reclaimed", x.disk_bytes_reclaimed);
  io("started_at", x.started_at);
  io("finished_at", x.finished_at);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<CourierParams> x) {
  io("drive_bytes", x.drive_bytes);
  io("device_name", x.device_name);
  io("needed_bytes", x.needed_bytes);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<CourierImage> x) {
  io("drive", x.drive);
  io("file", x.file);
  io("bytes", x.bytes);
  io("sha256", x.sha256);
  io("files", x.files);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<CourierProgress> x) {
  io("phase", x.phase);
  io("snapshot_sha256", x.snapshot_sha256);
  io("snapshot_at", x.snapshot_at);
  io("images", x.images);
  io("objects", x.objects);
  io("bytes_total", x.bytes_total);
  io("drives", x.drives);
  io("drive", x.drive);
  io("bytes_written", x.bytes_written);
  io.Attempts(x.attempts);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<CourierResult> x) {
  io("images", x.images);
  io("drives", x.drives);
  io("objects", x.objects);
  io("object_bytes", x.object_bytes);
  io("snapshot_at", x.snapshot_at);
  io("started_at", x.started_at);
  io("finished_at", x.finished_at);
  io.Optional("images_deleted_at", x.images_deleted_at);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<ScrubParams> x) {
  io("background", x.background);
  io("max_bytes_per_sec", x.max_bytes_per_sec);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<ScrubCounts> x) {
  io("objects_done", x.objects_done);
  io("shards_checked", x.shards_checked);
  io("bytes_checked", x.bytes_checked);
  io("damaged_shards", x.damaged_shards);
  io("lost_stripes", x.lost_stripes);
  io("damaged", x.damaged);
  io.Optional("last", x.last);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<ScrubProgress> x) {
  io.Optional("objects_total", x.objects_total);
  io.Flat("objects_done", x.counts);
  io.Attempts(x.attempts);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<RepairSummary> x) {
  io("complete", x.complete);
  io("include_failed_disks", x.include_failed_disks);
  io("stripes_examined", x.stripes_examined);
  io("bytes_rewritten", x.bytes_rewritten);
  io("stripes_repaired", x.stripes_repaired);
  io("shards_rewritten", x.shards_rewritten);
  io("stripes_lost", x.stripes_lost);
  io("still_queued", x.still_queued);
  io("lost", x.lost);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<ScrubResult> x) {
  io("clean", x.clean);
  io("background", x.background);
  io("objects", x.objects);
  io("shards_checked", x.shards_checked);
  io("bytes_checked", x.bytes_checked);
  io("damaged_shards", x.damaged_shards);
  io("lost_stripes", x.lost_stripes);
  io("damaged", x.damaged);
  io("started_at", x.started_at);
  io("finished_at", x.finished_at);
  io.Optional("repair", x.repair);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<RepairParams> x) {
  io("include_failed_disks", x.include_failed_disks);
  io.Optional("automatic", x.automatic);
  io.Optional("reason", x.reason);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<RepairResult> x) {
  Fields(io, x.summary);
  io("started_at", x.started_at);
  io("finished_at", x.finished_at);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<DrainParams> x) {
  io.Optional("disk", x.disk);
  io.Optional("path", x.path);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<DrainCounts> x) {
  io("objects_done", x.objects_done);
  io("stripes_moved", x.stripes_moved);
  io("shards_moved", x.shards_moved);
  io("bytes_moved", x.bytes_moved);
  io("stripes_failed", x.stripes_failed);
  io("problems", x.problems);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<DrainProgress> x) {
  io.Optional("objects_total", x.objects_total);
  io("pass", x.pass);
  io.Flat("objects_done", x.counts);
  io.Optional("last", x.last);
  io.Attempts(x.attempts);
}

template <class IO>
void Fields(IO& io, typename IO::template Ref<DrainResult> x) {
  io("disk", x.disk);
  io("path", x.path);
  io("complete", x.complete);
  io("objects", x.objects);
  io("stripes_moved", x.stripes_moved);
  io("shards_moved", x.shards_moved);
  io("bytes_moved", x.bytes_moved);
  io("stripes_failed", x.stripes_failed);
  io("extents_removed", x.extents_removed);
  io("remaining_bytes", x.remaining_bytes);
  io("problems", x.problems);
  io("passes", x.passes);
  io("started_at", x.started_at);
  io("finished_at", x.finished_at);
  io("next", x.next);
}

}  // namespace

std::optional<uint64_t> AsUint(const json::value& v) {
  if (v.is_uint64()) return v.as_uint64();
  if (v.is_int64() && v.as_int64() >= 0) return static_cast<uint64_t>(v.as_int64());
  return std::nullopt;
}

uint64_t UintField(const json::object& o, std::string_view key) {
  return OptUint(o, key).value_or(0);
}

std::string StringField(const json::object& o, std::string_view key) {
  return OptString(o, key).value_or(std::string());
}

bool BoolField(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_bool() && v->as_bool();
}

json::value ParsedOrNull(std::string_view text) {
  if (text.empty()) return nullptr;
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return nullptr;
  return v;
}

std::string JsonText(const json::value& v) { return json::serialize(v); }

std::string WithAttempts(std::string_view progress, const JobAttempts& attempts) {
  json::value v = ParsedOrNull(progress);
  if (!v.is_object()) v = json::object();
  for (const auto& field : Writer::Write(attempts)) v.as_object()[field.key()] = field.value();
  return JsonText(v);
}

#define CV_JOB_JSON(T)                                                        \
  void tag_invoke(const json::value_from_tag&, json::value& jv, const T& x) { \
    jv = Writer::Write(x);                                                    \
  }                                                                           \
  T tag_invoke(const json::value_to_tag<T>&, const json::value& jv) { return Reader::Read<T>(jv); }
CV_JOB_JSON(JobView)
CV_JOB_JSON(JobAttempts)
CV_JOB_JSON(JobFailure)
CV_JOB_JSON(DevicePurgeParams)
CV_JOB_JSON(AccountPurgeParams)
CV_JOB_JSON(PurgeProgress)
CV_JOB_JSON(PurgeReceipt)
CV_JOB_JSON(CourierParams)
CV_JOB_JSON(CourierImage)
CV_JOB_JSON(CourierProgress)
CV_JOB_JSON(CourierResult)
CV_JOB_JSON(ScrubParams)
CV_JOB_JSON(ScrubProgress)
CV_JOB_JSON(RepairSummary)
CV_JOB_JSON(ScrubResult)
CV_JOB_JSON(RepairParams)
CV_JOB_JSON(RepairResult)
CV_JOB_JSON(DrainParams)
CV_JOB_JSON(DrainProgress)
CV_JOB_JSON(DrainResult)
#undef CV_JOB_JSON

ProgressCounts tag_invoke(const json::value_to_tag<ProgressCounts>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  ProgressCounts x;
  x.bytes_done = OptUint(o, "bytes_written");
  if (!x.bytes_done) x.bytes_done = OptUint(o, "bytes_done");
  x.bytes_total = OptUint(o, "bytes_total");
  x.objects_done = OptUint(o, "objects_done");
  x.objects_total = OptUint(o, "objects_total");
  return x;
}

}  // namespace cv::admin::jobs
