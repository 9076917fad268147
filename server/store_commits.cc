#include "server/store_commits.h"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <utility>

namespace cv::server {
namespace {

namespace net = boost::asio;

// Starts `start(deliver)` and suspends until deliver(T) is called, from any thread; the
// coroutine resumes on its own executor. (g++ 12 destroys a temporary inside a co_await
// expression twice: every lambda here that is one captures references only.)
template <class T, class Start>
net::awaitable<T> AwaitOffThread(Start& start) {
  auto initiate = [&start](auto handler) {
    using Handler = decltype(handler);
    // The handler and the work it keeps counted, together and copyable (std::function).
    struct Pending {
      explicit Pending(Handler h)
          : work(net::make_work_guard(net::get_associated_executor(h))), handler(std::move(h)) {}
      net::executor_work_guard<net::associated_executor_t<Handler>> work;
      Handler handler;
    };
    auto p = std::make_shared<Pending>(std::move(handler));
    start([p](T result) {
      // Posting queues the handler as work before the guard lets go: no moment without.
      net::post(p->work.get_executor(),
                [p, result = std::move(result)]() mutable { std::move(p->handler)(std::move(result)); });
      p->work.reset();
    });
  };
  T result = co_await net::async_initiate<const net::use_awaitable_t<>&, void(T)>(initiate,
                                                                                 net::use_awaitable);
  co_return result;
}

}  // namespace

net::awaitable<Result<storage::ObjectInfo>> CommitUpload(
    storage::ObjectStore& store, std::unique_ptr<storage::Writer>&& writer,
    std::function<Status(index::WriteTxn&)>&& also) {
  auto start = [&](std::function<void(Result<storage::ObjectInfo>)> deliver) {
    store.CommitAsync(std::move(writer), std::move(also), std::move(deliver));
  };
  co_return co_await AwaitOffThread<Result<storage::ObjectInfo>>(start);
}

}  // namespace cv::server
