// cvctl courier: downloading a courier job's images and verifying an image offline.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <algorithm>
#include <map>
#include <set>
#include <vector>

#include "admin/cvctl/client.h"
#include "admin/cvctl/cvctl.h"
#include "admin/cvctl/views.h"
#include "courier/courier.h"

namespace cv::cvctl {

namespace {

// SHA-256 of a file's first `bytes` bytes.
std::optional<std::string> FileSha256(int fd, uint64_t bytes) {
  Sha256 sha;
  std::vector<uint8_t> buf(1 << 20);
  uint64_t pos = 0;
  while (pos < bytes) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), bytes - pos));
    ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(pos));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    sha.Update(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
    pos += static_cast<uint64_t>(n);
  }
  return ToHex(sha.Final());
}

}  // namespace

int DownloadCourierImages(AdminClient& client, const std::string& job,
                          const std::vector<CourierImageInfo>& images, const std::string& out,
                          bool progress) {
  for (const CourierImageInfo& img : images) {
    const std::string path =
        images.size() == 1
            ? out
            : out + "-" + std::to_string(img.drive) + "-of-" + std::to_string(images.size());
    struct stat st {};
    const bool exists = ::stat(path.c_str(), &st) == 0;
    const bool block = exists && S_ISBLK(st.st_mode);
    if (images.size() > 1 && block) {
      std::fprintf(stderr, "cvctl: the job made %zu images; give a file name, not a device\n",
                   images.size());
      return kExitUsage;
    }
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      std::fprintf(stderr, "cvctl: cannot open %s: %s\n", path.c_str(), std::strerror(errno));
      return kExitRefused;
    }
    // A regular file already partly there resumes where it ends.
    uint64_t from = 0;
    if (!block && exists && S_ISREG(st.st_mode)) {
      from = static_cast<uint64_t>(st.st_size);
      if (from > img.bytes) {
        if (::ftruncate(fd, 0) != 0) from = 0;
        from = 0;
      }
    }
    if (block) {
      uint64_t dev_bytes = 0;
      off_t end = ::lseek(fd, 0, SEEK_END);
      if (end > 0) dev_bytes = static_cast<uint64_t>(end);
      if (dev_bytes < img.bytes) {
        std::fprintf(stderr, "cvctl: %s holds %s, the image needs %s\n", path.c_str(),
                     HumanBytes(dev_bytes).c_str(), HumanBytes(img.bytes).c_str());
        ::close(fd);
        return kExitUsage;
      }
    }
    uint64_t done = from;
    auto last = std::chrono::steady_clock::now();
    const bool tty = progress && ::isatty(2);
    auto on_bytes = [&](uint64_t n) {
      done += n;
      auto now = std::chrono::steady_clock::now();
      if (tty && now - last >= std::chrono::milliseconds(500)) {
        last = now;
        std::fprintf(stderr, "\r\033[Kdownloading drive %d: %5.1f%% %s/%s", img.drive,
                     img.bytes ? 100.0 * done / img.bytes : 100.0, HumanBytes(done).c_str(),
                     HumanBytes(img.bytes).c_str());
      }
    };
    if (from < img.bytes) {
      auto a = client.Download("jobs/" + job + "/images/" + std::to_string(img.drive), fd, from,
                               on_bytes);
      if (tty) std::fprintf(stderr, "\r\033[K");
      if (!a) {
        ::close(fd);
        std::fprintf(stderr, "cvctl: %s (run the command again to resume)\n", a.error().c_str());
        return kExitUnreachable;
      }
      if (a->status / 100 != 2) {
        ::close(fd);
        std::fprintf(stderr, "cvctl: the node refused the image download: %d %s\n", a->status,
                     a->body.c_str());
        return kExitRefused;
      }
    }
    if (!block && ::ftruncate(fd, static_cast<off_t>(img.bytes)) != 0) {
      std::fprintf(stderr, "cvctl: cannot size %s: %s\n", path.c_str(), std::strerror(errno));
      ::close(fd);
      return kExitRefused;
    }
    if (::fsync(fd) != 0) {
      std::fprintf(stderr, "cvctl: fsync %s: %s\n", path.c_str(), std::strerror(errno));
      ::close(fd);
      return kExitRefused;
    }
    auto sum = FileSha256(fd, img.bytes);
    ::close(fd);
    if (!sum || *sum != img.sha256) {
      std::fprintf(stderr, "cvctl: %s: SHA-256 %s, the node's image has %s\n", path.c_str(),
                   sum ? sum->c_str() : "(unreadable)", img.sha256.c_str());
      return kExitProblems;
    }
    std::printf("drive %d of %zu: %s (%s, sha256 %s)\n", img.drive, images.size(), path.c_str(),
                HumanBytes(img.bytes).c_str(), img.sha256.c_str());
  }
  std::fflush(stdout);
  return kExitOk;
}

int VerifyCourierImage(const std::string& image, const std::string& pubkey_file, bool json) {
  std::vector<std::string> problems;
  auto finish = [&](int files) {
    if (json) {
      boost::json::object o;
      o["image"] = image;
      o["clean"] = problems.empty();
      o["files"] = files;
      boost::json::array p;
      for (const auto& s : problems) p.push_back(boost::json::value(s));
      o["problems"] = std::move(p);
      std::printf("%s\n", boost::json::serialize(o).c_str());
    } else if (problems.empty()) {
      std::printf("%s: clean (%d files, file system, SHA-256 sums and signature verified)\n",
                  image.c_str(), files);
    }
    for (const auto& s : problems) std::fprintf(stderr, "cvctl: %s: %s\n", image.c_str(), s.c_str());
    std::fflush(stdout);
    return problems.empty() ? kExitOk : kExitProblems;
  };
  auto pub = courier::LoadPem(pubkey_file);
  if (!pub) {
    std::fprintf(stderr, "cvctl: cannot read the public key %s: %s\n", pubkey_file.c_str(),
                 pub.error().ToString().c_str());
    return kExitUsage;
  }
  auto img = courier::Image::Open(image);
  if (!img) {
    if (img.error().kind == ErrorKind::kNotFound || img.error().kind == ErrorKind::kIOError) {
      std::fprintf(stderr, "cvctl: cannot read %s: %s\n", image.c_str(),
                   img.error().ToString().c_str());
      return kExitUsage;
    }
    problems.push_back("file system: " + img.error().ToString());
    return finish(0);
  }
  std::map<std::string, const courier::ImageEntry*> files;
  for (const auto& e : img->entries()) {
    if (!e.is_dir) files[e.path] = &e;
  }
  auto sums_entry = files.find("SHA256SUMS");
  auto sig_entry = files.find("SHA256SUMS.sig");
  if (sums_entry == files.end() || sig_entry == files.end()) {
    problems.push_back("SHA256SUMS or SHA256SUMS.sig is missing: not a courier image");
    return finish(static_cast<int>(files.size()));
  }
  auto sums = img->ReadAll(*sums_entry->second);
  auto sig = img->ReadAll(*sig_entry->second);
  if (!sums || !sig) {
    problems.push_back("cannot read SHA256SUMS or its signature");
    return finish(static_cast<int>(files.size()));
  }
  // The signature first: it is what makes the sums worth checking.
  auto verified = courier::Ed25519Verify(
      *pub, {reinterpret_cast<const uint8_t*>(sums->data()), sums->size()},
      {reinterpret_cast<const uint8_t*>(sig->data()), sig->size()});
  if (!verified) {
    problems.push_back("SHA256SUMS.sig: the signature does not match SHA256SUMS and this key (" +
                       verified.error().context + ")");
  }
  auto manifest = courier::ParseSha256Sums(*sums);
  if (!manifest) {
    problems.push_back("SHA256SUMS: " + manifest.error().ToString());
    return finish(static_cast<int>(files.size()));
  }
  std::set<std::string> listed;
  std::vector<uint8_t> buf(1 << 20);
  for (const auto& m : *manifest) {
    listed.insert(m.path);
    auto it = files.find(m.path);
    if (it == files.end()) {
      problems.push_back(m.path + ": listed in SHA256SUMS but not on the drive");
      continue;
    }
    Sha256 sha;
    const courier::ImageEntry& e = *it->second;
    bool ok = true;
    for (uint64_t pos = 0; pos < e.size && ok;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), e.size - pos));
      auto r = img->Read(e, pos, std::span<uint8_t>(buf.data(), n));
      if (!r) {
        problems.push_back(m.path + ": unreadable: " + r.error().ToString());
        ok = false;
        break;
      }
      sha.Update(std::span<const uint8_t>(buf.data(), n));
      pos += n;
    }
    if (ok && sha.Final() != m.digest) problems.push_back(m.path + ": SHA-256 mismatch");
  }
  for (const auto& [path, e] : files) {
    if (path != "SHA256SUMS" && path != "SHA256SUMS.sig" && !listed.count(path)) {
      problems.push_back(path + ": on the drive but not listed in SHA256SUMS");
    }
  }
  return finish(static_cast<int>(files.size()));
}

}  // namespace cv::cvctl
