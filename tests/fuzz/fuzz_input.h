// FuzzInput: carves typed values out of a fuzz input, front to back. Running out of bytes is
// not an error: integers read as zero and strings as short, so that every input is usable.
// CV_FUZZ_CHECK aborts with the failed property: libFuzzer reports it as a crash and saves
// the input.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#define CV_FUZZ_CHECK(cond)                                                          \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)

namespace cv::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size)
      : rest_(reinterpret_cast<const char*>(data), size) {}

  uint8_t Byte() {
    if (rest_.empty()) return 0;
    uint8_t b = static_cast<uint8_t>(rest_[0]);
    rest_.remove_prefix(1);
    return b;
  }
  template <class T>
  T Int() {
    T v{};
    const size_t n = std::min(sizeof v, rest_.size());
    std::memcpy(&v, rest_.data(), n);
    rest_.remove_prefix(n);
    return v;
  }
  // Up to the next `sep` (consumed) or the end.
  std::string_view Until(char sep) {
    size_t at = rest_.find(sep);
    std::string_view out = rest_.substr(0, at);
    rest_.remove_prefix(at == std::string_view::npos ? rest_.size() : at + 1);
    return out;
  }
  std::string_view Rest() {
    std::string_view out = rest_;
    rest_ = {};
    return out;
  }
  bool empty() const { return rest_.empty(); }

 private:
  std::string_view rest_;
};

}  // namespace cv::fuzz
