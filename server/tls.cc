#include "server/tls.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

namespace cv::server {

namespace ssl = boost::asio::ssl;

namespace {

// TLS 1.2: forward-secret key exchange with AEAD ciphers only (no CBC, no RSA key exchange).
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
// Every TLS 1.3 suite is AEAD; these are the ones clients actually offer.
constexpr const char* kTls13Suites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

// Drains OpenSSL's error queue into one string.
std::string SslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

tl::unexpected<Error> SslError(std::string what) {
  return Err(ErrorKind::kInvalidArgument, what + ": " + SslErrors());
}

struct Deleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};
template <class T>
using Ptr = std::unique_ptr<T, Deleter>;

Status AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  Ptr<X509_EXTENSION> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!ext || !X509_add_ext(cert, ext.get(), -1))
    return SslError(std::string("extension ") + value);
  return {};
}

// A certificate for `key` named `cn`, signed by issuer/issuer_key (itself when null).
Result<Ptr<X509>> MakeCert(EVP_PKEY* key, const char* cn, X509* issuer, EVP_PKEY* issuer_key,
                           long days, bool is_ca) {
  Ptr<X509> x(X509_new());
  if (!x) return SslError("X509_new");
  X509_set_version(x.get(), 2);  // v3
  uint8_t serial[16];
  RandomBytes(serial);
  serial[0] &= 0x7f;  // positive
  Ptr<BIGNUM> bn(BN_bin2bn(serial, sizeof serial, nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x.get())))
    return SslError("serial");
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600);  // tolerate small clock skew
  X509_gmtime_adj(X509_getm_notAfter(x.get()), days * 86400L);
  X509_set_pubkey(x.get(), key);
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("chunkvault"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                             -1, -1, 0);
  X509* signer = issuer ? issuer : x.get();
  X509_set_issuer_name(x.get(), X509_get_subject_name(signer));
  if (is_ca) {
    CV_TRY(AddExt(x.get(), signer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
    CV_TRY(AddExt(x.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign"));
    CV_TRY(AddExt(x.get(), signer, NID_subject_key_identifier, "hash"));
  } else {
    CV_TRY(AddExt(x.get(), signer, NID_basic_constraints, "critical,CA:FALSE"));
    CV_TRY(AddExt(x.get(), signer, NID_key_usage, "critical,digitalSignature"));
    CV_TRY(AddExt(x.get(), signer, NID_ext_key_usage, "serverAuth"));
    CV_TRY(AddExt(x.get(), signer, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1"));
    CV_TRY(AddExt(x.get(), signer, NID_subject_key_identifier, "hash"));
    CV_TRY(AddExt(x.get(), signer, NID_authority_key_identifier, "keyid:always"));
  }
  if (!X509_sign(x.get(), issuer_key ? issuer_key : key, EVP_sha256()))
    return SslError("X509_sign");
  return x;
}

Status WritePem(const std::string& path, mode_t mode, const std::function<int(BIO*)>& write) {
  Ptr<BIO> mem(BIO_new(BIO_s_mem()));
  if (!mem || write(mem.get()) != 1) return SslError("PEM encode " + path);
  char* data = nullptr;
  long len = BIO_get_mem_data(mem.get(), &data);
  std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoError(errno, "open " + tmp);
  bool ok = ::write(fd, data, static_cast<size_t>(len)) == len && ::fsync(fd) == 0;
  int e = errno;
  ::close(fd);
  if (!ok) return ErrnoError(e, "write " + tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoError(errno, "rename " + tmp);
  return {};
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// A certificate's notAfter in unix seconds; 0 if unknown.
int64_t NotAfter(const X509* cert) {
  if (!cert) return 0;
  struct tm t {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &t) != 1) return 0;
  return static_cast<int64_t>(timegm(&t));
}

// The earliest notAfter of the certificates in a PEM file; 0 when there is no such file or it
// holds no certificate.
int64_t EarliestNotAfter(const std::string& pem_file) {
  Ptr<BIO> file(BIO_new_file(pem_file.c_str(), "r"));
  if (!file) {
    ERR_clear_error();
    return 0;
  }
  int64_t earliest = 0;
  while (Ptr<X509> cert{PEM_read_bio_X509(file.get(), nullptr, nullptr, nullptr)}) {
    const int64_t t = NotAfter(cert.get());
    if (t > 0 && (earliest == 0 || t < earliest)) earliest = t;
  }
  ERR_clear_error();  // the end of the file reads as an error
  return earliest;
}

}  // namespace

Status EnsureDevCertificates(const TlsPaths& p) {
  bool have_cert = Exists(p.cert_file), have_key = Exists(p.key_file);
  if (have_cert && have_key) return {};
  if (have_cert != have_key) {
    return Err(ErrorKind::kInvalidArgument, "only one of " + p.cert_file + " and " + p.key_file +
                                                " exists; refusing to overwrite it");
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const auto& f : {p.cert_file, p.key_file, p.ca_file}) {
    fs::create_directories(fs::path(f).parent_path(), ec);
    if (ec) return Err(ErrorKind::kIOError, "create directory for " + f + ": " + ec.message());
  }
  std::string ca_key_file = (fs::path(p.ca_file).parent_path() / "ca.key").string();

  Ptr<EVP_PKEY> ca_key(EVP_EC_gen("P-256"));
  Ptr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!ca_key || !key) return SslError("EC key generation");
  CV_TRY_ASSIGN(auto ca, MakeCert(ca_key.get(), "chunkvault dev CA", nullptr, nullptr, 3650, true));
  CV_TRY_ASSIGN(auto cert, MakeCert(key.get(), "localhost", ca.get(), ca_key.get(), 825, false));

  CV_TRY(WritePem(ca_key_file, 0600, [&](BIO* b) {
    return PEM_write_bio_PrivateKey(b, ca_key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  }));
  CV_TRY(WritePem(p.ca_file, 0644, [&](BIO* b) { return PEM_write_bio_X509(b, ca.get()); }));
  CV_TRY(WritePem(p.key_file, 0600, [&](BIO* b) {
    return PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  }));
  // The certificate last: its presence is what marks the set as complete.
  CV_TRY(WritePem(p.cert_file, 0644, [&](BIO* b) {
    return PEM_write_bio_X509(b, cert.get()) == 1 && PEM_write_bio_X509(b, ca.get()) == 1 ? 1 : 0;
  }));
  Log(LogLevel::kInfo, "tls_generated", {{"cert", p.cert_file}, {"ca", p.ca_file}});
  return {};
}

Result<std::shared_ptr<ssl::context>> MakeServerContext(const TlsPaths& p) {
  ERR_clear_error();
  std::shared_ptr<ssl::context> ctx;
  try {
    ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  } catch (const std::exception& e) {
    return Err(ErrorKind::kInternal, std::string("SSL_CTX_new: ") + e.what());
  }
  SSL_CTX* c = ctx->native_handle();
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                             SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1);
  if (SSL_CTX_set_cipher_list(c, kTls12Ciphers) != 1) return SslError("cipher list");
  if (SSL_CTX_set_ciphersuites(c, kTls13Suites) != 1) return SslError("TLS 1.3 suites");
  SSL_CTX_set_session_id_context(c, reinterpret_cast<const unsigned char*>("chunkvault"), 10);
  if (SSL_CTX_use_certificate_chain_file(c, p.cert_file.c_str()) != 1) {
    return SslError("certificate " + p.cert_file);
  }
  if (SSL_CTX_use_PrivateKey_file(c, p.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return SslError("private key " + p.key_file);
  }
  if (SSL_CTX_check_private_key(c) != 1) return SslError("key does not match certificate");
  X509* leaf = SSL_CTX_get0_certificate(c);
  if (leaf && X509_cmp_current_time(X509_get0_notAfter(leaf)) <= 0) {
    return Err(ErrorKind::kInvalidArgument, "certificate " + p.cert_file + " has expired");
  }
  return ctx;
}

Result<std::unique_ptr<TlsContexts>> TlsContexts::Open(const TlsPaths& paths) {
  std::unique_ptr<TlsContexts> t(new TlsContexts(paths));
  t->signature_ = t->FilesSignature();
  t->ca_not_after_ = EarliestNotAfter(paths.ca_file);
  CV_TRY_ASSIGN(auto ctx, MakeServerContext(paths));
  t->current_ = std::move(ctx);
  return t;
}

std::shared_ptr<ssl::context> TlsContexts::Current() {
  std::lock_guard lock(mu_);
  return current_;
}

bool TlsContexts::Reload(std::string_view why) {
  std::string sig = FilesSignature();
  ca_not_after_ = EarliestNotAfter(paths_.ca_file);
  auto ctx = MakeServerContext(paths_);
  std::lock_guard lock(mu_);
  signature_ = sig;
  if (!ctx) {
    Log(LogLevel::kError, "tls_reload_failed",
        {{"why", std::string(why)},
         {"error", ctx.error().ToString()},
         {"kept", "previous certificate"}});
    return false;
  }
  current_ = std::move(*ctx);
  Log(LogLevel::kInfo, "tls_reloaded", {{"why", std::string(why)}, {"cert", paths_.cert_file}});
  return true;
}

int64_t TlsContexts::CertNotAfter() {
  std::shared_ptr<boost::asio::ssl::context> ctx = Current();
  if (!ctx) return 0;
  return NotAfter(SSL_CTX_get0_certificate(ctx->native_handle()));
}

void TlsContexts::ReloadIfChanged() {
  std::string sig = FilesSignature();
  {
    std::lock_guard lock(mu_);
    if (sig == signature_) return;
  }
  Reload("files changed");
}

std::string TlsContexts::FilesSignature() const {
  std::string sig;
  for (const auto& f : {paths_.cert_file, paths_.key_file, paths_.ca_file}) {
    struct stat st {};
    if (::stat(f.c_str(), &st) != 0) {
      sig += "missing;";
      continue;
    }
    sig += std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
           std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + ";";
  }
  return sig;
}

}  // namespace cv::server
