#include "cluster/blocking_io.h"

namespace cv::cluster {

tl::expected<boost::asio::ip::tcp::resolver::results_type, std::string> ResolveWithin(
    boost::asio::io_context& ioc, const std::string& host, const std::string& port,
    std::chrono::milliseconds timeout) {
  using boost::asio::ip::tcp;
  tcp::resolver resolver(ioc);
  tcp::resolver::results_type endpoints;
  std::optional<boost::system::error_code> result;
  resolver.async_resolve(host, port,
                         [&](boost::system::error_code e, tcp::resolver::results_type r) {
                           result = e;
                           endpoints = std::move(r);
                         });
  ioc.restart();
  ioc.run_for(timeout);
  if (!result) {
    resolver.cancel();
    ioc.restart();
    ioc.run();
    return tl::unexpected("cannot resolve " + host + ": timed out");
  }
  if (*result) return tl::unexpected("cannot resolve " + host + ": " + result->message());
  return endpoints;
}

}  // namespace cv::cluster
