// fuzz_index_schema: the index's key and value decoders (index/schema.h), which read whatever
// LMDB hands back after a bad disk or a bug. Input: selector byte (which decoder; bit 7: seal
// the value, i.e. append the XXH3 checksum that values end with, so that the fuzzer gets past
// it), then the bytes.
// Properties: no crash, no read outside the input, no huge allocation (ASan's allocator limit
// and -rss_limit_mb catch it); when a decoder succeeds, encoding its result gives back
// exactly the input bytes (one encoding per value: no two byte strings mean the same record).
#include <xxhash.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "index/schema.h"
#include "tests/fuzz/fuzz_input.h"

using cv::fuzz::FuzzInput;
namespace schema = cv::index::schema;

namespace {

// Encoders return either the bytes or Result<bytes>.
std::string Bytes(std::string s) { return s; }
std::string Bytes(const cv::Result<std::string>& r) {
  CV_FUZZ_CHECK(r.has_value());  // a decoded record is always encodable
  return *r;
}

// `legacy_suffix`: bytes an older format of the value lacked, which the decoder defaults and
// the encoder writes as zeros (device values before the deletion fields).
template <class Decode, class Encode>
void RoundTrip(std::string_view in, Decode decode, Encode encode, size_t legacy_suffix = 0) {
  const std::string copy(in);  // exact-size heap copy for ASan
  auto v = decode(std::string_view(copy));
  if (!v) {
    CV_FUZZ_CHECK(v.error().kind == cv::ErrorKind::kCorruption ||
                  v.error().kind == cv::ErrorKind::kInvalidArgument);
    return;
  }
  const std::string out = Bytes(encode(*v));
  if (out == copy) return;
  CV_FUZZ_CHECK(legacy_suffix != 0 && out.size() == copy.size() + legacy_suffix);
  CV_FUZZ_CHECK(out.compare(0, copy.size() - 8, copy, 0, copy.size() - 8) == 0);
  CV_FUZZ_CHECK(out.compare(copy.size() - 8, legacy_suffix, std::string(legacy_suffix, '\0')) == 0);
}

// CV_FUZZ_WRITE_SEEDS=DIR: writes one input per decoder, each an encoded sample record (values
// without their checksum, selector bit 7 set), then runs as usual. make_corpus.py says when.
void WriteSeeds(const std::string& dir) {
  using namespace cv::index;
  auto put = [&](int sel, const std::string& name, std::string bytes) {
    if (sel >= 3 && !(sel >= 7 && sel <= 10)) {  // a value: drop the checksum, ask for sealing
      bytes.resize(bytes.size() - 8);
      sel |= 0x80;
    }
    std::ofstream(dir + "/seed-" + name, std::ios::binary) << static_cast<char>(sel) << bytes;
  };
  Id a{}, b{};
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i), b[i] = 0xa0 + i;
  const std::string name(64, 'e');
  put(0, "object-key", *schema::EncodeObjectKey(ObjectKey{a, ObjectType::kData, name}));
  put(1, "extent-key", schema::EncodeExtentKey(3, 77));
  put(2, "device-key", schema::EncodeDeviceKey(a));
  ObjectRecord obj{1 << 20, 1700000000, Layout::kErasure, 4, 2, 262144, {}, {}};
  for (uint16_t d = 0; d < 6; ++d) obj.shards.push_back(ShardLoc{d, 1, 4096u * d});
  put(3, "object", *schema::EncodeObject(obj));
  put(4, "extent", schema::EncodeExtent(ExtentRecord{256 << 20, 8192, 4096}));
  DeviceRecord dev;
  dev.id = a;
  dev.account = b;
  dev.name = "laptop";
  dev.closed_ns = 5;
  put(5, "device", *schema::EncodeDevice(dev));
  put(6, "meta", schema::EncodeMeta("4+2"));
  put(7, "id-key", schema::EncodeIdKey(a));
  put(8, "pair-key", schema::EncodePairKey(a, b));
  put(9, "seq-key", schema::EncodeSeqKey(42));
  put(10, "id-seq-key", schema::EncodeIdSeqKey(a, 42));
  put(11, "partner", *schema::EncodePartner(Partner{a, "reseller", 7}));
  Account acc;
  acc.id = a;
  acc.partner = b;
  acc.plan_quota_bytes = 1 << 30;
  acc.device_limit = 3;
  put(12, "account", *schema::EncodeAccount(acc));
  put(13, "addon", schema::EncodeAddOn(AddOn{a, b, 1000, 0, 9}));
  AdminKey key;
  key.id = a;
  key.role = AdminRole::kPartner;
  key.partner = b;
  put(14, "admin-key", *schema::EncodeAdminKey(key));
  AuditRecord audit;
  audit.seq = 3;
  audit.role = "operator";
  audit.action = "account.update";
  audit.account = b;
  audit.after_json = "{}";
  put(15, "audit", *schema::EncodeAudit(audit));
  Job job;
  job.id = a;
  job.kind = "device.purge";
  job.state = "scheduled";
  job.device = b;
  put(16, "job", *schema::EncodeJob(job));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("CV_FUZZ_WRITE_SEEDS")) WriteSeeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t sel = in.Byte();
  std::string bytes(in.Rest());
  if (sel & 0x80) {
    const uint64_t sum = XXH3_64bits(bytes.data(), bytes.size());
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>(sum >> (8 * i)));
  }
  using namespace cv::index;
  switch (sel & 0x7f) {
    case 0:
      RoundTrip(bytes, schema::DecodeObjectKey,
                [](const ObjectKey& k) { return schema::EncodeObjectKey(k); });
      break;
    case 1:
      RoundTrip(bytes, schema::DecodeExtentKey,
                [](const schema::ExtentKey& k) { return schema::EncodeExtentKey(k.disk, k.extent); });
      break;
    case 2:
      RoundTrip(bytes, schema::DecodeDeviceKey, schema::EncodeDeviceKey);
      break;
    case 3:
      RoundTrip(bytes, schema::DecodeObject, schema::EncodeObject);
      break;
    case 4:
      RoundTrip(bytes, schema::DecodeExtent, schema::EncodeExtent);
      break;
    case 5:
      RoundTrip(bytes, schema::DecodeDevice, schema::EncodeDevice, /*closed_ns, purge_job*/ 24);
      break;
    case 6:
      RoundTrip(bytes, schema::DecodeMeta, schema::EncodeMeta);
      break;
    case 7:
      RoundTrip(bytes, schema::DecodeIdKey, schema::EncodeIdKey);
      break;
    case 8:
      RoundTrip(bytes, schema::DecodePairKey, [](const std::pair<Id, Id>& p) {
        return schema::EncodePairKey(p.first, p.second);
      });
      break;
    case 9:
      RoundTrip(bytes, schema::DecodeSeqKey, schema::EncodeSeqKey);
      break;
    case 10:
      RoundTrip(bytes, schema::DecodeIdSeqKey, [](const std::pair<Id, uint64_t>& p) {
        return schema::EncodeIdSeqKey(p.first, p.second);
      });
      break;
    case 11:
      RoundTrip(bytes, schema::DecodePartner, schema::EncodePartner);
      break;
    case 12:
      RoundTrip(bytes, schema::DecodeAccount, schema::EncodeAccount);
      break;
    case 13:
      RoundTrip(bytes, schema::DecodeAddOn, schema::EncodeAddOn);
      break;
    case 14:
      RoundTrip(bytes, schema::DecodeAdminKey, schema::EncodeAdminKey);
      break;
    case 15:
      RoundTrip(bytes, schema::DecodeAudit, schema::EncodeAudit);
      break;
    case 16:
      RoundTrip(bytes, schema::DecodeJob, schema::EncodeJob);
      break;
    default:
      break;
  }
  return 0;
}
