#include "storage/record.h"

#include <unistd.h>

#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "storage/io/io.h"
#include "storage/store_impl.h"

namespace cv::storage {
namespace {

RecordHeader Sample() {
  RecordHeader h;
  h.key.device = index::NewId();
  h.key.type = index::ObjectType::kData;
  h.key.name = std::string(64, 'a');
  h.layout = index::Layout::kErasure;
  h.k = 4;
  h.m = 2;
  h.shard = 5;
  h.stripe = 77;
  h.shard_unit = 262144;
  h.payload_len = 1000;
  h.object_size = 123456789;
  h.created_ns = 42;
  h.payload_xxh3 = 0x1122334455667788ull;
  h.sha256[3] = 9;
  return h;
}

TEST(RecordTest, HeaderRoundTripsAndIsAligned) {
  RecordHeader h = Sample();
  const size_t hb = HeaderBytes(h.key);
  EXPECT_EQ(hb % 64, 0u);
  std::vector<uint8_t> buf(hb);
  EncodeHeader(h, buf);
  auto d = DecodeHeader(buf);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->key, h.key);
  EXPECT_EQ(d->stripe, 77u);
  EXPECT_EQ(d->shard, 5);
  EXPECT_EQ(d->payload_len, 1000u);
  EXPECT_EQ(d->object_size, 123456789u);
  EXPECT_EQ(d->payload_xxh3, h.payload_xxh3);
  EXPECT_EQ(d->sha256, h.sha256);
  EXPECT_EQ(RecordBytes(h.key, 1000) % kRecordAlign, 0u);
  EXPECT_GE(RecordBytes(h.key, 1000), hb + 1000);
}

TEST(RecordTest, EveryFlippedHeaderByteIsRejected) {
  RecordHeader h = Sample();
  std::vector<uint8_t> buf(HeaderBytes(h.key));
  EncodeHeader(h, buf);
  for (size_t i = 0; i < buf.size(); ++i) {
    auto copy = buf;
    copy[i] ^= 0x40;
    EXPECT_FALSE(DecodeHeader(copy).has_value()) << "byte " << i;
  }
}

TEST(RecordTest, TruncatedAndRandomBytesAreRejectedWithoutOverread) {
  RecordHeader h = Sample();
  std::vector<uint8_t> buf(HeaderBytes(h.key));
  EncodeHeader(h, buf);
  for (size_t n = 0; n < buf.size(); ++n) {
    std::vector<uint8_t> cut(buf.begin(), buf.begin() + n);  // exact size: ASan sees overreads
    EXPECT_FALSE(DecodeHeader(cut).has_value()) << n;
  }
  std::mt19937_64 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> junk(rng() % 600);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    if (junk.size() >= 4) {  // give the magic a chance so deeper checks run
      junk[0] = 0x43; junk[1] = 0x56; junk[2] = 0x53; junk[3] = 0x31;
    }
    (void)DecodeHeader(junk);
  }
}

// Found by fuzz_scan_extent: a valid header whose payload runs past the end of the extent was
// reported as a record, and index rebuild then allocated and read its whole claimed length
// (payload_len is 32 bits: up to 4 GiB). Writers never reserve past an extent's capacity, so
// such a header is garbage that happens to checksum, and the scan skips it.
TEST(ScanExtentTest, RecordRunningPastTheExtentEndIsNotReported) {
  std::string path = ::testing::TempDir() + "/scan_extent_test.XXXXXX";
  const int fd = mkstemp(path.data());
  ASSERT_GE(fd, 0);
  std::vector<uint8_t> file(3 * kRecordAlign, 0);
  RecordHeader h = Sample();
  h.payload_len = 1000;
  EncodeHeader(h, std::span(file).subspan(0));
  EncodeHeader(h, std::span(file).subspan(kRecordAlign));  // ends at 8192: fits
  h.payload_len = 1u << 30;
  EncodeHeader(h, std::span(file).subspan(2 * kRecordAlign));  // claims 1 GiB of a 12 KiB file
  ASSERT_EQ(::write(fd, file.data(), file.size()), static_cast<ssize_t>(file.size()));
  ::close(fd);

  auto env = NewPosixEnv();
  auto f = env->Open(path, /*create=*/false, /*want_direct=*/false);
  ASSERT_TRUE(f) << f.error().ToString();
  Extent ext;
  ext.capacity = file.size();
  ext.file = std::move(*f);
  auto recs = internal::ScanExtent(env.get(), ext);
  ASSERT_TRUE(recs) << recs.error().ToString();
  ASSERT_EQ(recs->size(), 2u);
  EXPECT_EQ((*recs)[0].offset, 0u);
  EXPECT_EQ((*recs)[1].offset, kRecordAlign);
  for (const auto& r : *recs) EXPECT_LE(r.offset + r.bytes, ext.capacity);
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace cv::storage
