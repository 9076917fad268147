// The conversions of job_json.h: one writer and one lenient reader per struct, field by field
// in the order the API answers them.
#include "admin/jobs/job_json.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <limits>

namespace cv::admin::jobs {

namespace {

// ---- writing ----

json::value NullOr(const std::optional<std::string>& t) {
  return t ? json::value(*t) : json::value(nullptr);
}

json::array StringArray(const std::vector<std::string>& v) {
  json::array a;
  a.reserve(v.size());
  for (const auto& s : v) a.push_back(json::value(s));
  return a;
}

void PutAttempts(json::object& o, const JobAttempts& a) {
  if (a.attempts == 0) return;
  o["attempts"] = a.attempts;
  o["last_error"] = a.last_error;
}

json::object KeyObject(const ObjectKeyJson& k) {
  return json::object{{"device", k.device}, {"type", k.type}, {"name", k.name}};
}

void PutRepairSummary(json::object& o, const RepairSummary& r) {
  o["complete"] = r.complete;
  o["include_failed_disks"] = r.include_failed_disks;
  o["stripes_examined"] = r.stripes_examined;
  o["bytes_rewritten"] = r.bytes_rewritten;
  o["stripes_repaired"] = r.stripes_repaired;
  o["shards_rewritten"] = r.shards_rewritten;
  o["stripes_lost"] = r.stripes_lost;
  o["still_queued"] = r.still_queued;
  o["lost"] = StringArray(r.lost);
}

// ---- reading ----

const json::object& ObjectOf(const json::value& v) {
  static const json::object kEmpty;
  return v.is_object() ? v.as_object() : kEmpty;
}

std::optional<uint64_t> OptUint(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v ? AsUint(*v) : std::nullopt;
}

int64_t IntField(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v && v->is_int64()) return v->as_int64();
  if (v && v->is_uint64() && v->as_uint64() <= uint64_t(std::numeric_limits<int64_t>::max())) {
    return static_cast<int64_t>(v->as_uint64());
  }
  return 0;
}

std::optional<std::string> OptString(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (!v || !v->is_string()) return std::nullopt;
  return std::string(v->as_string());
}

// Elements that are not strings read as "".
std::vector<std::string> Strings(const json::object& o, std::string_view key) {
  std::vector<std::string> out;
  const json::value* v = o.if_contains(key);
  if (!v || !v->is_array()) return out;
  for (const json::value& e : v->as_array()) {
    out.push_back(e.is_string() ? std::string(e.as_string()) : std::string());
  }
  return out;
}

// A key is all three strings, or none.
std::optional<ObjectKeyJson> KeyField(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (!v || !v->is_object()) return std::nullopt;
  const json::object& k = v->as_object();
  auto device = OptString(k, "device"), type = OptString(k, "type"), name = OptString(k, "name");
  if (!device || !type || !name) return std::nullopt;
  return ObjectKeyJson{*device, *type, *name};
}

RepairSummary ReadRepairSummary(const json::object& o) {
  RepairSummary r;
  r.complete = BoolField(o, "complete");
  r.include_failed_disks = BoolField(o, "include_failed_disks");
  r.stripes_examined = UintField(o, "stripes_examined");
  r.bytes_rewritten = UintField(o, "bytes_rewritten");
  r.stripes_repaired = UintField(o, "stripes_repaired");
  r.shards_rewritten = UintField(o, "shards_rewritten");
  r.stripes_lost = UintField(o, "stripes_lost");
  r.still_queued = UintField(o, "still_queued");
  r.lost = Strings(o, "lost");
  return r;
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

// ---- every job ----

void tag_invoke(const json::value_from_tag&, json::value& jv, const JobView& x) {
  json::object o;
  o["id"] = x.id;
  o["kind"] = x.kind;
  o["state"] = x.state;
  o["account"] = NullOr(x.account);
  o["device"] = NullOr(x.device);
  o["params"] = x.params;
  o["progress"] = x.progress;
  o["result"] = x.result;
  o["created_at"] = NullOr(x.created_at);
  o["run_after"] = NullOr(x.run_after);
  o["started_at"] = NullOr(x.started_at);
  o["finished_at"] = NullOr(x.finished_at);
  jv = std::move(o);
}

JobView tag_invoke(const json::value_to_tag<JobView>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  JobView x;
  x.id = StringField(o, "id");
  x.kind = StringField(o, "kind");
  x.state = StringField(o, "state");
  x.account = OptString(o, "account");
  x.device = OptString(o, "device");
  for (auto [key, to] : {std::pair{"params", &x.params}, std::pair{"progress", &x.progress},
                         std::pair{"result", &x.result}}) {
    if (const json::value* v = o.if_contains(key)) *to = *v;
  }
  x.created_at = OptString(o, "created_at");
  x.run_after = OptString(o, "run_after");
  x.started_at = OptString(o, "started_at");
  x.finished_at = OptString(o, "finished_at");
  return x;
}

void tag_invoke(const json::value_from_tag&, json::value& jv, const JobAttempts& x) {
  json::object o;
  PutAttempts(o, x);
  jv = std::move(o);
}

JobAttempts tag_invoke(const json::value_to_tag<JobAttempts>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  return JobAttempts{UintField(o, "attempts"), StringField(o, "last_error")};
}

std::string WithAttempts(std::string_view progress, const JobAttempts& attempts) {
  json::value v = ParsedOrNull(progress);
  if (!v.is_object()) v = json::object();
  PutAttempts(v.as_object(), attempts);
  return JsonText(v);
}

void tag_invoke(const json::value_from_tag&, json::value& jv, const JobFailure& x) {
  jv = json::object{{"error", x.error}};
}

JobFailure tag_invoke(const json::value_to_tag<JobFailure>&, const json::value& jv) {
  return JobFailure{StringField(ObjectOf(jv), "error")};
}

// ---- device.purge, account.purge ----

void tag_invoke(const json::value_from_tag&, json::value& jv, const DevicePurgeParams& x) {
  jv = json::object{{"grace_seconds", x.grace_seconds}, {"device_name", x.device_name}};
}

DevicePurgeParams tag_invoke(const json::value_to_tag<DevicePurgeParams>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  return DevicePurgeParams{IntField(o, "grace_seconds"), StringField(o, "device_name")};
}

void tag_invoke(const json::value_from_tag&, json::value& jv, const AccountPurgeParams& x) {
  jv = json::object{{"grace_seconds", x.grace_seconds}, {"devices", x.devices}};
}

AccountPurgeParams tag_invoke(const json::value_to_tag<AccountPurgeParams>&,
                              const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  return AccountPurgeParams{IntField(o, "grace_seconds"), UintField(o, "devices")};
}

void tag_invoke(const json::value_from_tag&, json::value& jv, const PurgeProgress& x) {
  json::object o;
  o["phase"] = x.phase;
  o["devices"] = StringArray(x.devices);
  o["device_index"] = x.device_index;
  o["objects_done"] = x.objects_done;
  o["bytes_done"] = x.bytes_done;
  o["objects_total"] = x.objects_total;
  o["bytes_total"] = x.bytes_total;
  PutAttempts(o, x.attempts);
  jv = std::move(o);
}

PurgeProgress tag_invoke(const json::value_to_tag<PurgeProgress>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  PurgeProgress x;
  x.phase = StringField(o, "phase");
  x.devices = Strings(o, "devices");
  x.device_index = UintField(o, "device_index");
  x.objects_done = UintField(o, "objects_done");
  x.bytes_done = UintField(o, "bytes_done");
  x.objects_total = UintField(o, "objects_total");
  x.bytes_total = UintField(o, "bytes_total");
  x.attempts = json::value_to<JobAttempts>(jv);
  return x;
}

void tag_invoke(const json::value_from_tag&, json::value& jv, const PurgeReceipt& x) {
  json::object o;
  if (x.devices_removed) o["devices_removed"] = *x.devices_removed;
  o["objects_removed"] = x.objects_removed;
  o["bytes_removed"] = x.bytes_removed;
  o["disk_bytes_reclaimed"] = x.disk_bytes_reclaimed;
  o["started_at"] = NullOr(x.started_at);
  o["finished_at"] = NullOr(x.finished_at);
  jv = std::move(o);
}

PurgeReceipt tag_invoke(const json::value_to_tag<PurgeReceipt>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  PurgeReceipt x;
  x.devices_removed = OptUint(o, "devices_removed");
  x.objects_removed = UintField(o, "objects_removed");
  x.bytes_removed = UintField(o, "bytes_removed");
  x.disk_bytes_reclaimed = UintField(o, "disk_bytes_reclaimed");
  x.started_at = OptString(o, "started_at");
  x.finished_at = OptString(o, "finished_at");
  return x;
}

// ---- courier ----

void tag_invoke(const json::value_from_tag&, json::value& jv, const CourierParams& x) {
  jv = json::object{{"drive_bytes", x.drive_bytes},
                    {"device_name", x.device_name},
                    {"needed_bytes", x.needed_bytes}};
}

CourierParams tag_invoke(const json::value_to_tag<CourierParams>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  return CourierParams{UintField(o, "drive_bytes"), StringField(o, "device_name"),
                       UintField(o, "needed_bytes")};
}

void tag_invoke(const json::value_from_tag&, json::value& jv, const CourierImage& x) {
  jv = json::object{{"drive", x.drive},
                    {"file", x.file},
                    {"bytes", x.bytes},
                    {"sha256", x.sha256},
                    {"files", x.files}};
}

CourierImage tag_invoke(const json::value_to_tag<CourierImage>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  return CourierImage{UintField(o, "drive"), StringField(o, "file"), UintField(o, "bytes"),
                      StringField(o, "sha256"), UintField(o, "files")};
}

namespace {

json::array ImageArray(const std::vector<CourierImage>& images) {
  json::array a;
  for (const auto& i : images) a.push_back(json::value_from(i));
  return a;
}

std::vector<CourierImage> Images(const json::object& o) {
  std::vector<CourierImage> out;
  const json::value* v = o.if_contains("images");
  if (!v || !v->is_array()) return out;
  for (const json::value& e : v->as_array()) {
    if (e.is_object()) out.push_back(json::value_to<CourierImage>(e));
  }
  return out;
}

}  // namespace

void tag_invoke(const json::value_from_tag&, json::value& jv, const CourierProgress& x) {
  json::object o;
  o["phase"] = x.phase;
  o["snapshot_sha256"] = x.snapshot_sha256;
  o["snapshot_at"] = NullOr(x.snapshot_at);
  o["images"] = ImageArray(x.images);
  o["objects"] = x.objects;
  o["bytes_total"] = x.bytes_total;
  o["drives"] = x.drives;
  o["drive"] = x.drive;
  o["bytes_written"] = x.bytes_written;
  PutAttempts(o, x.attempts);
  jv = std::move(o);
}

CourierProgress tag_invoke(const json::value_to_tag<CourierProgress>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  CourierProgress x;
  x.phase = StringField(o, "phase");
  x.snapshot_sha256 = StringField(o, "snapshot_sha256");
  x.snapshot_at = OptString(o, "snapshot_at");
  x.images = Images(o);
  x.objects = UintField(o, "objects");
  x.bytes_total = UintField(o, "bytes_total");
  x.drives = UintField(o, "drives");
  x.drive = UintField(o, "drive");
  x.bytes_written = UintField(o, "bytes_written");
  x.attempts = json::value_to<JobAttempts>(jv);
  return x;
}

void tag_invoke(const json::value_from_tag&, json::value& jv, const CourierResult& x) {
  json::object o;
  o["images"] = ImageArray(x.images);
  o["drives"] = x.drives;
  o["objects"] = x.objects;
  o["object_bytes"] = x.object_bytes;
  o["snapshot_at"] = NullOr(x.snapshot_at);
  o["started_at"] = NullOr(x.started_at);
  o["finished_at"] = NullOr(x.finished_at);
  if (x.images_deleted_at) o["images_deleted_at"] = *x.images_deleted_at;
  jv = std::move(o);
}

CourierResult tag_invoke(const json::value_to_tag<CourierResult>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  CourierResult x;
  x.images = Images(o);
  x.drives = UintField(o, "drives");
  x.objects = UintField(o, "objects");
  x.object_bytes = UintField(o, "object_bytes");
  x.snapshot_at = OptString(o, "snapshot_at");
  x.started_at = OptString(o, "started_at");
  x.finished_at = OptString(o, "finished_at");
  x.images_deleted_at = OptString(o, "images_deleted_at");
  return x;
}

// ---- scrub, repair ----

void tag_invoke(const json::value_from_tag&, json::value& jv, const ScrubParams& x) {
  jv = json::object{{"background", x.background}, {"max_bytes_per_sec", x.max_bytes_per_sec}};
}

ScrubParams tag_invoke(const json::value_to_tag<ScrubParams>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  return ScrubParams{BoolField(o, "background"), UintField(o, "max_bytes_per_sec")};
}

void tag_invoke(const json::value_from_tag&, json::value& jv, const ScrubProgress& x) {
  json::object o;
  if (x.objects_total) o["objects_total"] = *x.objects_total;
  if (const auto& c = x.counts) {
    o["objects_done"] = c->objects_done;
    o["shards_checked"] = c->shards_checked;
    o["bytes_checked"] = c->bytes_checked;
    o["damaged_shards"] = c->damaged_shards;
    o["lost_stripes"] = c->lost_stripes;
    o["damaged"] = StringArray(c->damaged);
    if (c->last) o["last"] = KeyObject(*c->last);
  }
  PutAttempts(o, x.attempts);
  jv = std::move(o);
}

ScrubProgress tag_invoke(const json::value_to_tag<ScrubProgress>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  ScrubProgress x;
  x.objects_total = OptUint(o, "objects_total");
  if (o.contains("objects_done")) {
    ScrubCounts c;
    c.objects_done = UintField(o, "objects_done");
    c.shards_checked = UintField(o, "shards_checked");
    c.bytes_checked = UintField(o, "bytes_checked");
    c.damaged_shards = UintField(o, "damaged_shards");
    c.lost_stripes = UintField(o, "lost_stripes");
    c.damaged = Strings(o, "damaged");
    c.last = KeyField(o, "last");
    x.counts = std::move(c);
  }
  x.attempts = json::value_to<JobAttempts>(jv);
  return x;
}

void tag_invoke(const json::value_from_tag&, json::value& jv, const RepairSummary& x) {
  json::object o;
  PutRepairSummary(o, x);
  jv = std::move(o);
}

RepairSummary tag_invoke(const json::value_to_tag<RepairSummary>&, const json::value& jv) {
  return ReadRepairSummary(ObjectOf(jv));
}

void tag_invoke(const json::value_from_tag&, json::value& jv, const ScrubResult& x) {
  json::object o;
  o["clean"] = x.clean;
  o["background"] = x.background;
  o["objects"] = x.objects;
  o["shards_checked"] = x.shards_checked;
  o["bytes_checked"] = x.bytes_checked;
  o["damaged_shards"] = x.damaged_shards;
  o["lost_stripes"] = x.lost_stripes;
  o["damaged"] = x.damaged ? json::value(StringArray(*x.damaged)) : json::value(nullptr);
  o["started_at"] = NullOr(x.started_at);
  o["finished_at"] = NullOr(x.finished_at);
  if (x.repair) o["repair"] = json::value_from(*x.repair);
  jv = std::move(o);
}

ScrubResult tag_invoke(const json::value_to_tag<ScrubResult>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  ScrubResult x;
  x.clean = BoolField(o, "clean");
  x.background = BoolField(o, "background");
  x.objects = UintField(o, "objects");
  x.shards_checked = UintField(o, "shards_checked");
  x.bytes_checked = UintField(o, "bytes_checked");
  x.damaged_shards = UintField(o, "damaged_shards");
  x.lost_stripes = UintField(o, "lost_stripes");
  if (const json::value* d = o.if_contains("damaged"); d && d->is_array()) {
    x.damaged = Strings(o, "damaged");
  }
  x.started_at = OptString(o, "started_at");
  x.finished_at = OptString(o, "finished_at");
  if (const json::value* r = o.if_contains("repair"); r && r->is_object()) {
    x.repair = ReadRepairSummary(r->as_object());
  }
  return x;
}

void tag_invoke(const json::value_from_tag&, json::value& jv, const RepairParams& x) {
  json::object o;
  o["include_failed_disks"] = x.include_failed_disks;
  if (x.automatic) o["automatic"] = *x.automatic;
  if (x.reason) o["reason"] = *x.reason;
  jv = std::move(o);
}

RepairParams tag_invoke(const json::value_to_tag<RepairParams>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  RepairParams x;
  x.include_failed_disks = BoolField(o, "include_failed_disks");
  if (const json::value* a = o.if_contains("automatic"); a && a->is_bool())
    x.automatic = a->as_bool();
  x.reason = OptString(o, "reason");
  return x;
}

void tag_invoke(const json::value_from_tag&, json::value& jv, const RepairResult& x) {
  json::object o;
  PutRepairSummary(o, x.summary);
  o["started_at"] = NullOr(x.started_at);
  o["finished_at"] = NullOr(x.finished_at);
  jv = std::move(o);
}

RepairResult tag_invoke(const json::value_to_tag<RepairResult>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  return RepairResult{ReadRepairSummary(o), OptString(o, "started_at"),
                      OptString(o, "finished_at")};
}

// ---- disk.drain ----

void tag_invoke(const json::value_from_tag&, json::value& jv, const DrainParams& x) {
  json::object o;
  if (x.disk) o["disk"] = *x.disk;
  if (x.path) o["path"] = *x.path;
  jv = std::move(o);
}

DrainParams tag_invoke(const json::value_to_tag<DrainParams>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  return DrainParams{OptUint(o, "disk"), OptString(o, "path")};
}

void tag_invoke(const json::value_from_tag&, json::value& jv, const DrainProgress& x) {
  json::object o;
  if (x.objects_total) o["objects_total"] = *x.objects_total;
  o["pass"] = x.pass;
  if (const auto& c = x.counts) {
    o["objects_done"] = c->objects_done;
    o["stripes_moved"] = c->stripes_moved;
    o["shards_moved"] = c->shards_moved;
    o["bytes_moved"] = c->bytes_moved;
    o["stripes_failed"] = c->stripes_failed;
    o["problems"] = StringArray(c->problems);
  }
  if (x.last) o["last"] = KeyObject(*x.last);
  PutAttempts(o, x.attempts);
  jv = std::move(o);
}

DrainProgress tag_invoke(const json::value_to_tag<DrainProgress>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  DrainProgress x;
  x.objects_total = OptUint(o, "objects_total");
  x.pass = UintField(o, "pass");
  if (o.contains("objects_done")) {
    DrainCounts c;
    c.objects_done = UintField(o, "objects_done");
    c.stripes_moved = UintField(o, "stripes_moved");
    c.shards_moved = UintField(o, "shards_moved");
    c.bytes_moved = UintField(o, "bytes_moved");
    c.stripes_failed = UintField(o, "stripes_failed");
    c.problems = Strings(o, "problems");
    x.counts = std::move(c);
  }
  x.last = KeyField(o, "last");
  x.attempts = json::value_to<JobAttempts>(jv);
  return x;
}

void tag_invoke(const json::value_from_tag&, json::value& jv, const DrainResult& x) {
  json::object o;
  o["disk"] = x.disk;
  o["path"] = NullOr(x.path);
  o["complete"] = x.complete;
  o["objects"] = x.objects;
  o["stripes_moved"] = x.stripes_moved;
  o["shards_moved"] = x.shards_moved;
  o["bytes_moved"] = x.bytes_moved;
  o["stripes_failed"] = x.stripes_failed;
  o["extents_removed"] = x.extents_removed;
  o["remaining_bytes"] = x.remaining_bytes;
  o["problems"] = StringArray(x.problems);
  o["passes"] = x.passes;
  o["started_at"] = NullOr(x.started_at);
  o["finished_at"] = NullOr(x.finished_at);
  o["next"] = x.next;
  jv = std::move(o);
}

DrainResult tag_invoke(const json::value_to_tag<DrainResult>&, const json::value& jv) {
  const json::object& o = ObjectOf(jv);
  DrainResult x;
  x.disk = UintField(o, "disk");
  x.path = OptString(o, "path");
  x.complete = BoolField(o, "complete");
  x.objects = UintField(o, "objects");
  x.stripes_moved = UintField(o, "stripes_moved");
  x.shards_moved = UintField(o, "shards_moved");
  x.bytes_moved = UintField(o, "bytes_moved");
  x.stripes_failed = UintField(o, "stripes_failed");
  x.extents_removed = UintField(o, "extents_removed");
  x.remaining_bytes = UintField(o, "remaining_bytes");
  x.problems = Strings(o, "problems");
  x.passes = UintField(o, "passes");
  x.started_at = OptString(o, "started_at");
  x.finished_at = OptString(o, "finished_at");
  x.next = StringField(o, "next");
  return x;
}

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
