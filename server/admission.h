// server/admission: which connections the node takes, decided when the kernel hands one over
// and before its TLS handshake, because that is where cheap connections sit: a socket that
// never says a word holds a slot until handshake_timeout_s.
//
//   per address  at most max_per_address open connections from one client address (an IPv6
//                client counts by its /64, which one machine usually owns whole); more are
//                closed at once. Only the agent listener is limited so.
//   in all       at most max_connections (the admin listener has an Admission of its own,
//                max_admin_connections, so a flood of agents cannot lock operators out). When full, the oldest connection that has not
//                finished its TLS handshake is evicted to make room for the new one; only when
//                every open connection is past its handshake is the new one closed instead.
//
// An evicted connection leaves the counts at once; its session closes on its own thread when
// the eviction callback it armed runs.
//
// Thread-safety: all methods are safe to call from any thread.
#pragma once

#include <boost/asio/ip/address.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

namespace cv::server {

// The per-address key of a client: the IPv4 address (also for IPv4-mapped IPv6), or the /64
// of an IPv6 address.
std::string AddressKey(const boost::asio::ip::address& address);

class Admission {
 public:
  // One admitted connection: releases its place when destroyed. Move-only.
  class Ticket {
   public:
    Ticket() = default;
    Ticket(Ticket&& o) noexcept : owner_(o.owner_), id_(o.id_) { o.owner_ = nullptr; }
    Ticket& operator=(Ticket&& o) noexcept;
    ~Ticket() { Release(); }

    // How to close this connection if it is evicted (called on the evicting thread; it must
    // only hand the work to the connection's own thread). False when it has been evicted
    // already: close it now.
    bool Arm(std::function<void()> evict);
    // The TLS handshake finished: the connection can no longer be evicted. False when it was
    // evicted meanwhile: close it.
    bool HandshakeDone();

   private:
    friend class Admission;
    Ticket(Admission* owner, uint64_t id) : owner_(owner), id_(id) {}
    void Release();
    Admission* owner_ = nullptr;
    uint64_t id_ = 0;
  };

  enum class Outcome { kAdmitted, kAdmittedByEviction, kRefusedPerAddress, kRefusedFull };
  struct Decision {
    Outcome outcome = Outcome::kRefusedFull;
    std::optional<Ticket> ticket;  // set when admitted
  };

  // max_per_address 0 = no per-address limit.
  Admission(size_t max_connections, size_t max_per_address)
      : max_connections_(max_connections), max_per_address_(max_per_address) {}

  // A new connection from `address_key` (AddressKey); an empty key is not limited per address
  // (the admin listener). May evict the oldest connection still in its TLS handshake.
  Decision Admit(const std::string& address_key);

  size_t open() const;
  size_t open_from(const std::string& address_key) const;

 private:
  struct Entry {
    std::string key;
    bool handshaking = true;
    std::function<void()> evict;
  };
  // Forgets entry `it`, under mu_.
  void EraseLocked(std::map<uint64_t, Entry>::iterator it);

  const size_t max_connections_;
  const size_t max_per_address_;
  mutable std::mutex mu_;
  uint64_t next_id_ = 1;               // ids grow with age: the smallest is the oldest
  std::map<uint64_t, Entry> entries_;  // open and not evicted
  std::set<uint64_t> handshaking_;     // ids of entries still in their handshake
  std::unordered_map<std::string, size_t> per_address_;
};

}  // namespace cv::server
