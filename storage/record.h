// Shard records: the unit of data on disk. See storage/FORMAT.md for the byte layout.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "common/common.h"
#include "index/index.h"

namespace cv::storage {

inline constexpr uint32_t kRecordMagic = 0x31535643;  // "CVS1" little-endian
inline constexpr uint16_t kRecordVersion = 1;
inline constexpr size_t kRecordFixedBytes = 98;  // header bytes before the name
inline constexpr size_t kRecordAlign = 4096;     // records start and end on 4 KiB

// Layout byte of a tombstone record: "objects of `key` created at or before created_ns are
// deleted". Header only (payload_len 0), m+1 copies on distinct disks, written and synced
// before the index forgets the object, so that an index rebuilt from the extents does not
// bring deleted objects back. Compaction carries tombstones forward.
// A tombstone whose key is (device, data, "") -- no object has that key: data objects are
// named by 64 hex digits -- is a device tombstone: the device is purged, every object of
// key.device is deleted (device ids are never reused; records written after the tombstone
// are from uploads its commit refused). (The config object's name is empty too,
// but its type is config: its tombstone is an ordinary one.)
inline constexpr uint8_t kTombstoneLayout = 3;
inline index::ObjectKey DeviceTombstoneKey(const index::Id& device) {
  return index::ObjectKey{device, index::ObjectType::kData, ""};
}
inline bool IsDeviceTombstone(const index::ObjectKey& key) {
  return key.type == index::ObjectType::kData && key.name.empty();
}

struct RecordHeader {
  index::ObjectKey key;
  index::Layout layout = index::Layout::kErasure;
  uint8_t k = 0, m = 0;
  uint8_t shard = 0;     // shard index within the stripe, or copy number
  uint32_t stripe = 0;   // stripe number within the object
  uint32_t shard_unit = 0;
  uint32_t payload_len = 0;
  uint64_t object_size = 0;
  int64_t created_ns = 0;
  uint64_t payload_xxh3 = 0;
  Sha256Digest sha256{};
  bool tombstone() const { return static_cast<uint8_t>(layout) == kTombstoneLayout; }
};

// Bytes of the header for a key: fixed part + name + 8-byte checksum, rounded up to 64 so
// that the payload that follows is 64-byte aligned for ISA-L.
size_t HeaderBytes(const index::ObjectKey& key);
// Bytes the whole record takes in its extent (header + payload, padded to kRecordAlign).
uint64_t RecordBytes(const index::ObjectKey& key, uint32_t payload_len);

// Writes the header into out[0, HeaderBytes(h.key)). REQUIRES out large enough.
void EncodeHeader(const RecordHeader& h, std::span<uint8_t> out);
// Parses and verifies a header from the start of `in` (which may be longer). std::nullopt
// when the bytes are not a valid header (bad magic, version, lengths or checksum); never
// reads outside `in`.
std::optional<RecordHeader> DecodeHeader(std::span<const uint8_t> in);

// XXH3-64 of a payload (runtime-dispatched to the fastest SIMD path).
uint64_t PayloadChecksum(std::span<const uint8_t> payload);

}  // namespace cv::storage
