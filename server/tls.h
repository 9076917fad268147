// server/tls: the TLS side of chunkvaultd. Server contexts allow TLS 1.2 with AEAD cipher
// suites only (ECDHE + AES-GCM / ChaCha20-Poly1305) and TLS 1.3. TlsContexts holds the current
// context; every new connection takes a reference to it, so a reload (SIGHUP or changed files)
// affects only connections accepted afterwards and never drops an open one.
//
// Thread-safety: TlsContexts is safe to use from many threads.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "common/common.h"

namespace cv::server {

struct TlsPaths {
  std::string cert_file;  // PEM certificate chain, server certificate first
  std::string key_file;   // PEM private key
  std::string ca_file;    // PEM CA certificate (only written by GenerateDevCertificates)
};

// When both cert_file and key_file are missing, creates a self-signed CA (ca_file, and its key
// next to it as ca.key) and a server certificate signed by it for localhost and 127.0.0.1
// (ECDSA P-256). Keys are written with mode 0600. Does nothing when both exist; fails when
// exactly one exists (it never overwrites an operator's file).
Status EnsureDevCertificates(const TlsPaths& paths);

// A server context with our protocol and cipher policy and the given certificate and key.
Result<std::shared_ptr<boost::asio::ssl::context>> MakeServerContext(const TlsPaths& paths);

class TlsContexts {
 public:
  static Result<std::unique_ptr<TlsContexts>> Open(const TlsPaths& paths);

  std::shared_ptr<boost::asio::ssl::context> Current();
  // Loads the files again. On failure logs why and keeps serving with the old context.
  // Returns true when the new context is in use.
  bool Reload(std::string_view why);
  // Reloads when the files' (certificate, key, CA) inode, size or modification time changed
  // since the last attempt.
  void ReloadIfChanged();
  // notAfter of the certificate in use, unix seconds (0 if unknown).
  int64_t CertNotAfter();
  // notAfter of the CA certificate agents pin (ca_file as read at the last load attempt; the
  // earliest when it holds several), unix seconds; 0 when there is no such file or it holds no
  // certificate (an operator's certificate from a public CA).
  int64_t CaNotAfter() const { return ca_not_after_.load(); }

 private:
  explicit TlsContexts(const TlsPaths& paths) : paths_(paths) {}
  std::string FilesSignature() const;

  const TlsPaths paths_;
  std::mutex mu_;
  std::shared_ptr<boost::asio::ssl::context> current_;
  std::string signature_;  // of the files at the last load attempt
  std::atomic<int64_t> ca_not_after_{0};
};

}  // namespace cv::server
