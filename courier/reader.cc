// The image reader/verifier. Trusts nothing it reads: every field is range-checked before it
// is used, and every fault names the structure and the image byte offset.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <set>
#include <tuple>

#include "courier/format.h"

namespace cv::courier {

using namespace fmt;

namespace {

std::string Hex(uint64_t v) {
  char b[32];
  snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

tl::unexpected<Error> Corrupt(std::string what) {
  return Err(ErrorKind::kCorruption, "courier image: " + what);
}

class Parser {
 public:
  explicit Parser(int fd) : fd_(fd) {}

  Status ReadAt(uint64_t off, std::span<uint8_t> out) {
    size_t done = 0;
    while (done < out.size()) {
      ssize_t n = pread(fd_, out.data() + done, out.size() - done, off_t(off + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError(errno, "read image at " + Hex(off + done));
      }
      if (n == 0) return Corrupt("truncated: no data at offset " + Hex(off + done));
      done += size_t(n);
    }
    return {};
  }

  Status Run(std::vector<ImageEntry>* entries, std::string* label,
             std::vector<uint8_t>* upcase_bytes) {
    CV_TRY(ReadGpt());
    CV_TRY(ReadBootRegions());
    CV_TRY(CheckFatHead());
    CV_TRY(WalkDirectories(entries, label, upcase_bytes));
    CV_TRY(CheckBitmap());
    return {};
  }

 private:
  // ---- GPT ----
  Status ReadGpt() {
    struct stat st;
    if (fstat(fd_, &st) != 0) return ErrnoError(errno, "stat image");
    uint64_t size = S_ISBLK(st.st_mode) ? uint64_t(lseek(fd_, 0, SEEK_END)) : uint64_t(st.st_size);
    if (size < 4 * kMiB || size % kSector)
      return Corrupt("image size " + std::to_string(size) + " is not a drive image");
    image_sectors_ = size / kSector;
    std::vector<uint8_t> s(2 * kSector);
    CV_TRY(ReadAt(0, s));
    if (s[510] != 0x55 || s[511] != 0xAA)
      return Corrupt("protective MBR: no 55AA signature at offset 0x1fe");
    bool protective = false;
    for (int i = 0; i < 4; ++i) protective |= s[446 + 16 * i + 4] == 0xEE;
    if (!protective) return Corrupt("protective MBR: no partition of type EE (not a GPT disk)");
    uint64_t alternate;
    std::vector<uint8_t> primary_array;
    CV_TRY(ReadGptHeader(1, "primary", &alternate, &primary_array));
    uint64_t back_alternate;
    std::vector<uint8_t> backup_array;
    if (alternate >= image_sectors_ || alternate < 2) {
      return Corrupt("GPT primary header: backup LBA " + std::to_string(alternate) +
                     " is outside the image");
    }
    auto primary_fields = std::make_tuple(first_usable_, last_usable_, entry_size_);
    CV_TRY(ReadGptHeader(alternate, "backup", &back_alternate, &backup_array));
    if (back_alternate != 1) return Corrupt("GPT backup header: alternate LBA is not 1");
    if (primary_fields != std::make_tuple(first_usable_, last_usable_, entry_size_)) {
      return Corrupt("GPT backup header disagrees with the primary (usable LBAs or entry size)");
    }
    if (primary_array != backup_array)
      return Corrupt("GPT backup partition entry array differs from the primary");
    // The partition: exactly one basic data partition.
    int found = 0;
    for (size_t off = 0; off + kGptEntryBytes <= primary_array.size(); off += entry_size_) {
      const uint8_t* e = &primary_array[off];
      if (std::all_of(e, e + 16, [](uint8_t b) { return b == 0; })) continue;
      if (!std::equal(kBasicDataType.begin(), kBasicDataType.end(), e)) continue;
      ++found;
      part_first_ = Get64(e + 32);
      uint64_t last = Get64(e + 40);
      if (part_first_ < first_usable_ || last > last_usable_ || last < part_first_) {
        return Corrupt("GPT partition entry " + std::to_string(off / entry_size_) + ": LBAs " +
                       std::to_string(part_first_) + ".." + std::to_string(last) +
                       " outside the usable range");
      }
      part_sectors_ = last - part_first_ + 1;
    }
    if (found != 1)
      return Corrupt("GPT: expected one Microsoft basic data partition, found " +
                     std::to_string(found));
    return {};
  }

  Status ReadGptHeader(uint64_t lba, const char* which, uint64_t* alternate,
                       std::vector<uint8_t>* array) {
    std::string where = std::string("GPT ") + which + " header at LBA " + std::to_string(lba);
    std::vector<uint8_t> h(kSector);
    CV_TRY(ReadAt(lba * kSector, h));
    if (memcmp(h.data(), "EFI PART", 8) != 0) return Corrupt(where + ": no EFI PART signature");
    uint32_t hsize = Get32(&h[12]);
    if (hsize < 92 || hsize > kSector)
      return Corrupt(where + ": header size " + std::to_string(hsize));
    uint32_t stored = Get32(&h[16]);
    Put32(&h[16], 0);
    uint32_t computed = Crc32({h.data(), hsize});
    if (stored != computed) {
      return Corrupt(where + ": header CRC32 mismatch (stored " + Hex(stored) + ", computed " +
                     Hex(computed) + ")");
    }
    if (Get64(&h[24]) != lba) return Corrupt(where + ": MyLBA is " + std::to_string(Get64(&h[24])));
    *alternate = Get64(&h[32]);
    first_usable_ = Get64(&h[40]);
    last_usable_ = Get64(&h[48]);
    if (last_usable_ >= image_sectors_ || first_usable_ > last_usable_)
      return Corrupt(where + ": usable LBA range outside the image");
    uint64_t entries_lba = Get64(&h[72]);
    uint32_t count = Get32(&h[80]);
    entry_size_ = Get32(&h[84]);
    if (entry_size_ < 128 || entry_size_ % 8 || count == 0 ||
        uint64_t(count) * entry_size_ > kMiB) {
      return Corrupt(where + ": bad partition entry count/size " + std::to_string(count) + "/" +
                     std::to_string(entry_size_));
    }
    uint64_t bytes = uint64_t(count) * entry_size_;
    if (entries_lba >= image_sectors_ || DivUp(bytes, kSector) > image_sectors_ - entries_lba) {
      return Corrupt(where + ": entry array past the end");
    }
    array->resize(bytes);
    CV_TRY(ReadAt(entries_lba * kSector, *array));
    uint32_t acrc = Crc32(*array);
    if (acrc != Get32(&h[88])) {
      return Corrupt(std::string("GPT ") + which + " partition entry array at LBA " +
                     std::to_string(entries_lba) + ": CRC32 mismatch (stored " +
                     Hex(Get32(&h[88])) + ", computed " + Hex(acrc) + ")");
    }
    return {};
  }

  // ---- exFAT boot regions ----
  Status ReadBootRegions() {
    vol_ = part_first_ * kSector;
    std::vector<uint8_t> b(kSector);
    CV_TRY(ReadAt(vol_, b));
    std::string where = "exFAT main boot sector at " + Hex(vol_);
    if (b[0] != 0xEB || b[1] != 0x76 || b[2] != 0x90 || memcmp(&b[3], "EXFAT   ", 8) != 0) {
      return Corrupt(where + ": no exFAT signature");
    }
    if (b[510] != 0x55 || b[511] != 0xAA) return Corrupt(where + ": no 55AA boot signature");
    if (!std::all_of(&b[11], &b[64], [](uint8_t x) { return x == 0; }))
      return Corrupt(where + ": MustBeZero bytes are not zero");
    uint32_t sshift = b[108], cshift = b[109];
    if (sshift < 9 || sshift > 12 || cshift > 25 - sshift)
      return Corrupt(where + ": bad sector/cluster shift");
    ss_ = 1u << sshift;
    cs_ = ss_ << cshift;
    uint64_t vol_len = Get64(&b[72]);
    fat_off_ = Get32(&b[80]);
    fat_len_ = Get32(&b[84]);
    heap_off_ = Get32(&b[88]);
    cc_ = Get32(&b[92]);
    root_ = Get32(&b[96]);
    uint8_t nfats = b[110];
    if (Get16(&b[104]) >> 8 != 1)
      return Corrupt(where + ": unsupported revision " + Hex(Get16(&b[104])));
    if (vol_len > part_sectors_ * kSector / ss_ || vol_len < kMiB / ss_) {
      return Corrupt(where + ": VolumeLength " + std::to_string(vol_len) +
                     " does not fit the partition");
    }
    if (nfats != 1 && nfats != 2) return Corrupt(where + ": NumberOfFats " + std::to_string(nfats));
    if (fat_off_ < 24 || uint64_t(fat_len_) * ss_ < (uint64_t(cc_) + 2) * 4 ||
        heap_off_ < uint64_t(fat_off_) + uint64_t(fat_len_) * nfats || cc_ == 0 ||
        cc_ > 0xFFFFFFF5u || uint64_t(heap_off_) + uint64_t(cc_) * (cs_ / ss_) > vol_len) {
      return Corrupt(where + ": FAT/cluster heap geometry is inconsistent");
    }
    if (root_ < 2 || root_ >= cc_ + 2)
      return Corrupt(where + ": root directory cluster out of range");
    std::vector<uint8_t> main;
    CV_TRY(ReadBootRegion(0, "main", &main));
    std::vector<uint8_t> backup;
    CV_TRY(ReadBootRegion(12, "backup", &backup));
    for (size_t i = 0; i < main.size(); ++i) {
      if (i == 106 || i == 107 || i == 112) continue;
      if (main[i] != backup[i])
        return Corrupt("exFAT backup boot region differs from the main one at byte " +
                       std::to_string(i));
    }
    return {};
  }

  Status ReadBootRegion(uint32_t first_sector, const char* which, std::vector<uint8_t>* r) {
    r->resize(12 * ss_);
    uint64_t at = vol_ + uint64_t(first_sector) * ss_;
    CV_TRY(ReadAt(at, *r));
    for (uint32_t s = 1; s <= 8; ++s) {
      if (Get32(&(*r)[s * ss_ + ss_ - 4]) != 0xAA550000u) {
        return Corrupt(std::string("exFAT ") + which + " extended boot sector " +
                       std::to_string(s) + " at " + Hex(at + s * ss_) +
                       ": no extended boot signature");
      }
    }
    uint32_t sum = BootChecksum({r->data(), 11 * ss_});
    for (uint32_t i = 0; i < ss_ / 4; ++i) {
      uint32_t stored = Get32(&(*r)[11 * ss_ + 4 * i]);
      if (stored != sum) {
        return Corrupt(std::string("exFAT ") + which + " boot region at " + Hex(at) +
                       ": boot checksum mismatch (stored " + Hex(stored) + ", computed " +
                       Hex(sum) + ")");
      }
    }
    return {};
  }

  // ---- FAT ----
  Status CheckFatHead() {
    uint8_t e[8];
    CV_TRY(ReadAt(vol_ + uint64_t(fat_off_) * ss_, e));
    if (Get32(e) != kFatMedia || Get32(e + 4) != kFatEnd)
      return Corrupt("FAT at " + Hex(vol_ + uint64_t(fat_off_) * ss_) + ": bad media entries");
    return {};
  }

  Result<uint32_t> Fat(uint32_t c) {
    uint64_t off = vol_ + uint64_t(fat_off_) * ss_ + uint64_t(c) * 4;
    uint64_t block = off / kFatBlock * kFatBlock;
    if (block != fat_block_at_ || fat_block_.empty()) {
      fat_block_.resize(kFatBlock);
      CV_TRY(ReadAt(block, fat_block_));
      fat_block_at_ = block;
    }
    return Get32(&fat_block_[off - block]);
  }

  uint64_t ClusterOffset(uint32_t c) const {
    return vol_ + uint64_t(heap_off_) * ss_ + uint64_t(c - 2) * cs_;
  }

  // Marks the clusters of an allocation; fills `runs` with (first, count) runs.
  Status Allocate(const std::string& what, uint32_t first, uint64_t length, bool no_fat_chain,
                  std::vector<std::pair<uint32_t, uint32_t>>* runs) {
    runs->clear();
    if (length == 0) {
      if (first != 0)
        return Corrupt(what + ": empty but has first cluster " + std::to_string(first));
      return {};
    }
    uint64_t n = DivUp(length, cs_);
    if (first < 2 || n > cc_ || first - 2 > cc_ - n) {
      return Corrupt(what + ": clusters " + std::to_string(first) + "+" + std::to_string(n) +
                     " outside the cluster heap");
    }
    auto mark = [&](uint32_t c) -> Status {
      uint8_t& byte = used_[(c - 2) / 8];
      uint8_t bit = uint8_t(1u << ((c - 2) % 8));
      if (byte & bit)
        return Corrupt(what + ": cluster " + std::to_string(c) + " is also used by another file");
      byte |= bit;
      return {};
    };
    if (no_fat_chain) {
      for (uint64_t i = 0; i < n; ++i) CV_TRY(mark(uint32_t(first + i)));
      runs->push_back({first, uint32_t(n)});
      return {};
    }
    uint32_t c = first;
    for (uint64_t i = 0; i < n; ++i) {
      CV_TRY(mark(c));
      if (!runs->empty() && runs->back().first + runs->back().second == c) {
        runs->back().second++;
      } else {
        runs->push_back({c, 1});
      }
      CV_TRY_ASSIGN(auto next, Fat(c));
      bool last = i + 1 == n;
      if (last && next != kFatEnd)
        return Corrupt(what + ": FAT chain longer than its length (cluster " + std::to_string(c) +
                       ")");
      if (!last && (next < 2 || next >= cc_ + 2)) {
        return Corrupt(what + ": FAT chain broken at cluster " + std::to_string(c) + " (next " +
                       Hex(next) + ")");
      }
      c = next;
    }
    return {};
  }

  Result<std::vector<uint8_t>> ReadRuns(const std::vector<std::pair<uint32_t, uint32_t>>& runs,
                                        uint64_t length) {
    std::vector<uint8_t> out(length);
    uint64_t done = 0;
    for (auto [first, count] : runs) {
      uint64_t n = std::min<uint64_t>(uint64_t(count) * cs_, length - done);
      CV_TRY(ReadAt(ClusterOffset(first), {out.data() + done, n}));
      done += n;
    }
    return out;
  }

  // ---- directories ----
  struct Dir {
    std::string path;  // "" for root
    uint32_t first;
    uint64_t length;
    bool no_fat_chain;
  };

  Status WalkDirectories(std::vector<ImageEntry>* entries, std::string* label,
                         std::vector<uint8_t>* upcase_bytes) {
    used_.assign(DivUp(cc_, 8), 0);
    // The root's length comes from its FAT chain.
    uint64_t root_len = 0;
    for (uint32_t c = root_, i = 0;; ++i) {
      if (i > kMaxDirBytes / cs_ + 1)
        return Corrupt("root directory: FAT chain too long or looping");
      root_len += cs_;
      CV_TRY_ASSIGN(auto next, Fat(c));
      if (next == kFatEnd) break;
      if (next < 2 || next >= cc_ + 2)
        return Corrupt("root directory: FAT chain broken at cluster " + std::to_string(c));
      c = next;
    }
    std::vector<Dir> queue = {{"", root_, root_len, false}};
    bool saw_bitmap = false, saw_upcase = false;
    while (!queue.empty()) {
      Dir dir = std::move(queue.back());
      queue.pop_back();
      std::string what = dir.path.empty() ? "root directory" : "directory '" + dir.path + "'";
      if (dir.length > kMaxDirBytes || dir.length % cs_)
        return Corrupt(what + ": bad DataLength " + std::to_string(dir.length));
      std::vector<std::pair<uint32_t, uint32_t>> runs;
      CV_TRY(Allocate(what, dir.first, dir.length, dir.no_fat_chain, &runs));
      CV_TRY_ASSIGN(auto data, ReadRuns(runs, dir.length));
      auto image_offset = [&](size_t i) {  // of byte i of the directory
        uint64_t skip = i;
        for (auto [first, count] : runs) {
          if (skip < uint64_t(count) * cs_) return ClusterOffset(first) + skip;
          skip -= uint64_t(count) * cs_;
        }
        return uint64_t(0);
      };
      std::set<std::u16string> names;
      const std::vector<uint8_t>& d = data;
      for (size_t i = 0; i < d.size();) {
        uint8_t type = d[i];
        std::string at = what + " entry at " + Hex(image_offset(i));
        if (type == 0) {  // end of directory: every later entry must say so too (spec 6.2)
          for (size_t k = i + kEntry; k < d.size(); k += kEntry) {
            if (d[k] != 0)
              return Corrupt(what + " entry at " + Hex(image_offset(k)) +
                             ": entry after the end-of-directory marker");
          }
          break;
        }
        if (!(type & 0x80)) {
          i += kEntry;
          continue;
        }  // unused or deleted
        const uint8_t* e = &d[i];
        if (type == kTypeBitmap || type == kTypeUpcase || type == kTypeLabel) {
          if (!dir.path.empty()) return Corrupt(at + ": system entry outside the root directory");
          if (type == kTypeBitmap) {
            if (saw_bitmap || (e[1] & 1))
              return Corrupt(at + ": unexpected second allocation bitmap");
            saw_bitmap = true;
            uint64_t len = Get64(e + 24);
            if (len < DivUp(cc_, 8))
              return Corrupt(at + ": allocation bitmap shorter than the cluster count");
            CV_TRY(Allocate("allocation bitmap", Get32(e + 20), len, false, &runs));
            CV_TRY_ASSIGN(auto bm, ReadRuns(runs, DivUp(cc_, 8)));
            bitmap_ = std::move(bm);
            bitmap_at_ = runs.empty() ? 0 : ClusterOffset(runs[0].first);
          } else if (type == kTypeUpcase) {
            if (saw_upcase) return Corrupt(at + ": second up-case table");
            saw_upcase = true;
            uint64_t len = Get64(e + 24);
            if (len == 0 || len > 2 * 0x20000 || len % 2)
              return Corrupt(at + ": bad up-case table length");
            std::vector<std::pair<uint32_t, uint32_t>> uruns;
            CV_TRY(Allocate("up-case table", Get32(e + 20), len, false, &uruns));
            CV_TRY_ASSIGN(auto t, ReadRuns(uruns, len));
            uint32_t sum = UpcaseChecksum(t);
            if (sum != Get32(e + 4)) {
              return Corrupt("up-case table at " + Hex(ClusterOffset(uruns[0].first)) +
                             ": checksum mismatch (stored " + Hex(Get32(e + 4)) + ", computed " +
                             Hex(sum) + ")");
            }
            auto map = LoadUpcaseTable(t);
            if (!map) return Corrupt(map.error().context);
            upcase_ = std::move(*map);
            *upcase_bytes = upcase_.bytes;
          } else {
            if (e[1] > 11) return Corrupt(at + ": volume label longer than 11 characters");
            std::u16string l;
            for (int k = 0; k < e[1]; ++k) l += char16_t(Get16(e + 2 + 2 * k));
            *label = Utf16ToUtf8(l);
          }
          i += kEntry;
          continue;
        }
        if (type & 0x40)
          return Corrupt(at + ": secondary entry " + Hex(type) + " outside an entry set");
        uint32_t secondaries = e[1];
        size_t set_bytes = (1 + secondaries) * kEntry;
        if (i + set_bytes > d.size())
          return Corrupt(at + ": entry set runs past the end of the directory");
        uint16_t sum = EntrySetChecksum({e, set_bytes});
        if (sum != Get16(e + 2)) {
          return Corrupt(at + ": entry set checksum mismatch (stored " + Hex(Get16(e + 2)) +
                         ", computed " + Hex(sum) + ")");
        }
        if (type != kTypeFile) {
          if (!(type & 0x20))
            return Corrupt(at + ": unknown critical primary entry type " + Hex(type));
          i += set_bytes;  // a benign primary (volume GUID, ...): checked, not used
          continue;
        }
        if (secondaries < 2 || secondaries > 18)
          return Corrupt(at + ": file entry with " + std::to_string(secondaries) +
                         " secondary entries");
        const uint8_t* s = e + kEntry;
        if (s[0] != kTypeStream)
          return Corrupt(at + ": file entry not followed by a stream extension entry");
        size_t name_len = s[3];
        size_t name_entries = DivUp(name_len, 15);
        if (name_len == 0 || 1 + name_entries > secondaries)
          return Corrupt(at + ": bad NameLength " + std::to_string(name_len));
        std::u16string name;
        for (size_t k = 0; k < name_entries; ++k) {
          const uint8_t* n = e + (2 + k) * kEntry;
          if (n[0] != kTypeName)
            return Corrupt(at + ": expected a file name entry, found type " + Hex(n[0]));
          for (size_t j = 0; j < 15 && name.size() < name_len; ++j)
            name += char16_t(Get16(n + 2 + 2 * j));
        }
        for (size_t k = 1 + name_entries; k < secondaries; ++k) {
          uint8_t t = e[(1 + k) * kEntry];
          if ((t & 0x80) && !(t & 0x20))
            return Corrupt(at + ": unknown critical secondary entry " + Hex(t));
        }
        std::string name8 = Utf16ToUtf8(name);
        std::string path = dir.path.empty() ? name8 : dir.path + "/" + name8;
        std::string fwhat = "'" + path + "' (entry set at " + Hex(image_offset(i)) + ")";
        if (auto why = NameProblem(name); !why.empty()) return Corrupt(fwhat + ": " + why);
        std::u16string up = upcase_.Apply(name);
        if (NameHash(up) != Get16(s + 4)) {
          return Corrupt(fwhat + ": NameHash mismatch (stored " + Hex(Get16(s + 4)) +
                         ", computed " + Hex(NameHash(up)) + ")");
        }
        if (!names.insert(up).second) return Corrupt(fwhat + ": duplicate name in its directory");
        uint8_t flags = s[1];
        uint64_t valid = Get64(s + 8), length = Get64(s + 24);
        uint32_t first = Get32(s + 20);
        if (!(flags & kFlagAllocPossible) && (first || length))
          return Corrupt(fwhat + ": has clusters but AllocationPossible is 0");
        if (valid > length) return Corrupt(fwhat + ": ValidDataLength past DataLength");
        bool is_dir = Get16(e + 4) & kAttrDirectory;
        bool contiguous = flags & kFlagNoFatChain;
        if (is_dir) {
          queue.push_back({path, first, length, contiguous});
          entries->push_back({path, true, 0, 0});
        } else {
          if (valid != length)
            return Err(ErrorKind::kInvalidArgument,
                       fwhat + ": ValidDataLength < DataLength is not supported");
          CV_TRY(Allocate(fwhat, first, length, contiguous, &runs));
          if (runs.size() > 1)
            return Err(ErrorKind::kInvalidArgument, fwhat + ": fragmented files are not supported");
          entries->push_back(
              {path, false, length, runs.empty() ? 0 : ClusterOffset(runs[0].first)});
        }
        i += set_bytes;
      }
    }
    if (!saw_bitmap) return Corrupt("root directory: no allocation bitmap entry");
    if (!saw_upcase) return Corrupt("root directory: no up-case table entry");
    std::sort(entries->begin(), entries->end(), [](const ImageEntry& a, const ImageEntry& b) {
      return std::lexicographical_compare(
          a.path.begin(), a.path.end(), b.path.begin(), b.path.end(),
          [](char x, char y) {  // '/' first: component order
            uint8_t ux = x == '/' ? 0 : uint8_t(x), uy = y == '/' ? 0 : uint8_t(y);
            return ux < uy;
          });
    });
    return {};
  }

  Status CheckBitmap() {
    for (uint32_t c = 0; c < cc_; ++c) {
      bool stored = bitmap_[c / 8] >> (c % 8) & 1;
      bool used = used_[c / 8] >> (c % 8) & 1;
      if (stored != used) {
        return Corrupt(
            "allocation bitmap at " + Hex(bitmap_at_ + c / 8) + ": cluster " +
            std::to_string(c + 2) +
            (used ? " is in use but marked free" : " is marked used but nothing uses it"));
      }
    }
    return {};
  }

  static constexpr uint64_t kFatBlock = 64 << 10;
  int fd_;
  uint64_t image_sectors_ = 0, first_usable_ = 0, last_usable_ = 0, part_first_ = 0,
           part_sectors_ = 0;
  uint32_t entry_size_ = 128;
  uint64_t vol_ = 0;
  uint32_t ss_ = 512, cs_ = 0, fat_off_ = 0, fat_len_ = 0, heap_off_ = 0, cc_ = 0, root_ = 0;
  std::vector<uint8_t> fat_block_;
  uint64_t fat_block_at_ = 0;
  std::vector<uint8_t> used_, bitmap_;
  uint64_t bitmap_at_ = 0;
  UpcaseMap upcase_;
};

}  // namespace

Result<Image> Image::Open(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "open image " + path);
  Image img;
  img.fd_ = fd;
  Parser p(fd);
  CV_TRY(p.Run(&img.entries_, &img.label_, &img.upcase_table_));
  return img;
}

Image::Image(Image&& o) noexcept
    : fd_(o.fd_),
      entries_(std::move(o.entries_)),
      label_(std::move(o.label_)),
      upcase_table_(std::move(o.upcase_table_)) {
  o.fd_ = -1;
}
Image& Image::operator=(Image&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
    entries_ = std::move(o.entries_);
    label_ = std::move(o.label_);
    upcase_table_ = std::move(o.upcase_table_);
  }
  return *this;
}
Image::~Image() {
  if (fd_ >= 0) close(fd_);
}

Status Image::Read(const ImageEntry& file, uint64_t offset, std::span<uint8_t> out) const {
  if (file.is_dir || offset > file.size || out.size() > file.size - offset) {
    return Err(ErrorKind::kInvalidArgument, "read past the end of '" + file.path + "'");
  }
  Parser p(fd_);
  return p.ReadAt(file.offset + offset, out);
}

Result<std::string> Image::ReadAll(const ImageEntry& file) const {
  std::string s(file.size, '\0');
  CV_TRY(Read(file, 0, {reinterpret_cast<uint8_t*>(s.data()), s.size()}));
  return s;
}

}  // namespace cv::courier
