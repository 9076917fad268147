// Layout planning: the directory tree, the volume geometry and where every cluster goes.
#include <algorithm>
#include <map>

#include "courier/format.h"

namespace cv::courier {

using namespace fmt;

namespace {

Status BuildTree(Layout::Impl& L) {
  L.nodes.assign(1, Node{});
  L.nodes[0].is_dir = true;
  std::map<std::pair<uint32_t, std::u16string>, uint32_t> by_name;  // (parent, UPCASED)
  auto add_path = [&](const std::string& path, bool is_dir, size_t file_index) -> Status {
    if (path.empty()) return Err(ErrorKind::kInvalidArgument, "empty path");
    uint32_t parent = 0;
    size_t pos = 0;
    while (true) {
      size_t slash = path.find('/', pos);
      bool last = slash == std::string::npos;
      std::string_view comp =
          std::string_view(path).substr(pos, last ? std::string::npos : slash - pos);
      std::u16string name;
      if (!Utf8ToUtf16(comp, &name)) {
        return Err(ErrorKind::kInvalidArgument, "path '" + path + "': not valid UTF-8");
      }
      if (auto why = NameProblem(name); !why.empty()) {
        return Err(ErrorKind::kInvalidArgument, "path '" + path + "': " + why);
      }
      bool want_dir = !last || is_dir;
      std::u16string upcased = L.upcase.Apply(name);
      auto key = std::make_pair(parent, upcased);
      auto it = by_name.find(key);
      if (it != by_name.end()) {
        Node& n = L.nodes[it->second];
        if (!want_dir || !n.is_dir) {
          return Err(ErrorKind::kInvalidArgument, "path '" + path +
                                                      "' collides with another file or directory "
                                                      "(exFAT names are case-insensitive)");
        }
        parent = it->second;
      } else {
        Node n;
        n.name = name;
        n.name_hash = NameHash(upcased);
        n.is_dir = want_dir;
        n.parent = parent;
        n.file_index = file_index;
        if (!want_dir) n.data_length = L.files[file_index].size;
        uint32_t id = uint32_t(L.nodes.size());
        L.nodes.push_back(std::move(n));
        L.nodes[parent].children.push_back(id);
        by_name.emplace(std::move(key), id);
        parent = id;
      }
      if (last) return {};
      pos = slash + 1;
    }
  };
  for (size_t i = 0; i < L.files.size(); ++i) CV_TRY(add_path(L.files[i].path, false, i));
  for (const auto& d : L.options.empty_dirs) CV_TRY(add_path(d, true, 0));
  for (auto& n : L.nodes) {
    std::sort(n.children.begin(), n.children.end(),
              [&](uint32_t a, uint32_t b) { return L.nodes[a].name < L.nodes[b].name; });
  }
  // Preorder: directories first-come, files in path order.
  std::vector<uint32_t> stack = {0};
  while (!stack.empty()) {
    uint32_t id = stack.back();
    stack.pop_back();
    Node& n = L.nodes[id];
    if (!n.is_dir) {
      L.files_in_order.push_back(id);
      continue;
    }
    L.dirs_in_order.push_back(id);
    n.entry_bytes = id == 0 ? (L.label.empty() ? 2 : 3) * kEntry : 0;
    for (uint32_t c : n.children) n.entry_bytes += EntrySetBytes(L.nodes[c].name.size());
    if (n.entry_bytes > kMaxDirBytes) {
      return Err(ErrorKind::kInvalidArgument, "a directory has too many entries for exFAT");
    }
    for (auto it = n.children.rbegin(); it != n.children.rend(); ++it) stack.push_back(*it);
  }
  return {};
}

// Clusters for everything but the allocation bitmap.
uint64_t ContentClusters(const Layout::Impl& L, uint32_t cluster_bytes) {
  uint64_t n = DivUp(L.upcase.bytes.size(), cluster_bytes);
  for (uint32_t d : L.dirs_in_order) {
    n += std::max<uint64_t>(1, DivUp(L.nodes[d].entry_bytes, cluster_bytes));
  }
  for (uint32_t f : L.files_in_order) n += DivUp(L.nodes[f].data_length, cluster_bytes);
  return n;
}

void DeriveIds(Layout::Impl& L) {
  Sha256 h;
  h.Update(std::string_view("chunkvault courier image v1"));
  h.Update(L.options.label);
  h.Update(std::to_string(L.options.unix_time) + "/" + std::to_string(L.image_sectors));
  for (const auto& f : L.files) h.Update(f.path + "\n" + std::to_string(f.size) + "\n");
  auto d = h.Final();
  std::copy(d.begin(), d.begin() + 16, L.disk_guid.begin());
  std::copy(d.begin() + 16, d.end(), L.part_guid.begin());
  for (auto* g : {&L.disk_guid, &L.part_guid}) {
    (*g)[7] = uint8_t(((*g)[7] & 0x0F) | 0x40);  // version 4 (byte 7: high byte of Data3)
    (*g)[8] = uint8_t(((*g)[8] & 0x3F) | 0x80);  // RFC 4122 variant
  }
  L.serial = Get32(&L.disk_guid[0]) ^ Get32(&L.part_guid[12]);
}

}  // namespace

Result<Layout> Layout::Plan(std::vector<FileSpec> files, LayoutOptions options) {
  auto impl = std::make_shared<Impl>();
  Impl& L = *impl;
  L.files = std::move(files);
  L.options = std::move(options);
  if (!Utf8ToUtf16(L.options.label, &L.label) || L.label.size() > 11) {
    return Err(ErrorKind::kInvalidArgument,
               "volume label must be UTF-8 of at most 11 UTF-16 units");
  }
  for (char16_t c : L.label) {
    if (c < 0x20) return Err(ErrorKind::kInvalidArgument, "control character in volume label");
  }
  uint32_t cb = L.options.cluster_bytes;
  if (cb != 0 && (cb < kSector || cb > (32u << 20) || (cb & (cb - 1)) != 0)) {
    return Err(ErrorKind::kInvalidArgument, "cluster size must be a power of two, 512 B to 32 MiB");
  }
  if (L.options.upcase_table.empty()) {
    L.upcase = RecommendedUpcase();
  } else {
    auto t = LoadUpcaseTable(L.options.upcase_table);
    if (!t) return Err(ErrorKind::kInvalidArgument, t.error().context);
    L.upcase = std::move(*t);
  }
  CV_TRY(BuildTree(L));

  uint64_t overhead_sectors = 2 * kAlignSectors;  // GPT + alignment before, backup GPT after
  if (L.options.image_bytes != 0) {
    if (L.options.image_bytes % kSector != 0) {
      return Err(ErrorKind::kInvalidArgument, "image size must be a multiple of 512 bytes");
    }
    L.image_sectors = L.options.image_bytes / kSector;
    if (L.image_sectors < overhead_sectors + 2 * kAlignSectors) {
      return Err(ErrorKind::kNoSpace, "image size below the 4 MiB minimum");
    }
    uint64_t part =
        (L.image_sectors - kAlignSectors - kGptArraySectors - 1) / kAlignSectors * kAlignSectors;
    uint32_t shift = cb ? std::countr_zero(cb / kSector) : DefaultSpcShift(part * kSector);
    CV_TRY_ASSIGN(auto g, ComputeGeometry(part, shift));
    L.geo = g;
  } else {
    uint64_t estimate = 0;
    for (const auto& f : L.files) estimate += f.size;
    uint32_t shift =
        cb ? std::countr_zero(cb / kSector) : DefaultSpcShift(estimate + estimate / 50);
    uint32_t cbytes = kSector << shift;
    uint64_t need = ContentClusters(L, cbytes);
    // Slack: 1% plus 1 MiB, so the customer can add a note without the drive being full.
    uint64_t want = need + need / 100 + DivUp(kMiB, cbytes) + 1;
    uint64_t spc = uint64_t(1) << shift;
    uint64_t vol =
        RoundUp(kAlignSectors + DivUp((want + 2) * 4, kSector) + want * spc, kAlignSectors) +
        kAlignSectors;
    while (true) {
      auto g = ComputeGeometry(vol, shift);
      if (g && g->cluster_count >= need + g->bitmap_clusters()) {
        L.geo = *g;
        break;
      }
      vol += kAlignSectors;
    }
    L.image_sectors = vol + overhead_sectors;
  }
  L.part_first_lba = kAlignSectors;
  L.part_sectors = L.geo.volume_sectors;

  uint32_t cbytes = L.geo.cluster_bytes();
  uint64_t need = ContentClusters(L, cbytes) + L.geo.bitmap_clusters();
  if (need > L.geo.cluster_count) {
    return Err(ErrorKind::kNoSpace, "content needs " + std::to_string(need * cbytes) +
                                        " bytes of clusters, the image has " +
                                        std::to_string(uint64_t(L.geo.cluster_count) * cbytes));
  }
  uint32_t next = kFirstCluster;
  L.bitmap_cluster = next;
  next += L.geo.bitmap_clusters();
  L.upcase_cluster = next;
  L.upcase_clusters = uint32_t(DivUp(L.upcase.bytes.size(), cbytes));
  next += L.upcase_clusters;
  for (uint32_t d : L.dirs_in_order) {
    Node& n = L.nodes[d];
    n.clusters = uint32_t(std::max<uint64_t>(1, DivUp(n.entry_bytes, cbytes)));
    n.first_cluster = next;
    n.data_length = uint64_t(n.clusters) * cbytes;
    next += n.clusters;
  }
  L.system_end_cluster = next;
  L.node_of_file.assign(L.files.size(), 0);
  for (uint32_t f : L.files_in_order) {
    Node& n = L.nodes[f];
    n.clusters = uint32_t(DivUp(n.data_length, cbytes));
    n.first_cluster = n.clusters ? next : 0;
    L.node_of_file[n.file_index] = f;
    next += n.clusters;
  }
  L.used_end_cluster = next;
  L.timestamp = DosTimestamp(L.options.unix_time);
  DeriveIds(L);
  Layout out;
  out.impl_ = std::move(impl);
  return out;
}

uint64_t AllocatedBytesBound(const ContentSummary& c, uint64_t image_bytes) {
  // The cluster size and the volume's cluster count as Plan picks them.
  uint64_t part_sectors = 0;
  uint32_t shift;
  if (image_bytes != 0) {
    const uint64_t sectors = image_bytes / kSector;
    part_sectors =
        sectors > kAlignSectors + kGptArraySectors + 1
            ? (sectors - kAlignSectors - kGptArraySectors - 1) / kAlignSectors * kAlignSectors
            : 0;
    shift = DefaultSpcShift(part_sectors * kSector);
  } else {
    shift = DefaultSpcShift(c.file_bytes + c.file_bytes / 50);
  }
  const uint64_t cb = uint64_t(kSector) << shift;
  // Clusters in use (ContentClusters' rules, every name at its longest): the up-case table;
  // each directory at least one cluster, and all their entries on top; each file rounded up
  // to whole clusters.
  const uint64_t entry_bytes =
      kRootFixedBytes + (c.files + c.dirs) * EntrySetBytes(c.max_name_units);
  const uint64_t system =
      DivUp(RecommendedUpcase().bytes.size(), cb) + (c.dirs + 1) + DivUp(entry_bytes, cb);
  const uint64_t files = DivUp(c.file_bytes, cb) + c.files;
  // The volume's clusters size the bitmap (1 bit each). A sized image has what its partition
  // holds; else Plan adds 1% and 1 MiB of slack, and grows the volume 1 MiB at a time until
  // the bitmap fits too.
  const uint64_t need = system + files;
  const uint64_t volume_clusters =
      image_bytes != 0 ? part_sectors * kSector / cb
                       : need + need / 100 + 2 * DivUp(kMiB, cb) + 2 + DivUp(DivUp(need, 8), cb);
  const uint64_t bitmap = DivUp(DivUp(volume_clusters, 8), cb);
  // What WriteImage writes: its data, and every run of zeros shorter than kHoleMinBytes
  // between them (longer runs are holes). From the start: the MBR and primary GPT, then
  // almost 1 MiB of zeros to the partition (a hole); the two boot regions, then almost 1 MiB
  // of zeros to the FAT (a hole); the FAT's entries in use (two, then the chains of the
  // bitmap, the up-case table and the directories) and its zero tail, then zeros to the
  // cluster heap (each written only if short); the bitmap and every cluster in use; zeros to
  // the backup GPT (written only if short), and the backup GPT.
  static_assert(kMiB - (2 + kGptArraySectors) * kSector >= kHoleMinBytes);
  static_assert(kMiB - 2 * kBootRegionSectors * kSector >= kHoleMinBytes);
  uint64_t bytes = (2 + kGptArraySectors) * kSector + 2 * kBootRegionSectors * kSector;
  bytes += 4 * (2 + bitmap + system) + 2 * kHoleMinBytes;
  bytes += (bitmap + need) * cb;
  bytes += kHoleMinBytes + (1 + kGptArraySectors) * kSector;
  // The file system's own: a block (64 KiB at most) at each side of every hole, and the
  // file's extent tree or block map (12 bytes per 4 KiB block at worst).
  constexpr uint64_t kHoles = 6, kMaxBlock = 64 << 10;  // the gaps above, the bitmap's tail
  bytes += kHoles * 2 * kMaxBlock + bytes / 256;
  return bytes;
}

uint64_t Layout::image_bytes() const { return impl_->image_sectors * kSector; }
uint64_t Layout::partition_offset() const { return impl_->part_first_lba * kSector; }
uint64_t Layout::partition_bytes() const { return impl_->part_sectors * kSector; }
uint32_t Layout::cluster_bytes() const { return impl_->geo.cluster_bytes(); }
const std::vector<FileSpec>& Layout::files() const { return impl_->files; }

uint64_t Layout::file_offset(size_t file_index) const {
  const Node& n = impl_->nodes[impl_->node_of_file.at(file_index)];
  return n.first_cluster ? impl_->cluster_offset(n.first_cluster) : 0;
}

std::vector<size_t> Layout::write_order() const {
  std::vector<size_t> out;
  for (uint32_t f : impl_->files_in_order) out.push_back(impl_->nodes[f].file_index);
  return out;
}

uint64_t Layout::free_bytes() const {
  return uint64_t(impl_->geo.cluster_count - (impl_->used_end_cluster - kFirstCluster)) *
         impl_->geo.cluster_bytes();
}

}  // namespace cv::courier
