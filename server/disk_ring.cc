#include "server/disk_ring.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace cv::server {

namespace net = boost::asio;

DiskRing::DiskRing(net::io_context& ioc, std::unique_ptr<storage::AsyncRing> ring, int efd)
    : ring_(std::move(ring)), efd_(ioc, efd) {}

std::unique_ptr<DiskRing> DiskRing::Make(net::io_context& ioc,
                                         std::unique_ptr<storage::AsyncRing> ring) {
  const int efd = ::dup(ring->event_fd());
  if (efd < 0) {
    Log(LogLevel::kWarn, "disk_ring_unavailable", {{"reason", std::string("dup: ") + std::strerror(errno)}});
    return nullptr;
  }
  try {
    return std::unique_ptr<DiskRing>(new DiskRing(ioc, std::move(ring), efd));
  } catch (const std::exception& e) {  // the descriptor was not taken: close it
    ::close(efd);
    Log(LogLevel::kWarn, "disk_ring_unavailable", {{"reason", e.what()}});
    return nullptr;
  }
}

DiskRing::~DiskRing() {
  boost::system::error_code ignored;
  efd_.close(ignored);
  ring_.reset();  // waits for the kernel, then drops the callbacks of unfinished batches
}

net::awaitable<void> DiskRing::Await(const std::function<void(std::function<void()>)>& start) {
  co_await net::async_initiate<const net::use_awaitable_t<>&, void()>(
      [this, &start](auto handler) {
        // std::function needs a copyable callable; the handler is move-only.
        auto h = std::make_shared<decltype(handler)>(std::move(handler));
        start([h] { net::post(std::move(*h)); });
        Arm();
      },
      net::use_awaitable);
}

net::awaitable<void> DiskRing::Prefetch(storage::Reader& reader) {
  co_await Await([&](std::function<void()> done) { reader.Prefetch(*ring_, std::move(done)); });
}

Status DiskRing::Appended(storage::Writer& writer, size_t n) {
  Status s = writer.Appended(n);
  Arm();
  return s;
}

net::awaitable<void> DiskRing::WhenWritten(storage::Writer& writer) {
  co_await Await([&](std::function<void()> done) { writer.WhenWritten(std::move(done)); });
}

void DiskRing::Arm() {
  if (armed_ || ring_->pending() == 0) return;
  armed_ = true;
  efd_.async_wait(net::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
    armed_ = false;
    if (ec) return;
    try {
      ring_->Poll();
    } catch (const std::exception& e) {
      // Whatever a completion threw, the ring's other batches must still be delivered.
      Log(LogLevel::kError, "disk_ring_exception", {{"what", e.what()}});
    }
    Arm();
  });
}

}  // namespace cv::server
