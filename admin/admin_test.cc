#include "admin/admin.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "admin/json_util.h"
#include "index/index.h"
#include "storage/test_store.h"

namespace cv::admin {
namespace {

class AdminTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(store_.ok()); }
  std::string ReadKey() {
    std::ifstream f(key_file_);
    std::string k;
    f >> k;
    return k;
  }
  Response Call(AdminApi& api, std::string method, std::string target, std::string body,
                const std::string& key) {
    return api.Handle(
        Request{std::move(method), std::move(target), "Bearer " + key, std::move(body)});
  }
  // A string member of a JSON answer.
  static std::string Field(const Response& r, const char* name) {
    return std::string(boost::json::parse(r.body).as_object().at(name).as_string());
  }
  // A new partner and a key for it, made with the operator key: {partner id, key}.
  std::pair<std::string, std::string> NewPartner(AdminApi& api, const std::string& op,
                                                 const std::string& name) {
    auto r = Call(api, "POST", "/admin/v1/partners", R"({"name":")" + name + "\"}", op);
    EXPECT_EQ(r.status, 201) << r.body;
    std::string id = Field(r, "id");
    r = Call(api, "POST", "/admin/v1/partners/" + id + "/keys", "{}", op);
    EXPECT_EQ(r.status, 201) << r.body;
    return {id, Field(r, "key")};
  }

  // The API's options with the test's key file; jobs run only when a test asks.
  Options ApiOptions(bool new_operator_key, bool run_jobs) const {
    Options o;
    o.key_file = key_file_;
    o.new_operator_key = new_operator_key;
    o.run_jobs = run_jobs;
    return o;
  }

  storage::TempStore store_{"admin_test"};
  const std::string key_file_ = store_.dir() / "run/admin.key";
};

TEST_F(AdminTest, OperatorKeyIsCreatedOnceStoredHashedAndReplaceable) {
  auto api = AdminApi::Open(*store_, ApiOptions(false, false));
  ASSERT_TRUE(api) << api.error().ToString();
  std::string key = ReadKey();
  ASSERT_EQ(key.size(), 64u);
  struct stat st {};
  ASSERT_EQ(::stat(key_file_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Only the hash is in the index.
  auto txn = store_->Index().BeginRead();
  ASSERT_TRUE(txn);
  auto meta = (*txn)->GetMeta("admin/operator_key_sha256");
  ASSERT_TRUE(meta && *meta);
  EXPECT_EQ(**meta, ToHex(HashToken(key)));
  txn->reset();

  // Reopening keeps the key; the file is not rewritten.
  std::filesystem::remove(key_file_);
  auto again = AdminApi::Open(*store_, ApiOptions(false, false));
  ASSERT_TRUE(again);
  EXPECT_FALSE(std::filesystem::exists(key_file_));
  EXPECT_EQ(Call(**again, "GET", "/admin/v1/accounts", "", key).status, 200);

  // A new key replaces the old one.
  auto renewed = AdminApi::Open(*store_, ApiOptions(true, false));
  ASSERT_TRUE(renewed);
  std::string key2 = ReadKey();
  EXPECT_NE(key2, key);
  EXPECT_EQ(Call(**renewed, "GET", "/admin/v1/accounts", "", key).status, 401);
  EXPECT_EQ(Call(**renewed, "GET", "/admin/v1/accounts", "", key2).status, 200);
}

TEST_F(AdminTest, DevicesAreCreatedWithAHashedTokenAndPatchedStrictly) {
  auto api = AdminApi::Open(*store_, ApiOptions(false, false));
  ASSERT_TRUE(api);
  std::string key = ReadKey();
  auto r = Call(**api, "POST", "/admin/v1/accounts",
                R"({"plan_quota_bytes":1000,"device_limit":2,"status":"active"})", key);
  ASSERT_EQ(r.status, 201) << r.body;
  const std::string acct = r.body.substr(r.body.find("\"id\":\"") + 6, 32);
  // No devices on accounts that do not exist.
  EXPECT_EQ(Call(**api, "POST", "/admin/v1/accounts/" + std::string(32, '1') + "/devices",
                 R"({"name":"pc"})", key)
                .status,
            404);
  r = Call(**api, "POST", "/admin/v1/accounts/" + acct + "/devices", R"({"name":"pc"})", key);
  ASSERT_EQ(r.status, 201) << r.body;
  auto id_at = r.body.find("\"id\":\"");
  auto tok_at = r.body.find("\"token\":\"");
  ASSERT_NE(id_at, std::string::npos);
  ASSERT_NE(tok_at, std::string::npos);
  std::string id = r.body.substr(id_at + 6, 32), token = r.body.substr(tok_at + 9, 64);
  auto dev_id = index::IdFromHex(id);
  ASSERT_TRUE(dev_id);
  auto txn = store_->Index().BeginRead();
  auto d = (*txn)->GetDevice(*dev_id);
  ASSERT_TRUE(d && *d);
  EXPECT_TRUE((*d)->append_only);  // the default
  EXPECT_TRUE(DigestEqual((*d)->token_hash, HashToken(token)));
  txn->reset();

  const std::string path = "/admin/v1/accounts/" + acct + "/devices/" + id;
  EXPECT_EQ(Call(**api, "PATCH", path, R"({"append_only":1})", key).status, 400);
  EXPECT_EQ(Call(**api, "PATCH", path, R"({"token":"x"})", key).status, 400);
  EXPECT_EQ(Call(**api, "PATCH", path, R"({"append_only":false})", key).status, 200);
  EXPECT_EQ(Call(**api, "PATCH", "/admin/v1/accounts/" + std::string(32, '2') + "/devices/" + id,
                 R"({"append_only":true})", key)
                .status,
            404);
  r = Call(**api, "GET", path, "", key);
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("\"append_only\":false"), std::string::npos);
  EXPECT_EQ(r.body.find("token"), std::string::npos);
}

int64_t g_fake_now = 0;
int64_t FakeNow() { return g_fake_now; }

TEST_F(AdminTest, PartnerKeysSeeOnlyTheirOwnAccountsAndEveryChangeIsAudited) {
  auto api = AdminApi::Open(*store_, ApiOptions(false, false));
  ASSERT_TRUE(api);
  const std::string op = ReadKey();
  auto partner = [&](const char* name) { return NewPartner(**api, op, name); };
  auto [a_id, a_key] = partner("A");
  auto [b_id, b_key] = partner("B");
  // Partner keys are not operator keys.
  EXPECT_EQ(Call(**api, "POST", "/admin/v1/partners", R"({"name":"C"})", a_key).status, 403);

  auto r =
      Call(**api, "POST", "/admin/v1/accounts",
           R"({"plan_quota_bytes":5,"device_limit":1,"status":"trial","trial_days":30})", a_key);
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Field(r, "partner"), a_id);
  const std::string acct = "/admin/v1/accounts/" + Field(r, "id");
  auto audit_count = [&] {
    auto txn = store_->Index().BeginRead();
    auto page = (*txn)->ListAudit(index::AuditQuery{index::IdFromHex(Field(r, "id")), {}, 0, 100});
    return page->size();
  };
  EXPECT_EQ(audit_count(), 1u);

  // B sees nothing of A's account, and changes nothing.
  EXPECT_EQ(Call(**api, "GET", acct, "", b_key).status, 404);
  EXPECT_EQ(Call(**api, "PATCH", acct, R"({"status":"suspended"})", b_key).status, 404);
  EXPECT_EQ(Call(**api, "POST", acct + "/release", "", b_key).status, 404);
  EXPECT_EQ(audit_count(), 1u);
  auto list = Call(**api, "GET", "/admin/v1/accounts", "", b_key);
  EXPECT_EQ(list.body, R"({"items":[],"next_cursor":null})");

  // A's change and its audit record land together; a refused change leaves neither.
  EXPECT_EQ(Call(**api, "PATCH", acct, R"({"status":"active"})", a_key).status, 200);
  EXPECT_EQ(audit_count(), 2u);
  EXPECT_EQ(Call(**api, "PATCH", acct, R"({"status":"trial","expires_at":null})", a_key).status,
            400);
  EXPECT_EQ(audit_count(), 2u);

  // Keys expire by the clock and can be revoked.
  g_fake_now = NowNanos();
  SetClockForTesting(&FakeNow);
  r = Call(**api, "POST", "/admin/v1/partners/" + b_id + "/keys",
           R"({"expires_at":")" + FormatRfc3339(g_fake_now + 60'000'000'000) + "\"}", op);
  ASSERT_EQ(r.status, 201) << r.body;
  const std::string short_key = Field(r, "key");
  EXPECT_EQ(Call(**api, "GET", "/admin/v1/accounts", "", short_key).status, 200);
  g_fake_now += 61'000'000'000;
  EXPECT_EQ(Call(**api, "GET", "/admin/v1/accounts", "", short_key).status, 401);
  SetClockForTesting(nullptr);
  auto txn = store_->Index().BeginRead();
  auto k = (*txn)->GetAdminKeyBySecretHash(HashToken(b_key));
  ASSERT_TRUE(k && *k);
  txn->reset();
  EXPECT_EQ(Call(**api, "DELETE",
                 "/admin/v1/partners/" + b_id + "/keys/" + index::IdToHex((*k)->id), "", op)
                .status,
            200);
  EXPECT_EQ(Call(**api, "GET", "/admin/v1/accounts", "", b_key).status, 401);
}

// Issue 15: a partner key cancelled the operator's account deletion (200, every device
// reopened). A key may change (cancel, delete images of) only a job of a kind its role may
// create; the refusal is 403 operator_only and an audit record, and nothing else changes.
TEST_F(AdminTest, PartnerMayChangeOnlyTheKindsOfJobItMayCreate) {
  auto api = AdminApi::Open(*store_, ApiOptions(false, false));
  ASSERT_TRUE(api);
  const std::string op = ReadKey();
  const auto [partner, pk] = NewPartner(**api, op, "A");
  auto r = Call(**api, "POST", "/admin/v1/accounts",
                R"({"plan_quota_bytes":1000,"device_limit":2,"status":"active"})", pk);
  ASSERT_EQ(r.status, 201) << r.body;
  const auto account = *index::IdFromHex(Field(r, "id"));
  r = Call(**api, "POST", "/admin/v1/accounts/" + index::IdToHex(account) + "/devices",
           R"({"name":"pc"})", pk);
  ASSERT_EQ(r.status, 201) << r.body;
  const auto device = *index::IdFromHex(Field(r, "id"));

  // One scheduled job of every kind, each on the partner's account (node jobs have none, but
  // here visibility must not decide: only the kind does).
  struct Kind {
    const char* kind;
    bool partner_may_create;
  };
  const Kind kinds[] = {{"device.purge", true}, {"courier", true}, {"account.purge", false},
                        {"scrub", false},       {"repair", false}, {"disk.drain", false}};
  std::vector<index::Job> jobs;
  for (const Kind& k : kinds) {
    index::Job j;
    j.id = index::NewId();
    j.kind = k.kind;
    j.state = "scheduled";
    j.account = account;
    if (std::string_view(k.kind) != "account.purge") j.device = device;
    j.params_json = "{}";
    j.created_ns = NowNanos();
    j.run_after_ns = j.created_ns + 3600'000'000'000;
    jobs.push_back(j);
  }
  ASSERT_TRUE(store_->Index().Update([&](index::WriteTxn& txn) -> Status {
    for (const auto& j : jobs) CV_TRY(txn.PutJob(j));
    return {};
  }));
  auto state = [&](const index::Job& j) {
    auto txn = store_->Index().BeginRead();
    return (*(*txn)->GetJob(j.id))->state;
  };
  auto refusals = [&](std::string_view action) {
    auto txn = store_->Index().BeginRead();
    auto page = (*txn)->ListAudit(index::AuditQuery{account, {}, 0, 1000});
    size_t n = 0;
    for (const auto& a : *page) {
      if (a.action == action) {
        EXPECT_EQ(a.role, "partner:" + partner);
        EXPECT_NE(a.after_json.find("operator_only"), std::string::npos) << a.after_json;
        ++n;
      }
    }
    return n;
  };

  size_t refused = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    SCOPED_TRACE(kinds[i].kind);
    const std::string path = "/admin/v1/jobs/" + index::IdToHex(jobs[i].id);
    // Reading follows the account's scope alone.
    EXPECT_EQ(Call(**api, "GET", path, "", pk).status, 200);
    r = Call(**api, "POST", path + "/cancel", "", pk);
    if (kinds[i].partner_may_create) {
      EXPECT_EQ(r.status, 200) << r.body;
      EXPECT_EQ(state(jobs[i]), "cancelled");
      continue;
    }
    EXPECT_EQ(r.status, 403) << r.body;
    EXPECT_NE(r.body.find("\"code\":\"operator_only\""), std::string::npos) << r.body;
    EXPECT_EQ(state(jobs[i]), "scheduled");
    EXPECT_EQ(refusals("job.cancel.refused"), ++refused);
    // Deleting its images is changing it too.
    r = Call(**api, "DELETE", path + "/images", "", pk);
    EXPECT_EQ(r.status, 403) << r.body;
    EXPECT_EQ(refusals("courier.images_delete.refused"), refused);
    // The operator may.
    EXPECT_EQ(Call(**api, "POST", path + "/cancel", "", op).status, 200);
    EXPECT_EQ(state(jobs[i]), "cancelled");
  }
  EXPECT_EQ(refusals("job.cancel.refused"), 4u);
}

// Issue 15: disk add, drain, remove, cancelling a drain and fsck's fix used to commit the
// change first and its audit record in a second transaction, so that a failure (or a crash)
// between the two left a change that the audit log does not mention. The fault between the
// two writes here is real: the audit log's sequence number is put `appends` short of its end,
// so that the append after those fails ("audit sequence numbers exhausted") inside the
// transaction, after the change itself was written there. Then nothing may have changed, in
// memory or after a reopen; without the fault, the change and its record are both there.
TEST_F(AdminTest, DiskChangesAndFsckFixCommitWithTheirAuditRecordOrNotAtAll) {
  auto api = AdminApi::Open(*store_, ApiOptions(false, false));
  ASSERT_TRUE(api) << api.error().ToString();
  const std::string op = ReadKey();
  namespace bj = boost::json;
  auto call = [&](std::string method, std::string target, std::string body) {
    return Call(**api, std::move(method), "/admin/v1" + target, std::move(body), op);
  };
  auto reopen = [&] {  // a restart: what is durable, and only that
    api->reset();
    store_.Reopen();
    ASSERT_TRUE(store_.ok());
    api = AdminApi::Open(*store_, ApiOptions(false, false));
    ASSERT_TRUE(api) << api.error().ToString();
  };
  auto set_meta = [&](const std::string& key, const std::string& value) {
    ASSERT_TRUE(
        store_->Index().Update([&](index::WriteTxn& txn) { return txn.PutMeta(key, value); }));
  };
  std::string seq = "0";
  {
    auto txn = store_->Index().BeginRead();
    ASSERT_TRUE(txn);
    auto stored = (*txn)->GetMeta("audit_last_seq");
    ASSERT_TRUE(stored);
    if (*stored) seq = **stored;
  }
  auto audit_fails_after = [&](uint64_t appends) {
    set_meta("audit_last_seq", std::to_string(UINT64_MAX - appends));
  };
  auto audit_works = [&] { set_meta("audit_last_seq", seq); };
  auto actions = [&] {
    std::vector<std::string> out;
    auto r = call("GET", "/audit?limit=1000", "");
    EXPECT_EQ(r.status, 200) << r.body;
    const bj::value page = bj::parse(r.body);
    for (const auto& a : page.at("items").as_array()) {
      out.push_back(std::string(a.at("action").as_string()) + " " +
                    std::string(a.at("target").as_string()));
    }
    return out;
  };
  auto count = [](const std::vector<std::string>& v, std::string_view prefix) {
    return std::count_if(v.begin(), v.end(), [&](const std::string& s) {
      return s.compare(0, prefix.size(), prefix) == 0;
    });
  };
  auto disk_states = [&] {
    std::vector<std::string> out;
    auto r = call("GET", "/disks", "");
    EXPECT_EQ(r.status, 200) << r.body;
    const bj::value page = bj::parse(r.body);
    for (const auto& d : page.at("items").as_array()) {
      out.push_back(std::string(d.at("state").as_string()));
    }
    return out;
  };
  auto jobs_of = [&](std::string_view kind) {
    auto r = call("GET", "/jobs?limit=1000", "");
    EXPECT_EQ(r.status, 200) << r.body;
    std::vector<bj::object> out;
    const bj::value page = bj::parse(r.body);
    for (const auto& j : page.at("items").as_array()) {
      if (j.at("kind").as_string() == kind) out.push_back(j.as_object());
    }
    return out;
  };
  using States = std::vector<std::string>;
  const std::string new_disk = store_.dir() / "d3";

  // Add: the disk is not added, its directory holds nothing of it, and a retry works.
  audit_fails_after(0);
  Response r = call("POST", "/disks", R"({"path":")" + new_disk + "\"}");
  EXPECT_EQ(r.status, 507) << r.body;
  EXPECT_EQ(disk_states(), (States{"ok", "ok", "ok"}));
  EXPECT_FALSE(std::filesystem::exists(new_disk + "/chunkvault-disk"));
  reopen();
  EXPECT_EQ(disk_states(), (States{"ok", "ok", "ok"}));
  audit_works();
  EXPECT_EQ(count(actions(), "disk.add"), 0);
  r = call("POST", "/disks", R"({"path":")" + new_disk + "\"}");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(bj::parse(r.body).at("position"), 3);
  EXPECT_EQ(count(actions(), "disk.add disk/3"), 1);
  EXPECT_EQ(disk_states(), (States{"ok", "ok", "ok", "ok"}));

  // Drain: its job and the disk's state go with the audit records. The first append (the
  // job's "job.schedule") succeeds, the second ("disk.drain") fails.
  audit_fails_after(1);
  r = call("POST", "/disks/3/drain", "{}");
  EXPECT_EQ(r.status, 507) << r.body;
  EXPECT_EQ(disk_states(), (States{"ok", "ok", "ok", "ok"}));
  EXPECT_TRUE(jobs_of("disk.drain").empty());
  reopen();
  EXPECT_EQ(disk_states(), (States{"ok", "ok", "ok", "ok"}));
  EXPECT_TRUE(jobs_of("disk.drain").empty());
  audit_works();
  EXPECT_EQ(count(actions(), "disk.drain"), 0);
  EXPECT_EQ(count(actions(), "job.schedule"), 0);
  r = call("POST", "/disks/3/drain", "{}");
  ASSERT_EQ(r.status, 202) << r.body;
  const std::string drain_job = std::string(bj::parse(r.body).at("id").as_string());
  EXPECT_EQ(disk_states(), (States{"ok", "ok", "ok", "draining"}));
  EXPECT_EQ(count(actions(), "disk.drain disk/3"), 1);
  EXPECT_EQ(count(actions(), "job.schedule job/" + drain_job), 1);

  // Cancelling the drain puts the disk back into service with the cancellation, or neither.
  audit_fails_after(0);
  r = call("POST", "/jobs/" + drain_job + "/cancel", "");
  EXPECT_EQ(r.status, 507) << r.body;
  reopen();
  EXPECT_EQ(disk_states(), (States{"ok", "ok", "ok", "draining"}));
  ASSERT_EQ(jobs_of("disk.drain").size(), 1u);
  EXPECT_EQ(jobs_of("disk.drain")[0].at("state"), "scheduled");
  audit_works();
  r = call("POST", "/jobs/" + drain_job + "/cancel", "");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(disk_states(), (States{"ok", "ok", "ok", "ok"}));
  EXPECT_EQ(count(actions(), "job.cancel job/" + drain_job), 1);
  reopen();
  EXPECT_EQ(disk_states(), (States{"ok", "ok", "ok", "ok"}));

  // Remove: the disk stays, in memory too (the node keeps reading it).
  audit_fails_after(0);
  r = call("POST", "/disks/3/remove", "{}");
  EXPECT_EQ(r.status, 507) << r.body;
  EXPECT_EQ(disk_states(), (States{"ok", "ok", "ok", "ok"}));
  reopen();
  EXPECT_EQ(disk_states(), (States{"ok", "ok", "ok", "ok"}));
  audit_works();
  EXPECT_EQ(count(actions(), "disk.remove"), 0);
  r = call("POST", "/disks/3/remove", "{}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(bj::parse(r.body).at("disk").at("state"), "removed");
  EXPECT_EQ(count(actions(), "disk.remove disk/3"), 1);
  reopen();
  EXPECT_EQ(disk_states(), (States{"ok", "ok", "ok", "removed"}));

  // fsck's fix: a device whose usage counters disagree with its objects (none) stays wrong.
  r = call("POST", "/accounts", R"({"plan_quota_bytes":1000,"device_limit":1,"status":"active"})");
  ASSERT_EQ(r.status, 201) << r.body;
  const std::string acct = std::string(bj::parse(r.body).at("id").as_string());
  r = call("POST", "/accounts/" + acct + "/devices", R"({"name":"pc"})");
  ASSERT_EQ(r.status, 201) << r.body;
  const auto device = index::IdFromHex(bj::parse(r.body).at("id").as_string());
  ASSERT_TRUE(device);
  ASSERT_TRUE(store_->Index().Update([&](index::WriteTxn& txn) -> Status {
    CV_TRY_ASSIGN(auto d, txn.GetDevice(*device));
    index::DeviceRecord wrong = d.value();
    wrong.bytes = 12345;
    wrong.objects = 3;
    return txn.PutDevice(wrong);
  }));
  auto fsck_clean = [&] {
    auto f = call("GET", "/fsck", "");
    EXPECT_EQ(f.status, 200) << f.body;
    return bj::parse(f.body).at("clean").as_bool();
  };
  EXPECT_FALSE(fsck_clean());
  audit_fails_after(0);
  r = call("POST", "/fsck", R"({"fix":true})");
  EXPECT_EQ(r.status, 507) << r.body;
  EXPECT_FALSE(fsck_clean());
  reopen();
  EXPECT_FALSE(fsck_clean());
  audit_works();
  EXPECT_EQ(count(actions(), "node.fsck_fix"), 0);
  r = call("POST", "/fsck", R"({"fix":true})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(bj::parse(r.body).at("clean").as_bool()) << r.body;
  EXPECT_FALSE(bj::parse(r.body).at("fixed").as_array().empty()) << r.body;
  EXPECT_EQ(count(actions(), "node.fsck_fix index"), 1);
  reopen();
  EXPECT_TRUE(fsck_clean());
}

// admin/API.md is the one list of routes: every row of its table is a route of the table
// Handle matches, with the same "who", and every route has its row, in the same order.
TEST(AdminRoutesTest, ApiMdListsExactlyTheRouteTable) {
  std::ifstream in(std::string(CV_SOURCE_DIR) + "/admin/API.md");
  ASSERT_TRUE(in) << "admin/API.md not found under " << CV_SOURCE_DIR;
  const std::regex row(R"(^\| (GET|POST|PATCH|DELETE) \| `/([^`]*)` \| (operator|any) \|)");
  std::vector<std::string> documented, served;
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_search(line, m, row)) documented.push_back(m[1].str() + " " + m[2].str() + " " + m[3].str());
  }
  for (const RouteInfo& r : RouteTable()) {
    served.push_back(std::string(r.method) + " " + std::string(r.path) + " " +
                     (r.operator_only ? "operator" : "any"));
  }
  EXPECT_EQ(documented, served);
}

TEST(AdminErrorTest, StatusMappingAndBody) {
  EXPECT_EQ(HttpStatus(ErrorKind::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatus(ErrorKind::kConflict), 409);
  EXPECT_EQ(HttpStatus(ErrorKind::kNoSpace), 507);
  EXPECT_EQ(HttpStatus(ErrorKind::kUnavailable), 503);
  EXPECT_EQ(ErrorJson("bad", "msg \"q\"", "f"),
            R"({"error":{"code":"bad","message":"msg \"q\"","field":"f"}})");
  // Server-side details stay in the log.
  EXPECT_EQ(ErrorJson(Error{ErrorKind::kIOError, 5, "/secret/path"}).find("secret"),
            std::string::npos);
}

// Found by fuzz_admin_json: an unknown query parameter is named in the error, and a name that
// is not UTF-8 (raw bytes, or percent-decoded ones) made the answer invalid JSON.
TEST_F(AdminTest, ErrorNamingANonUtf8ParameterIsStillValidJson) {
  auto api = AdminApi::Open(*store_, ApiOptions(false, false));
  ASSERT_TRUE(api) << api.error().ToString();
  const std::string key = ReadKey();
  for (std::string target : {"/admin/v1/devices?%CA%ED%A0%80=1", "/admin/v1/status?%F4%90%80%80"}) {
    Response r = Call(**api, "GET", target, "", key);
    EXPECT_EQ(r.status, 400) << target;
    boost::json::error_code ec;
    boost::json::value v = boost::json::parse(r.body, ec);
    ASSERT_FALSE(ec) << target << ": " << r.body;
    EXPECT_NE(std::string(v.at("error").at("message").as_string()).find("\xef\xbf\xbd"),
              std::string::npos)
        << r.body;
  }
  // Raw bytes outside RFC 3986's characters are refused before any parameter is read.
  for (std::string target : {"/admin/v1/devices?min\xca\xca=1", "/admin/v1/status?\xf4\x90\x80\x80"}) {
    Response r = Call(**api, "GET", target, "", key);
    EXPECT_EQ(r.status, 400) << target;
    boost::json::error_code ec;
    boost::json::value v = boost::json::parse(r.body, ec);
    ASSERT_FALSE(ec) << target << ": " << r.body;
    EXPECT_EQ(v.at("error").at("code").as_string(), "invalid_target") << r.body;
  }
  // A "." or ".." segment anywhere, a leading "./" included, is refused, not resolved.
  for (std::string target : {"/./admin/v1/status", "/admin/./v1/status", "/admin/v1/x/../status",
                             "/admin/v1/status/."}) {
    Response r = Call(**api, "GET", target, "", key);
    EXPECT_EQ(r.status, 400) << target;
    EXPECT_NE(r.body.find("\"invalid_path\""), std::string::npos) << target << ": " << r.body;
  }
  // Valid UTF-8 is kept as it is.
  Response r = Call(**api, "GET", "/admin/v1/devices?gr%C3%B6%C3%9F" "e=1", "", key);
  EXPECT_NE(r.body.find("gr\xc3\xb6\xc3\x9f" "e"), std::string::npos) << r.body;
}

}  // namespace
}  // namespace cv::admin
