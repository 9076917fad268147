// Courier images checked by the real tools: fsck.exfat (exfatprogs), sfdisk (fdisk),
// losetup + mount.exfat-fuse, and our own reader. No mocks.
#include "courier/courier.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <new>
#include <thread>

#include "common/test_temp_dir.h"
#include "courier/format.h"

// ---- allocation accounting: live heap bytes and their peak, for the streaming test ----
namespace {
std::atomic<int64_t> g_live{0}, g_peak{0};
void Account(int64_t d) {
  int64_t now = g_live.fetch_add(d) + d;
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}
}  // namespace
void* operator new(size_t n) {
  void* p = malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  Account(int64_t(malloc_usable_size(p)));
  return p;
}
void* operator new[](size_t n) { return operator new(n); }
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  void* p = malloc(n ? n : 1);
  if (p) Account(int64_t(malloc_usable_size(p)));
  return p;
}
void* operator new[](size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p, const std::nothrow_t&) noexcept { operator delete(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { operator delete(p); }
void operator delete(void* p) noexcept {
  if (!p) return;
  Account(-int64_t(malloc_usable_size(p)));
  free(p);
}
void operator delete[](void* p) noexcept { operator delete(p); }
void operator delete(void* p, size_t) noexcept { operator delete(p); }
void operator delete[](void* p, size_t) noexcept { operator delete(p); }

namespace cv::courier {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kTime = 1764000000;  // 2025-11-24

struct RunResult {
  int code = -1;
  std::string out;
};
// Runs a shell command with a time bound; stdout and stderr together.
RunResult Shell(const std::string& cmd, int timeout_s = 120) {
  RunResult r;
  std::string quoted;
  for (char c : cmd) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  std::string full = "timeout -k 5 " + std::to_string(timeout_s) + " sh -c '" + quoted + "' 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// Deterministic file content: a function of (file index, byte offset).
uint8_t ContentByte(size_t file, uint64_t off) {
  uint64_t x = (uint64_t(file) << 40) ^ (off >> 3) ^ 0x9E3779B97F4A7C15ull;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return uint8_t(x >> (8 * (off & 7)));
}
Status GenFill(size_t file, uint64_t off, std::span<uint8_t> out) {
  for (size_t i = 0; i < out.size(); ++i) out[i] = ContentByte(file, off + i);
  return {};
}
std::string Expected(size_t file, uint64_t size) {
  std::string s(size, '\0');
  for (uint64_t i = 0; i < size; ++i) s[i] = char(ContentByte(file, i));
  return s;
}

Result<Layout> WriteTo(const std::string& path, std::vector<FileSpec> files, LayoutOptions opts) {
  auto layout = Layout::Plan(std::move(files), std::move(opts));
  if (!layout) return layout;
  CV_TRY_ASSIGN(auto sink, FdSink::Open(path, false));
  CV_TRY(WriteImage(*layout, GenFill, *sink));
  return layout;
}

// A loop device over a byte range of a file, detached when it goes out of scope.
class Loop {
 public:
  Loop(const std::string& file, uint64_t offset, uint64_t size) {
    auto r = Shell("losetup -o " + std::to_string(offset) + " --sizelimit " + std::to_string(size) +
                   " --find --show " + file);
    if (r.code == 0 && r.out.rfind("/dev/loop", 0) == 0)
      dev_ = r.out.substr(0, r.out.find('\n'));
    else
      error_ = r.out;
  }
  ~Loop() {
    if (!dev_.empty()) Shell("losetup -d " + dev_);
  }
  const std::string& dev() const { return dev_; }
  const std::string& error() const { return error_; }

 private:
  std::string dev_, error_;
};

bool HaveLoop() { return access("/dev/loop-control", R_OK | W_OK) == 0 && geteuid() == 0; }

// fsck.exfat -n on the partition: through a loop device if there is one, else on a copy.
void ExpectFsckClean(const std::string& image, const Layout& layout, const TempDir& tmp,
                     bool force_copy = false) {
  std::string target;
  std::unique_ptr<Loop> loop;
  if (HaveLoop() && !force_copy) {
    loop = std::make_unique<Loop>(image, layout.partition_offset(), layout.partition_bytes());
    if (!loop->dev().empty()) target = loop->dev();
  }
  if (target.empty()) {
    target = tmp / "partition.img";
    auto r =
        Shell("dd if=" + image + " of=" + target + " bs=1M iflag=skip_bytes,count_bytes skip=" +
              std::to_string(layout.partition_offset()) +
              " count=" + std::to_string(layout.partition_bytes()) + " conv=sparse status=none");
    ASSERT_EQ(r.code, 0) << r.out;
  }
  auto r = Shell("fsck.exfat -n " + target);
  EXPECT_EQ(r.code, 0) << "fsck.exfat -n " << target << ":\n" << r.out;
  EXPECT_NE(r.out.find(": clean."), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("ERROR"), std::string::npos) << r.out;
  if (getenv("COURIER_TEST_VERBOSE")) std::cerr << "fsck.exfat -n " << target << ": " << r.out;
  EXPECT_EQ(r.out.find("corrupt"), std::string::npos) << r.out;
}

void ExpectGptValid(const std::string& image, const Layout& layout) {
  auto v = Shell("sfdisk --verify " + image);
  EXPECT_EQ(v.code, 0) << v.out;
  EXPECT_NE(v.out.find("No errors detected"), std::string::npos) << v.out;
  EXPECT_EQ(v.out.find("arning"), std::string::npos) << v.out;
  auto j = Shell("sfdisk -J " + image);
  ASSERT_EQ(j.code, 0) << j.out;
  EXPECT_NE(j.out.find("\"label\": \"gpt\""), std::string::npos) << j.out;
  EXPECT_NE(j.out.find("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"), std::string::npos) << j.out;
  EXPECT_NE(j.out.find("\"start\": " + std::to_string(layout.partition_offset() / 512)),
            std::string::npos)
      << j.out;
  EXPECT_NE(j.out.find("\"size\": " + std::to_string(layout.partition_bytes() / 512)),
            std::string::npos)
      << j.out;
}

// Our reader returns exactly the files (and directories) written, with their bytes.
void ExpectReaderMatches(const std::string& image, const Layout& layout,
                         const std::vector<std::string>& dirs) {
  auto img = Image::Open(image);
  ASSERT_TRUE(img.has_value()) << img.error().ToString();
  std::map<std::string, size_t> want;
  for (size_t i = 0; i < layout.files().size(); ++i) want[layout.files()[i].path] = i;
  std::set<std::string> want_dirs(dirs.begin(), dirs.end());
  size_t nfiles = 0;
  for (const auto& e : img->entries()) {
    if (e.is_dir) {
      EXPECT_TRUE(want_dirs.erase(e.path)) << "unexpected directory " << e.path;
      continue;
    }
    ++nfiles;
    auto it = want.find(e.path);
    ASSERT_NE(it, want.end()) << "unexpected file " << e.path;
    ASSERT_EQ(e.size, layout.files()[it->second].size) << e.path;
    EXPECT_EQ(e.offset, layout.file_offset(it->second)) << e.path;
    if (e.size <= (8 << 20)) {
      auto bytes = img->ReadAll(e);
      ASSERT_TRUE(bytes.has_value()) << bytes.error().ToString();
      EXPECT_TRUE(*bytes == Expected(it->second, e.size)) << "content differs: " << e.path;
    }
  }
  EXPECT_EQ(nfiles, want.size());
  EXPECT_TRUE(want_dirs.empty()) << "missing directory "
                                 << (want_dirs.empty() ? "" : *want_dirs.begin());
}

// Every directory implied by the files and the empty dirs.
std::vector<std::string> DirsOf(const std::vector<FileSpec>& files,
                                const std::vector<std::string>& empty = {}) {
  std::set<std::string> d(empty.begin(), empty.end());
  for (const auto& f : files) {
    for (size_t p = f.path.find('/'); p != std::string::npos; p = f.path.find('/', p + 1))
      d.insert(f.path.substr(0, p));
  }
  for (const auto& e : empty) {
    for (size_t p = e.find('/'); p != std::string::npos; p = e.find('/', p + 1))
      d.insert(e.substr(0, p));
  }
  return {d.begin(), d.end()};
}

void CheckImage(std::vector<FileSpec> files, LayoutOptions opts = {}) {
  TempDir tmp{"courier_test"};
  std::string image = tmp / "drive.img";
  opts.unix_time = kTime;
  auto dirs = DirsOf(files, opts.empty_dirs);
  auto layout = WriteTo(image, files, opts);
  ASSERT_TRUE(layout.has_value()) << layout.error().ToString();
  struct stat st;
  ASSERT_EQ(stat(image.c_str(), &st), 0);
  EXPECT_EQ(uint64_t(st.st_size), layout->image_bytes());
  ExpectGptValid(image, *layout);
  ExpectFsckClean(image, *layout, tmp);
  ExpectReaderMatches(image, *layout, dirs);
}

std::string Hex64(int i) {
  char b[17];
  snprintf(b, sizeof b, "%016x", i * 2654435761u);
  return std::string(b) + b + b + b;
}

// ---- images checked by fsck, sfdisk and the reader ----
TEST(ImageTest, NoFiles) { CheckImage({}); }

TEST(ImageTest, OneTinyFile) { CheckImage({{"config", 5}}); }

TEST(ImageTest, FsckOnACopyOfThePartition) {  // the path taken where there is no loop device
  TempDir tmp{"courier_test"};
  auto layout = WriteTo(tmp / "drive.img", {{"repo/config", 155}, {"big", 300000}}, {});
  ASSERT_TRUE(layout.has_value());
  ExpectFsckClean(tmp / "drive.img", *layout, tmp, /*force_copy=*/true);
}

// Microsoft's recommended up-case table as mkfs.exfat writes it: the reference for ours
// (gen_upcase.py derives it from Unicode data). Also shows our reader accepting a volume it
// did not write.
Result<std::vector<uint8_t>> RecommendedUpcaseFromMkfs(const TempDir& tmp) {
  std::string disk = tmp / "mkfs-disk.img", part = tmp / "mkfs-part.img";
  std::string script = tmp / "gpt.sfdisk";
  std::ofstream(script)
      << "label: gpt\nstart=2048, size=12288, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n";
  for (std::string cmd :
       {"truncate -s 8M " + disk, "sfdisk -q " + disk + " < " + script, "truncate -s 6M " + part,
        "mkfs.exfat " + part,
        "dd if=" + part + " of=" + disk + " bs=1M seek=1 conv=notrunc status=none"}) {
    auto r = Shell(cmd);
    if (r.code != 0) return Err(ErrorKind::kIOError, cmd + ": " + r.out);
  }
  CV_TRY_ASSIGN(auto img, Image::Open(disk));
  EXPECT_TRUE(img.entries().empty());
  return img.upcase_table();
}

// An up-case table with only the spec's mandatory ASCII mappings: valid exFAT, but not
// what Windows expects; here to show that a caller's table is honoured.
std::vector<uint8_t> AsciiOnlyUpcase() {
  std::vector<char16_t> map(0x10000);
  for (uint32_t c = 0; c < map.size(); ++c) map[c] = fmt::AsciiUpcase(char16_t(c));
  return fmt::CompressUpcase(map, 1);
}

TEST(UpcaseTest, BuiltInTableIsTheSpecsRecommendedOne) {
  const auto& t = fmt::RecommendedUpcase();
  EXPECT_EQ(t.bytes.size(), 5836u);                      // spec 7.2.5.1
  EXPECT_EQ(fmt::UpcaseChecksum(t.bytes), 0xE619D30Du);  // the spec's value for it
  EXPECT_EQ(t.map[u'a'], u'A');
  EXPECT_EQ(t.map[u'\u00e9'], u'\u00c9');  // e acute
  EXPECT_EQ(t.map[u'\u00ff'], u'\u0178');  // y diaeresis, upper case outside Latin-1
  EXPECT_EQ(t.map[u'\u03c2'], u'\u03a3');  // final sigma
  EXPECT_EQ(t.map[u'\u0436'], u'\u0416');  // Cyrillic zhe
  EXPECT_EQ(t.map[u'\uff41'], u'\uff21');  // fullwidth a
  EXPECT_EQ(t.map[u'\u00b5'], u'\u00b5');  // micro sign: no round trip, left alone
  EXPECT_EQ(t.map[u'\u0131'], u'\u0131');  // dotless i likewise
  EXPECT_EQ(t.map[u'\u023a'], u'\u2c65');  // one of the table's four reversed pairs
  EXPECT_EQ(t.map[u'\u13f8'], u'\u13f8');  // Cherokee small ye: newer than the table
  EXPECT_EQ(fmt::CompressUpcase(t.map, 512), t.bytes);
}

TEST(UpcaseTest, CompressedTablesExpandToTheSameMapping) {
  auto ascii = AsciiOnlyUpcase();
  EXPECT_EQ(ascii.size(), 60u);  // FFFFh 61h, A..Z, FFFFh FF85h
  auto loaded = fmt::LoadUpcaseTable(ascii);
  ASSERT_TRUE(loaded.has_value()) << loaded.error().ToString();
  const auto& rec = fmt::RecommendedUpcase();
  for (uint32_t min_run : {1u, 2u, 100u, 70000u}) {  // 70000: nothing compressed
    auto bytes = fmt::CompressUpcase(rec.map, min_run);
    auto back = fmt::LoadUpcaseTable(bytes);
    ASSERT_TRUE(back.has_value()) << back.error().ToString();
    EXPECT_TRUE(back->map == rec.map) << "min_run " << min_run;
  }
  EXPECT_EQ(fmt::CompressUpcase(rec.map, 70000).size(), 2u * 0x10000);
}

TEST(ImageTest, RecommendedUpcaseTableIsMkfsExfatsByteForByte) {
  if (Shell("command -v mkfs.exfat").code != 0) GTEST_SKIP() << "mkfs.exfat not installed";
  TempDir tmp{"courier_test"};
  auto table = RecommendedUpcaseFromMkfs(tmp);
  ASSERT_TRUE(table.has_value()) << table.error().ToString();
  EXPECT_EQ(fmt::UpcaseChecksum(*table), 0xE619D30Du);  // the spec's value for it
  EXPECT_TRUE(*table == fmt::RecommendedUpcase().bytes)
      << "mkfs.exfat's table: " << table->size() << " bytes, ours "
      << fmt::RecommendedUpcase().bytes.size();
}

TEST(ImageTest, DefaultImagesCarryTheRecommendedTable) {
  TempDir tmp{"courier_test"};
  // Non-ASCII names are hashed with the full table: "caf\u00e9" upcases to "CAF\u00c9";
  // fsck.exfat and our reader recompute every NameHash.
  CheckImage({{"repo/config", 155}, {"caf\xC3\xA9/na\xC3\xAFve", 10}, {"\xD0\xB6", 1}});
  auto layout = WriteTo(tmp / "drive.img", {{"config", 5}}, {});
  ASSERT_TRUE(layout.has_value());
  auto img = Image::Open(tmp / "drive.img");
  ASSERT_TRUE(img.has_value()) << img.error().ToString();
  EXPECT_TRUE(img->upcase_table() == fmt::RecommendedUpcase().bytes);
  EXPECT_FALSE(Layout::Plan({{"\xC3\xA9", 1}, {"\xC3\x89", 1}}, {})
                   .has_value());  // e-acute vs E-acute collide
}

TEST(ImageTest, CallersUpcaseTableIsUsed) {
  LayoutOptions o;
  o.upcase_table = AsciiOnlyUpcase();
  CheckImage({{"repo/config", 155}, {"caf\xC3\xA9/na\xC3\xAFve", 10}}, o);
  EXPECT_TRUE(Layout::Plan({{"\xC3\xA9", 1}, {"\xC3\x89", 1}}, o)
                  .has_value());  // ASCII-only table: distinct
  TempDir tmp{"courier_test"};
  ASSERT_TRUE(WriteTo(tmp / "drive.img", {{"config", 5}}, o).has_value());
  auto img = Image::Open(tmp / "drive.img");
  ASSERT_TRUE(img.has_value()) << img.error().ToString();
  EXPECT_TRUE(img->upcase_table() == o.upcase_table);
}

TEST(ImageTest, NoVolumeLabel) {
  LayoutOptions o;
  o.label = "";
  CheckImage({{"config", 5}}, o);
}

TEST(ImageTest, LargeMostlyEmptyDriveIsSparseAndFast) {
  LayoutOptions o;
  o.image_bytes = 256ull << 30;
  auto start = std::chrono::steady_clock::now();
  CheckImage({{"repo/config", 155}, {"repo/data/00/x", 5 << 20}}, o);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(secs, 60.0);
  auto l = Layout::Plan({{"a", 1}}, o);
  ASSERT_TRUE(l.has_value());
  EXPECT_EQ(l->cluster_bytes(), 128u << 10);  // the spec's guidance for large volumes
  TempDir tmp{"courier_test"};
  ASSERT_TRUE(WriteTo(tmp / "big.img", {{"a", 1}}, o).has_value());
  struct stat st;
  ASSERT_EQ(stat((tmp / "big.img").c_str(), &st), 0);
  EXPECT_EQ(uint64_t(st.st_size), 256ull << 30);
  EXPECT_LT(uint64_t(st.st_blocks) * 512, 16ull << 20) << "holes were written as data";
}

TEST(ImageTest, ZeroLengthFiles) { CheckImage({{"a", 0}, {"dir/b", 0}, {"dir/c", 1}, {"z", 0}}); }

TEST(ImageTest, EmptyDirectory) {
  LayoutOptions o;
  o.empty_dirs = {"repo/locks", "empty"};
  CheckImage({{"repo/config", 100}}, o);
}

TEST(ImageTest, ThreeThousandFilesSpanManyDirectoryClusters) {
  std::vector<FileSpec> files;
  for (int i = 0; i < 3000; ++i) files.push_back({"data/" + Hex64(i), uint64_t(i % 7) * 100});
  auto layout = Layout::Plan(files, {});
  ASSERT_TRUE(layout.has_value());
  // 3000 entry sets of 7 entries: the directory spans well over one cluster.
  ASSERT_GT(3000u * 7 * 32, 10u * layout->cluster_bytes());
  CheckImage(files);
}

TEST(ImageTest, NamesAtThe255CharacterLimit) {
  std::string n255(255, 'n'), m255(254, 'm');
  m255 += "\xC3\xA9";  // 255 UTF-16 units with a non-ASCII one
  CheckImage({{n255, 10}, {"d/" + m255, 20}, {std::string(255, 'd') + "/" + n255, 3}});
  EXPECT_FALSE(Layout::Plan({{std::string(256, 'x'), 1}}, {}).has_value());
}

TEST(ImageTest, MultiClusterFileWithPartialLastCluster) {
  LayoutOptions o;
  o.cluster_bytes = 4096;
  CheckImage({{"big", 5 * 4096 + 123}, {"exact", 3 * 4096}, {"one", 1}}, o);
}

std::vector<FileSpec> ResticTree(int per_dir) {
  std::vector<FileSpec> files = {{"README.txt", 700},
                                 {"repo/config", 155},
                                 {"repo/keys/" + Hex64(1), 460},
                                 {"repo/index/" + Hex64(2), 9000},
                                 {"repo/snapshots/" + Hex64(3), 400}};
  for (int d = 0; d < 256; ++d) {
    char sub[3];
    snprintf(sub, sizeof sub, "%02x", d);
    for (int k = 0; k < per_dir; ++k) {
      files.push_back({std::string("repo/data/") + sub + "/" + Hex64(d * 16 + k),
                       uint64_t(1000 + d * 37 + k * 4099)});
    }
  }
  return files;
}

TEST(ImageTest, ResticLikeTree) {
  LayoutOptions o;
  o.label = "CV-RESTORE";
  o.empty_dirs = {"repo/locks"};
  CheckImage(ResticTree(2), o);
}

// What admin/courier.cc refuses a job by (507 insufficient_storage, with the bound of
// CourierBytesNeeded in admin/jobs/courier.cc): the bound must hold for images as really
// written to a file system, holes and all, and not be absurdly loose.
TEST(AllocatedBytesBoundTest, HoldsForWrittenImagesAndIsNotAbsurd) {
  struct Case {
    const char* what;
    std::vector<FileSpec> files;
    uint64_t image_bytes;
  };
  std::vector<FileSpec> tiny, large;
  for (int i = 0; i < 3000; ++i) tiny.push_back({"data/" + Hex64(i), 1});
  for (int i = 0; i < 3; ++i) large.push_back({"repo/data/" + Hex64(i), 20ull << 20});
  large.push_back({"repo/config", 155});
  const Case cases[] = {
      {"restic-like, sized to content", ResticTree(2), 0},
      {"restic-like, 300 MiB drive (32 KiB clusters)", ResticTree(2), 300ull << 20},
      {"3000 one-byte files (a cluster each)", tiny, 0},
      {"3000 one-byte files on a 1 GiB drive", tiny, 1ull << 30},
      {"three 20 MiB files", large, 0},
      {"three 20 MiB files on a 64 GiB drive (128 KiB clusters)", large, 64ull << 30},
  };
  TempDir tmp{"courier_test"};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    ContentSummary sum;
    for (const auto& f : c.files) {
      ++sum.files;
      sum.file_bytes += f.size;
    }
    LayoutOptions o;
    o.unix_time = kTime;
    o.image_bytes = c.image_bytes;
    o.empty_dirs = {"repo/locks"};
    sum.dirs = DirsOf(c.files, o.empty_dirs).size();
    sum.max_name_units = 64;
    const std::string image = tmp / "bound.img";
    ASSERT_TRUE(WriteTo(image, c.files, o).has_value());
    struct stat st;
    ASSERT_EQ(stat(image.c_str(), &st), 0);
    const uint64_t allocated = uint64_t(st.st_blocks) * 512;
    const uint64_t bound = AllocatedBytesBound(sum, c.image_bytes);
    EXPECT_GE(bound, allocated);
    EXPECT_LE(bound, allocated + allocated / 2 + (4 << 20)) << "allocated " << allocated;
    // The sum of two halves' bounds covers the whole (admin adds up drives' shares so).
    ContentSummary half = sum;
    half.files /= 2;
    half.file_bytes /= 2;
    ContentSummary rest = sum;
    rest.files -= half.files;
    rest.file_bytes -= half.file_bytes;
    rest.dirs = 0;
    EXPECT_GE(AllocatedBytesBound(half, c.image_bytes) + AllocatedBytesBound(rest, c.image_bytes),
              bound);
    fs::remove(image);
  }
}

TEST(ImageTest, FixedSizeImageAndTooSmall) {
  LayoutOptions o;
  o.image_bytes = 300ull << 20;  // 32 KiB clusters by default
  CheckImage({{"a", 1 << 20}, {"b/c", 12345}}, o);
  auto l = Layout::Plan({{"a", 1}}, o);
  ASSERT_TRUE(l.has_value());
  EXPECT_EQ(l->image_bytes(), 300ull << 20);
  EXPECT_EQ(l->cluster_bytes(), 32768u);
  o.image_bytes = 8 << 20;
  auto too_big = Layout::Plan({{"a", 9 << 20}}, o);
  ASSERT_FALSE(too_big.has_value());
  EXPECT_EQ(too_big.error().kind, ErrorKind::kNoSpace);
}

TEST(LayoutTest, RejectsBadNamesAndCollisions) {
  for (std::string bad : {"", "/abs", "a//b", "a/", "a:b", "a/./b", "..", "x\x01y", "bad\xff"}) {
    auto l = Layout::Plan({{bad, 1}}, {});
    ASSERT_FALSE(l.has_value()) << bad;
    EXPECT_EQ(l.error().kind, ErrorKind::kInvalidArgument);
  }
  EXPECT_FALSE(Layout::Plan({{"Readme", 1}, {"README", 2}}, {}).has_value());  // case-insensitive
  EXPECT_FALSE(Layout::Plan({{"a", 1}, {"a/b", 2}}, {}).has_value());
  LayoutOptions o;
  o.label = "TWELVE CHARS";
  EXPECT_FALSE(Layout::Plan({}, o).has_value());
}

// A sink that hashes every byte, zeros included, the way a block device or HTTP body gets it.
struct HashSink : Sink {
  Sha256 h;
  uint64_t n = 0;
  int delay_ms = 0;
  Status Write(std::span<const uint8_t> d) override {
    if (delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    h.Update(d);
    n += d.size();
    return {};
  }
};

TEST(LayoutTest, SameInputGivesTheSameBytesAndHolesReadAsZeros) {
  auto files = ResticTree(1);
  LayoutOptions o;
  o.unix_time = kTime;
  auto layout = Layout::Plan(files, o);
  ASSERT_TRUE(layout.has_value());
  HashSink a, b;
  ASSERT_TRUE(WriteImage(*layout, GenFill, a).has_value());
  ASSERT_TRUE(WriteImage(*Layout::Plan(files, o), GenFill, b).has_value());
  EXPECT_EQ(a.n, layout->image_bytes());
  auto da = a.h.Final();
  EXPECT_EQ(da, b.h.Final());
  TempDir tmp{"courier_test"};
  ASSERT_TRUE(WriteTo(tmp / "img", files, o).has_value());
  auto r = Shell("sha256sum " + (tmp / "img"));
  EXPECT_EQ(r.out.substr(0, 64), ToHex(da));
}

TEST(WriterTest, OverAUsedDriveTheStaleBytesDoNotMatter) {
  // A block device keeps old data where the writer only skips (free clusters, gaps):
  // simulate one with a file full of 0xA5 written through a non-regular FdSink.
  TempDir tmp{"courier_test"};
  std::string image = tmp / "used-drive.img";
  LayoutOptions o;
  o.unix_time = kTime;
  o.empty_dirs = {"repo/locks"};
  std::vector<FileSpec> files = {{"repo/config", 155}, {"repo/data/00/a", 70000}, {"z", 0}};
  auto layout = Layout::Plan(files, o);
  ASSERT_TRUE(layout.has_value());
  {
    std::ofstream out(image, std::ios::binary);
    std::string junk(1 << 20, char(0xA5));
    for (uint64_t n = 0; n < layout->image_bytes(); n += junk.size())
      out.write(junk.data(), long(junk.size()));
  }
  int fd = open(image.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  FdSink sink(fd, /*regular_file=*/false, /*sync=*/false);
  ASSERT_TRUE(WriteImage(*layout, GenFill, sink).has_value());
  EXPECT_EQ(sink.position(), layout->image_bytes());
  close(fd);
  ExpectGptValid(image, *layout);
  ExpectFsckClean(image, *layout, tmp);
  ExpectReaderMatches(image, *layout, DirsOf(files, o.empty_dirs));
}

TEST(WriterTest, EveryFailingSinkWriteOrFillIsReturned) {
  struct FailingSink : Sink {
    int fail_at, calls = 0;
    explicit FailingSink(int n) : fail_at(n) {}
    Status Count() {
      return calls++ == fail_at ? Err(ErrorKind::kIOError, "injected", EIO) : Status{};
    }
    Status Write(std::span<const uint8_t>) override { return Count(); }
    Status WriteZeros(uint64_t) override { return Count(); }
    Status Skip(uint64_t) override { return Count(); }
    Status Finish() override { return Count(); }
  };
  auto layout = Layout::Plan({{"a", 3 << 20}, {"b/c", 10}}, {});
  ASSERT_TRUE(layout.has_value());
  int n = 0;
  for (;; ++n) {  // fail the Nth sink call, N = 0, 1, 2, ... until a run gets through
    FailingSink sink(n);
    auto st = WriteImage(*layout, GenFill, sink);
    if (st) break;
    EXPECT_EQ(st.error().context, "injected");
    ASSERT_LT(n, 1000);
  }
  EXPECT_GT(n, 5);
  for (size_t bad_file : {0, 1}) {
    FailingSink sink(-1);
    auto st = WriteImage(
        *layout,
        [&](size_t f, uint64_t off, std::span<uint8_t> out) -> Status {
          if (f == bad_file) return Err(ErrorKind::kCorruption, "object unreadable: b/c");
          return GenFill(f, off, out);
        },
        sink);
    ASSERT_FALSE(st.has_value());
    EXPECT_EQ(st.error().context, "object unreadable: b/c");
  }
}

TEST(PipelinedSinkTest, SameBytesInOrderAndOverlapsFillWithWrite) {
  LayoutOptions o;
  o.unix_time = kTime;
  auto layout = Layout::Plan({{"a", 30 << 20}, {"b/c", 12345}}, o);
  ASSERT_TRUE(layout.has_value());
  auto slow_fill = [](size_t f, uint64_t off, std::span<uint8_t> out) -> Status {
    std::this_thread::sleep_for(std::chrono::milliseconds(8));  // a storage read
    memset(out.data(), int(f + off / kWriteBufferBytes), out.size());
    return Status{};
  };
  auto timed = [&](bool pipelined, Sha256Digest* digest) {
    HashSink inner;
    inner.delay_ms = 8;  // a device write
    auto start = std::chrono::steady_clock::now();
    if (pipelined) {
      PipelinedSink p(inner, 4);
      EXPECT_TRUE(WriteImage(*layout, slow_fill, p).has_value());
    } else {
      EXPECT_TRUE(WriteImage(*layout, slow_fill, inner).has_value());
    }
    EXPECT_EQ(inner.n, layout->image_bytes());
    *digest = inner.h.Final();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  Sha256Digest direct, piped;
  double t_direct = timed(false, &direct), t_piped = timed(true, &piped);
  EXPECT_EQ(direct, piped);
  std::cerr << "serial " << t_direct << " s, pipelined " << t_piped << " s\n";
  EXPECT_LT(t_piped, 0.8 * t_direct);
}

TEST(PipelinedSinkTest, AnInnerFailureIsReturned) {
  struct FailingSink : Sink {
    int fail_at, calls = 0;
    explicit FailingSink(int n) : fail_at(n) {}
    Status Count() {
      return calls++ == fail_at ? Err(ErrorKind::kIOError, "injected", EIO) : Status{};
    }
    Status Write(std::span<const uint8_t>) override { return Count(); }
    Status WriteZeros(uint64_t) override { return Count(); }
    Status Skip(uint64_t) override { return Count(); }
    Status Finish() override { return Count(); }
  };
  auto layout = Layout::Plan({{"a", 5 << 20}, {"b/c", 10}}, {});
  ASSERT_TRUE(layout.has_value());
  int n = 0;
  for (;; ++n) {
    FailingSink inner(n);
    PipelinedSink p(inner, 2);
    auto st = WriteImage(*layout, GenFill, p);
    if (st) break;
    EXPECT_EQ(st.error().context, "injected") << n;
    ASSERT_LT(n, 1000);
  }
  EXPECT_GT(n, 5);
}

// ---- mounted through the kernel loop driver and FUSE ----
class Mount {
 public:
  Mount(const std::string& dev, const std::string& dir) : dir_(dir) {
    auto r = Shell("mount.exfat-fuse -o ro " + dev + " " + dir, 60);
    if (r.code == 0)
      mounted_ = true;
    else
      error_ = r.out;
  }
  ~Mount() {
    if (!mounted_) return;
    for (int i = 0; i < 50; ++i) {
      if (Shell("umount " + dir_, 30).code == 0) return;
      usleep(100000);
    }
    Shell("umount -l " + dir_, 30);
  }
  bool ok() const { return mounted_; }
  const std::string& error() const { return error_; }

 private:
  std::string dir_, error_;
  bool mounted_ = false;
};

std::string MountSkipReason() {
  if (!HaveLoop()) return "no loop device control (/dev/loop-control) or not root";
  if (access("/dev/fuse", R_OK | W_OK) != 0) return "no /dev/fuse";
  if (Shell("command -v mount.exfat-fuse").code != 0) return "mount.exfat-fuse not installed";
  return "";
}

// Writes the image, mounts it read-only through a loop device and FUSE, compares the tree
// and every byte. Sets *skip if the machine cannot attach it.
void MountAndCompare(std::vector<FileSpec> files, LayoutOptions o, std::string* skip) {
  TempDir tmp{"courier_test"};
  std::string image = tmp / "drive.img";
  o.unix_time = kTime;
  auto layout = WriteTo(image, files, o);
  ASSERT_TRUE(layout.has_value()) << layout.error().ToString();
  Loop loop(image, layout->partition_offset(), layout->partition_bytes());
  if (loop.dev().empty()) {
    *skip = "losetup failed: " + loop.error();
    return;
  }
  std::string mnt = tmp / "mnt";
  fs::create_directory(mnt);
  {
    Mount m(loop.dev(), mnt);
    ASSERT_TRUE(m.ok()) << m.error();
    std::set<std::string> seen_files, seen_dirs;
    for (auto& e : fs::recursive_directory_iterator(mnt)) {
      std::string rel = fs::relative(e.path(), mnt).string();
      (e.is_directory() ? seen_dirs : seen_files).insert(rel);
    }
    std::set<std::string> want_files, want_dirs;
    for (const auto& f : files) want_files.insert(f.path);
    for (const auto& d : DirsOf(files, o.empty_dirs)) want_dirs.insert(d);
    EXPECT_EQ(seen_files, want_files);
    EXPECT_EQ(seen_dirs, want_dirs);
    for (size_t i = 0; i < files.size(); ++i) {
      std::ifstream in(mnt + "/" + files[i].path, std::ios::binary);
      std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      EXPECT_TRUE(got == Expected(i, files[i].size)) << files[i].path;
    }
  }
  auto r = Shell("blkid -p -s LABEL -o value " + loop.dev());
  EXPECT_EQ(r.out, o.label + "\n");
}

TEST(MountTest, FuseMountShowsTheSameTreeAndBytes) {
  if (auto why = MountSkipReason(); !why.empty()) GTEST_SKIP() << why;
  auto files = ResticTree(1);
  files.push_back({"repo/data/00/" + std::string(200, 'l'), 3 * 131072 + 5});
  files.push_back({"empty-file", 0});
  LayoutOptions o;
  o.empty_dirs = {"repo/locks"};
  std::string skip;
  MountAndCompare(files, o, &skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
}

TEST(MountTest, RecommendedUpcaseTableAndNonAsciiNames) {
  if (auto why = MountSkipReason(); !why.empty()) GTEST_SKIP() << why;
  LayoutOptions o;  // the default table is the recommended one
  o.label =
      "R\xC3\xA9"
      "cup";
  std::string skip;
  MountAndCompare({{"caf\xC3\xA9/na\xC3\xAFve", 10}, {"README.txt", 100}, {"\xE2\x82\xAC", 3}}, o,
                  &skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
}

// ---- the reader names what is wrong ----
class TamperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    image_ = tmp_ / "drive.img";
    LayoutOptions o;
    o.unix_time = kTime;
    auto l = WriteTo(image_, {{"repo/config", 155}, {"repo/keys/k", 400}}, o);
    ASSERT_TRUE(l.has_value());
    layout_ = std::make_unique<Layout>(*l);
  }
  void Flip(uint64_t offset, uint8_t mask = 0x01) {
    int fd = open(image_.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    uint8_t c;
    ASSERT_EQ(pread(fd, &c, 1, off_t(offset)), 1);
    c ^= mask;
    ASSERT_EQ(pwrite(fd, &c, 1, off_t(offset)), 1);
    close(fd);
  }
  // Where the system structures are: bitmap, up-case table, then the directories root,
  // repo, repo/keys, one cluster each, then the files.
  uint64_t Bitmap() const {
    const auto& L = LayoutAccess::Get(*layout_);
    return L.cluster_offset(L.bitmap_cluster);
  }
  uint64_t Upcase() const {
    const auto& L = LayoutAccess::Get(*layout_);
    return L.cluster_offset(L.upcase_cluster);
  }
  uint32_t UpcaseClusters() const { return LayoutAccess::Get(*layout_).upcase_clusters; }
  uint64_t RootDir() const { return layout_->file_offset(0) - 3 * layout_->cluster_bytes(); }
  std::string OpenError() {
    auto img = Image::Open(image_);
    if (img) return "opened fine";
    EXPECT_EQ(img.error().kind, ErrorKind::kCorruption);
    return img.error().context;
  }
  TempDir tmp_{"courier_test"};
  std::string image_;
  std::unique_ptr<Layout> layout_;
};

TEST_F(TamperTest, UntouchedImageOpens) { EXPECT_EQ(OpenError(), "opened fine"); }

TEST_F(TamperTest, GptPrimaryHeaderByte) {
  Flip(512 + 40);  // FirstUsableLBA
  EXPECT_NE(OpenError().find("GPT primary header at LBA 1: header CRC32 mismatch"),
            std::string::npos)
      << OpenError();
}

TEST_F(TamperTest, GptBackupEntryArrayByte) {
  Flip(layout_->image_bytes() - 512 - 16384 + 60);  // the partition name
  EXPECT_NE(OpenError().find("GPT backup partition entry array"), std::string::npos) << OpenError();
}

TEST_F(TamperTest, BootRegionByte) {
  Flip(layout_->partition_offset() + 100);  // VolumeSerialNumber
  EXPECT_NE(OpenError().find("main boot region at 0x100000: boot checksum mismatch"),
            std::string::npos)
      << OpenError();
}

TEST_F(TamperTest, BackupBootRegionByte) {
  Flip(layout_->partition_offset() + 12 * 512 + 300);
  EXPECT_NE(OpenError().find("backup boot region"), std::string::npos) << OpenError();
}

TEST_F(TamperTest, DirectoryEntrySetByte) {
  // The entry set of "keys" inside "repo": flip a byte of its name.
  auto img = Image::Open(image_);
  ASSERT_TRUE(img.has_value());
  uint64_t file0 = layout_->file_offset(0);  // file data starts right after the directories
  // Directories precede the files: root, repo, repo/keys, one cluster each.
  uint64_t repo_dir = file0 - 2 * layout_->cluster_bytes();
  Flip(repo_dir + 64 + 2);  // repo/config: first name entry, first character
  std::string e = OpenError();
  EXPECT_NE(e.find("directory 'repo' entry at"), std::string::npos) << e;
  EXPECT_NE(e.find("entry set checksum mismatch"), std::string::npos) << e;
}

TEST_F(TamperTest, UpcaseTableByte) {
  EXPECT_EQ(Upcase() + UpcaseClusters() * layout_->cluster_bytes(), RootDir());
  Flip(Upcase() + 10);
  EXPECT_NE(OpenError().find("up-case table at"), std::string::npos) << OpenError();
  EXPECT_NE(OpenError().find("checksum mismatch"), std::string::npos) << OpenError();
}

TEST_F(TamperTest, RenamedEntryWithFixedChecksumFailsNameHash) {
  // A forger who recomputes SetChecksum after renaming still trips over NameHash.
  uint64_t repo_dir = layout_->file_offset(0) - 2 * uint64_t(layout_->cluster_bytes());
  std::fstream f(image_, std::ios::in | std::ios::out | std::ios::binary);
  uint8_t set[96];
  f.seekg(long(repo_dir));
  f.read(reinterpret_cast<char*>(set), sizeof set);
  ASSERT_EQ(set[0], 0x85);
  set[64 + 2] = 'C';  // "config" -> "Cxnfig": the upcased name, so the hash, changes
  set[64 + 4] = 'x';
  uint16_t sum = 0;
  for (int i = 0; i < 96; ++i) {
    if (i == 2 || i == 3) continue;
    sum = uint16_t(((sum & 1) ? 0x8000 : 0) + (sum >> 1) + set[i]);
  }
  set[2] = uint8_t(sum), set[3] = uint8_t(sum >> 8);
  f.seekp(long(repo_dir));
  f.write(reinterpret_cast<const char*>(set), sizeof set);
  f.close();
  std::string e = OpenError();
  EXPECT_NE(e.find("'repo/Cxnfig'"), std::string::npos) << e;
  EXPECT_NE(e.find("NameHash mismatch"), std::string::npos) << e;
}

TEST_F(TamperTest, AllocationBitmapByte) {
  EXPECT_EQ(Bitmap() + layout_->cluster_bytes(), Upcase());
  Flip(Bitmap() + 1);  // clusters 10..17: marked used, nothing there
  EXPECT_NE(OpenError().find("is marked used but nothing uses it"), std::string::npos)
      << OpenError();
}

TEST_F(TamperTest, RandomBitFlipsInMetadataNeverCrashTheReader) {
  // The reader faces shipped drives: any flipped bit in any structure gives an error or a
  // consistent result, never a crash or a hang (run under CV_SANITIZE for the full value).
  uint64_t part = layout_->partition_offset();
  uint64_t heap = Bitmap();
  std::pair<uint64_t, uint64_t> regions[] = {{0, 17408},
                                             {part, 12 * 512 * 2},
                                             {part + (1 << 20), 64},
                                             {heap, layout_->file_offset(0) - heap},
                                             {layout_->image_bytes() - 16896, 16896}};
  uint64_t x = 42;  // a fixed seed: reproducible
  int failures = 0;
  for (int i = 0; i < 4000; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    auto [start, len] = regions[(x >> 33) % 5];
    uint64_t off = start + (x >> 13) % len;
    int bit = int(x >> 60) & 7;
    Flip(off, uint8_t(1 << bit));
    auto opened = Image::Open(image_);
    if (!opened) ++failures;
    Flip(off, uint8_t(1 << bit));  // back
  }
  // Many flips land on bytes no rule covers (MBR boot code, GPT header padding, the slack
  // of the bitmap and up-case clusters); EveryCoveredByteIsChecked tests the others.
  EXPECT_GT(failures, 1000);
  EXPECT_EQ(OpenError(), "opened fine");  // every flip was undone
}

TEST_F(TamperTest, EveryCoveredByteIsChecked) {
  uint64_t part = layout_->partition_offset(), cb = layout_->cluster_bytes(),
           end = layout_->image_bytes();
  uint64_t heap = Bitmap(), root = RootDir();
  uint64_t upcase_bytes = fmt::RecommendedUpcase().bytes.size();
  uint64_t clusters =
      (layout_->partition_bytes() - 2 * (1 << 20)) / cb;  // at least ClusterCount / 8
  struct Range {
    const char* what;
    uint64_t start, len, stride;
  } ranges[] = {
      {"GPT primary header", 512, 92, 1},
      {"GPT primary entries", 1024, 16384, 61},
      {"GPT backup header", end - 512, 92, 1},
      {"GPT backup entries", end - 512 - 16384, 16384, 61},
      {"main boot region", part, 12 * 512, 5},
      {"backup boot region", part + 12 * 512, 12 * 512, 5},
      {"FAT", part + (1 << 20), (2 + 1 + UpcaseClusters() + 3) * 4, 1},
      {"allocation bitmap", heap, clusters / 8 - 8, 1},
      {"up-case table", Upcase(), upcase_bytes, 7},
      {"root entry sets", root + 96, 96, 1},
      {"repo entry sets", root + cb, 192, 1},
      {"repo/keys entry sets", root + 2 * cb, 96, 1},
      // (the first end marker may become a deleted entry, 01h: still a valid directory)
      {"end-of-directory entries", root + 2 * cb + 128, cb - 128, 32},
  };
  for (const auto& r : ranges) {
    for (uint64_t off = r.start; off < r.start + r.len; off += r.stride) {
      if (off - part == 106 || off - part == 107 || off - part == 112) continue;  // flags, % in use
      if (off - part - 12 * 512 == 106 || off - part - 12 * 512 == 107 ||
          off - part - 12 * 512 == 112)
        continue;
      uint8_t mask = uint8_t(1 << (off % 8));
      Flip(off, mask);
      auto img = Image::Open(image_);
      EXPECT_FALSE(img.has_value()) << r.what << ": flip at " << off << " not detected";
      Flip(off, mask);
    }
  }
  EXPECT_EQ(OpenError(), "opened fine");
}

TEST_F(TamperTest, ReadPastEndIsRefused) {
  auto img = Image::Open(image_);
  ASSERT_TRUE(img.has_value());
  const ImageEntry* cfg = nullptr;
  for (const auto& e : img->entries())
    if (e.path == "repo/config") cfg = &e;
  ASSERT_NE(cfg, nullptr);
  uint8_t b[2];
  EXPECT_FALSE(img->Read(*cfg, 154, b).has_value());
  EXPECT_TRUE(img->Read(*cfg, 153, b).has_value());
}

// ---- split ----
TEST(SplitTest, EveryDriveIsValidAndTheUnionIsEverything) {
  std::vector<FileSpec> common = {{"README.txt", 2000},
                                  {"repo/config", 155},
                                  {"repo/keys/" + Hex64(1), 460},
                                  {"repo/index/" + Hex64(2), 50000},
                                  {"SHA256SUMS.sig", 64}};
  std::vector<FileSpec> data;
  for (int i = 0; i < 60; ++i) {
    char sub[3];
    snprintf(sub, sizeof sub, "%02x", i % 5);
    data.push_back(
        {std::string("repo/data/") + sub + "/" + Hex64(i), uint64_t(300000 + (i * 7919) % 900000)});
  }
  LayoutOptions o;
  o.unix_time = kTime;
  o.image_bytes = 16 << 20;
  o.empty_dirs = {"repo/locks"};
  auto plans = PlanSplit(common, data, o, "SHA256SUMS");
  ASSERT_TRUE(plans.has_value()) << plans.error().ToString();
  ASSERT_GE(plans->size(), 3u);
  std::set<size_t> all;
  for (size_t k = 0; k < plans->size(); ++k) {
    const DrivePlan& p = (*plans)[k];
    std::vector<FileSpec> files = common;
    for (size_t i : p.data_files) {
      EXPECT_TRUE(all.insert(i).second);
      files.push_back(data[i]);
    }
    uint64_t mbytes = 0;
    for (const auto& f : files)
      if (f.path != "SHA256SUMS.sig") mbytes += Sha256SumsLineBytes(f.path);
    EXPECT_EQ(p.manifest_bytes, mbytes);
    files.push_back({"SHA256SUMS", p.manifest_bytes});
    SCOPED_TRACE("drive " + std::to_string(k + 1));
    CheckImage(files, o);
  }
  EXPECT_EQ(all.size(), data.size());
}

TEST(SplitTest, PlansAreTightAndAlwaysFitForManySeeds) {
  // Directory growth across cluster boundaries, the manifest growing with every file: the
  // cluster accounting must agree with the real layout (PlanSplit re-plans every drive and
  // would return kInternal otherwise).
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    uint64_t x = seed;
    auto next = [&] { return x = x * 6364136223846793005ull + 1442695040888963407ull, x >> 33; };
    std::vector<FileSpec> data;
    uint64_t total = 0;
    int n = 200 + int(next() % 400);
    for (int i = 0; i < n; ++i) {
      char sub[3];
      snprintf(sub, sizeof sub, "%02x", int(next() % 256));
      uint64_t size = next() % 4 == 0 ? next() % 100 : next() % (3 << 20);
      data.push_back({std::string("repo/data/") + sub + "/" + Hex64(i), size});
      total += size;
    }
    LayoutOptions o;
    o.image_bytes = (16ull + 8 * (seed % 4)) << 20;
    o.cluster_bytes = seed % 2 ? 4096 : 0;
    o.empty_dirs = {"repo/locks"};
    auto plans = PlanSplit({{"repo/config", 155}, {"README.txt", 3000}, {"SHA256SUMS.sig", 64}},
                           data, o, "SHA256SUMS");
    ASSERT_TRUE(plans.has_value()) << "seed " << seed << ": " << plans.error().ToString();
    size_t placed = 0;
    for (const auto& p : *plans) placed += p.data_files.size();
    EXPECT_EQ(placed, data.size());
    // Close to the bound from the free space of a drive with only the common files.
    auto empty =
        Layout::Plan({{"repo/config", 155}, {"README.txt", 3000}, {"SHA256SUMS.sig", 64}}, o);
    ASSERT_TRUE(empty.has_value());
    double bound = double(total) / double(empty->free_bytes());
    EXPECT_LE(double(plans->size()), bound * 1.1 + 1) << "seed " << seed;
  }
}

TEST(SplitTest, ClearErrorsWhenNothingFits) {
  LayoutOptions o;
  o.image_bytes = 8 << 20;
  auto big_common =
      PlanSplit({{"repo/index/i", 9 << 20}}, {{"repo/data/00/x", 10}}, o, "SHA256SUMS");
  ASSERT_FALSE(big_common.has_value());
  EXPECT_EQ(big_common.error().kind, ErrorKind::kNoSpace);
  EXPECT_NE(big_common.error().context.find("every drive needs"), std::string::npos);
  auto big_file = PlanSplit({{"repo/config", 10}},
                            {{"repo/data/00/x", 10}, {"repo/data/01/huge", 7 << 20}}, o, "");
  ASSERT_FALSE(big_file.has_value());
  EXPECT_NE(big_file.error().context.find("'repo/data/01/huge'"), std::string::npos)
      << big_file.error().context;
}

// ---- SHA256SUMS ----
TEST(ManifestTest, RoundTripAndSha256sumAcceptsIt) {
  TempDir tmp{"courier_test"};
  std::vector<ManifestEntry> entries;
  for (std::string name : {"a", "dir/b c"}) {
    std::string content = "content of " + name;
    fs::create_directories(fs::path(tmp / name).parent_path());
    std::ofstream(tmp / name) << content;
    entries.push_back({name, Sha256::Of(content)});
  }
  std::string text = FormatSha256Sums(entries);
  std::ofstream(tmp / "SHA256SUMS") << text;
  auto r = Shell("cd " + tmp.path() + " && sha256sum --strict -c SHA256SUMS");
  EXPECT_EQ(r.code, 0) << r.out;
  auto parsed = ParseSha256Sums(text);
  ASSERT_TRUE(parsed.has_value()) << parsed.error().ToString();
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[1].path, "dir/b c");
  EXPECT_EQ((*parsed)[1].digest, entries[1].digest);
  EXPECT_EQ(text.size(), Sha256SumsLineBytes("a") + Sha256SumsLineBytes("dir/b c"));
  // Like sha256sum, the last newline may be missing.
  EXPECT_TRUE(ParseSha256Sums(text.substr(0, text.size() - 1)).has_value());
}

TEST(ManifestTest, StrictParserNamesTheFault) {
  std::string h(64, 'a');
  struct Case {
    std::string text, error;
  } cases[] = {
      {"", "no lines"},
      {std::string(63, 'a') + "g  x\n", "line 1: does not start with 64 lowercase hex"},
      {std::string(64, 'A') + "  x\n", "lowercase hex"},
      {h + " x\n", "line 1: the digest is not followed by two spaces"},
      {h + " *x\n", "two spaces"},
      {h + "  \n", "line 1: empty path"},
      {h + "  a\n" + h + "  a\n", "line 2: duplicate path 'a'"},
      {h + "  a\n\n", "line 2:"},
      {h + "  a\r\n", "control character"},
      {h + "  /etc/passwd\n", "absolute path"},
      {h + "  a/../b\n", "'..'"},
      {h + "  a//b\n", "empty"},
      {h + "  a\\nb\n", "backslash"},
  };
  for (const auto& c : cases) {
    auto r = ParseSha256Sums(c.text);
    ASSERT_FALSE(r.has_value()) << c.text;
    EXPECT_EQ(r.error().kind, ErrorKind::kCorruption);
    EXPECT_NE(r.error().context.find(c.error), std::string::npos)
        << c.text << " -> " << r.error().context;
  }
}

// ---- Ed25519 ----
TEST(SigningTest, SignVerifyTamperAndKeyFiles) {
  TempDir tmp{"courier_test"};
  auto priv = GenerateEd25519PrivateKeyPem();
  ASSERT_TRUE(priv.has_value());
  std::string key_path = tmp / "courier.key";
  ASSERT_TRUE(SavePrivateKeyPem(key_path, *priv).has_value());
  struct stat st;
  ASSERT_EQ(stat(key_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto loaded = LoadPem(key_path);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(*loaded, *priv);
  auto pub = Ed25519PublicKeyPem(*loaded);
  ASSERT_TRUE(pub.has_value());
  EXPECT_NE(pub->find("BEGIN PUBLIC KEY"), std::string::npos);

  std::string msg = FormatSha256Sums({{"repo/config", Sha256::Of("x")}});
  std::span<const uint8_t> m(reinterpret_cast<const uint8_t*>(msg.data()), msg.size());
  auto sig = Ed25519Sign(*loaded, m);
  ASSERT_TRUE(sig.has_value());
  EXPECT_TRUE(Ed25519Verify(*pub, m, *sig).has_value());
  std::string tampered = msg;
  tampered[3] ^= 1;
  auto bad = Ed25519Verify(
      *pub, {reinterpret_cast<const uint8_t*>(tampered.data()), tampered.size()}, *sig);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().kind, ErrorKind::kCorruption);
  auto bad_sig = *sig;
  bad_sig[10] ^= 1;
  EXPECT_FALSE(Ed25519Verify(*pub, m, bad_sig).has_value());
  auto other = GenerateEd25519PrivateKeyPem();
  EXPECT_FALSE(Ed25519Verify(*Ed25519PublicKeyPem(*other), m, *sig).has_value());
  EXPECT_FALSE(Ed25519Verify("not a key", m, *sig).has_value());

  // openssl(1) agrees: what a customer could run by hand.
  std::ofstream(tmp / "pub.pem") << *pub;
  std::ofstream(tmp / "msg", std::ios::binary) << msg;
  std::ofstream(tmp / "msg.sig", std::ios::binary)
      .write(reinterpret_cast<const char*>(sig->data()), 64);
  auto r = Shell("openssl pkeyutl -verify -pubin -inkey " + (tmp / "pub.pem") + " -rawin -in " +
                 (tmp / "msg") + " -sigfile " + (tmp / "msg.sig"));
  EXPECT_EQ(r.code, 0) << r.out;
}

// ---- streaming: a 2 GiB file through a fixed buffer ----
TEST(StreamTest, TwoGiBFileWithBoundedMemory) {
  TempDir tmp{"courier_test"};
  std::string image = tmp / "big.img";
  const uint64_t kBig = (2ull << 30) + 12345;
  LayoutOptions o;
  o.unix_time = kTime;
  auto layout = Layout::Plan({{"repo/data/ab/big", kBig}, {"repo/config", 10}}, o);
  ASSERT_TRUE(layout.has_value());
  EXPECT_EQ(layout->cluster_bytes(), 32768u);
  auto sink = FdSink::Open(image, false);
  ASSERT_TRUE(sink.has_value());
  // Cheap generated data: byte p is byte p%8 of a word made from p/8, whatever the call
  // boundaries, so the test measures the writer, not the generator.
  size_t max_call = 0;
  uint64_t expected_next = 0;
  bool in_order = true;
  auto word = [](uint64_t w) { return w * 0x9E3779B97F4A7C15ull + 1; };
  auto pattern = [&](uint64_t off, std::span<uint8_t> out) {
    size_t i = 0;
    for (; i < out.size() && ((off + i) & 7); ++i)
      out[i] = uint8_t(word((off + i) >> 3) >> (8 * ((off + i) & 7)));
    for (; i + 8 <= out.size(); i += 8) {
      uint64_t w = word((off + i) >> 3);
      memcpy(out.data() + i, &w, 8);
    }
    for (; i < out.size(); ++i) out[i] = uint8_t(word((off + i) >> 3) >> (8 * ((off + i) & 7)));
  };
  FillFn fill = [&](size_t file, uint64_t off, std::span<uint8_t> out) -> Status {
    max_call = std::max(max_call, out.size());
    if (file == 0) {
      in_order &= off == expected_next;
      expected_next = off + out.size();
    }
    pattern(off, out);
    return {};
  };
  int64_t base = g_live.load();
  g_peak.store(base);
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(WriteImage(*layout, fill, **sink).has_value());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  int64_t peak = g_peak.load() - base;
  EXPECT_LE(max_call, kWriteBufferBytes);
  EXPECT_TRUE(in_order);
  EXPECT_LT(peak, int64_t(kWriteBufferBytes + (1 << 20))) << "peak heap growth while writing";
  RecordProperty("write_seconds", std::to_string(secs));
  std::cerr << "2 GiB image written in " << secs << " s, peak heap growth " << peak << " bytes\n";

  auto img = Image::Open(image);
  ASSERT_TRUE(img.has_value()) << img.error().ToString();
  const ImageEntry* big = nullptr;
  for (const auto& e : img->entries())
    if (e.path == "repo/data/ab/big") big = &e;
  ASSERT_NE(big, nullptr);
  ASSERT_EQ(big->size, kBig);
  // Spot-check the bytes across the file, including its unaligned end.
  std::vector<uint8_t> got(4096), want(4096);
  for (uint64_t off : {uint64_t(0), uint64_t(1) << 20, uint64_t(1 << 30) + 7, kBig - 4096}) {
    ASSERT_TRUE(img->Read(*big, off, got).has_value());
    pattern(off, want);
    EXPECT_EQ(got, want) << off;
  }
  TempDir tmp2;
  ExpectFsckClean(image, *layout, tmp2);
}

}  // namespace
}  // namespace cv::courier
