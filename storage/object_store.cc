// ObjectStore: the read path, Put and Get. See storage.h for the contract and FORMAT.md for
// the bytes on disk; the write path (Writer, group commit) is in writer.cc.
//
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
