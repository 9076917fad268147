// courier: drive images for courier recovery. A courier image is a raw disk image (GPT with
// one "Microsoft basic data" partition holding an exFAT file system, FORMAT.md) written as
// one stream in increasing offset order, so it can go straight to a file, a block device or
// an HTTP response with no staging copy. Also: the reader/verifier for such images, the
// planner that splits a backup over several drives, SHA256SUMS and Ed25519 signatures.
//
// Thread-safety: a Layout is immutable and may be shared; a Sink is used by one thread at a
// time (PipelinedSink hands its inner sink to a thread of its own); Image::Read may be
// called concurrently. Nothing here keeps global state.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/common.h"

namespace cv::courier {

// One regular file of the image. `path` is relative, '/'-separated UTF-8 ("repo/keys/ab..");
// each component is a valid exFAT name (1..255 UTF-16 units, none of "*/:<>?\| or 0x00-0x1F).
struct FileSpec {
  std::string path;
  uint64_t size = 0;
};

struct LayoutOptions {
  std::string label = "CHUNKVAULT";     // exFAT volume label, at most 11 UTF-16 units
  int64_t unix_time = 0;                // every timestamp in the file system (UTC)
  uint64_t image_bytes = 0;             // 0: what the content needs plus slack; else exact
  uint32_t cluster_bytes = 0;           // 0: by volume size (4 KiB / 32 KiB / 128 KiB)
  std::vector<std::string> empty_dirs;  // directories to create even if they hold no file
  // The volume's up-case table as stored (compressed or not). Empty: Microsoft's recommended
  // table (spec 7.2.5.1), which Windows expects; see FORMAT.md.
  std::vector<uint8_t> upcase_table;
};

// Where everything goes. Files are placed contiguously in path order (component-wise byte
// order), which is also the order the writer asks for their bytes.
class Layout {
 public:
  // Fails with kInvalidArgument (bad name, duplicate or case-insensitive collision, a path
  // that is both a file and a directory) or kNoSpace (content does not fit image_bytes).
  static Result<Layout> Plan(std::vector<FileSpec> files, LayoutOptions options);

  uint64_t image_bytes() const;
  uint64_t partition_offset() const;  // bytes from the image start (1 MiB aligned)
  uint64_t partition_bytes() const;
  uint32_t cluster_bytes() const;
  const std::vector<FileSpec>& files() const;     // as given to Plan, same indexes
  uint64_t file_offset(size_t file_index) const;  // image byte offset of the file's data
  std::vector<size_t> write_order() const;        // file indexes in image order
  // Bytes of clusters left free (what a split plan may still use).
  uint64_t free_bytes() const;

  struct Impl;

 private:
  friend struct LayoutAccess;  // the writer and the split planner (format.h)
  std::shared_ptr<const Impl> impl_;
};

// ---- the room an image takes ----
// What goes on one image, in aggregate: enough for a bound, without the file list.
struct ContentSummary {
  uint64_t files = 0;             // regular files
  uint64_t file_bytes = 0;        // their sizes, summed
  uint64_t dirs = 0;              // directories besides the root
  uint64_t max_name_units = 255;  // the longest name (one path component), in UTF-16 units
};
// An upper bound of the bytes that the file system holding an image file allocates for it
// when WriteImage writes the image through an FdSink to a regular file, where long runs of
// zeros and free space become holes: the partition table, the exFAT structures, every
// directory, every file rounded up to whole clusters (the tail of a file's last cluster is
// written), the short runs of zeros between them, and the file system's own overhead.
// `image_bytes` as in LayoutOptions (0: the image sized to its content); cluster sizes as
// Layout::Plan picks them by default. Monotone in every field of `content`, and additive
// enough that the bound of two summaries summed is at least that of their union.
uint64_t AllocatedBytesBound(const ContentSummary& content, uint64_t image_bytes);

// Where the image goes. Calls come strictly in increasing offset order, with no gaps.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual Status Write(std::span<const uint8_t> data) = 0;
  // The next n bytes are zero. Default: Write from a zero buffer.
  virtual Status WriteZeros(uint64_t n);
  // The next n bytes are free space whose content does not matter. Default: WriteZeros.
  virtual Status Skip(uint64_t n) { return WriteZeros(n); }
  // After the last byte.
  virtual Status Finish() { return {}; }
  // Write of the first n bytes of `buf`, a buffer of kWriteBufferBytes, which the sink may
  // keep: it then leaves another such buffer in `buf` (no copy). Default: Write.
  virtual Status Hand(std::unique_ptr<uint8_t[]>& buf, size_t n) { return Write({buf.get(), n}); }
};

// Writes to a file descriptor at increasing offsets from `start`. On a regular file zeros
// and skips become holes (REQUIRES: the file holds no data past `start`); on a block device
// zeros are written and skips only seek. Finish sets a regular file's size and, if `sync`,
// fsyncs. The constructor borrows `fd`; a sink made by Open owns (closes) its fd.
class FdSink : public Sink {
 public:
  FdSink(int fd, bool regular_file, bool sync, uint64_t start = 0);
  // Opens `path`: a regular file is created or truncated (0644); a block device is used as is.
  static Result<std::unique_ptr<FdSink>> Open(const std::string& path, bool sync);
  ~FdSink() override;
  Status Write(std::span<const uint8_t> data) override;
  Status WriteZeros(uint64_t n) override;
  Status Skip(uint64_t n) override;
  Status Finish() override;
  uint64_t position() const { return pos_; }

 private:
  static constexpr uint64_t kFlushBytes = 8 << 20;  // with sync: write back every 8 MiB
  int fd_;
  bool owned_ = false, regular_, sync_;
  uint64_t pos_;
  uint64_t flushed_ = 0;  // write-back started up to here
};

// Overlaps the image's production (reading the files) with its consumption: Write copies
// into one of `depth` buffers of kWriteBufferBytes and returns (Hand takes the caller's
// buffer instead, and gives back a free one); a thread of its own calls `inner` in order.
// An error of `inner` is returned by a later call (at the latest Finish).
// `inner` must outlive this and is called from that thread only.
class PipelinedSink : public Sink {
 public:
  explicit PipelinedSink(Sink& inner, size_t depth = 4);
  ~PipelinedSink() override;
  Status Write(std::span<const uint8_t> data) override;
  Status WriteZeros(uint64_t n) override;
  Status Skip(uint64_t n) override;
  Status Finish() override;
  Status Hand(std::unique_ptr<uint8_t[]>& buf, size_t n) override;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Supplies file bytes: fill all of `out` with the bytes of file `file_index` at `offset`.
// Called in write order, offsets increasing, each call at most kWriteBufferBytes.
using FillFn = std::function<Status(size_t file_index, uint64_t offset, std::span<uint8_t> out)>;
inline constexpr size_t kWriteBufferBytes = 1 << 20;  // the writer's only sizeable buffer

// Streams the whole image into `sink`. Any error from `fill` or `sink` is returned as is.
Status WriteImage(const Layout& layout, const FillFn& fill, Sink& sink);

// ---- reading and verifying an image ----
struct ImageEntry {
  std::string path;  // relative, '/'-separated
  bool is_dir = false;
  uint64_t size = 0;    // files only
  uint64_t offset = 0;  // image byte offset of a file's first byte (0 if empty)
};

// Parses and checks every structure: protective MBR, both GPT headers and entry arrays
// (CRC32s), the exFAT main and backup boot regions (checksums and fields), FAT chains of
// the system structures, allocation bitmap (against what is really in use), up-case table
// checksum, and every directory entry set (SetChecksum, NameHash, cluster ranges, overlaps).
// Errors: kCorruption with the structure and byte offset at fault, kInvalidArgument for a
// valid image this reader does not handle (fragmented file), kIOError / kNotFound.
class Image {
 public:
  static Result<Image> Open(const std::string& path);
  Image(Image&&) noexcept;
  Image& operator=(Image&&) noexcept;
  ~Image();
  const std::vector<ImageEntry>& entries() const { return entries_; }  // path order
  std::string label() const { return label_; }
  const std::vector<uint8_t>& upcase_table() const { return upcase_table_; }  // as stored
  // Reads `out.size()` bytes of a file entry at `offset`; kInvalidArgument past its end.
  Status Read(const ImageEntry& file, uint64_t offset, std::span<uint8_t> out) const;
  Result<std::string> ReadAll(const ImageEntry& file) const;  // for small files

 private:
  Image() = default;
  int fd_ = -1;
  std::vector<ImageEntry> entries_;
  std::string label_;
  std::vector<uint8_t> upcase_table_;
};

// ---- splitting a backup over several drives ----
struct DrivePlan {
  std::vector<size_t> data_files;  // indexes into `data`
  uint64_t manifest_bytes = 0;     // size of this drive's manifest file, if any
};
// Assigns every data file to a drive (first fit, largest first) so that each drive's image
// of exactly `options.image_bytes` holds `common` (sizes are upper bounds), its data files
// and, if `manifest_path` is not empty, a manifest listing all of them except itself and
// `manifest_path` + ".sig" (whose size must be in `common`). Fails with kNoSpace naming the
// cause if the common files alone or one data file do not fit a drive.
Result<std::vector<DrivePlan>> PlanSplit(const std::vector<FileSpec>& common,
                                         const std::vector<FileSpec>& data,
                                         const LayoutOptions& options,
                                         std::string_view manifest_path);

// ---- SHA256SUMS (exactly what `sha256sum -c` reads) ----
struct ManifestEntry {
  std::string path;
  Sha256Digest digest{};
};
std::string FormatSha256Sums(const std::vector<ManifestEntry>& entries);
uint64_t Sha256SumsLineBytes(std::string_view path);
// Strict: lines "<64 lowercase hex><space><space><path>\n" (the last newline may be
// missing, as sha256sum allows); the path is relative with no empty, "." or ".." component
// and no backslash or control character; no duplicates; at least one line. kCorruption
// names the line and the fault. A pure function: no I/O.
Result<std::vector<ManifestEntry>> ParseSha256Sums(std::string_view text);

// ---- Ed25519 (OpenSSL), keys as PEM (PKCS#8 private, SubjectPublicKeyInfo public) ----
using Ed25519Signature = std::array<uint8_t, 64>;
Result<std::string> GenerateEd25519PrivateKeyPem();
Result<std::string> Ed25519PublicKeyPem(std::string_view private_pem);
// Writes atomically (temp file + rename) with mode 0600.
Status SavePrivateKeyPem(const std::string& path, std::string_view private_pem);
Result<std::string> LoadPem(const std::string& path);
Result<Ed25519Signature> Ed25519Sign(std::string_view private_pem, std::span<const uint8_t> msg);
// kCorruption if the signature does not match; kInvalidArgument for a bad key.
Status Ed25519Verify(std::string_view public_pem, std::span<const uint8_t> msg,
                     std::span<const uint8_t> signature);

}  // namespace cv::courier
