#include "server/server.h"

#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <csignal>
#include <functional>
#include <thread>

#include "server/session.h"

namespace cv::server {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

namespace {

constexpr auto kTuple = net::as_tuple(net::use_awaitable);
using ReusePort = net::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

void LogException(const char* what, std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    Log(LogLevel::kError, what, {{"what", ex.what()}});
  }
}

net::awaitable<void> AcceptLoop(ServerContext& ctx, Worker& worker, tcp::acceptor& acceptor,
                                Listener listener) {
  while (acceptor.is_open()) {
    auto [ec, socket] = co_await acceptor.async_accept(kTuple);
    if (ec == net::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      // EMFILE and friends: back off a little instead of spinning on the error.
      Log(LogLevel::kWarn, "accept_failed", {{"error", ec.message()}});
      net::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(100));
      co_await pause.async_wait(kTuple);
      continue;
    }
    error_code ignored;
    std::string address_key;  // empty: the admin listener has no per-address limit
    if (listener == Listener::kAgent) {
      const auto peer = socket.remote_endpoint(ignored);
      if (ignored) {  // reset already
        socket.close(ignored);
        continue;
      }
      address_key = AddressKey(peer.address());
    }
    Admission& admission =
        listener == Listener::kAgent ? ctx.agent_admission : ctx.admin_admission;
    Admission::Decision admitted = admission.Admit(address_key);
    switch (admitted.outcome) {
      case Admission::Outcome::kRefusedPerAddress:
        ctx.metrics.ConnectionRejectedPerAddress();
        break;
      case Admission::Outcome::kRefusedFull:
        ctx.metrics.ConnectionRejected();
        break;
      case Admission::Outcome::kAdmittedByEviction:
        ctx.metrics.ConnectionEvicted();
        break;
      case Admission::Outcome::kAdmitted:
        break;
    }
    if (!admitted.ticket) {
      // A reset rather than a FIN: no TIME_WAIT left behind for each refused connection of a
      // flood.
      socket.set_option(net::socket_base::linger(true, 0), ignored);
      socket.close(ignored);
      continue;
    }
    socket.set_option(tcp::no_delay(true), ignored);
    Session::Start(std::make_shared<Session>(ctx, worker, listener, std::move(socket),
                                             ctx.tls.Current(), std::move(*admitted.ticket)));
  }
}

Result<tcp::endpoint> ToEndpoint(const std::string& address) {
  CV_TRY_ASSIGN(auto hp, ParseHostPort(address));
  // No name resolution at start-up except the one name everybody means.
  std::string host = hp.host == "localhost" ? "127.0.0.1" : hp.host;
  error_code ec;
  auto ip = net::ip::make_address(host, ec);
  if (ec) return Err(ErrorKind::kInvalidArgument, "'" + hp.host + "' is not an IP address");
  return tcp::endpoint(ip, hp.port);
}

// Opens one acceptor per worker on the same address; returns the port they share.
Result<uint16_t> BindAll(std::vector<std::unique_ptr<Worker>>& workers, const tcp::endpoint& ep,
                         const std::string& what) {
  auto fail = [&](const char* step, const error_code& ec) {
    return Err(ErrorKind::kUnavailable, what + " " + ep.address().to_string() + ":" +
                                            std::to_string(ep.port()) + ": " + step + ": " +
                                            ec.message());
  };
  error_code ec;
  if (ep.port() != 0) {
    // With SO_REUSEPORT a second node of the same user would silently share the port; a plain
    // bind first tells whether somebody holds it.
    tcp::acceptor probe(workers[0]->ioc);
    probe.open(ep.protocol(), ec);
    if (!ec) probe.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) probe.bind(ep, ec);
    if (ec) return fail("bind", ec);
    probe.close(ec);
  }
  uint16_t port = ep.port();
  for (auto& w : workers) {
    auto acc = std::make_unique<tcp::acceptor>(w->ioc);
    acc->open(ep.protocol(), ec);
    if (ec) return fail("socket", ec);
    acc->set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acc->set_option(ReusePort(true), ec);
    if (ec) return fail("setsockopt", ec);
    acc->bind(tcp::endpoint(ep.address(), port), ec);
    if (ec) return fail("bind", ec);
    acc->listen(net::socket_base::max_listen_connections, ec);
    if (ec) return fail("listen", ec);
    if (port == 0) port = acc->local_endpoint().port();
    w->acceptors.push_back(std::move(acc));
  }
  return port;
}

std::string UrlFor(const tcp::endpoint& ep, uint16_t port) {
  auto addr = ep.address();
  std::string host;
  if (addr.is_unspecified()) {
    host = addr.is_v6() ? "[::1]" : "127.0.0.1";
  } else if (addr.is_v6()) {
    host = "[" + addr.to_string() + "]";
  } else {
    host = addr.to_string();
  }
  return "https://" + host + ":" + std::to_string(port);
}

}  // namespace

Result<std::unique_ptr<Server>> Server::Bind(const Config& config, storage::ObjectStore& store,
                                             admin::AdminApi& admin, TlsContexts& tls,
                                             Metrics& metrics) {
  std::unique_ptr<Server> s(new Server());
  s->ctx_ = std::make_unique<ServerContext>(config, store, admin, metrics, tls);
  for (int i = 0; i < config.threads; ++i) {
    auto w = std::make_unique<Worker>();
    auto ring = store.NewAsyncRing();
    if (ring) {
      w->disk = DiskRing::Make(w->ioc, std::move(*ring));  // nullptr: logged
    } else {
      Log(LogLevel::kInfo, "disk_ring_unavailable",
          {{"worker", std::to_string(i)},
           {"reason", ring.error().ToString()},
           {"effect", "downloads read the disks on the worker thread"}});
    }
    s->workers_.push_back(std::move(w));
  }
  CV_TRY_ASSIGN(auto agent_ep, ToEndpoint(config.listen));
  CV_TRY_ASSIGN(auto admin_ep, ToEndpoint(config.admin_listen));
  // Acceptor 0 of every worker is the agent listener, acceptor 1 the admin listener.
  CV_TRY_ASSIGN(auto agent_port, BindAll(s->workers_, agent_ep, "agent listener"));
  CV_TRY_ASSIGN(auto admin_port, BindAll(s->workers_, admin_ep, "admin listener"));
  s->agent_url_ = UrlFor(agent_ep, agent_port);
  s->admin_url_ = UrlFor(admin_ep, admin_port);
  return s;
}

Server::~Server() {
  // Sessions and accept loops die with their io_context; acceptors go first.
  for (auto& w : workers_) w->acceptors.clear();
  // Uploads the commit thread still holds deliver their results to the io_contexts (which no
  // longer run them) before those go.
  ctx_->store.WaitForCommits();
  // Admin requests still running deliver their answers to the io_contexts before those go.
  ctx_->admin_pool.join();
  workers_.clear();
}

int Server::Run() {
  net::io_context main_ioc{1};
  for (auto& w : workers_) {
    net::co_spawn(w->ioc, AcceptLoop(*ctx_, *w, *w->acceptors[0], Listener::kAgent),
                  [](std::exception_ptr e) { LogException("accept_loop_exception", e); });
    net::co_spawn(w->ioc, AcceptLoop(*ctx_, *w, *w->acceptors[1], Listener::kAdmin),
                  [](std::exception_ptr e) { LogException("accept_loop_exception", e); });
  }

  size_t running = workers_.size();
  std::vector<std::thread> threads;
  for (auto& w : workers_) {
    threads.emplace_back([&main_ioc, &running, worker = w.get()] {
      for (;;) {
        try {
          worker->ioc.run();
          break;
        } catch (const std::exception& e) {
          // Handlers report errors as values; this is a bug, but one connection's bug must not
          // take the node down.
          Log(LogLevel::kError, "worker_exception", {{"what", e.what()}});
        }
      }
      net::post(main_ioc, [&main_ioc, &running] {
        if (--running == 0) main_ioc.stop();
      });
    });
  }

  bool draining = false;
  net::signal_set signals(main_ioc, SIGINT, SIGTERM, SIGHUP);
  net::steady_timer drain_timer(main_ioc);
  net::steady_timer watch_timer(main_ioc);
  auto stop_workers = [this] {
    for (auto& w : workers_) w->ioc.stop();
  };

  std::function<void()> watch = [&] {
    if (ctx_->config.watch_interval_s <= 0 || draining) return;
    watch_timer.expires_after(std::chrono::seconds(ctx_->config.watch_interval_s));
    watch_timer.async_wait([&](error_code ec) {
      if (ec || draining) return;
      ctx_->tls.ReloadIfChanged();
      watch();
    });
  };
  watch();

  std::function<void()> wait_signal = [&] {
    signals.async_wait([&](error_code ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) {
        ctx_->metrics.TlsReloaded(ctx_->tls.Reload("SIGHUP"));
      } else if (!draining) {
        draining = true;
        watch_timer.cancel();
        Log(LogLevel::kInfo, "drain_started",
            {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"},
             {"connections", std::to_string(ctx_->metrics.OpenConnections())},
             {"timeout_s", std::to_string(ctx_->config.drain_timeout_s)}});
        for (auto& w : workers_) {
          net::post(w->ioc, [worker = w.get()] {
            worker->draining = true;
            error_code ignored;
            for (auto& acc : worker->acceptors) acc->close(ignored);
            for (Session* s : worker->sessions) s->Drain();
          });
        }
        drain_timer.expires_after(std::chrono::seconds(ctx_->config.drain_timeout_s));
        drain_timer.async_wait([&](error_code ec) {
          if (ec) return;
          Log(LogLevel::kWarn, "drain_timeout",
              {{"connections", std::to_string(ctx_->metrics.OpenConnections())}});
          stop_workers();
        });
      } else {
        Log(LogLevel::kWarn, "drain_aborted", {{"why", "second signal"}});
        stop_workers();
      }
      wait_signal();
    });
  };
  wait_signal();

  main_ioc.run();
  for (auto& t : threads) t.join();
  Log(LogLevel::kInfo, "drained", {{"connections", std::to_string(ctx_->metrics.OpenConnections())}});
  return 0;
}

}  // namespace cv::server
