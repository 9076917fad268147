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
  return rec;
}

// Every encoding under test, so that the damage tests cover all of them.
std::vector<std::pair<std::string, std::function<Status(std::string_view)>>> AllValues() {
  auto discard = [](auto result) -> Status {
    if (!result) return tl::unexpected(result.error());
    return {};
  };
  return {
      {*EncodeObject(SampleObject()), [=](std::string_view b) { return discard(DecodeObject(b)); }},
      {*EncodeObject(ObjectRecord{}), [=](std::string_view b) { return discard(DecodeObject(b)); }},
      {EncodeExtent(ExtentRecord{1, 2, 3}),
       [=](std::string_view b) { return discard(DecodeExtent(b)); }},
      {*EncodeDevice(SampleDevice()), [=](std::string_view b) { return discard(DecodeDevice(b)); }},
      {EncodeMeta("1"), [=](std::string_view b) { return discard(DecodeMeta(b)); }},
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
