// server/server: chunkvaultd's process. Worker threads, each with its own io_context and its
// own SO_REUSEPORT acceptors for the agent and admin listeners (the kernel spreads connections
// over them); the main thread handles signals:
//   SIGTERM, SIGINT  graceful drain: stop accepting, close idle connections, let running
//                    requests finish (at most drain_timeout_s), then exit. A second one exits now.
//   SIGHUP           reload the TLS certificate and key (a bad pair is logged and ignored)
// and, every watch_interval_s, reloads the certificate when its files changed. Each accepted
// connection passes its listener's server/admission first (agent listener: per-address limit,
// and at max_connections the oldest connection still in its TLS handshake makes room; admin
// listener: max_admin_connections, apart from the agents').
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "admin/admin.h"
#include "common/common.h"
#include "common/config.h"
#include "server/metrics.h"
#include "server/tls.h"
#include "storage/storage.h"

namespace cv::server {

struct Worker;
struct ServerContext;

class Server {
 public:
  // Binds both listeners on every worker (port 0 = a kernel-chosen port, shared by all
  // workers). Nothing is served until Run.
  static Result<std::unique_ptr<Server>> Bind(const Config& config, storage::ObjectStore& store,
                                              admin::AdminApi& admin, TlsContexts& tls,
                                              Metrics& metrics);
  ~Server();

  // "https://127.0.0.1:PORT" of each listener, as clients on this host reach it.
  std::string AgentUrl() const { return agent_url_; }
  std::string AdminUrl() const { return admin_url_; }

  // Serves until a SIGTERM/SIGINT drain completes. Returns the process exit code.
  int Run();

 private:
  Server() = default;
  std::unique_ptr<ServerContext> ctx_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::string agent_url_, admin_url_;
};

}  // namespace cv::server
