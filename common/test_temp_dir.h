// For tests only (needs GoogleTest): a fresh directory for one test, removed with everything in
// it when the TempDir is destroyed.
#pragma once

#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

#include <gtest/gtest.h>

namespace cv {

class TempDir {
 public:
  // Under `under` (GoogleTest's temporary directory unless given); `prefix` names the test.
  explicit TempDir(const std::string& prefix = "test", std::string under = ::testing::TempDir()) {
    if (!under.ends_with('/')) under += '/';
    std::string tmpl = under + prefix + ".XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp under " << under << ": " << std::strerror(errno);
    }
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace cv
