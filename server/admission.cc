#include "server/admission.h"

#include <cstdio>

namespace cv::server {

std::string AddressKey(const boost::asio::ip::address& address) {
  if (address.is_v4()) return address.to_v4().to_string();
  const boost::asio::ip::address_v6 v6 = address.to_v6();
  if (v6.is_v4_mapped()) {
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, v6).to_string();
  }
  // One host usually owns a whole /64 and picks addresses in it at will.
  const auto bytes = v6.to_bytes();
  std::string key;
  char part[8];
  for (size_t i = 0; i < 8; i += 2) {
    std::snprintf(part, sizeof part, "%x:", (bytes[i] << 8) | bytes[i + 1]);
    key += part;
  }
  return key + ":/64";
}

Admission::Ticket& Admission::Ticket::operator=(Ticket&& o) noexcept {
  if (this != &o) {
    Release();
    owner_ = o.owner_;
    id_ = o.id_;
    o.owner_ = nullptr;
  }
  return *this;
}

bool Admission::Ticket::Arm(std::function<void()> evict) {
  if (!owner_) return false;
  std::lock_guard lock(owner_->mu_);
  auto it = owner_->entries_.find(id_);
  if (it == owner_->entries_.end()) return false;
  if (it->second.handshaking) it->second.evict = std::move(evict);
  return true;
}

bool Admission::Ticket::HandshakeDone() {
  if (!owner_) return false;
  std::lock_guard lock(owner_->mu_);
  auto it = owner_->entries_.find(id_);
  if (it == owner_->entries_.end()) return false;
  it->second.handshaking = false;
  it->second.evict = nullptr;
  owner_->handshaking_.erase(id_);
  return true;
}

void Admission::Ticket::Release() {
  if (!owner_) return;
  {
    std::lock_guard lock(owner_->mu_);
    auto it = owner_->entries_.find(id_);
    if (it != owner_->entries_.end()) owner_->EraseLocked(it);
  }
  owner_ = nullptr;
}

void Admission::EraseLocked(std::map<uint64_t, Entry>::iterator it) {
  if (!it->second.key.empty()) {
    auto pa = per_address_.find(it->second.key);
    if (pa != per_address_.end() && --pa->second == 0) per_address_.erase(pa);
  }
  handshaking_.erase(it->first);
  entries_.erase(it);
}

Admission::Decision Admission::Admit(const std::string& address_key) {
  Decision d;
  std::function<void()> evict;
  {
    std::lock_guard lock(mu_);
    if (max_per_address_ > 0 && !address_key.empty()) {
      auto pa = per_address_.find(address_key);
      if (pa != per_address_.end() && pa->second >= max_per_address_) {
        d.outcome = Outcome::kRefusedPerAddress;
        return d;
      }
    }
    d.outcome = Outcome::kAdmitted;
    if (entries_.size() >= max_connections_) {
      if (handshaking_.empty()) {
        d.outcome = Outcome::kRefusedFull;
        return d;
      }
      auto victim = entries_.find(*handshaking_.begin());
      evict = std::move(victim->second.evict);
      EraseLocked(victim);
      d.outcome = Outcome::kAdmittedByEviction;
    }
    const uint64_t id = next_id_++;
    entries_.emplace(id, Entry{address_key, true, nullptr});
    handshaking_.insert(id);
    if (!address_key.empty()) ++per_address_[address_key];
    d.ticket.emplace(Ticket(this, id));
  }
  // Outside the lock: the callback only posts to the victim's thread, but it is not ours.
  if (evict) evict();
  return d;
}

size_t Admission::open() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

size_t Admission::open_from(const std::string& address_key) const {
  std::lock_guard lock(mu_);
  auto it = per_address_.find(address_key);
  return it == per_address_.end() ? 0 : it->second;
}

}  // namespace cv::server
