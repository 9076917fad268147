// server/metrics: chunkvaultd's Prometheus metrics (prometheus-cpp, text exposition format on
// GET /metrics). Label values are bounded: routes are templates ("object", "list", ...), never
// paths, so device ids and object names never become series.
//
// Scraping needs `Authorization: Bearer <token>`, the token of [server] metrics_token: the
// metrics tell a stranger how full the node is, who its clients are by rate, and when its
// certificates expire.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "common/common.h"
#include "storage/storage.h"

namespace cv::server {

// The token GET /metrics requires, read from `file` (surrounding whitespace ignored). With
// `generate`, a missing file is first created with a new random token (mode 0600), as the
// admin key is. kInvalidArgument for a token shorter than 16 characters or with characters
// that cannot travel in a header; kNotFound when the file is missing and not generated.
Result<std::string> LoadScrapeToken(const std::string& file, bool generate);

class Metrics {
 public:
  explicit Metrics(std::string_view scrape_token);

  // True when `authorization` (the request's header) is `Bearer <the scrape token>`; compared
  // in constant time.
  bool ScrapeAllowed(std::string_view authorization) const;

  // One finished request: `listener` is "agent" or "admin", `route` a route template.
  void Request(std::string_view listener, std::string_view route, std::string_view method,
               int status, double seconds);
  void BytesIn(uint64_t n) { bytes_in_->Increment(static_cast<double>(n)); }
  void BytesOut(uint64_t n) { bytes_out_->Increment(static_cast<double>(n)); }
  void ConnectionOpened() { open_connections_->Increment(); }
  void ConnectionClosed() { open_connections_->Decrement(); }
  // Open connections, both listeners, all workers (the gauge above).
  int64_t OpenConnections() const { return static_cast<int64_t>(open_connections_->Value()); }
  void ConnectionRejected() { rejected_connections_->Increment(); }
  void ConnectionRejectedPerAddress() { rejected_per_address_->Increment(); }
  void ConnectionEvicted() { evicted_connections_->Increment(); }
  void HandshakeFailed() { handshake_failures_->Increment(); }
  void AuthFailed() { auth_failures_->Increment(); }
  void TlsReloaded(bool ok) { (ok ? tls_reloads_ok_ : tls_reloads_failed_)->Increment(); }

  // Refreshes the gauges that come from the store (readiness as /readyz sees it, disks,
  // reconstructed reads, stored bytes and objects, last full scrub) and the expiry of the
  // serving certificate and of the CA agents pin (unix seconds; 0 = unknown: the CA series is
  // then left out), then renders everything in the Prometheus text format.
  std::string Render(storage::ObjectStore& store, int64_t cert_not_after_s = 0,
                     int64_t ca_not_after_s = 0);

 private:
  const Sha256Digest scrape_token_hash_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* latency_;
  prometheus::Counter* bytes_in_;
  prometheus::Counter* bytes_out_;
  prometheus::Gauge* open_connections_;
  prometheus::Counter* rejected_connections_;
  prometheus::Counter* rejected_per_address_;
  prometheus::Counter* evicted_connections_;
  prometheus::Counter* handshake_failures_;
  prometheus::Counter* auth_failures_;
  prometheus::Counter* tls_reloads_ok_;
  prometheus::Counter* tls_reloads_failed_;
  prometheus::Gauge* failed_disks_;
  prometheus::Gauge* disks_;
  // A counter that follows one of the store's own monotonic counters by its increase.
  struct Following {
    prometheus::Counter* counter = nullptr;
    double seen = 0;  // guarded by mu_
    void To(double now) {
      if (now <= seen) return;
      counter->Increment(now - seen);
      seen = now;
    }
  };
  Following reconstructed_reads_;
  Following corrupt_shards_;
  Following commit_groups_;
  Following commit_jobs_;
  Following commit_sync_seconds_;
  Following commit_index_seconds_;
  prometheus::Gauge* pending_repairs_;
  prometheus::Gauge* stored_bytes_;
  prometheus::Gauge* stored_objects_;
  prometheus::Gauge* last_full_scrub_;
  prometheus::Gauge* cert_not_after_;
  prometheus::Family<prometheus::Gauge>* ca_not_after_family_;
  prometheus::Gauge* ca_not_after_ = nullptr;  // guarded by mu_; absent while unknown
  prometheus::Gauge* ready_;

  std::mutex mu_;
  // Series already created, so that the hot path does not build label maps.
  std::map<std::tuple<std::string, std::string, std::string, int>, prometheus::Counter*>
      request_series_;
  std::map<std::pair<std::string, std::string>, prometheus::Histogram*> latency_series_;
};

}  // namespace cv::server
