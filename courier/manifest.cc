// SHA256SUMS and its Ed25519 signature.
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <unordered_set>

#include "courier/courier.h"

namespace cv::courier {

std::string FormatSha256Sums(const std::vector<ManifestEntry>& entries) {
  std::string out;
  for (const auto& e : entries) {
    out += ToHex(e.digest);
    out += "  ";
    out += e.path;
    out += '\n';
  }
  return out;
}

uint64_t Sha256SumsLineBytes(std::string_view path) { return 64 + 2 + path.size() + 1; }

Result<std::vector<ManifestEntry>> ParseSha256Sums(std::string_view text) {
  std::vector<ManifestEntry> out;
  std::unordered_set<std::string_view> seen;
  size_t line_no = 0;
  auto bad = [&](const std::string& why) {
    return Err(ErrorKind::kCorruption, "SHA256SUMS line " + std::to_string(line_no) + ": " + why);
  };
  while (!text.empty()) {
    ++line_no;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (line.size() < 64 || !IsLowerHex(line.substr(0, 64))) {
      return bad("does not start with 64 lowercase hex digits");
    }
    if (line.size() < 66 || line[64] != ' ' || line[65] != ' ') {
      return bad("the digest is not followed by two spaces");
    }
    std::string_view path = line.substr(66);
    if (path.empty()) return bad("empty path");
    for (unsigned char c : path) {
      if (c < 0x20 || c == 0x7F) return bad("control character in path");
      if (c == '\\') return bad("backslash in path (sha256sum would read an escape)");
    }
    if (path.front() == '/') return bad("absolute path");
    for (size_t pos = 0;;) {
      size_t slash = path.find('/', pos);
      std::string_view comp =
          path.substr(pos, slash == std::string_view::npos ? slash : slash - pos);
      if (comp.empty() || comp == "." || comp == "..")
        return bad("empty, '.' or '..' path component");
      if (slash == std::string_view::npos) break;
      pos = slash + 1;
    }
    if (!seen.insert(path).second) return bad("duplicate path '" + std::string(path) + "'");
    ManifestEntry e;
    e.path = std::string(path);
    FromHex(line.substr(0, 64), e.digest);
    out.push_back(std::move(e));
  }
  if (out.empty()) return Err(ErrorKind::kCorruption, "SHA256SUMS: no lines");
  return out;
}

// ---- Ed25519 ----
namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

Result<Pkey> ParseKey(std::string_view pem, bool is_private) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), int(pem.size())));
  if (!bio) return Err(ErrorKind::kInternal, "BIO_new_mem_buf");
  EVP_PKEY* k = is_private ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)
                           : PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr);
  if (!k)
    return Err(ErrorKind::kInvalidArgument,
               is_private ? "not a PEM private key" : "not a PEM public key");
  Pkey key(k);
  if (EVP_PKEY_get_id(k) != EVP_PKEY_ED25519)
    return Err(ErrorKind::kInvalidArgument, "key is not Ed25519");
  return key;
}

Result<std::string> ToPem(EVP_PKEY* k, bool is_private) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  int ok = is_private
               ? PEM_write_bio_PrivateKey(bio.get(), k, nullptr, nullptr, 0, nullptr, nullptr)
               : PEM_write_bio_PUBKEY(bio.get(), k);
  if (!ok) return Err(ErrorKind::kInternal, "PEM write");
  char* data;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, size_t(n));
}

}  // namespace

Result<std::string> GenerateEd25519PrivateKeyPem() {
  EVP_PKEY* k = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (!k) return Err(ErrorKind::kInternal, "Ed25519 key generation failed");
  Pkey key(k);
  return ToPem(k, true);
}

Result<std::string> Ed25519PublicKeyPem(std::string_view private_pem) {
  CV_TRY_ASSIGN(auto key, ParseKey(private_pem, true));
  return ToPem(key.get(), false);
}

Status SavePrivateKeyPem(const std::string& path, std::string_view pem) {
  std::string tmp = path + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return ErrnoError(errno, "create " + tmp);
  auto fail = [&](const char* what) {
    int e = errno;
    close(fd);
    unlink(tmp.c_str());
    return ErrnoError(e, std::string(what) + " " + tmp);
  };
  if (fchmod(fd, 0600) != 0) return fail("chmod");  // O_TRUNC kept an old file's mode
  for (size_t done = 0; done < pem.size();) {
    ssize_t n = write(fd, pem.data() + done, pem.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("write");
    done += size_t(n);
  }
  if (fsync(fd) != 0) return fail("fsync");
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    unlink(tmp.c_str());
    return ErrnoError(e, "rename to " + path);
  }
  // The rename is durable only once the directory is synced.
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/') + 1);
  int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return ErrnoError(errno, "open " + dir);
  int rc = fsync(dfd);
  int e = errno;
  close(dfd);
  if (rc != 0) return ErrnoError(e, "fsync " + dir);
  return {};
}

Result<std::string> LoadPem(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "open " + path);
  std::string out;
  char buf[4096];
  while (true) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      return ErrnoError(e, "read " + path);
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
    if (out.size() > (1 << 20)) {
      close(fd);
      return Err(ErrorKind::kInvalidArgument, path + ": too large for a PEM key");
    }
  }
  close(fd);
  return out;
}

Result<Ed25519Signature> Ed25519Sign(std::string_view private_pem, std::span<const uint8_t> msg) {
  CV_TRY_ASSIGN(auto key, ParseKey(private_pem, true));
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  Ed25519Signature sig;
  size_t len = sig.size();
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), sig.data(), &len, msg.data(), msg.size()) != 1 ||
      len != sig.size()) {
    return Err(ErrorKind::kInternal, "Ed25519 signing failed");
  }
  return sig;
}

Status Ed25519Verify(std::string_view public_pem, std::span<const uint8_t> msg,
                     std::span<const uint8_t> signature) {
  CV_TRY_ASSIGN(auto key, ParseKey(public_pem, false));
  if (signature.size() != 64)
    return Err(ErrorKind::kCorruption, "Ed25519 signature is not 64 bytes");
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1) {
    return Err(ErrorKind::kInternal, "Ed25519 verify init failed");
  }
  if (EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), msg.data(), msg.size()) !=
      1) {
    return Err(ErrorKind::kCorruption, "Ed25519 signature does not match");
  }
  return {};
}

}  // namespace cv::courier
