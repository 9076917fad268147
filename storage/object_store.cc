// ObjectStore: the write and read paths. See storage.h for the contract and FORMAT.md for the
// bytes on disk.
//
//  Put:  body -> SHA-256 -> stripe buffers (one copy, straight into the shard records'
//        payloads) -> ISA-L parity -> XXH3 per shard -> headers -> one batch of k+m writes
//        on k+m distinct disks -> ... -> grouped fdatasync -> grouped LMDB commit.
//  Get:  index lookup -> the data shards the range needs -> XXH3 check -> on any miss or
//        mismatch read the rest and rebuild from parity.
#include <algorithm>
#include <cstring>
#include <mutex>
#include <map>
#include <set>

#include "storage/store_impl.h"

namespace cv::storage {

bool IsContentAddressed(index::ObjectType type) { return type != index::ObjectType::kConfig; }

Status ValidateName(index::ObjectType type, std::string_view name) {
  if (!IsContentAddressed(type)) {
    if (!name.empty()) return Err(ErrorKind::kInvalidArgument, "config takes no name");
    return {};
  }
  if (name.size() != 64 || !IsLowerHex(name)) {
    return Err(ErrorKind::kInvalidArgument, "name must be 64 lowercase hex digits (SHA-256)");
  }
  return {};
}

Result<ObjectInfo> ObjectStore::Put(const index::ObjectKey& key, std::string_view body) {
  CV_TRY_ASSIGN(auto w, BeginPut(key, body.size()));
  CV_TRY(w->Append(std::span(reinterpret_cast<const uint8_t*>(body.data()), body.size())));
  return w->Commit();
}

Result<std::string> ObjectStore::Get(const index::ObjectKey& key, uint64_t offset,
                                     uint64_t length) {
  CV_TRY_ASSIGN(auto r, Open(key, offset, length));
  std::string out(r->length(), '\0');
  size_t done = 0;
  while (done < out.size()) {
    CV_TRY_ASSIGN(auto n, r->Read(std::span(reinterpret_cast<uint8_t*>(out.data()) + done,
                                            out.size() - done)));
    if (n == 0) return Err(ErrorKind::kInternal, "reader ended early");
    done += n;
  }
  return out;
}

namespace internal {
namespace {

// An upload that was in flight when its device was deleted must not index an object nobody
// owns: refused at commit once the device is closed, and after its purge removed it.
Status RefuseIfDeviceDeleted(index::WriteTxn& txn, const index::Id& device) {
  CV_TRY_ASSIGN(auto dev, txn.GetDevice(device));
  if (dev.has_value()) {
    if (dev->closed_ns != 0) return Err(ErrorKind::kGone, "the device has been deleted");
    return {};
  }
  CV_TRY_ASSIGN(auto purged, txn.GetMeta(index::PurgedDeviceMetaKey(device)));
  if (purged.has_value()) return Err(ErrorKind::kGone, "the device has been deleted");
  return {};
}

}  // namespace
// ---------------------------------------------------------------------------------------
// Write path

class WriterImpl final : public Writer {
 public:
  WriterImpl(StoreImpl* store, ObjectKey key, uint64_t size, Layout layout)
      : store_(store), key_(std::move(key)), size_(size), hb_(HeaderBytes(key_)) {
    const auto& o = store_->opts_;
    rec_.size = size;
    rec_.created_ns = NowNanos();
    rec_.layout = layout;
    if (layout == Layout::kErasure) {
      rec_.k = static_cast<uint8_t>(o.k);
      rec_.m = static_cast<uint8_t>(o.m);
      rec_.shard_unit = o.shard_unit;
      const size_t nshards = o.k + o.m;
      record_cap_ = RecordBytes(key_, o.shard_unit);
      for (size_t i = 0; i < nshards; ++i) bufs_.push_back(store_->env_->AllocateIo(record_cap_));
    } else {
      rec_.k = static_cast<uint8_t>(o.m + 1);  // copies
      rec_.m = 0;
      rec_.shard_unit = 0;
      record_cap_ = RecordBytes(key_, static_cast<uint32_t>(size));
      bufs_.push_back(store_->env_->AllocateIo(record_cap_));
    }
    // The tail padding of records is part of what we write; keep it deterministic.
    for (auto& b : bufs_) std::memset(b.get(), 0, record_cap_);
  }

  ~WriterImpl() override {
    if (committed_ || written_.empty()) return;
    // Aborted after some records reached disk: count them as dead space for compaction.
    Status s = store_->index_->Update([&](index::WriteTxn& txn) -> Status {
      for (const auto& [loc, bytes] : written_) {
        CV_TRY(AddExtentBytes(txn, loc, store_->opts_.extent_bytes, 0, static_cast<int64_t>(bytes)));
      }
      return {};
    });
    if (!s) Log(LogLevel::kWarn, "abort_accounting_failed", {{"error", s.error().ToString()}});
  }

  Status Append(std::span<const uint8_t> data) override {
    if (failed_) return tl::unexpected(*failed_);
    if (received_ + data.size() > size_) {
      return Fail(Error{ErrorKind::kInvalidArgument, 0, "body longer than announced"});
    }
    while (!data.empty()) {
      const std::span<uint8_t> w = Window();
      const size_t n = std::min(w.size(), data.size());
      std::memcpy(w.data(), data.data(), n);
      CV_TRY(Appended(n));
      data = data.subspan(n);
    }
    return {};
  }

  std::span<uint8_t> Window() override {
    if (failed_ || received_ == size_) return {};
    if (rec_.layout == Layout::kReplicated) {
      return {bufs_[0].get() + hb_ + received_, static_cast<size_t>(size_ - received_)};
    }
    // Up to the end of the current shard's payload (or of the body).
    const uint64_t unit = rec_.shard_unit;
    const size_t shard = static_cast<size_t>(fill_ / unit);
    const size_t off = static_cast<size_t>(fill_ % unit);
    const size_t n = static_cast<size_t>(std::min<uint64_t>(unit - off, size_ - received_));
    return {bufs_[shard].get() + hb_ + off, n};
  }

  Status status() const override {
    if (failed_) return tl::unexpected(*failed_);
    return {};
  }

  Status Appended(size_t n) override {
    CV_TRY(status());
    if (n == 0) return {};
    const std::span<uint8_t> w = Window();
    if (n > w.size()) {
      return Fail(Error{ErrorKind::kInvalidArgument, 0, "body longer than announced"});
    }
    sha_.Update(std::span<const uint8_t>(w.data(), n));
    received_ += n;
    if (rec_.layout == Layout::kReplicated) return {};
    fill_ += n;
    if (fill_ == uint64_t{rec_.shard_unit} * rec_.k) return FlushStripe();
    return {};
  }

  Result<ObjectInfo> Commit() override {
    if (failed_) return tl::unexpected(*failed_);
    if (committed_) return Err(ErrorKind::kInternal, "already committed");
    if (received_ != size_) {
      return tl::unexpected(Fail(Error{ErrorKind::kInvalidArgument, 0, "body shorter than announced"}).error());
    }
    rec_.sha256 = sha_.Final();
    if (IsContentAddressed(key_.type) && ToHex(rec_.sha256) != key_.name) {
      return tl::unexpected(
          Fail(Error{ErrorKind::kInvalidArgument, 0, "body does not match its SHA-256 name"}).error());
    }
    if (rec_.layout == Layout::kReplicated) {
      CV_TRY(WriteCopies());
    } else if (fill_ > 0) {
      CV_TRY(FlushStripe());
    }
    // Durable before indexed (rule 3).
    if (Status s = store_->disks_.Sync(synced_); !s) {
      return tl::unexpected(Fail(s.error()).error());
    }
    bool existed = false;
    Status s = store_->index_->Update([&](index::WriteTxn& txn) -> Status {
      existed = false;
      CV_TRY(RefuseIfDeviceDeleted(txn, key_.device));
      CV_TRY_ASSIGN(auto cur, txn.GetObject(key_));
      if (cur.has_value()) {
        const ObjectRecord& old = *cur;
        if (old.size != rec_.size || old.sha256 != rec_.sha256) {
          return Err(ErrorKind::kConflict, "object exists with different content");
        }
        existed = true;
        for (const auto& [loc, bytes] : written_) {
          CV_TRY(AddExtentBytes(txn, loc, store_->opts_.extent_bytes, 0, static_cast<int64_t>(bytes)));
        }
        return {};
      }
      CV_TRY(txn.PutObject(key_, rec_));
      return store_->AccountRecords(txn, key_, rec_, /*live=*/true);
    });
    if (!s) {
      if (s.error().kind != ErrorKind::kConflict) return tl::unexpected(Fail(s.error()).error());
      return tl::unexpected(s.error());  // the destructor books our records as dead
    }
    committed_ = true;
    if (existed) {
      auto cur = store_->Lookup(key_);
      if (cur && cur->has_value()) return StoreImpl::Info(key_, **cur);
    }
    return StoreImpl::Info(key_, rec_);
  }

 private:
  Status Fail(Error e) {
    failed_ = e;
    return tl::unexpected(std::move(e));
  }

  // Writes records (bufs[i], len) to distinct disks; returns their locations.
  Status WriteRecords(std::span<uint8_t* const> bufs, uint64_t len, std::vector<ShardLoc>* locs) {
    std::vector<size_t> disk_ids;
    auto placed = store_->Place(bufs.size(), len, {}, &disk_ids);
    if (!placed) return Fail(placed.error());
    std::vector<IoRequest> reqs(bufs.size());
    for (size_t i = 0; i < bufs.size(); ++i) {
      reqs[i] = {IoRequest::Op::kWrite, (*placed)[i].extent->file.get(), (*placed)[i].offset,
                 bufs[i], len};
    }
    Status s = store_->env_->Execute(reqs);
    std::vector<size_t> full;
    for (size_t i = 0; i < bufs.size(); ++i) {
      const auto& p = (*placed)[i];
      ShardLoc loc{p.extent->disk, p.extent->id, p.offset};
      if (reqs[i].result < 0 || static_cast<uint64_t>(reqs[i].result) != len) {
        p.extent->poisoned = true;  // a torn record may sit there: append elsewhere from now on
        const int errno_of_write = reqs[i].result < 0 ? static_cast<int>(-reqs[i].result) : EIO;
        const Error err = ErrnoError(errno_of_write, "shard write").value();
        if (err.kind == ErrorKind::kNoSpace) full.push_back(disk_ids[i]);
        store_->disks_.ReportError(disk_ids[i], err);
        // Whatever reached the disk is garbage now; account it as dead once we know the loc.
        written_.emplace_back(loc, len);
        continue;
      }
      store_->disks_.ReportSuccess(disk_ids[i]);
      const uint64_t seq = p.extent->write_seq.fetch_add(1) + 1;
      synced_.emplace_back(p.extent, seq);
      written_.emplace_back(loc, len);
      locs->push_back(loc);
    }
    if (!s) {
      std::sort(full.begin(), full.end());
      return Fail(store_->disks_.NameFullDisks(s.error(), full));
    }
    return {};
  }

  Status FlushStripe() {
    const uint32_t stripe = static_cast<uint32_t>(rec_.shards.size() / (rec_.k + rec_.m));
    const uint32_t L = ShardLen(rec_, stripe);
    const size_t k = rec_.k, m = rec_.m;
    if (L < rec_.shard_unit) {
      // Data of a short stripe is laid out with shard length L, not shard_unit: move it.
      RelayoutShortStripe(L);
    }
    uint8_t* payload[erasure::kMaxShards];
    for (size_t i = 0; i < k + m; ++i) payload[i] = bufs_[i].get() + hb_;
    store_->codec_->Encode(L, std::span<const uint8_t* const>(payload, k),
                           std::span<uint8_t* const>(payload + k, m));
    const uint64_t rb = RecordBytes(key_, L);
    for (size_t i = 0; i < k + m; ++i) {
      RecordHeader h = Header(stripe, static_cast<uint8_t>(i), L);
      h.payload_xxh3 = PayloadChecksum(std::span<const uint8_t>(payload[i], L));
      EncodeHeader(h, std::span<uint8_t>(bufs_[i].get(), hb_));
      std::memset(bufs_[i].get() + hb_ + L, 0, rb - hb_ - L);
    }
    uint8_t* records[erasure::kMaxShards];
    for (size_t i = 0; i < k + m; ++i) records[i] = bufs_[i].get();
    std::vector<ShardLoc> locs;
    CV_TRY(WriteRecords(std::span<uint8_t* const>(records, k + m), rb, &locs));
    rec_.shards.insert(rec_.shards.end(), locs.begin(), locs.end());
    fill_ = 0;
    return {};
  }

  // Appended bytes were placed assuming shard length shard_unit; a short (last) stripe uses
  // L = ceil(fill / k). Byte b of the stripe sits at shard b / unit, offset b % unit and
  // belongs at shard b / L, offset b % L. Rewrite in place through a scratch copy.
  void RelayoutShortStripe(uint32_t L) {
    const uint64_t unit = rec_.shard_unit;
    std::string scratch(fill_, '\0');
    for (uint64_t b = 0; b < fill_;) {
      const size_t s = b / unit, off = b % unit;
      const size_t n = std::min<uint64_t>(unit - off, fill_ - b);
      std::memcpy(scratch.data() + b, bufs_[s].get() + hb_ + off, n);
      b += n;
    }
    for (size_t i = 0; i < rec_.k; ++i) {
      uint8_t* dst = bufs_[i].get() + hb_;
      const uint64_t begin = uint64_t{i} * L;
      const uint64_t n = begin < fill_ ? std::min<uint64_t>(L, fill_ - begin) : 0;
      if (n) std::memcpy(dst, scratch.data() + begin, n);
      std::memset(dst + n, 0, L - n);
    }
  }

  Status WriteCopies() {
    const uint32_t len = static_cast<uint32_t>(size_);
    RecordHeader h = Header(0, 0, len);
    h.payload_xxh3 = PayloadChecksum(std::span<const uint8_t>(bufs_[0].get() + hb_, len));
    EncodeHeader(h, std::span<uint8_t>(bufs_[0].get(), hb_));
    std::vector<uint8_t*> records(rec_.k, bufs_[0].get());
    std::vector<ShardLoc> locs;
    CV_TRY(WriteRecords(records, record_cap_, &locs));
    // Copies are interchangeable; keep them in disk order (an index rebuild finds them so).
    std::sort(locs.begin(), locs.end(), ShardLocLess);
    rec_.shards = std::move(locs);
    return {};
  }

  RecordHeader Header(uint32_t stripe, uint8_t shard, uint32_t payload_len) const {
    RecordHeader h;
    h.key = key_;
    h.layout = rec_.layout;
    h.k = rec_.k;
    h.m = rec_.m;
    h.shard = shard;
    h.stripe = stripe;
    h.shard_unit = rec_.shard_unit;
    h.payload_len = payload_len;
    h.object_size = size_;
    h.created_ns = rec_.created_ns;
    h.sha256 = rec_.sha256;  // zero until the body is complete for striped objects
    return h;
  }

  StoreImpl* store_;
  ObjectKey key_;
  uint64_t size_;
  size_t hb_;
  uint64_t record_cap_ = 0;
  ObjectRecord rec_;
  std::vector<IoBuffer> bufs_;
  uint64_t fill_ = 0;      // bytes in the current stripe
  uint64_t received_ = 0;  // bytes of the body so far
  Sha256 sha_;
  std::optional<Error> failed_;
  bool committed_ = false;
  std::vector<std::pair<std::shared_ptr<Extent>, uint64_t>> synced_;
  std::vector<std::pair<ShardLoc, uint64_t>> written_;  // every record put on disk, with its bytes
};

Result<std::unique_ptr<Writer>> StoreImpl::BeginPut(const ObjectKey& key, uint64_t size) {
  CV_TRY(ValidateName(key.type, key.name));
  if (size > kMaxObjectBytes) return Err(ErrorKind::kTooLarge, "object larger than 1 TiB");
  const int k = opts_.k, m = opts_.m;
  // Layout: objects that fit one stripe take whichever of m+1 copies or one k+m stripe
  // costs fewer disk bytes. Both survive the loss of any m disks.
  Layout layout = Layout::kErasure;
  if (size <= uint64_t(k) * opts_.shard_unit) {
    const uint32_t L = static_cast<uint32_t>((size + k - 1) / k);
    const uint64_t ec = uint64_t(k + m) * RecordBytes(key, L);
    const uint64_t rep = uint64_t(m + 1) * RecordBytes(key, static_cast<uint32_t>(size));
    if (rep <= ec) layout = Layout::kReplicated;
  }
  const size_t need = layout == Layout::kErasure ? size_t(k + m) : size_t(m + 1);
  if (PlaceableCount() < need) {
    return Err(ErrorKind::kUnavailable, "not enough healthy data disks to store with full redundancy");
  }
  return std::unique_ptr<Writer>(new WriterImpl(this, key, size, layout));
}

// ---------------------------------------------------------------------------------------
// Read path

class ReaderImpl final : public Reader {
 public:
  ReaderImpl(StoreImpl* store, ObjectKey key, ObjectRecord rec, uint64_t offset, uint64_t length)
      : store_(store), key_(std::move(key)), rec_(std::move(rec)), pos_(offset), end_(offset + length),
        length_(length), hb_(HeaderBytes(key_)) {}
  ~ReaderImpl() override {
    if (inflight_) inflight_->owner = nullptr;  // its buffers stay with the ring's batch
  }

  uint64_t length() const override { return length_; }

  Result<size_t> Read(std::span<uint8_t> out) override {
    size_t done = 0;
    while (done < out.size() && pos_ < end_) {
      CV_TRY_ASSIGN(auto n, ReadSome(out.subspan(done)));
      done += n;
      pos_ += n;
    }
    return done;
  }

  void Prefetch(AsyncRing& ring, std::function<void()> done) override {
    if (inflight_) {  // one at a time: this one reads nothing and leaves the first alone
      ring.Submit({}, [done = std::move(done)](Status) { done(); });
      return;
    }
    auto f = std::make_shared<Inflight>();
    if (pos_ < end_) PlanPrefetch(*f);
    f->owner = this;
    f->bufs = bufs_;
    store_->PrepareShardReads(key_, std::span(f->reads, f->count), f->io);
    inflight_ = f;
    ring.Submit(f->io.reqs, [f, done = std::move(done)](Status) {
      if (ReaderImpl* r = f->owner) r->FinishPrefetch(*f);
      done();
    });
  }

  uint64_t Buffered() const override {
    if (pos_ >= end_ || !loaded_) return 0;
    if (rec_.layout == Layout::kReplicated) return end_ - pos_;
    const Where w = Locate();
    if (w.stripe != stripe_) return 0;
    uint64_t n = 0;
    for (size_t i = w.shard; i < rec_.k && have_[i]; ++i) n += w.L - (i == w.shard ? w.off : 0);
    return std::min<uint64_t>(n, end_ - pos_);
  }

 private:
  // Where pos_ lies in an erasure-coded object, and the last data shard of that stripe the
  // range still needs.
  struct Where {
    uint32_t stripe;
    uint32_t L;  // payload bytes of each shard of the stripe
    size_t shard, off, last;
  };
  Where Locate() const {
    const uint64_t stripe_bytes = uint64_t{rec_.k} * rec_.shard_unit;
    Where w;
    w.stripe = static_cast<uint32_t>(pos_ / stripe_bytes);
    w.L = ShardLen(rec_, w.stripe);
    const uint64_t in_stripe = pos_ - uint64_t{w.stripe} * stripe_bytes;
    w.shard = in_stripe / w.L;
    w.off = in_stripe % w.L;
    const uint64_t stripe_end = std::min<uint64_t>(uint64_t{w.stripe + 1} * stripe_bytes, rec_.size);
    const uint64_t want_end = std::min<uint64_t>(end_, stripe_end) - uint64_t{w.stripe} * stripe_bytes;
    w.last = (want_end - 1) / w.L;
    return w;
  }

  // Starts a stripe: nothing of it loaded or tried yet.
  void EnterStripe(uint32_t stripe) {
    if (loaded_ && stripe_ == stripe) return;
    stripe_ = stripe;
    loaded_ = true;
    have_.assign(rec_.k + rec_.m, false);
  }

  Result<size_t> ReadSome(std::span<uint8_t> out) {
    if (rec_.layout == Layout::kReplicated) {
      if (!loaded_) CV_TRY(LoadCopy());
      const size_t n = std::min<uint64_t>(out.size(), end_ - pos_);
      std::memcpy(out.data(), payload_[0] + pos_, n);
      return n;
    }
    const Where w = Locate();
    EnterStripe(w.stripe);
    // Load every data shard this range still needs from this stripe, in one batch.
    if (!have_[w.shard]) CV_TRY(LoadShards(w.stripe, w.L, w.shard, w.last));
    const size_t n = std::min<uint64_t>({out.size(), end_ - pos_, uint64_t{w.L} - w.off});
    std::memcpy(out.data(), payload_[w.shard] + w.off, n);
    return n;
  }

  uint8_t* Buf(size_t i) { return (*bufs_)[i].get(); }

  void EnsureBuffers(size_t count, uint64_t len) {
    if (bufs_->size() == count && buf_len_ >= len) return;
    // A new set: a prefetch whose Reader is gone may still hold the old one.
    bufs_ = std::make_shared<std::vector<IoBuffer>>();
    for (size_t i = 0; i < count; ++i) bufs_->push_back(store_->env_->AllocateIo(len));
    buf_len_ = len;
    payload_.assign(count, nullptr);
  }

  Status LoadCopy() {
    const uint32_t len = static_cast<uint32_t>(rec_.size);
    EnsureBuffers(1, RecordBytes(key_, len));
    // A prefetch that failed tried copy 0 already.
    for (size_t c = copies_tried_; c < rec_.shards.size(); ++c) {
      auto p = store_->ReadShard(key_, rec_, rec_.shards[c], 0, 0, len, Buf(0));
      if (p) {
        if (c > 0) store_->reconstructed_.fetch_add(1);
        payload_[0] = Buf(0) + hb_;
        loaded_ = true;
        return {};
      }
      store_->QueueRepair(key_, 0);
    }
    return Err(ErrorKind::kUnavailable, "every copy of " + key_.name + " is unreadable");
  }

  // Reads data shards [first, last] of the stripe; if any of them fails, reads every other
  // shard too and rebuilds the missing ones from parity.
  Status LoadShards(uint32_t stripe, uint32_t L, size_t first, size_t last) {
    const size_t k = rec_.k, n = rec_.k + rec_.m;
    EnsureBuffers(n, RecordBytes(key_, rec_.shard_unit));
    ReadBatch(stripe, L, first, last);
    // Loaded now, not merely "no read failed": a shard tried and failed earlier in this stripe
    // (a Read retried after an error, or a prefetch) is read by nobody and must still be rebuilt.
    bool all = true;
    for (size_t i = first; i <= last; ++i) all = all && have_[i];
    if (all) return {};
    store_->QueueRepair(key_, stripe);
    ReadBatch(stripe, L, 0, n - 1);  // the shards not tried yet: parity and the rest
    std::vector<bool> present(n, false);
    size_t count = 0;
    for (size_t i = 0; i < n; ++i) {
      present[i] = have_[i];
      count += have_[i];
    }
    if (count < k) {
      return Err(ErrorKind::kUnavailable,
                 "object " + key_.name + " stripe " + std::to_string(stripe) + ": only " +
                     std::to_string(count) + " of " + std::to_string(n) +
                     " shards readable, need " + std::to_string(k));
    }
    uint8_t* shards[erasure::kMaxShards];
    bool pres[erasure::kMaxShards];
    for (size_t i = 0; i < n; ++i) {
      payload_[i] = Buf(i) + hb_;
      shards[i] = payload_[i];
      pres[i] = present[i];
    }
    CV_TRY(store_->codec_->Reconstruct(L, std::span<uint8_t* const>(shards, n),
                                       std::span<const bool>(pres, n)));
    store_->reconstructed_.fetch_add(1);
    for (size_t i = 0; i < n; ++i) have_[i] = true;
    return {};
  }

  // The reads of shards [first, last] of the stripe that are neither loaded nor tried yet
  // (one request per disk); marks them tried. Returns how many it put in `reads`.
  size_t PlanBatch(uint32_t stripe, uint32_t L, size_t first, size_t last,
                   StoreImpl::ShardRead* reads) {
    if (tried_.size() != have_.size() || tried_stripe_ != stripe) {
      tried_.assign(have_.size(), false);
      tried_stripe_ = stripe;
    }
    size_t count = 0;
    for (size_t i = first; i <= last; ++i) {
      if (have_[i] || tried_[i]) continue;
      tried_[i] = true;
      reads[count++] = StoreImpl::ShardRead{&rec_.shards[size_t{stripe} * (rec_.k + rec_.m) + i],
                                            stripe, static_cast<uint8_t>(i), L, Buf(i)};
    }
    return count;
  }

  // Marks what a batch loaded.
  void Loaded(std::span<const StoreImpl::ShardRead> reads) {
    for (const StoreImpl::ShardRead& r : reads) {
      if (!r.payload) continue;
      payload_[r.shard] = Buf(r.shard) + hb_;
      have_[r.shard] = true;
    }
  }

  // Reads shards [first, last] of the stripe that are neither loaded nor tried yet, in one
  // I/O batch (concurrently); have_ says which are loaded after.
  void ReadBatch(uint32_t stripe, uint32_t L, size_t first, size_t last) {
    StoreImpl::ShardRead reads[erasure::kMaxShards];
    const size_t count = PlanBatch(stripe, L, first, last, reads);
    store_->ReadShards(key_, rec_, std::span(reads, count));
    Loaded(std::span(reads, count));
  }

  // A prefetch on its way: what it reads, into which buffers.
  struct Inflight {
    ReaderImpl* owner = nullptr;  // nullptr once the Reader is gone
    std::shared_ptr<std::vector<IoBuffer>> bufs;  // alive until the kernel is done with them
    StoreImpl::ShardRead reads[erasure::kMaxShards];
    size_t count = 0;
    StoreImpl::ShardReadIo io;
  };

  // What the next Read needs and has not loaded or tried: the rest of the stripe's range.
  void PlanPrefetch(Inflight& f) {
    if (rec_.layout == Layout::kReplicated) {
      if (loaded_ || copies_tried_ > 0) return;
      const uint32_t len = static_cast<uint32_t>(rec_.size);
      EnsureBuffers(1, RecordBytes(key_, len));
      copies_tried_ = 1;
      f.reads[f.count++] = StoreImpl::ShardRead{&rec_.shards[0], 0, 0, len, Buf(0)};
      return;
    }
    const Where w = Locate();
    EnterStripe(w.stripe);
    EnsureBuffers(rec_.k + rec_.m, RecordBytes(key_, rec_.shard_unit));
    f.count = PlanBatch(w.stripe, w.L, w.shard, w.last, f.reads);
  }

  void FinishPrefetch(Inflight& f) {
    const std::span<StoreImpl::ShardRead> reads(f.reads, f.count);
    store_->FinishShardReads(key_, rec_, reads, f.io);
    if (rec_.layout == Layout::kReplicated) {
      if (f.count == 1 && reads[0].payload) {
        payload_[0] = Buf(0) + hb_;
        loaded_ = true;
      } else if (f.count == 1) {
        store_->QueueRepair(key_, 0);  // Read goes on with the other copies
      }
    } else {
      Loaded(reads);
    }
    inflight_.reset();
  }

  StoreImpl* store_;
  ObjectKey key_;
  ObjectRecord rec_;
  uint64_t pos_, end_, length_;
  size_t hb_;
  bool loaded_ = false;
  uint32_t stripe_ = 0;
  uint32_t tried_stripe_ = UINT32_MAX;
  size_t copies_tried_ = 0;  // replicated: copies a prefetch read
  std::vector<bool> have_, tried_;
  std::shared_ptr<std::vector<IoBuffer>> bufs_ = std::make_shared<std::vector<IoBuffer>>();
  uint64_t buf_len_ = 0;
  std::vector<uint8_t*> payload_;
  std::shared_ptr<Inflight> inflight_;
};
Result<std::unique_ptr<Reader>> StoreImpl::Open(const ObjectKey& key, uint64_t offset,
                                                uint64_t length) {
  CV_TRY_ASSIGN(auto rec, Lookup(key));
  if (!rec.has_value()) return Err(ErrorKind::kNotFound, "no such object");
  const ObjectRecord& r = *rec;
  if (offset > r.size) return Err(ErrorKind::kInvalidArgument, "offset past the end of the object");
  const uint64_t len = std::min<uint64_t>(length, r.size - offset);
  return std::unique_ptr<Reader>(new ReaderImpl(this, key, r, offset, len));
}

}  // namespace internal

Result<std::unique_ptr<ObjectStore>> ObjectStore::Open(const StoreOptions& options) {
  if (options.disks.size() < static_cast<size_t>(options.k + options.m)) {
    return Err(ErrorKind::kInvalidArgument,
               "erasure profile " + std::to_string(options.k) + "+" + std::to_string(options.m) +
                   " needs at least " + std::to_string(options.k + options.m) + " disks, have " +
                   std::to_string(options.disks.size()));
  }
  if (options.shard_unit == 0 || options.shard_unit % 64 != 0) {
    return Err(ErrorKind::kInvalidArgument, "shard_unit must be a positive multiple of 64");
  }
  if (options.extent_bytes < 2 * (uint64_t{options.shard_unit} + kRecordAlign)) {
    return Err(ErrorKind::kInvalidArgument, "extent_bytes too small for the shard unit");
  }
  CV_TRY_ASSIGN(auto codec, erasure::Codec::Create(options.k, options.m));
  std::unique_ptr<Env> owned;
  Env* env = options.env;
  if (env == nullptr) {
    owned = NewDefaultEnv();
    if (options.discard_data_writes) {
      Log(LogLevel::kError, "bench_discard_writes",
          {{"note", "bench only: data disks keep nothing; every object written is lost"}});
      owned = NewDiscardEnv(std::move(owned));
    }
    env = owned.get();
  }
  index::Index::Options io;
  io.dir = options.index_dir;
  io.initial_map_bytes = options.index_initial_map_bytes;
  CV_TRY_ASSIGN(auto idx, index::Index::Open(io));
  auto store = std::make_unique<internal::StoreImpl>(options, std::move(owned), env,
                                                     std::move(codec), std::move(idx));
  CV_TRY(store->Init());
  return std::unique_ptr<ObjectStore>(std::move(store));
}

}  // namespace cv::storage
