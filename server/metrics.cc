#include "server/metrics.h"

#include <prometheus/text_serializer.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "admin/admin.h"
#include "server/auth.h"

namespace cv::server {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

Result<std::string> LoadScrapeToken(const std::string& file, bool generate) {
  if (generate && ::access(file.c_str(), F_OK) != 0) {
    CV_TRY(WriteNewSecret(file));
    Log(LogLevel::kInfo, "metrics_token_created", {{"file", file}});
  }
  std::ifstream f(file);
  if (!f) return ErrnoError(errno, "open " + file);
  std::stringstream text;
  text << f.rdbuf();
  const std::string all = text.str();
  std::string_view token = all;
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.front())))
    token.remove_prefix(1);
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back())))
    token.remove_suffix(1);
  if (token.size() < 16) {
    return Err(ErrorKind::kInvalidArgument,
               "metrics token in " + file + " is shorter than 16 characters");
  }
  for (char c : token) {
    if (c <= ' ' || c > '~') {
      return Err(ErrorKind::kInvalidArgument,
                 "metrics token in " + file + " holds a space or a non-ASCII character");
    }
  }
  return std::string(token);
}

Metrics::Metrics(std::string_view scrape_token)
    : scrape_token_hash_(admin::HashToken(scrape_token)),
      registry_(std::make_shared<prometheus::Registry>()) {
  auto& r = *registry_;
  // An unlabelled series, registered in r.
  auto counter = [&r](const char* name, const char* help) {
    return &BuildCounter().Name(name).Help(help).Register(r).Add({});
  };
  auto gauge = [&r](const char* name, const char* help) {
    return &BuildGauge().Name(name).Help(help).Register(r).Add({});
  };
  requests_ = &BuildCounter()
                   .Name("chunkvault_http_requests_total")
                   .Help("HTTP requests answered, by listener, route template, method and status")
                   .Register(r);
  latency_ = &BuildHistogram()
                  .Name("chunkvault_http_request_duration_seconds")
                  .Help("Time from the request header to the end of the response, by route")
                  .Register(r);
  auto& bytes = BuildCounter()
                    .Name("chunkvault_http_body_bytes_total")
                    .Help("HTTP body bytes, by direction (in = uploads, out = downloads)")
                    .Register(r);
  bytes_in_ = &bytes.Add({{"direction", "in"}});
  bytes_out_ = &bytes.Add({{"direction", "out"}});
  open_connections_ =
      gauge("chunkvault_open_connections", "Open client connections (both listeners)");
  rejected_connections_ = counter("chunkvault_rejected_connections_total",
                                  "Connections closed at once because max_connections was reached");
  rejected_per_address_ = counter("chunkvault_rejected_connections_per_address_total",
                                  "Agent connections closed at once because their address had "
                                  "max_connections_per_address open");
  evicted_connections_ =
      counter("chunkvault_evicted_connections_total",
              "Connections closed before their TLS handshake finished, the oldest first, to "
              "make room for a new one at max_connections");
  handshake_failures_ = counter("chunkvault_tls_handshake_failures_total",
                                "TLS handshakes that failed (old protocol, plaintext, timeout)");
  auth_failures_ = counter("chunkvault_auth_failures_total", "Requests with wrong credentials");
  auto& reloads = BuildCounter()
                      .Name("chunkvault_tls_reloads_total")
                      .Help("Certificate reloads, by result")
                      .Register(r);
  tls_reloads_ok_ = &reloads.Add({{"result", "ok"}});
  tls_reloads_failed_ = &reloads.Add({{"result", "failed"}});
  failed_disks_ = gauge("chunkvault_failed_disks", "Data disks marked failed");
  disks_ = gauge("chunkvault_disks", "Data disks configured");
  reconstructed_reads_.counter = counter("chunkvault_reconstructed_reads_total",
                                         "Shard reads served from parity or another copy");
  corrupt_shards_.counter =
      counter("chunkvault_corrupt_shards_total", "Shard checksum mismatches found while reading");
  commit_groups_.counter =
      counter("chunkvault_commit_groups_total",
              "Commit groups run (one fdatasync per extent + one index commit)");
  commit_jobs_.counter = counter("chunkvault_commit_jobs_total",
                                 "Uploads and index updates committed in those groups");
  auto& commit_seconds = BuildCounter()
                             .Name("chunkvault_commit_seconds_total")
                             .Help("Time the commit groups spent, by phase (sync, index)")
                             .Register(r);
  commit_sync_seconds_.counter = &commit_seconds.Add({{"phase", "sync"}});
  commit_index_seconds_.counter = &commit_seconds.Add({{"phase", "index"}});
  pending_repairs_ = gauge("chunkvault_pending_repairs", "Stripes queued for repair");
  stored_bytes_ = gauge("chunkvault_stored_bytes", "Logical bytes of all devices' objects");
  stored_objects_ = gauge("chunkvault_stored_objects", "Objects of all devices");
  last_full_scrub_ = gauge("chunkvault_last_full_scrub_timestamp_seconds",
                           "Start of the last complete scrub pass (0: never)");
  cert_not_after_ = gauge("chunkvault_tls_certificate_not_after_timestamp_seconds",
                          "Expiry of the serving TLS certificate");
  ca_not_after_family_ = &BuildGauge()
                              .Name("chunkvault_tls_ca_not_after_timestamp_seconds")
                              .Help("Expiry of the CA certificate agents pin ([tls] ca_file)")
                              .Register(r);
  ready_ = gauge("chunkvault_ready",
                 "1 when /readyz answers ready (enough healthy disks, index usable), else 0");
}

bool Metrics::ScrapeAllowed(std::string_view authorization) const {
  const Credentials c = ParseAuthorization(authorization);
  if (c.scheme != Credentials::Scheme::kBearer) return false;
  // Digests have one length whatever was sent, so the comparison takes the same time.
  return admin::DigestEqual(admin::HashToken(c.secret), scrape_token_hash_);
}

void Metrics::Request(std::string_view listener, std::string_view route, std::string_view method,
                      int status, double seconds) {
  prometheus::Counter* counter;
  prometheus::Histogram* histogram;
  {
    std::lock_guard lock(mu_);
    auto key =
        std::make_tuple(std::string(listener), std::string(route), std::string(method), status);
    auto it = request_series_.find(key);
    if (it == request_series_.end()) {
      auto& c = requests_->Add({{"listener", std::string(listener)},
                                {"route", std::string(route)},
                                {"method", std::string(method)},
                                {"status", std::to_string(status)}});
      it = request_series_.emplace(key, &c).first;
    }
    counter = it->second;
    auto hkey = std::make_pair(std::string(listener), std::string(route));
    auto hit = latency_series_.find(hkey);
    if (hit == latency_series_.end()) {
      static const prometheus::Histogram::BucketBoundaries kBuckets = {
          0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
      auto& h = latency_->Add({{"listener", hkey.first}, {"route", hkey.second}}, kBuckets);
      hit = latency_series_.emplace(hkey, &h).first;
    }
    histogram = hit->second;
  }
  counter->Increment();
  histogram->Observe(seconds);
}

std::string Metrics::Render(storage::ObjectStore& store, int64_t cert_not_after_s,
                            int64_t ca_not_after_s) {
  if (cert_not_after_s > 0) cert_not_after_->Set(static_cast<double>(cert_not_after_s));
  {
    // No series while the CA is unknown: a 0 would read as "expired" to the alert.
    std::lock_guard lock(mu_);
    if (ca_not_after_s > 0) {
      if (!ca_not_after_) ca_not_after_ = &ca_not_after_family_->Add({});
      ca_not_after_->Set(static_cast<double>(ca_not_after_s));
    } else if (ca_not_after_) {
      ca_not_after_family_->Remove(ca_not_after_);
      ca_not_after_ = nullptr;
    }
  }
  storage::StoreStats stats = store.Stats();
  // After Stats, which notices a disk directory that vanished: then /readyz says so too.
  ready_->Set(store.Ready() ? 1 : 0);
  uint64_t failed = 0;
  for (const auto& d : stats.disks) failed += d.failed ? 1 : 0;
  failed_disks_->Set(static_cast<double>(failed));
  disks_->Set(static_cast<double>(stats.disks.size()));
  pending_repairs_->Set(static_cast<double>(stats.pending_repairs));
  uint64_t bytes = 0, objects = 0;
  if (auto txn = store.Index().BeginRead()) {
    auto st = (*txn)->ForEachDevice([&](const index::DeviceRecord& d) {
      bytes += d.bytes;
      objects += d.objects;
      return true;
    });
    if (st) {
      stored_bytes_->Set(static_cast<double>(bytes));
      stored_objects_->Set(static_cast<double>(objects));
    }
    if (auto v = (*txn)->GetMeta(admin::kLastFullScrubMeta); v && *v) {
      try {
        last_full_scrub_->Set(static_cast<double>(std::stoll(**v) / 1000000000));
      } catch (...) {
      }
    }
  }
  {
    std::lock_guard lock(mu_);
    // The store keeps its own monotonic counters; ours follow them by their increase.
    reconstructed_reads_.To(static_cast<double>(stats.reconstructed_reads));
    corrupt_shards_.To(static_cast<double>(stats.corrupt_shards));
    commit_groups_.To(static_cast<double>(stats.commit_groups));
    commit_jobs_.To(static_cast<double>(stats.commit_jobs));
    commit_sync_seconds_.To(static_cast<double>(stats.commit_sync_ns) / 1e9);
    commit_index_seconds_.To(static_cast<double>(stats.commit_index_ns) / 1e9);
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace cv::server
