// server/off_thread: a session's coroutine waits, without holding its worker thread, for a
// result that another thread delivers (internal to server/): the store's commit thread
// (store_commits.cc), the admin API's threads (admin_requests.cc).
#pragma once

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>
#include <utility>

namespace cv::server::internal {

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
      net::post(p->work.get_executor(), [p, result = std::move(result)]() mutable {
        std::move(p->handler)(std::move(result));
      });
      p->work.reset();
    });
  };
  T result = co_await net::async_initiate<const net::use_awaitable_t<>&, void(T)>(
      initiate, net::use_awaitable);
  co_return result;
}

}  // namespace cv::server::internal
