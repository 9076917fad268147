// server/metrics: chunkvaultd's Prometheus metrics (prometheus-cpp, text exposition format on
// GET /metrics). Label values are bounded: routes are templates ("object", "list", ...), never
// paths, so device ids and object names never become series.
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

#include "storage/storage.h"

namespace cv::server {

class Metrics {
 public:
  Metrics();

  // One finished request: `listener` is "agent" or "admin", `route` a route template.
  void Request(std::string_view listener, std::string_view route, std::string_view method,
               int status, double seconds);
  void BytesIn(uint64_t n) { bytes_in_->Increment(static_cast<double>(n)); }
  void BytesOut(uint64_t n) { bytes_out_->Increment(static_cast<double>(n)); }
  void ConnectionOpened() { open_connections_->Increment(); }
  void ConnectionClosed() { open_connections_->Decrement(); }
  void ConnectionRejected() { rejected_connections_->Increment(); }
  void HandshakeFailed() { handshake_failures_->Increment(); }
  void AuthFailed() { auth_failures_->Increment(); }
  void TlsReloaded(bool ok) { (ok ? tls_reloads_ok_ : tls_reloads_failed_)->Increment(); }

  // Refreshes the gauges that come from the store (disks, reconstructed reads, stored bytes and
  // objects, last full scrub) and the serving certificate's expiry (unix seconds; 0 =
  // unknown), then renders everything in the Prometheus text format.
  std::string Render(storage::ObjectStore& store, int64_t cert_not_after_s = 0);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* latency_;
  prometheus::Counter* bytes_in_;
  prometheus::Counter* bytes_out_;
  prometheus::Gauge* open_connections_;
  prometheus::Counter* rejected_connections_;
  prometheus::Counter* handshake_failures_;
  prometheus::Counter* auth_failures_;
  prometheus::Counter* tls_reloads_ok_;
  prometheus::Counter* tls_reloads_failed_;
  prometheus::Gauge* failed_disks_;
  prometheus::Gauge* disks_;
  prometheus::Counter* reconstructed_reads_;
  prometheus::Counter* corrupt_shards_;
  prometheus::Gauge* pending_repairs_;
  prometheus::Gauge* stored_bytes_;
  prometheus::Gauge* stored_objects_;
  prometheus::Gauge* last_full_scrub_;
  prometheus::Gauge* cert_not_after_;

  std::mutex mu_;
  // Series already created, so that the hot path does not build label maps.
  std::map<std::tuple<std::string, std::string, std::string, int>, prometheus::Counter*>
      request_series_;
  std::map<std::pair<std::string, std::string>, prometheus::Histogram*> latency_series_;
  uint64_t seen_reconstructed_ = 0;  // store counters already added to our counters
  uint64_t seen_corrupt_ = 0;
};

}  // namespace cv::server
