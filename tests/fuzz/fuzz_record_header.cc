// fuzz_record_header: shard record headers (storage/record.h, storage/FORMAT.md). Input:
// selector byte, then
//   0: raw bytes -> DecodeHeader;
//   1: bytes with a valid magic, version and checksum patched in (the header_len and every
//      other field stay the fuzzer's) -> DecodeHeader, so that it explores past the checksum;
//   2: field values -> EncodeHeader -> DecodeHeader.
// Properties: no crash or read outside the input (ASan sees the exact-size copy); a decoded
// header spans HeaderBytes(key) bytes, and encoding it gives back the input's bytes up to the
// end of the name (padding aside) and decodes to the same header.
#include <xxhash.h>

#include <cstring>
#include <vector>

#include "storage/record.h"
#include "tests/fuzz/fuzz_input.h"

using cv::fuzz::FuzzInput;
using cv::storage::RecordHeader;

namespace {

template <class T>
void Put(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

bool SameHeader(const RecordHeader& a, const RecordHeader& b) {
  return a.key == b.key && a.layout == b.layout && a.k == b.k && a.m == b.m &&
         a.shard == b.shard && a.stripe == b.stripe && a.shard_unit == b.shard_unit &&
         a.payload_len == b.payload_len && a.object_size == b.object_size &&
         a.created_ns == b.created_ns && a.payload_xxh3 == b.payload_xxh3 && a.sha256 == b.sha256;
}

// A decoded header must re-encode to the bytes it came from and decode to itself.
void CheckRoundTrip(const RecordHeader& h, std::span<const uint8_t> in) {
  const size_t hb = cv::storage::HeaderBytes(h.key);
  CV_FUZZ_CHECK(hb <= in.size() && hb % 64 == 0 && h.key.name.size() <= 255);
  uint16_t stored_hb;
  std::memcpy(&stored_hb, in.data() + 6, 2);
  CV_FUZZ_CHECK(stored_hb == hb);
  CV_FUZZ_CHECK(cv::storage::RecordBytes(h.key, h.payload_len) % cv::storage::kRecordAlign == 0);
  std::vector<uint8_t> out(hb);
  cv::storage::EncodeHeader(h, out);
  const size_t named = cv::storage::kRecordFixedBytes + h.key.name.size();
  CV_FUZZ_CHECK(std::memcmp(out.data(), in.data(), named) == 0);
  auto again = cv::storage::DecodeHeader(out);
  CV_FUZZ_CHECK(again && SameHeader(*again, h));
}

void Decode(std::span<const uint8_t> in) {
  // An exact-size heap copy, so that ASan catches a read one byte past the end.
  std::vector<uint8_t> copy(in.begin(), in.end());
  auto h = cv::storage::DecodeHeader(copy);
  if (h) CheckRoundTrip(*h, copy);
}

// Patches magic, version and (when header_len leaves room for it) the checksum.
void DecodePatched(std::span<const uint8_t> in) {
  std::vector<uint8_t> buf(in.begin(), in.end());
  if (buf.size() >= 8) {
    Put<uint32_t>(buf.data(), cv::storage::kRecordMagic);
    Put<uint16_t>(buf.data() + 4, cv::storage::kRecordVersion);
    uint16_t hb;
    std::memcpy(&hb, buf.data() + 6, 2);
    if (hb >= 16 && hb <= buf.size()) {
      Put<uint64_t>(buf.data() + hb - 8, XXH3_64bits(buf.data(), hb - 8));
    }
  }
  Decode(buf);
}

void EncodeFields(FuzzInput& in) {
  RecordHeader h;
  static constexpr cv::index::Layout kLayouts[] = {
      cv::index::Layout::kReplicated, cv::index::Layout::kErasure,
      static_cast<cv::index::Layout>(cv::storage::kTombstoneLayout)};
  h.layout = kLayouts[in.Byte() % 3];
  h.k = in.Byte();
  h.m = in.Byte();
  h.shard = in.Byte();
  h.stripe = in.Int<uint32_t>();
  h.shard_unit = in.Int<uint32_t>();
  h.payload_len = in.Int<uint32_t>();
  h.object_size = in.Int<uint64_t>();
  h.created_ns = in.Int<int64_t>();
  h.payload_xxh3 = in.Int<uint64_t>();
  for (auto& b : h.sha256) b = in.Byte();
  for (auto& b : h.key.device) b = in.Byte();
  h.key.type = static_cast<cv::index::ObjectType>(in.Byte());
  std::string_view name = in.Rest();
  h.key.name = std::string(name.substr(0, 255));
  std::vector<uint8_t> out(cv::storage::HeaderBytes(h.key));
  cv::storage::EncodeHeader(h, out);
  auto back = cv::storage::DecodeHeader(out);
  CV_FUZZ_CHECK(back && SameHeader(*back, h));
  CheckRoundTrip(*back, out);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t mode = in.Byte() % 3;
  std::string_view rest = mode == 2 ? std::string_view() : in.Rest();
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(rest.data()), rest.size());
  switch (mode) {
    case 0:
      Decode(bytes);
      break;
    case 1:
      DecodePatched(bytes);
      break;
    case 2:
      EncodeFields(in);
      break;
  }
  return 0;
}
