// The JSON the admin API answers with, one function per record kind.
#include <boost/json/array.hpp>

#include "admin/internal.h"

namespace cv::admin::internal {

namespace {

const char* KindName(index::DeviceKind k) {
  return k == index::DeviceKind::kServer ? "server" : "computer";
}

json::value IdOrNull(const std::optional<index::Id>& id) {
  if (!id) return nullptr;
  return json::value(index::IdToHex(*id));
}

}  // namespace

json::value TimeOrNull(int64_t ns) {
  if (ns == 0) return nullptr;
  return json::value(FormatRfc3339(ns));
}

json::object PartnerJson(const index::Partner& p) {
  json::object o;
  o["id"] = index::IdToHex(p.id);
  o["name"] = p.name;
  o["created_at"] = TimeOrNull(p.created_ns);
  return o;
}

json::object AdminKeyJson(const index::AdminKey& k, int64_t now_ns) {
  json::object o;
  o["id"] = index::IdToHex(k.id);
  o["role"] = index::AdminRoleName(k);
  o["partner"] = k.role == index::AdminRole::kPartner ? IdOrNull(k.partner) : json::value(nullptr);
  o["created_at"] = TimeOrNull(k.created_ns);
  o["expires_at"] = TimeOrNull(k.expires_ns);
  o["disabled"] = k.disabled;
  o["usable"] = index::AdminKeyUsable(k, now_ns);
  return o;
}

json::object AccountSettingsJson(const index::Account& a) {
  json::object o;
  o["id"] = index::IdToHex(a.id);
  o["partner"] = IdOrNull(a.partner);
  o["stored_status"] = index::AccountStatusName(a.status);
  o["plan_quota_bytes"] = a.plan_quota_bytes;
  o["device_limit"] = a.device_limit;
  o["expires_at"] = TimeOrNull(a.expires_ns);
  return o;
}

json::object AccountJson(const index::Account& a, const std::vector<index::AddOn>& addons,
                         int64_t now_ns) {
  json::object o = AccountSettingsJson(a);
  o["status"] = index::AccountStatusName(index::EffectiveStatus(a, now_ns));
  o["created_at"] = TimeOrNull(a.created_ns);
  o["quota_bytes"] = index::QuotaBytes(a, addons, now_ns);
  o["used_bytes"] = a.bytes;
  o["objects"] = a.objects;
  o["reserved_bytes"] = a.reserved_bytes;
  return o;
}

json::object AddOnJson(const index::AddOn& a, int64_t now_ns) {
  json::object o;
  o["id"] = index::IdToHex(a.id);
  o["account"] = index::IdToHex(a.account);
  o["bytes"] = a.bytes;
  o["expires_at"] = TimeOrNull(a.expires_ns);
  o["created_at"] = TimeOrNull(a.created_ns);
  o["live"] = a.expires_ns == 0 || a.expires_ns > now_ns;
  return o;
}

json::object DeviceJson(const index::DeviceRecord& d) {
  json::object o;
  o["id"] = index::IdToHex(d.id);
  o["account"] = index::IdToHex(d.account);
  o["name"] = d.name;
  o["kind"] = KindName(d.kind);
  o["append_only"] = d.append_only;
  o["created_at"] = TimeOrNull(d.created_ns);
  o["bytes"] = d.bytes;
  o["objects"] = d.objects;
  o["last_upload_at"] = TimeOrNull(d.last_upload_ns);
  o["last_backup_at"] = TimeOrNull(d.last_backup_ns);
  o["deleted_at"] = TimeOrNull(d.closed_ns);  // null unless a purge is scheduled or running
  o["purge_job"] = d.closed_ns != 0 ? json::value(index::IdToHex(d.purge_job)) : json::value(nullptr);
  return o;
}

json::object Page(json::array items, std::optional<std::string> next_cursor) {
  json::object o;
  o["items"] = std::move(items);
  o["next_cursor"] = next_cursor ? json::value(*next_cursor) : json::value(nullptr);
  return o;
}

}  // namespace cv::admin::internal
