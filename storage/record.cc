#include "storage/record.h"

#include <xxh_x86dispatch.h>

#include <cstring>

namespace cv::storage {
namespace {

template <class T>
void Put(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);  // little-endian host (x86-64, arm64) is assumed by FORMAT.md
}
template <class T>
T Get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

size_t HeaderBytes(const index::ObjectKey& key) {
  size_t raw = kRecordFixedBytes + key.name.size() + 8;
  return (raw + 63) / 64 * 64;
}

uint64_t RecordBytes(const index::ObjectKey& key, uint32_t payload_len) {
  uint64_t raw = HeaderBytes(key) + payload_len;
  return (raw + kRecordAlign - 1) / kRecordAlign * kRecordAlign;
}

uint64_t PayloadChecksum(std::span<const uint8_t> payload) {
  return XXH3_64bits_dispatch(payload.data(), payload.size());
}

void EncodeHeader(const RecordHeader& h, std::span<uint8_t> out) {
  const size_t hb = HeaderBytes(h.key);
  uint8_t* p = out.data();
  std::memset(p, 0, hb);
  Put<uint32_t>(p + 0, kRecordMagic);
  Put<uint16_t>(p + 4, kRecordVersion);
  Put<uint16_t>(p + 6, static_cast<uint16_t>(hb));
  Put<uint32_t>(p + 8, h.payload_len);
  Put<uint32_t>(p + 12, h.stripe);
  p[16] = h.shard;
  p[17] = h.k;
  p[18] = h.m;
  p[19] = static_cast<uint8_t>(h.layout);
  Put<uint32_t>(p + 20, h.shard_unit);
  Put<uint64_t>(p + 24, h.object_size);
  Put<int64_t>(p + 32, h.created_ns);
  Put<uint64_t>(p + 40, h.payload_xxh3);
  std::memcpy(p + 48, h.sha256.data(), 32);
  std::memcpy(p + 80, h.key.device.data(), 16);
  p[96] = static_cast<uint8_t>(h.key.type);
  p[97] = static_cast<uint8_t>(h.key.name.size());
  std::memcpy(p + kRecordFixedBytes, h.key.name.data(), h.key.name.size());
  const size_t sum_at = hb - 8;
  Put<uint64_t>(p + sum_at, XXH3_64bits_dispatch(p, sum_at));
}

std::optional<RecordHeader> DecodeHeader(std::span<const uint8_t> in) {
  if (in.size() < kRecordFixedBytes + 8) return std::nullopt;
  const uint8_t* p = in.data();
  if (Get<uint32_t>(p) != kRecordMagic || Get<uint16_t>(p + 4) != kRecordVersion) {
    return std::nullopt;
  }
  const size_t hb = Get<uint16_t>(p + 6);
  const size_t name_len = p[97];
  if (hb > in.size() || hb < kRecordFixedBytes + name_len + 8 || hb % 64 != 0) return std::nullopt;
  if (Get<uint64_t>(p + hb - 8) != XXH3_64bits_dispatch(p, hb - 8)) return std::nullopt;
  RecordHeader h;
  h.payload_len = Get<uint32_t>(p + 8);
  h.stripe = Get<uint32_t>(p + 12);
  h.shard = p[16];
  h.k = p[17];
  h.m = p[18];
  h.layout = static_cast<index::Layout>(p[19]);
  if (h.layout != index::Layout::kErasure && h.layout != index::Layout::kReplicated &&
      !h.tombstone()) {
    return std::nullopt;
  }
  h.shard_unit = Get<uint32_t>(p + 20);
  h.object_size = Get<uint64_t>(p + 24);
  h.created_ns = Get<int64_t>(p + 32);
  h.payload_xxh3 = Get<uint64_t>(p + 40);
  std::memcpy(h.sha256.data(), p + 48, 32);
  std::memcpy(h.key.device.data(), p + 80, 16);
  h.key.type = static_cast<index::ObjectType>(p[96]);
  h.key.name.assign(reinterpret_cast<const char*>(p + kRecordFixedBytes), name_len);
  if (HeaderBytes(h.key) != hb) return std::nullopt;
  return h;
}

}  // namespace cv::storage
