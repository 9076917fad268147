// The streaming image writer: one pass, increasing offsets, one fixed buffer.
#include <cassert>
#include <memory>

#include "courier/format.h"

namespace cv::courier {

using namespace fmt;

namespace {

// Collects small pieces into one kWriteBufferBytes buffer; zero runs of kHoleMinBytes or more
// go to the sink as WriteZeros / Skip so that holes stay holes.
class Emitter {
 public:
  explicit Emitter(Sink& sink) : sink_(sink), buf_(new uint8_t[kWriteBufferBytes]) {}

  uint64_t pos() const { return pos_; }

  Status Emit(std::span<const uint8_t> data) {
    while (!data.empty()) {
      if (used_ == kWriteBufferBytes) CV_TRY(Flush());
      size_t n = std::min(data.size(), kWriteBufferBytes - used_);
      memcpy(buf_.get() + used_, data.data(), n);
      used_ += n;
      pos_ += n;
      data = data.subspan(n);
    }
    return {};
  }

  // must_be_zero=false: free space whose content does not matter.
  Status Zeros(uint64_t n, bool must_be_zero) {
    if (n < kHoleMinBytes) {
      while (n > 0) {
        if (used_ == kWriteBufferBytes) CV_TRY(Flush());
        size_t k = std::min<uint64_t>(n, kWriteBufferBytes - used_);
        memset(buf_.get() + used_, 0, k);
        used_ += k;
        pos_ += k;
        n -= k;
      }
      return {};
    }
    CV_TRY(Flush());
    pos_ += n;
    return must_be_zero ? sink_.WriteZeros(n) : sink_.Skip(n);
  }
  Status ZerosTo(uint64_t offset, bool must_be_zero) {
    assert(offset >= pos_);
    return Zeros(offset - pos_, must_be_zero);
  }

  // Space for the caller to fill directly, then Commit.
  Result<std::span<uint8_t>> Space() {
    if (used_ == kWriteBufferBytes) CV_TRY(Flush());
    return std::span<uint8_t>(buf_.get() + used_, kWriteBufferBytes - used_);
  }
  void Commit(size_t n) {
    used_ += n;
    pos_ += n;
  }

  Status Flush() {
    if (used_ == 0) return {};
    size_t n = used_;
    used_ = 0;
    return sink_.Hand(buf_, n);  // a pipelined sink keeps the buffer and gives another
  }

 private:
  Sink& sink_;
  std::unique_ptr<uint8_t[]> buf_;
  size_t used_ = 0;
  uint64_t pos_ = 0;
};

std::vector<uint8_t> ProtectiveMbr(const Layout::Impl& L) {
  std::vector<uint8_t> s(kSector, 0);
  uint8_t* e = &s[446];
  e[1] = 0x00, e[2] = 0x02, e[3] = 0x00;  // CHS of LBA 1
  e[4] = 0xEE;
  e[5] = e[6] = e[7] = 0xFF;
  Put32(e + 8, 1);
  Put32(e + 12, uint32_t(std::min<uint64_t>(L.image_sectors - 1, 0xFFFFFFFFu)));
  s[510] = 0x55, s[511] = 0xAA;
  return s;
}

std::vector<uint8_t> GptEntryArray(const Layout::Impl& L) {
  std::vector<uint8_t> a(kGptEntries * kGptEntryBytes, 0);
  uint8_t* e = a.data();
  memcpy(e, kBasicDataType.data(), 16);
  memcpy(e + 16, L.part_guid.data(), 16);
  Put64(e + 32, L.part_first_lba);
  Put64(e + 40, L.part_first_lba + L.part_sectors - 1);
  std::u16string_view name = u"chunkvault courier";
  for (size_t i = 0; i < name.size(); ++i) Put16(e + 56 + 2 * i, name[i]);
  return a;
}

std::vector<uint8_t> GptHeader(const Layout::Impl& L, bool primary, uint32_t array_crc) {
  std::vector<uint8_t> h(kSector, 0);
  uint64_t last = L.image_sectors - 1;
  memcpy(h.data(), "EFI PART", 8);
  Put32(&h[8], 0x00010000);
  Put32(&h[12], 92);
  Put64(&h[24], primary ? 1 : last);
  Put64(&h[32], primary ? last : 1);
  Put64(&h[40], 2 + kGptArraySectors);
  Put64(&h[48], last - 1 - kGptArraySectors);
  memcpy(&h[56], L.disk_guid.data(), 16);
  Put64(&h[72], primary ? 2 : last - kGptArraySectors);
  Put32(&h[80], kGptEntries);
  Put32(&h[84], kGptEntryBytes);
  Put32(&h[88], array_crc);
  Put32(&h[16], Crc32({h.data(), 92}));
  return h;
}

std::vector<uint8_t> BootRegion(const Layout::Impl& L) {
  std::vector<uint8_t> r(kBootRegionSectors * kSector, 0);
  uint8_t* b = r.data();
  b[0] = 0xEB, b[1] = 0x76, b[2] = 0x90;
  memcpy(b + 3, "EXFAT   ", 8);
  Put64(b + 64, L.part_first_lba);
  Put64(b + 72, L.geo.volume_sectors);
  Put32(b + 80, L.geo.fat_offset);
  Put32(b + 84, L.geo.fat_length);
  Put32(b + 88, L.geo.heap_offset);
  Put32(b + 92, L.geo.cluster_count);
  Put32(b + 96, L.nodes[0].first_cluster);
  Put32(b + 100, L.serial);
  Put16(b + 104, 0x0100);  // revision 1.00
  Put16(b + 106, 0);       // VolumeFlags: clean, first FAT active
  b[108] = 9;              // 512-byte sectors
  b[109] = uint8_t(L.geo.spc_shift);
  b[110] = 1;  // one FAT
  b[111] = 0x80;
  b[112] = uint8_t((uint64_t(L.used_end_cluster - kFirstCluster) * 100) / L.geo.cluster_count);
  memset(b + 120, 0xF4, 390);  // no boot code: hlt
  b[510] = 0x55, b[511] = 0xAA;
  for (uint32_t s = 1; s <= 8; ++s) {  // extended boot sectors: only the signature
    Put32(b + s * kSector + kSector - 4, 0xAA550000u);
  }
  uint32_t sum = BootChecksum({b, 11 * kSector});
  for (uint32_t i = 0; i < kSector / 4; ++i) Put32(b + 11 * kSector + 4 * i, sum);
  return r;
}

Status EmitFat(const Layout::Impl& L, Emitter& out) {
  uint8_t e[4];
  auto put = [&](uint32_t v) {
    Put32(e, v);
    return out.Emit(e);
  };
  CV_TRY(put(kFatMedia));
  CV_TRY(put(kFatEnd));
  auto chain = [&](uint32_t first, uint32_t count) -> Status {
    for (uint32_t c = first; c < first + count; ++c)
      CV_TRY(put(c + 1 == first + count ? kFatEnd : c + 1));
    return {};
  };
  CV_TRY(chain(L.bitmap_cluster, L.geo.bitmap_clusters()));
  CV_TRY(chain(L.upcase_cluster, L.upcase_clusters));
  for (uint32_t d : L.dirs_in_order) CV_TRY(chain(L.nodes[d].first_cluster, L.nodes[d].clusters));
  // Files are NoFatChain: their FAT entries are not used and stay zero, like free clusters.
  uint64_t fat_end = (L.part_first_lba + L.geo.fat_offset + L.geo.fat_length) * uint64_t(kSector);
  return out.ZerosTo(fat_end, true);
}

Status EmitBitmap(const Layout::Impl& L, Emitter& out) {
  uint64_t used = L.used_end_cluster - kFirstCluster;
  std::vector<uint8_t> ones(std::min<uint64_t>(used / 8, 64 << 10), 0xFF);
  for (uint64_t left = used / 8; left > 0;) {
    size_t n = std::min<uint64_t>(left, ones.size());
    CV_TRY(out.Emit({ones.data(), n}));
    left -= n;
  }
  if (used % 8) {
    uint8_t b = uint8_t((1u << (used % 8)) - 1);
    CV_TRY(out.Emit({&b, 1}));
  }
  return out.ZerosTo(L.cluster_offset(L.upcase_cluster), true);
}

Status EmitDirectory(const Layout::Impl& L, const Node& dir, Emitter& out) {
  uint8_t e[19 * kEntry];
  if (&dir == &L.nodes[0]) {
    memset(e, 0, sizeof e);
    e[0] = kTypeBitmap;
    Put32(e + 20, L.bitmap_cluster);
    Put64(e + 24, DivUp(L.geo.cluster_count, 8));
    CV_TRY(out.Emit({e, kEntry}));
    memset(e, 0, kEntry);
    e[0] = kTypeUpcase;
    Put32(e + 4, UpcaseChecksum(L.upcase.bytes));
    Put32(e + 20, L.upcase_cluster);
    Put64(e + 24, L.upcase.bytes.size());
    CV_TRY(out.Emit({e, kEntry}));
    if (!L.label.empty()) {
      memset(e, 0, kEntry);
      e[0] = kTypeLabel;
      e[1] = uint8_t(L.label.size());
      for (size_t i = 0; i < L.label.size(); ++i) Put16(e + 2 + 2 * i, L.label[i]);
      CV_TRY(out.Emit({e, kEntry}));
    }
  }
  for (uint32_t c : dir.children) {
    const Node& n = L.nodes[c];
    EncodeEntrySet(n.name, n.name_hash, n.is_dir, n.first_cluster, n.data_length, !n.is_dir,
                   L.timestamp, e);
    CV_TRY(out.Emit({e, EntrySetBytes(n.name.size())}));
  }
  // Unused entries must read as end-of-directory (type 0).
  return out.ZerosTo(L.cluster_offset(dir.first_cluster) + dir.data_length, true);
}

Status EmitFile(const Layout::Impl& L, const Node& n, const FillFn& fill, Emitter& out) {
  for (uint64_t off = 0; off < n.data_length;) {
    CV_TRY_ASSIGN(auto space, out.Space());
    size_t k = std::min<uint64_t>(space.size(), n.data_length - off);
    CV_TRY(fill(n.file_index, off, space.first(k)));
    out.Commit(k);
    off += k;
  }
  // The rest of the last cluster lies past ValidDataLength: zeros, but never read.
  return out.ZerosTo(
      L.cluster_offset(n.first_cluster) + uint64_t(n.clusters) * L.geo.cluster_bytes(), false);
}

}  // namespace

Status WriteImage(const Layout& layout, const FillFn& fill, Sink& sink) {
  const Layout::Impl& L = LayoutAccess::Get(layout);
  Emitter out(sink);
  auto array = GptEntryArray(L);
  uint32_t array_crc = Crc32(array);
  const uint64_t part = L.part_first_lba * kSector;

  CV_TRY(out.Emit(ProtectiveMbr(L)));
  CV_TRY(out.Emit(GptHeader(L, true, array_crc)));
  CV_TRY(out.Emit(array));
  CV_TRY(out.ZerosTo(part, false));
  auto boot = BootRegion(L);
  CV_TRY(out.Emit(boot));  // main
  CV_TRY(out.Emit(boot));  // backup
  CV_TRY(out.ZerosTo(part + uint64_t(L.geo.fat_offset) * kSector, false));
  CV_TRY(EmitFat(L, out));
  CV_TRY(out.ZerosTo(L.cluster_offset(L.bitmap_cluster), false));
  CV_TRY(EmitBitmap(L, out));
  CV_TRY(out.Emit(L.upcase.bytes));
  CV_TRY(out.ZerosTo(L.cluster_offset(L.upcase_cluster + L.upcase_clusters), true));
  for (uint32_t d : L.dirs_in_order) CV_TRY(EmitDirectory(L, L.nodes[d], out));
  for (uint32_t f : L.files_in_order) {
    if (L.nodes[f].clusters) CV_TRY(EmitFile(L, L.nodes[f], fill, out));
  }
  assert(out.pos() == L.cluster_offset(L.used_end_cluster));
  uint64_t backup_array = (L.image_sectors - 1 - kGptArraySectors) * kSector;
  CV_TRY(out.ZerosTo(backup_array, false));
  CV_TRY(out.Emit(array));
  CV_TRY(out.Emit(GptHeader(L, false, array_crc)));
  assert(out.pos() == L.image_sectors * kSector);
  CV_TRY(out.Flush());
  return sink.Finish();
}

}  // namespace cv::courier
