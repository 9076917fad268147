// fuzz_scan_extent: extent recovery (ScanExtent, storage/store_impl.h) on an arbitrary extent
// file, as index rebuild and compaction read one after a crash or bit rot. Input: selector
// byte, then the extent's bytes, laid out by the selector:
//   0: as they are (raw garbage);
//   1: as they are, and every 4096-byte block that starts with a plausible header gets a valid
//      magic, version and header checksum patched in;
//   2: the rest is cut into pieces of at most 512 bytes, each placed at the start of its own
//      4096-byte block (zeros after it), then patched as in 1: many records, small inputs.
// The file is written to a temporary path and scanned through the pread Env.
// Properties: no crash or sanitizer report; every reported record starts on a 4096 boundary,
// lies entirely inside the file, follows the previous one without overlap, and its header is
// what DecodeHeader reads at that offset.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstring>
#include <filesystem>
#include <vector>

#include "storage/io/io.h"
#include "storage/record.h"
#include "storage/store_impl.h"
#include "tests/fuzz/fuzz_input.h"

using cv::fuzz::FuzzInput;
namespace storage = cv::storage;

namespace {

constexpr size_t kBlock = storage::kRecordAlign;
constexpr size_t kPiece = 512;

void PatchHeaders(std::vector<uint8_t>& file) {
  for (size_t at = 0; at + 8 <= file.size(); at += kBlock) {
    uint8_t* p = file.data() + at;
    uint16_t hb;
    std::memcpy(&hb, p + 6, 2);
    // Only blocks that look like a header start: leave real garbage as garbage.
    if (p[0] != 'C' && p[0] != 0) continue;
    const uint32_t magic = storage::kRecordMagic;
    const uint16_t version = storage::kRecordVersion;
    std::memcpy(p, &magic, 4);
    std::memcpy(p + 4, &version, 2);
    if (hb >= 16 && at + hb <= file.size()) {
      const uint64_t sum = XXH3_64bits(p, hb - 8);
      std::memcpy(p + hb - 8, &sum, 8);
    }
  }
}

struct TempFile {
  std::string path;
  TempFile() {
    const char* tmp = std::getenv("TMPDIR");
    path = std::string(tmp && *tmp ? tmp : "/tmp") + "/fuzz_extent.XXXXXX";
    int fd = mkstemp(path.data());
    CV_FUZZ_CHECK(fd >= 0);
    ::close(fd);
  }
  ~TempFile() { ::unlink(path.c_str()); }
};

void Scan(const std::vector<uint8_t>& bytes) {
  static TempFile tmp;
  static std::unique_ptr<storage::Env> env = storage::NewPosixEnv();
  {
    int fd = ::open(tmp.path.c_str(), O_WRONLY | O_TRUNC);
    CV_FUZZ_CHECK(fd >= 0);
    CV_FUZZ_CHECK(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
    ::close(fd);
  }
  auto file = env->Open(tmp.path, /*create=*/false, /*want_direct=*/false);
  CV_FUZZ_CHECK(file.has_value());
  storage::Extent ext;
  ext.capacity = bytes.size();  // as DiskSet opens an existing extent: its file size
  ext.file = std::move(*file);
  auto recs = storage::internal::ScanExtent(env.get(), ext);
  CV_FUZZ_CHECK(recs.has_value());
  uint64_t next = 0;
  for (const auto& r : *recs) {
    CV_FUZZ_CHECK(r.offset % kBlock == 0 && r.offset >= next);
    CV_FUZZ_CHECK(r.bytes >= kBlock && r.bytes % kBlock == 0);
    if (r.offset + r.bytes > bytes.size()) {
      std::fprintf(stderr, "record at %llu of %llu bytes in a %zu-byte extent\n",
                   static_cast<unsigned long long>(r.offset),
                   static_cast<unsigned long long>(r.bytes), bytes.size());
    }
    CV_FUZZ_CHECK(r.offset + r.bytes <= bytes.size());
    auto h = storage::DecodeHeader(std::span(bytes).subspan(r.offset));
    CV_FUZZ_CHECK(h && h->key == r.key && h->payload_len == r.header.payload_len);
    CV_FUZZ_CHECK(r.bytes == storage::RecordBytes(h->key, h->payload_len));
    CV_FUZZ_CHECK(r.tombstone == h->tombstone());
    next = r.offset + r.bytes;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t mode = in.Byte() % 3;
  const std::string_view rest = in.Rest();
  std::vector<uint8_t> file;
  if (mode == 2) {
    const size_t pieces = (rest.size() + kPiece - 1) / kPiece;
    file.assign(pieces * kBlock, 0);
    for (size_t i = 0; i < pieces; ++i) {
      const std::string_view piece = rest.substr(i * kPiece, kPiece);
      std::memcpy(file.data() + i * kBlock, piece.data(), piece.size());
    }
  } else {
    file.assign(rest.begin(), rest.end());
  }
  if (mode != 0) PatchHeaders(file);
  Scan(file);
  return 0;
}
