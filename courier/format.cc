#include "courier/format.h"

#include <ctime>

namespace cv::courier::fmt {

uint32_t Crc32(std::span<const uint8_t> data, uint32_t crc) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (uint8_t b : data) crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t BootChecksum(std::span<const uint8_t> sectors) {
  uint32_t sum = 0;
  for (size_t i = 0; i < sectors.size(); ++i) {
    if (i == 106 || i == 107 || i == 112) continue;  // VolumeFlags, PercentInUse
    sum = ((sum & 1) ? 0x80000000u : 0) + (sum >> 1) + sectors[i];
  }
  return sum;
}

uint32_t UpcaseChecksum(std::span<const uint8_t> table) {
  uint32_t sum = 0;
  for (uint8_t b : table) sum = ((sum & 1) ? 0x80000000u : 0) + (sum >> 1) + b;
  return sum;
}

uint16_t EntrySetChecksum(std::span<const uint8_t> entries) {
  uint16_t sum = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i == 2 || i == 3) continue;  // the SetChecksum field itself
    sum = uint16_t(((sum & 1) ? 0x8000 : 0) + (sum >> 1) + entries[i]);
  }
  return sum;
}

uint16_t NameHash(std::u16string_view upcased) {
  uint16_t hash = 0;
  for (char16_t c : upcased) {
    for (uint8_t b : {uint8_t(c & 0xFF), uint8_t(c >> 8)}) {
      hash = uint16_t(((hash & 1) ? 0x8000 : 0) + (hash >> 1) + b);
    }
  }
  return hash;
}

std::vector<uint8_t> CompressUpcase(std::span<const char16_t> map, uint32_t min_run) {
  std::vector<uint8_t> out;
  auto put = [&out](uint16_t v) {
    out.resize(out.size() + 2);
    Put16(&out[out.size() - 2], v);
  };
  for (uint32_t c = 0; c < map.size();) {
    uint32_t end = c;  // [c, end): characters that map to themselves
    while (end < map.size() && map[end] == end && end - c < 0xFFFF) ++end;
    if (end == c) {
      put(map[c++]);
    } else if (end - c >= min_run) {
      put(0xFFFF);
      put(uint16_t(end - c));
      c = end;
    } else {
      for (; c < end; ++c) put(uint16_t(c));
    }
  }
  return out;
}

const UpcaseMap& RecommendedUpcase() {
  static const UpcaseMap table = [] {
    static constexpr char16_t kPairs[][2] = {
#include "courier/upcase_recommended.inc"
    };
    std::vector<char16_t> map(0x10000);
    for (uint32_t i = 0; i < map.size(); ++i) map[i] = char16_t(i);
    for (const auto& p : kPairs) map[p[0]] = p[1];
    // The spec's table writes identity stretches of up to 337 characters out in full and
    // compresses the four longer ones (843 characters and more).
    return *LoadUpcaseTable(CompressUpcase(map, 512));
  }();
  return table;
}

Result<UpcaseMap> LoadUpcaseTable(std::span<const uint8_t> t) {
  if (t.empty() || t.size() % 2 || t.size() > 2 * 0x20000) {
    return Err(ErrorKind::kCorruption, "up-case table: bad length " + std::to_string(t.size()));
  }
  UpcaseMap m;
  m.bytes.assign(t.begin(), t.end());
  m.map.resize(0x10000);
  for (uint32_t i = 0; i < 0x10000; ++i) m.map[i] = char16_t(i);
  uint32_t idx = 0;
  for (size_t i = 0; i + 1 < t.size() && idx < 0x10000; i += 2) {
    uint16_t v = Get16(&t[i]);
    if (v == 0xFFFF && i + 3 < t.size()) {
      idx += Get16(&t[i + 2]);  // a run of identity mappings
      i += 2;
    } else {
      m.map[idx++] = v;
    }
  }
  for (uint32_t c = 0; c < 128; ++c) {
    if (m.map[c] != AsciiUpcase(char16_t(c))) {
      return Err(ErrorKind::kCorruption,
                 "up-case table: wrong mandatory mapping for character " + std::to_string(c));
    }
  }
  return m;
}

bool Utf8ToUtf16(std::string_view in, std::u16string* out) {
  out->clear();
  for (size_t i = 0; i < in.size();) {
    uint8_t b = in[i];
    uint32_t cp;
    size_t n;
    if (b < 0x80) {
      cp = b;
      n = 1;
    } else if ((b & 0xE0) == 0xC0) {
      cp = b & 0x1F;
      n = 2;
    } else if ((b & 0xF0) == 0xE0) {
      cp = b & 0x0F;
      n = 3;
    } else if ((b & 0xF8) == 0xF0) {
      cp = b & 0x07;
      n = 4;
    } else
      return false;
    if (i + n > in.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      uint8_t c = in[i + k];
      if ((c & 0xC0) != 0x80) return false;
      cp = cp << 6 | (c & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      out->push_back(char16_t(0xD800 + (cp >> 10)));
      out->push_back(char16_t(0xDC00 + (cp & 0x3FF)));
    } else {
      out->push_back(char16_t(cp));
    }
    i += n;
  }
  return true;
}

std::string Utf16ToUtf8(std::u16string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    uint32_t cp = in[i];
    if (cp >= 0xD800 && cp <= 0xDBFF && i + 1 < in.size() && in[i + 1] >= 0xDC00 &&
        in[i + 1] <= 0xDFFF) {
      cp = 0x10000 + ((cp - 0xD800) << 10) + (in[++i] - 0xDC00);
    }
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | cp >> 6);
      out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += char(0xE0 | cp >> 12);
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xF0 | cp >> 18);
      out += char(0x80 | ((cp >> 12) & 0x3F));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    }
  }
  return out;
}

std::string NameProblem(std::u16string_view name) {
  if (name.empty()) return "empty name";
  if (name.size() > kMaxNameUnits) return "name longer than 255 UTF-16 units";
  if (name == u"." || name == u"..") return "name is . or ..";
  for (char16_t c : name) {
    if (c < 0x20) return "control character in name";
    if (std::u16string_view(u"\"*/:<>?\\|").find(c) != std::u16string_view::npos) {
      return "character not allowed in exFAT names (\"*/:<>?\\|)";
    }
  }
  return "";
}

Result<Geometry> ComputeGeometry(uint64_t volume_sectors, uint32_t spc_shift) {
  Geometry g;
  g.volume_sectors = volume_sectors;
  g.spc_shift = spc_shift;
  g.fat_offset = kAlignSectors;
  uint64_t spc = uint64_t(1) << spc_shift;
  uint64_t upper = volume_sectors / spc;  // more than fits: sizes the FAT generously
  if (upper > 0xFFFFFFF5ull)
    return Err(ErrorKind::kInvalidArgument, "volume has too many clusters");
  uint64_t fat_length = DivUp((upper + 2) * 4, kSector);
  uint64_t heap = RoundUp(g.fat_offset + fat_length, kAlignSectors);
  if (heap + spc > volume_sectors) {
    return Err(ErrorKind::kNoSpace, "volume too small for the exFAT structures");
  }
  g.fat_length = uint32_t(fat_length);
  g.heap_offset = uint32_t(heap);
  g.cluster_count = uint32_t((volume_sectors - heap) / spc);
  return g;
}

uint32_t DefaultSpcShift(uint64_t volume_bytes) {
  // Windows' format defaults, which the spec's guidance follows: 4 KiB up to 256 MiB,
  // 32 KiB up to 32 GiB, 128 KiB above.
  if (volume_bytes <= (256ull << 20)) return 3;
  if (volume_bytes <= (32ull << 30)) return 6;
  return 8;
}

uint32_t DosTimestamp(int64_t unix_time) {
  time_t t = unix_time;
  struct tm tm;
  gmtime_r(&t, &tm);
  int year = tm.tm_year + 1900;
  if (year < 1980) return (1u << 21) | (1u << 16);  // 1980-01-01 00:00:00
  if (year > 2107) year = 2107;
  return uint32_t(year - 1980) << 25 | uint32_t(tm.tm_mon + 1) << 21 | uint32_t(tm.tm_mday) << 16 |
         uint32_t(tm.tm_hour) << 11 | uint32_t(tm.tm_min) << 5 | uint32_t(tm.tm_sec / 2);
}

void EncodeEntrySet(std::u16string_view name, uint16_t name_hash, bool is_dir,
                    uint32_t first_cluster, uint64_t data_length, bool no_fat_chain,
                    uint32_t timestamp, uint8_t* out) {
  size_t name_entries = DivUp(name.size(), 15);
  size_t bytes = (2 + name_entries) * kEntry;
  memset(out, 0, bytes);
  uint8_t* f = out;
  f[0] = kTypeFile;
  f[1] = uint8_t(1 + name_entries);
  Put16(f + 4, is_dir ? kAttrDirectory : kAttrArchive);
  Put32(f + 8, timestamp);
  Put32(f + 12, timestamp);
  Put32(f + 16, timestamp);
  f[22] = f[23] = f[24] = 0x80;  // UTC offsets valid, +00:00
  uint8_t* s = out + kEntry;
  s[0] = kTypeStream;
  s[1] = kFlagAllocPossible | (no_fat_chain && first_cluster != 0 ? kFlagNoFatChain : 0);
  s[3] = uint8_t(name.size());
  Put16(s + 4, name_hash);
  Put64(s + 8, data_length);  // ValidDataLength
  Put32(s + 20, first_cluster);
  Put64(s + 24, data_length);
  for (size_t i = 0; i < name_entries; ++i) {
    uint8_t* n = out + (2 + i) * kEntry;
    n[0] = kTypeName;
    for (size_t k = 0; k < 15 && i * 15 + k < name.size(); ++k) {
      Put16(n + 2 + 2 * k, name[i * 15 + k]);
    }
  }
  Put16(f + 2, EntrySetChecksum({out, bytes}));
}

}  // namespace cv::courier::fmt
