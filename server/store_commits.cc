#include "server/store_commits.h"

#include <utility>

#include "server/off_thread.h"

namespace cv::server {
namespace net = boost::asio;

net::awaitable<Result<storage::ObjectInfo>> CommitUpload(
    storage::ObjectStore& store, std::unique_ptr<storage::Writer>&& writer,
    std::function<Status(index::WriteTxn&)>&& also) {
  auto start = [&](std::function<void(Result<storage::ObjectInfo>)> deliver) {
    store.CommitAsync(std::move(writer), std::move(also), std::move(deliver));
  };
  co_return co_await internal::AwaitOffThread<Result<storage::ObjectInfo>>(start);
}

}  // namespace cv::server
