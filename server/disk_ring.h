// server/disk_ring: a worker's storage::AsyncRing on its io_context. Completions come
// through the ring's eventfd, watched with a posix::stream_descriptor while batches are in
// flight, and run on the worker's own thread; a coroutine that awaits Prefetch is resumed
// there. So neither a download's shard reads nor an upload's shard writes hold the worker
// thread: it serves its other connections while the disk works.
//
// Thread-safety: none; a DiskRing belongs to its worker's thread. Destroy it before the
// io_context (the ring first waits for what the kernel still holds).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <functional>
#include <memory>

#include "storage/io/io.h"
#include "storage/storage.h"

namespace cv::server {

class DiskRing {
 public:
  // nullptr (logged) when the ring's eventfd cannot be watched.
  static std::unique_ptr<DiskRing> Make(boost::asio::io_context& ioc,
                                        std::unique_ptr<storage::AsyncRing> ring);
  ~DiskRing();
  DiskRing(const DiskRing&) = delete;
  DiskRing& operator=(const DiskRing&) = delete;

  // Runs reader.Prefetch on the ring and resumes the caller on this thread once the reads
  // are in (see storage::Reader::Prefetch).
  boost::asio::awaitable<void> Prefetch(storage::Reader& reader);

  // An upload's stripes on the ring (storage::Writer::WriteOn): Appended is Writer::Appended
  // that watches the ring for the writes it starts; WhenWritten resumes the caller on this
  // thread once the Writer can go on (storage::Writer::WhenWritten).
  void Attach(storage::Writer& writer) { writer.WriteOn(*ring_); }
  Status Appended(storage::Writer& writer, size_t n);
  boost::asio::awaitable<void> WhenWritten(storage::Writer& writer);

 private:
  DiskRing(boost::asio::io_context& ioc, std::unique_ptr<storage::AsyncRing> ring, int efd);
  void Arm();  // waits for the eventfd while batches are pending
  // Runs start(done) and resumes the caller on this thread once `done` ran inside Poll.
  boost::asio::awaitable<void> Await(const std::function<void(std::function<void()>)>& start);

  std::unique_ptr<storage::AsyncRing> ring_;
  boost::asio::posix::stream_descriptor efd_;  // a duplicate of the ring's eventfd
  bool armed_ = false;
};

}  // namespace cv::server
