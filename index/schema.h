// schema: the byte encodings of index keys and values (internal to index/; see FORMAT.md).
//
// Keys are built so that LMDB's default bytewise order is the order we list in:
//   object key = device id (16) | type (1) | name   -> sorts by (device, type, name)
//   extent key = disk (u16 BE) | extent (u32 BE)     -> sorts numerically by (disk, extent)
//   device key = device id (16);  meta key = the meta name's bytes
//   partner, account, admin key, job key = id (16)
//   pair key   = id (16) | id (16)                   -> secondary indexes: every second id of
//                                                        a first one is a range scan
//   seq key    = u64 BE (8);  id-seq key = id (16) | u64 BE (8)   -> audit, in seq order
//
// Every value is   format version (1) | fields, little-endian | XXH3-64 of all before (8).
// Decoders check the checksum, the version, every length and enum, and that nothing is left
// over; any mismatch or truncation is kCorruption. They never read out of bounds and never
// allocate more than the input could hold.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "common/common.h"
#include "index/index.h"

namespace cv::index::schema {

inline constexpr uint8_t kValueFormat = 1;
inline constexpr size_t kObjectKeyPrefixBytes = 17;  // device id + type
inline constexpr size_t kExtentKeyBytes = 6;
// LMDB's default maximum key size; meta names must fit.
inline constexpr size_t kMaxMetaKeyBytes = 511;

// kInvalidArgument if the type is not one of ObjectType or the name exceeds kMaxNameBytes.
Result<std::string> EncodeObjectKey(const ObjectKey& key);
// The bytes every key of `device` (and `type`, if given) starts with.
std::string ObjectKeyPrefix(const Id& device, std::optional<ObjectType> type);
Result<ObjectKey> DecodeObjectKey(std::string_view bytes);

std::string EncodeExtentKey(uint16_t disk, uint32_t extent);
struct ExtentKey {
  uint16_t disk = 0;
  uint32_t extent = 0;
};
Result<ExtentKey> DecodeExtentKey(std::string_view bytes);

std::string EncodeDeviceKey(const Id& id);
Result<Id> DecodeDeviceKey(std::string_view bytes);

// kInvalidArgument for enum values outside their type or counts beyond 32 bits.
Result<std::string> EncodeObject(const ObjectRecord& rec);
Result<ObjectRecord> DecodeObject(std::string_view bytes);

std::string EncodeExtent(const ExtentRecord& rec);
Result<ExtentRecord> DecodeExtent(std::string_view bytes);

Result<std::string> EncodeDevice(const DeviceRecord& rec);
Result<DeviceRecord> DecodeDevice(std::string_view bytes);

std::string EncodeMeta(std::string_view value);
Result<std::string> DecodeMeta(std::string_view bytes);

// ---- the account model ----
inline constexpr size_t kPairKeyBytes = 32;
inline constexpr size_t kSeqKeyBytes = 8;
inline constexpr size_t kIdSeqKeyBytes = 24;

std::string EncodeIdKey(const Id& id);
Result<Id> DecodeIdKey(std::string_view bytes);
std::string EncodePairKey(const Id& first, const Id& second);
Result<std::pair<Id, Id>> DecodePairKey(std::string_view bytes);
std::string EncodeSeqKey(uint64_t seq);
Result<uint64_t> DecodeSeqKey(std::string_view bytes);
std::string EncodeIdSeqKey(const Id& id, uint64_t seq);
Result<std::pair<Id, uint64_t>> DecodeIdSeqKey(std::string_view bytes);

// kInvalidArgument for enum values outside their type or strings beyond 32 bits.
Result<std::string> EncodePartner(const Partner& rec);
Result<Partner> DecodePartner(std::string_view bytes);
Result<std::string> EncodeAccount(const Account& rec);
Result<Account> DecodeAccount(std::string_view bytes);
std::string EncodeAddOn(const AddOn& rec);
Result<AddOn> DecodeAddOn(std::string_view bytes);
Result<std::string> EncodeAdminKey(const AdminKey& rec);
Result<AdminKey> DecodeAdminKey(std::string_view bytes);
Result<std::string> EncodeAudit(const AuditRecord& rec);
Result<AuditRecord> DecodeAudit(std::string_view bytes);
Result<std::string> EncodeJob(const Job& rec);
Result<Job> DecodeJob(std::string_view bytes);
std::string EncodePurgedDevice(const PurgedDevice& rec);
Result<PurgedDevice> DecodePurgedDevice(std::string_view bytes);

}  // namespace cv::index::schema
