#include "admin/admin.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "index/index.h"

namespace cv::admin {
namespace {

class AdminTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/admin_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    storage::StoreOptions o;
    for (int i = 0; i < 3; ++i) o.disks.push_back(dir_ + "/d" + std::to_string(i));
    o.index_dir = dir_ + "/index";
    o.k = 2;
    o.m = 1;
    o.extent_bytes = 8 << 20;
    o.index_initial_map_bytes = 16 << 20;
    auto s = storage::ObjectStore::Open(o);
    ASSERT_TRUE(s) << s.error().ToString();
    store_ = std::move(*s);
    key_file_ = dir_ + "/run/admin.key";
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
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

  std::string dir_, key_file_;
  std::unique_ptr<storage::ObjectStore> store_;
};

TEST_F(AdminTest, OperatorKeyIsCreatedOnceStoredHashedAndReplaceable) {
  auto api = AdminApi::Open(*store_, Options{key_file_, false});
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
  auto again = AdminApi::Open(*store_, Options{key_file_, false});
  ASSERT_TRUE(again);
  EXPECT_FALSE(std::filesystem::exists(key_file_));
  EXPECT_EQ(Call(**again, "POST", "/admin/v1/accounts", "{}", key).status, 201);

  // A new key replaces the old one.
  auto renewed = AdminApi::Open(*store_, Options{key_file_, true});
  ASSERT_TRUE(renewed);
  std::string key2 = ReadKey();
  EXPECT_NE(key2, key);
  EXPECT_EQ(Call(**renewed, "POST", "/admin/v1/accounts", "{}", key).status, 401);
  EXPECT_EQ(Call(**renewed, "POST", "/admin/v1/accounts", "{}", key2).status, 201);
}

TEST_F(AdminTest, DevicesAreCreatedWithAHashedTokenAndPatchedStrictly) {
  auto api = AdminApi::Open(*store_, Options{key_file_, false});
  ASSERT_TRUE(api);
  std::string key = ReadKey();
  const std::string acct(32, '1');
  auto r = Call(**api, "POST", "/admin/v1/accounts/" + acct + "/devices", R"({"name":"pc"})", key);
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

}  // namespace
}  // namespace cv::admin
