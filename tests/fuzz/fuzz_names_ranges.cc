// fuzz_names_ranges: object names and Range headers. Input: selector byte, then
//   0: u64 object size, then a Range header -> ParseRange;
//   1: a type byte, then a name -> storage::ValidateName and the index key encoding;
//   2: "type \n name" -> the agent API's ObjectKeyFor (type word, then name).
// Properties: a partial range lies inside the object and is non-empty, and its canonical form
// "bytes=a-b" parses back to the same range; an accepted name is what FORMAT.md allows
// (content-addressed types: 64 lowercase hex digits; config: empty) and its index key
// round-trips through the key encoding.
#include <string>

#include "index/index.h"
#include "index/schema.h"
#include "server/agent_api.h"
#include "storage/storage.h"
#include "tests/fuzz/fuzz_input.h"

using cv::fuzz::FuzzInput;
namespace idx = cv::index;

namespace {

bool LowerHex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

void CheckRange(uint64_t size, std::string_view header) {
  cv::server::ByteRange r;
  const auto parsed = cv::server::ParseRange(header, size, &r);
  if (parsed != cv::server::RangeParse::kPartial) return;
  CV_FUZZ_CHECK(r.length > 0 && r.offset < size && r.length <= size - r.offset);
  cv::server::ByteRange again;
  const std::string canonical =
      "bytes=" + std::to_string(r.offset) + "-" + std::to_string(r.offset + r.length - 1);
  CV_FUZZ_CHECK(cv::server::ParseRange(canonical, size, &again) ==
                cv::server::RangeParse::kPartial);
  CV_FUZZ_CHECK(again.offset == r.offset && again.length == r.length);
}

void CheckKeyRoundTrip(const idx::ObjectKey& key) {
  auto enc = idx::schema::EncodeObjectKey(key);
  CV_FUZZ_CHECK(enc.has_value());
  auto dec = idx::schema::DecodeObjectKey(*enc);
  CV_FUZZ_CHECK(dec.has_value() && *dec == key);
  CV_FUZZ_CHECK(enc->starts_with(idx::schema::ObjectKeyPrefix(key.device, key.type)));
}

void CheckName(uint8_t type_byte, std::string_view name, const idx::Id& device) {
  const auto type = static_cast<idx::ObjectType>(type_byte % 8);
  const bool known = type_byte % 8 >= 1 && type_byte % 8 <= 6;
  if (!known) return;  // ValidateName's callers pass parsed types only
  auto st = cv::storage::ValidateName(type, name);
  if (!st) return;
  if (type == idx::ObjectType::kConfig) {
    CV_FUZZ_CHECK(name.empty());
  } else {
    CV_FUZZ_CHECK(LowerHex64(name));
  }
  CheckKeyRoundTrip(idx::ObjectKey{device, type, std::string(name)});
}

void CheckAgentName(std::string_view type, std::string_view name, const idx::Id& device) {
  auto key = cv::server::ObjectKeyFor(device, type, name);
  if (!key) return;
  CV_FUZZ_CHECK(key->device == device && key->name == name);
  CV_FUZZ_CHECK(cv::index::ObjectTypeName(key->type) == type);
  CV_FUZZ_CHECK(cv::storage::ValidateName(key->type, name).has_value());
  CheckKeyRoundTrip(*key);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  idx::Id device{};
  device[0] = 0x5a;
  switch (in.Byte() % 3) {
    case 0: {
      const uint64_t object_size = in.Int<uint64_t>();
      CheckRange(object_size, in.Rest());
      break;
    }
    case 1: {
      const uint8_t type = in.Byte();
      CheckName(type, in.Rest(), device);
      break;
    }
    case 2: {
      const std::string_view type = in.Until('\n');
      CheckAgentName(type, in.Rest(), device);
      break;
    }
  }
  return 0;
}
