// server/store_commits: the store's commit thread (storage::ObjectStore::CommitAsync) as an
// awaitable for a session's coroutine. The coroutine is suspended, and its
// worker thread serves other connections, while the commit group it joined syncs and commits;
// it resumes on its own executor with the result. The io_context counts the wait as work, so a
// drain does not end a worker while one of its uploads is being committed; the server calls
// ObjectStore::WaitForCommits before its io_contexts go.
//
// Arguments are taken by reference, to be moved from once the commit starts: pass named
// objects (g++ 12 may destroy a temporary inside a co_await expression twice).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <functional>
#include <memory>

#include "storage/storage.h"

namespace cv::server {

// Writer::Commit, off the thread. `also` runs in the upload's own index transaction.
boost::asio::awaitable<Result<storage::ObjectInfo>> CommitUpload(
    storage::ObjectStore& store, std::unique_ptr<storage::Writer>&& writer,
    std::function<Status(index::WriteTxn&)>&& also);

}  // namespace cv::server
