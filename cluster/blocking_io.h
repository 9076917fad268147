// cluster/blocking_io: one network call at a time with a deadline on every step, for the
// clients that block their caller (the etcd client, cvctl's admin client). Asynchronous
// operations run to completion one at a time on a private io_context, so that Beast's
// tcp_stream deadlines apply; name resolution gets the same deadline.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <tl/expected.hpp>

namespace cv::cluster {

// Starts one asynchronous operation (start(handler)), runs `ioc` until it completes, and
// returns its error.
template <class Start>
boost::system::error_code RunOne(boost::asio::io_context& ioc, Start&& start) {
  std::optional<boost::system::error_code> result;
  start([&](boost::system::error_code ec, auto&&...) { result = ec; });
  ioc.restart();
  ioc.run();
  return result.value_or(boost::asio::error::operation_aborted);
}

// Resolves host:port within `timeout` (numeric hosts at once). Error: "cannot resolve HOST: why".
tl::expected<boost::asio::ip::tcp::resolver::results_type, std::string> ResolveWithin(
    boost::asio::io_context& ioc, const std::string& host, const std::string& port,
    std::chrono::milliseconds timeout);

}  // namespace cv::cluster
