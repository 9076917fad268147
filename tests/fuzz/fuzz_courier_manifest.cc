// fuzz_courier_manifest: the SHA256SUMS parser of courier images (courier), which
// `cvctl courier verify` runs on a file read from a drive that came back from a customer.
// Input: the manifest text.
// Properties: an accepted manifest has at least one line, no duplicate path, and paths that
// are relative with no empty, "." or ".." component and no backslash or control character;
// formatting what was parsed and parsing that again gives the same entries, and the
// formatted text is exactly the sum of Sha256SumsLineBytes over its paths.
#include <set>
#include <string>

#include "courier/courier.h"
#include "tests/fuzz/fuzz_input.h"

namespace courier = cv::courier;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = courier::ParseSha256Sums(text);
  if (!parsed) return 0;
  CV_FUZZ_CHECK(!parsed->empty());
  std::set<std::string> seen;
  uint64_t line_bytes = 0;
  for (const auto& e : *parsed) {
    CV_FUZZ_CHECK(!e.path.empty() && e.path.front() != '/');
    CV_FUZZ_CHECK(seen.insert(e.path).second);
    CV_FUZZ_CHECK(e.path.find('\\') == std::string::npos);
    for (unsigned char c : e.path) CV_FUZZ_CHECK(c >= 0x20 && c != 0x7f);
    size_t start = 0;
    while (start <= e.path.size()) {
      size_t slash = e.path.find('/', start);
      if (slash == std::string::npos) slash = e.path.size();
      const std::string_view comp(e.path.data() + start, slash - start);
      CV_FUZZ_CHECK(!comp.empty() && comp != "." && comp != "..");
      start = slash + 1;
    }
    line_bytes += courier::Sha256SumsLineBytes(e.path);
  }
  const std::string again = courier::FormatSha256Sums(*parsed);
  CV_FUZZ_CHECK(again.size() == line_bytes);
  auto reparsed = courier::ParseSha256Sums(again);
  CV_FUZZ_CHECK(reparsed.has_value() && reparsed->size() == parsed->size());
  for (size_t i = 0; i < parsed->size(); ++i) {
    CV_FUZZ_CHECK((*reparsed)[i].path == (*parsed)[i].path);
    CV_FUZZ_CHECK((*reparsed)[i].digest == (*parsed)[i].digest);
  }
  return 0;
}
