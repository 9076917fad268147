// courier/format: on-disk constants, checksums and encoders shared by the layout planner,
// the writer and the reader. Internal to courier/. See FORMAT.md for the picture.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/common.h"
#include "courier/courier.h"

namespace cv::courier::fmt {

inline constexpr uint32_t kSector = 512;
inline constexpr uint64_t kMiB = 1 << 20;
inline constexpr uint64_t kAlignSectors = kMiB / kSector;  // partition, FAT and heap
inline constexpr uint32_t kGptEntries = 128, kGptEntryBytes = 128;
inline constexpr uint32_t kGptArraySectors = kGptEntries * kGptEntryBytes / kSector;  // 32
inline constexpr uint32_t kBootRegionSectors = 12;
inline constexpr uint32_t kFirstCluster = 2;
inline constexpr size_t kEntry = 32;
inline constexpr size_t kMaxNameUnits = 255;
inline constexpr uint64_t kMaxDirBytes = 256ull << 20;
// The writer hands runs of zeros this long or longer to the sink as WriteZeros / Skip (holes
// in a file); shorter ones it writes. AllocatedBytesBound counts on it.
inline constexpr uint64_t kHoleMinBytes = 256 << 10;
// EBD0A0A2-B9E5-4433-87C0-68B6B72699C7 in GPT's mixed-endian byte order.
inline constexpr std::array<uint8_t, 16> kBasicDataType = {
    0xA2, 0xA0, 0xD0, 0xEB, 0xE5, 0xB9, 0x33, 0x44, 0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7};

// Directory entry types (InUse bit set).
inline constexpr uint8_t kTypeBitmap = 0x81, kTypeUpcase = 0x82, kTypeLabel = 0x83,
                         kTypeFile = 0x85, kTypeStream = 0xC0, kTypeName = 0xC1;
inline constexpr uint16_t kAttrDirectory = 0x10, kAttrArchive = 0x20;
inline constexpr uint8_t kFlagAllocPossible = 0x01, kFlagNoFatChain = 0x02;
inline constexpr uint32_t kFatEnd = 0xFFFFFFFF, kFatMedia = 0xFFFFFFF8, kFatBad = 0xFFFFFFF7;

inline void Put16(uint8_t* p, uint16_t v) {
  p[0] = v;
  p[1] = v >> 8;
}
inline void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = v >> (8 * i);
}
inline void Put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = v >> (8 * i);
}
inline uint16_t Get16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
inline uint32_t Get32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
inline uint64_t Get64(const uint8_t* p) { return Get32(p) | uint64_t(Get32(p + 4)) << 32; }
inline uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
inline uint64_t DivUp(uint64_t v, uint64_t a) { return (v + a - 1) / a; }

uint32_t Crc32(std::span<const uint8_t> data, uint32_t crc = 0);
// exFAT checksums (spec 3.4, 7.2.2, 6.3.3, 7.6.4).
uint32_t BootChecksum(std::span<const uint8_t> eleven_sectors);
uint32_t UpcaseChecksum(std::span<const uint8_t> table);
uint16_t EntrySetChecksum(std::span<const uint8_t> entries);
uint16_t NameHash(std::u16string_view upcased);

// An up-case table as the volume stores it (compressed or not) and as a lookup.
struct UpcaseMap {
  std::vector<uint8_t> bytes;
  std::vector<char16_t> map;  // 65536 entries
  std::u16string Apply(std::u16string_view s) const {
    std::u16string out(s);
    for (auto& c : out) c = map[c];
    return out;
  }
};
// Expands a stored table (spec 7.2.5: FFFFh + count = a run of identity mappings) and checks
// the mandatory mappings of the first 128 characters; the error says which.
Result<UpcaseMap> LoadUpcaseTable(std::span<const uint8_t> bytes);
// Stores a 65536-entry mapping compressed: each stretch of at least `min_run` characters that
// map to themselves becomes FFFFh + its length, everything else one 16-bit value each.
// REQUIRES: map.size() == 65536; no character but FFFFh itself maps to FFFFh.
std::vector<uint8_t> CompressUpcase(std::span<const char16_t> map, uint32_t min_run);
// Microsoft's recommended table (spec 7.2.5.1, mappings in upcase_recommended.inc), stored
// as the spec gives it: 5836 bytes, checksum E619D30Dh. Every image uses it unless
// LayoutOptions::upcase_table says otherwise.
const UpcaseMap& RecommendedUpcase();
inline char16_t AsciiUpcase(char16_t c) { return c >= u'a' && c <= u'z' ? char16_t(c - 32) : c; }

// Strict UTF-8 to UTF-16; false on malformed input.
bool Utf8ToUtf16(std::string_view in, std::u16string* out);
std::string Utf16ToUtf8(std::u16string_view in);
// Empty string if `name` is a valid exFAT file name, else why not.
std::string NameProblem(std::u16string_view name);

// Volume geometry for a volume of `volume_sectors` with 2^spc_shift sectors per cluster:
// FAT at 1 MiB, cluster heap at the next 1 MiB boundary after the FAT.
struct Geometry {
  uint64_t volume_sectors = 0;
  uint32_t spc_shift = 0;
  uint32_t fat_offset = 0, fat_length = 0, heap_offset = 0, cluster_count = 0;
  uint32_t cluster_bytes() const { return kSector << spc_shift; }
  uint32_t bitmap_clusters() const {
    return uint32_t(DivUp(DivUp(cluster_count, 8), cluster_bytes()));
  }
};
Result<Geometry> ComputeGeometry(uint64_t volume_sectors, uint32_t spc_shift);
uint32_t DefaultSpcShift(uint64_t volume_bytes);

// Bytes of a file or directory's entry set in its parent: File + Stream + Name entries.
inline uint64_t EntrySetBytes(size_t name_units) { return (2 + DivUp(name_units, 15)) * kEntry; }
// Bytes of the root directory's fixed entries: bitmap, up-case, volume label.
inline constexpr uint64_t kRootFixedBytes = 3 * kEntry;

uint32_t DosTimestamp(int64_t unix_time);

// Encodes one entry set into `out` (EntrySetBytes(name.size()) bytes).
void EncodeEntrySet(std::u16string_view name, uint16_t name_hash, bool is_dir,
                    uint32_t first_cluster, uint64_t data_length, bool no_fat_chain,
                    uint32_t timestamp, uint8_t* out);

}  // namespace cv::courier::fmt

namespace cv::courier {

// A node of the directory tree: id 0 is the root.
struct Node {
  std::u16string name;
  uint16_t name_hash = 0;
  bool is_dir = false;
  size_t file_index = 0;  // files: index into Layout::files()
  uint32_t parent = 0;
  std::vector<uint32_t> children;  // sorted by name bytes
  uint64_t entry_bytes = 0;        // dirs: bytes of entries inside
  uint64_t data_length = 0;        // files: size; dirs: clusters * cluster size
  uint32_t first_cluster = 0;      // 0 = no clusters
  uint32_t clusters = 0;
};

struct Layout::Impl {
  LayoutOptions options;
  std::vector<FileSpec> files;
  std::vector<Node> nodes;
  std::vector<uint32_t> dirs_in_order;   // root first, then preorder
  std::vector<uint32_t> files_in_order;  // preorder
  std::vector<uint32_t> node_of_file;    // file index -> node
  std::u16string label;
  fmt::UpcaseMap upcase;
  uint64_t image_sectors = 0, part_first_lba = 0, part_sectors = 0;
  fmt::Geometry geo;
  uint32_t bitmap_cluster = 0, upcase_cluster = 0, upcase_clusters = 0;
  uint32_t system_end_cluster = 0;  // FAT chains end here; file data begins
  uint32_t used_end_cluster = 0;    // first free cluster
  std::array<uint8_t, 16> disk_guid{}, part_guid{};
  uint32_t serial = 0;
  uint32_t timestamp = 0;
  uint64_t cluster_offset(uint32_t c) const {
    return (part_first_lba + geo.heap_offset) * fmt::kSector +
           uint64_t(c - fmt::kFirstCluster) * geo.cluster_bytes();
  }
};

struct LayoutAccess {
  static const Layout::Impl& Get(const Layout& l) { return *l.impl_; }
};

}  // namespace cv::courier
