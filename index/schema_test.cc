#include "index/schema.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <algorithm>
#include <tuple>

namespace cv::index::schema {
namespace {

ObjectRecord SampleObject() {
  ObjectRecord rec;
  rec.size = 123456789012;
  rec.created_ns = -42;  // negative survives too
  rec.layout = Layout::kErasure;
  rec.k = 4;
  rec.m = 2;
  rec.shard_unit = 1 << 20;
  for (size_t i = 0; i < rec.sha256.size(); ++i) rec.sha256[i] = static_cast<uint8_t>(i * 7);
  for (uint16_t i = 0; i < 12; ++i) {
    rec.shards.push_back(ShardLoc{i, 0x01020304u + i, 0x1122334455667788ull + i});
  }
  return rec;
}

DeviceRecord SampleDevice() {
  DeviceRecord rec;
  rec.id = Id{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  rec.account = Id{0xff, 0xfe};
  rec.name = "laptop of \xc3\xa9mile";
  rec.kind = DeviceKind::kServer;
  rec.append_only = false;
  rec.token_hash[31] = 0xaa;
  rec.created_ns = 1700000000000000000;
  rec.bytes = 99;
  rec.objects = 3;
  rec.last_upload_ns = 5;
  rec.last_backup_ns = 6;
  rec.closed_ns = 7;
  rec.purge_job = Id{0x42, 0x43};
  return rec;
}

Account SampleAccount() {
  Account rec;
  rec.id = Id{0xa1, 2, 3};
  rec.partner = Id{0xb2, 9};
  rec.status = AccountStatus::kSuspended;
  rec.plan_quota_bytes = 5ull << 40;
  rec.device_limit = 25;
  rec.expires_ns = 1800000000000000000;
  rec.created_ns = -1;
  rec.bytes = 123;
  rec.objects = 4;
  rec.reserved_bytes = 1 << 20;
  return rec;
}

AdminKey SampleAdminKey() {
  AdminKey rec;
  rec.id = Id{0xcc};
  rec.role = AdminRole::kPartner;
  rec.partner = Id{0xb2, 9};
  rec.secret_sha256[0] = 0x5e;
  rec.created_ns = 7;
  rec.expires_ns = 8;
  rec.disabled = true;
  return rec;
}

AuditRecord SampleAudit() {
  AuditRecord rec;
  rec.seq = 0x0102030405060708ull;
  rec.time_ns = 99;
  rec.key_id = Id{0xcc};
  rec.role = "partner:b209";
  rec.action = "account.update";
  rec.target = "account/a10203";
  rec.account = Id{0xa1, 2, 3};
  rec.before_json = R"({"status":"trial"})";
  rec.after_json = R"({"status":"active"})";
  return rec;
}

Job SampleJob() {
  Job rec;
  rec.id = Id{0xd0};
  rec.kind = "device_delete";
  rec.state = "scheduled";
  rec.device = Id{0xde};
  rec.params_json = "{}";
  rec.progress_json = R"({"objects":3})";
  rec.result_json = "";
  rec.created_ns = 1;
  rec.started_ns = 2;
  rec.finished_ns = 3;
  rec.run_after_ns = 4;
  return rec;
}

PurgedDevice SamplePurgedDevice() {
  PurgedDevice rec;
  rec.id = Id{0xd1, 2};
  rec.account = Id{0xa1, 3};
  rec.token_hash.fill(0x5a);
  rec.purged_ns = -7;
  rec.purge_job = Id{0x10, 4};
  return rec;
}

// Every encoding under test, so that the damage tests cover all of them.
std::vector<std::pair<std::string, std::function<Status(std::string_view)>>> AllValues() {
  auto discard = [](auto result) -> Status {
    CV_TRY(result);
    return {};
  };
  return {
      {*EncodeObject(SampleObject()), [=](std::string_view b) { return discard(DecodeObject(b)); }},
      {*EncodeObject(ObjectRecord{}), [=](std::string_view b) { return discard(DecodeObject(b)); }},
      {EncodeExtent(ExtentRecord{1, 2, 3}),
       [=](std::string_view b) { return discard(DecodeExtent(b)); }},
      {*EncodeDevice(SampleDevice()), [=](std::string_view b) { return discard(DecodeDevice(b)); }},
      {EncodeMeta("1"), [=](std::string_view b) { return discard(DecodeMeta(b)); }},
      {*EncodePartner(Partner{Id{7}, "Acme IT", 5}),
       [=](std::string_view b) { return discard(DecodePartner(b)); }},
      {*EncodeAccount(SampleAccount()), [=](std::string_view b) { return discard(DecodeAccount(b)); }},
      {*EncodeAccount(Account{}), [=](std::string_view b) { return discard(DecodeAccount(b)); }},
      {EncodeAddOn(AddOn{Id{1}, Id{2}, 3, 4, 5}),
       [=](std::string_view b) { return discard(DecodeAddOn(b)); }},
      {*EncodeAdminKey(SampleAdminKey()),
       [=](std::string_view b) { return discard(DecodeAdminKey(b)); }},
      {*EncodeAudit(SampleAudit()), [=](std::string_view b) { return discard(DecodeAudit(b)); }},
      {*EncodeJob(SampleJob()), [=](std::string_view b) { return discard(DecodeJob(b)); }},
      {EncodePurgedDevice(SamplePurgedDevice()),
       [=](std::string_view b) { return discard(DecodePurgedDevice(b)); }},
  };
}

std::string Reseal(std::string body) {
  uint64_t h = XXH3_64bits(body.data(), body.size());
  for (int i = 0; i < 8; ++i) body.push_back(static_cast<char>(h >> (8 * i)));
  return body;
}

TEST(SchemaTest, ObjectValueRoundTrips) {
  auto bytes = EncodeObject(SampleObject());
  ASSERT_TRUE(bytes);
  EXPECT_EQ(static_cast<uint8_t>((*bytes)[0]), kValueFormat);
  auto back = DecodeObject(*bytes);
  ASSERT_TRUE(back) << back.error().ToString();
  EXPECT_EQ(*back, SampleObject());

  ObjectRecord replicated;
  replicated.layout = Layout::kReplicated;
  replicated.k = 3;
  replicated.shards = {{0, 0, 0}, {1, 1, 1}, {2, 2, 2}};
  EXPECT_EQ(*DecodeObject(*EncodeObject(replicated)), replicated);
  EXPECT_EQ(*DecodeObject(*EncodeObject(ObjectRecord{})), ObjectRecord{});
}

TEST(SchemaTest, ExtentDeviceAndMetaValuesRoundTrip) {
  ExtentRecord extent{~0ull, 1, 2};
  EXPECT_EQ(*DecodeExtent(EncodeExtent(extent)), extent);
  EXPECT_EQ(*DecodeDevice(*EncodeDevice(SampleDevice())), SampleDevice());
  EXPECT_EQ(*DecodeDevice(*EncodeDevice(DeviceRecord{})), DeviceRecord{});
  EXPECT_EQ(*DecodeMeta(EncodeMeta("")), "");
  EXPECT_EQ(*DecodeMeta(EncodeMeta(std::string("a\0b", 3))), std::string("a\0b", 3));
}

TEST(SchemaTest, AccountModelValuesRoundTrip) {
  const Partner partner{Id{7}, "Acme IT \xc3\xa9", 5};
  EXPECT_EQ(*DecodePartner(*EncodePartner(partner)), partner);
  EXPECT_EQ(*DecodeAccount(*EncodeAccount(SampleAccount())), SampleAccount());
  Account released = SampleAccount();
  released.partner.reset();
  EXPECT_EQ(*DecodeAccount(*EncodeAccount(released)), released);
  EXPECT_EQ(*DecodeAccount(*EncodeAccount(Account{})), Account{});
  const AddOn addon{Id{1}, Id{2}, ~0ull, -4, 5};
  EXPECT_EQ(*DecodeAddOn(EncodeAddOn(addon)), addon);
  EXPECT_EQ(*DecodeAdminKey(*EncodeAdminKey(SampleAdminKey())), SampleAdminKey());
  EXPECT_EQ(*DecodeAdminKey(*EncodeAdminKey(AdminKey{})), AdminKey{});
  AuditRecord audit = SampleAudit();
  EXPECT_EQ(*DecodeAudit(*EncodeAudit(audit)), audit);
  audit.account.reset();
  audit.partner = Id{0xb2};
  EXPECT_EQ(*DecodeAudit(*EncodeAudit(audit)), audit);
  EXPECT_EQ(*DecodeJob(*EncodeJob(SampleJob())), SampleJob());
  EXPECT_EQ(*DecodeJob(*EncodeJob(Job{})), Job{});
  const std::string purged = EncodePurgedDevice(SamplePurgedDevice());
  EXPECT_EQ(purged.size(), 97u);  // index/FORMAT.md
  EXPECT_EQ(*DecodePurgedDevice(purged), SamplePurgedDevice());
  EXPECT_EQ(*DecodePurgedDevice(EncodePurgedDevice(PurgedDevice{})), PurgedDevice{});
}

TEST(SchemaTest, AccountModelEnumsAndFlagsOutOfRangeAreRejected) {
  Account bad_status = SampleAccount();
  bad_status.status = static_cast<AccountStatus>(5);
  EXPECT_EQ(EncodeAccount(bad_status).error().kind, ErrorKind::kInvalidArgument);
  AdminKey bad_role = SampleAdminKey();
  bad_role.role = static_cast<AdminRole>(0);
  EXPECT_EQ(EncodeAdminKey(bad_role).error().kind, ErrorKind::kInvalidArgument);

  // Well sealed, but a field outside its type: status, the partner-present flag, the role,
  // the disabled flag.
  std::string account = *EncodeAccount(SampleAccount());
  std::string body = account.substr(0, account.size() - 8);
  const size_t flag_at = 1 + 16, status_at = flag_at + 1 + 16;
  for (auto [at, value] : {std::pair{status_at, 0}, std::pair{status_at, 5},
                           std::pair{flag_at, 2}}) {
    std::string damaged = body;
    damaged[at] = static_cast<char>(value);
    EXPECT_EQ(DecodeAccount(Reseal(damaged)).error().kind, ErrorKind::kCorruption) << at;
  }
  std::string key = *EncodeAdminKey(SampleAdminKey());
  std::string key_body = key.substr(0, key.size() - 8);
  for (auto [at, value] : {std::pair{size_t{17}, 3}, std::pair{key_body.size() - 1, 2}}) {
    std::string damaged = key_body;
    damaged[at] = static_cast<char>(value);
    EXPECT_EQ(DecodeAdminKey(Reseal(damaged)).error().kind, ErrorKind::kCorruption) << at;
  }
}

TEST(SchemaTest, PairAndSeqKeysSortAsTheirFields) {
  EXPECT_LT(EncodePairKey(Id{1, 0xff}, Id{0xff}), EncodePairKey(Id{2}, Id{0}));
  EXPECT_LT(EncodePairKey(Id{1}, Id{1}), EncodePairKey(Id{1}, Id{2}));
  EXPECT_TRUE(EncodePairKey(Id{1}, Id{9}).starts_with(EncodeIdKey(Id{1})));
  EXPECT_LT(EncodeSeqKey(255), EncodeSeqKey(256));
  EXPECT_LT(EncodeSeqKey(1ull << 32), EncodeSeqKey(~0ull));
  EXPECT_LT(EncodeIdSeqKey(Id{1}, ~0ull), EncodeIdSeqKey(Id{2}, 0));
  EXPECT_LT(EncodeIdSeqKey(Id{1}, 9), EncodeIdSeqKey(Id{1}, 10));

  auto pair = DecodePairKey(EncodePairKey(Id{3}, Id{4}));
  ASSERT_TRUE(pair);
  EXPECT_EQ(pair->first, Id{3});
  EXPECT_EQ(pair->second, Id{4});
  EXPECT_EQ(*DecodeSeqKey(EncodeSeqKey(0x0102030405060708ull)), 0x0102030405060708ull);
  auto id_seq = DecodeIdSeqKey(EncodeIdSeqKey(Id{5}, 77));
  ASSERT_TRUE(id_seq);
  EXPECT_EQ(id_seq->first, Id{5});
  EXPECT_EQ(id_seq->second, 77u);
  EXPECT_EQ(*DecodeIdKey(EncodeIdKey(Id{6})), Id{6});
  EXPECT_EQ(DecodePairKey("short").error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(DecodeSeqKey("1234567").error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(DecodeIdSeqKey(EncodePairKey(Id{}, Id{})).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(DecodeIdKey("").error().kind, ErrorKind::kCorruption);
}

TEST(SchemaTest, EveryFlippedBitIsCorruption) {
  for (const auto& [bytes, decode] : AllValues()) {
    ASSERT_TRUE(decode(bytes));
    for (size_t i = 0; i < bytes.size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        std::string damaged = bytes;
        damaged[i] = static_cast<char>(damaged[i] ^ (1 << bit));
        auto st = decode(damaged);
        ASSERT_FALSE(st) << "byte " << i << " bit " << bit;
        EXPECT_EQ(st.error().kind, ErrorKind::kCorruption);
      }
    }
  }
}

TEST(SchemaTest, EveryTruncationAndExtensionIsCorruption) {
  for (const auto& [bytes, decode] : AllValues()) {
    for (size_t n = 0; n < bytes.size(); ++n) {
      auto st = decode(std::string_view(bytes).substr(0, n));
      ASSERT_FALSE(st) << "length " << n;
      EXPECT_EQ(st.error().kind, ErrorKind::kCorruption);
    }
    auto st = decode(bytes + '\0');
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().kind, ErrorKind::kCorruption);
  }
}

TEST(SchemaTest, WellSealedButMalformedValuesAreCorruption) {
  std::string object = *EncodeObject(SampleObject());
  std::string body = object.substr(0, object.size() - 8);

  // A newer format version, correctly checksummed.
  std::string newer = body;
  newer[0] = static_cast<char>(kValueFormat + 1);
  EXPECT_EQ(DecodeObject(Reseal(newer)).error().kind, ErrorKind::kCorruption);

  // A shard count that claims far more than the bytes present: rejected before allocating.
  const size_t count_at = 1 + 8 + 8 + 1 + 1 + 1 + 4 + 32;
  std::string lying = body;
  for (int i = 0; i < 4; ++i) lying[count_at + i] = '\xff';
  EXPECT_EQ(DecodeObject(Reseal(lying)).error().kind, ErrorKind::kCorruption);

  // Fields cut short, sealed again, and trailing bytes after the fields.
  EXPECT_EQ(DecodeObject(Reseal(body.substr(0, 10))).error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(DecodeObject(Reseal(body + "x")).error().kind, ErrorKind::kCorruption);

  // An enum outside its type.
  std::string bad_layout = body;
  bad_layout[1 + 8 + 8] = 9;
  EXPECT_EQ(DecodeObject(Reseal(bad_layout)).error().kind, ErrorKind::kCorruption);

  // A string length prefix beyond the value.
  std::string meta = EncodeMeta("abc");
  std::string meta_body = meta.substr(0, meta.size() - 8);
  meta_body[1] = '\x7f';
  EXPECT_EQ(DecodeMeta(Reseal(meta_body)).error().kind, ErrorKind::kCorruption);
}

TEST(SchemaTest, Format2DeviceValuesDecodeWithoutTheDeletionFields) {
  std::string v = *EncodeDevice(SampleDevice());
  std::string body = v.substr(0, v.size() - 8);
  constexpr size_t kDeletionFields = 8 + 16;  // closed_ns, purge_job (format 3)
  DeviceRecord want = SampleDevice();
  want.closed_ns = 0;
  want.purge_job = Id{};
  auto old = DecodeDevice(Reseal(body.substr(0, body.size() - kDeletionFields)));
  ASSERT_TRUE(old) << old.error().ToString();
  EXPECT_EQ(*old, want);
  // Half of the new fields is not a value of either format.
  auto half = DecodeDevice(Reseal(body.substr(0, body.size() - 16)));
  ASSERT_FALSE(half);
  EXPECT_EQ(half.error().kind, ErrorKind::kCorruption);
}

TEST(SchemaTest, ObjectKeysSortByDeviceThenTypeThenName) {
  std::vector<ObjectKey> keys;
  for (uint8_t dev : {0x00, 0x01, 0xff}) {
    for (ObjectType type : {ObjectType::kConfig, ObjectType::kData, ObjectType::kIndex}) {
      for (const char* name : {"", "a", "a\x01", "ab", "b", "\xff"}) {
        keys.push_back(ObjectKey{Id{dev}, type, name});
      }
    }
  }
  std::vector<ObjectKey> by_bytes = keys;
  std::sort(by_bytes.begin(), by_bytes.end(), [](const ObjectKey& a, const ObjectKey& b) {
    return *EncodeObjectKey(a) < *EncodeObjectKey(b);  // LMDB's default: memcmp order
  });
  std::vector<ObjectKey> by_fields = keys;
  std::sort(by_fields.begin(), by_fields.end(), [](const ObjectKey& a, const ObjectKey& b) {
    auto unsigned_name = [](const std::string& s) {
      return std::vector<uint8_t>(s.begin(), s.end());
    };
    return std::tuple(a.device, a.type, unsigned_name(a.name)) <
           std::tuple(b.device, b.type, unsigned_name(b.name));
  });
  EXPECT_EQ(by_bytes, by_fields);
}

TEST(SchemaTest, ObjectKeyRoundTripsAndRejectsBadInput) {
  ObjectKey key{Id{9, 8, 7}, ObjectType::kSnapshots, std::string(kMaxNameBytes, 'n')};
  EXPECT_EQ(*DecodeObjectKey(*EncodeObjectKey(key)), key);

  key.name.push_back('n');
  EXPECT_EQ(EncodeObjectKey(key).error().kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(EncodeObjectKey(ObjectKey{Id{}, static_cast<ObjectType>(7), "x"}).error().kind,
            ErrorKind::kInvalidArgument);

  EXPECT_EQ(DecodeObjectKey(std::string(16, '\0')).error().kind, ErrorKind::kCorruption);
  std::string bad_type(17, '\0');
  EXPECT_EQ(DecodeObjectKey(bad_type).error().kind, ErrorKind::kCorruption);
  std::string too_long(17 + kMaxNameBytes + 1, '\x02');
  EXPECT_EQ(DecodeObjectKey(too_long).error().kind, ErrorKind::kCorruption);
}

TEST(SchemaTest, ExtentKeysAreBigEndianAndSortNumerically) {
  EXPECT_EQ(EncodeExtentKey(0x0102, 0x03040506), std::string("\x01\x02\x03\x04\x05\x06", 6));
  EXPECT_LT(EncodeExtentKey(1, 0xffffffff), EncodeExtentKey(2, 0));
  EXPECT_LT(EncodeExtentKey(0, 255), EncodeExtentKey(0, 256));
  auto key = DecodeExtentKey(EncodeExtentKey(65535, 4000000000u));
  ASSERT_TRUE(key);
  EXPECT_EQ(key->disk, 65535);
  EXPECT_EQ(key->extent, 4000000000u);
  EXPECT_EQ(DecodeExtentKey("12345").error().kind, ErrorKind::kCorruption);
  EXPECT_EQ(DecodeDeviceKey("short").error().kind, ErrorKind::kCorruption);
}

}  // namespace
}  // namespace cv::index::schema
