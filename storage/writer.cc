// The write path: Writer and the store's group commit.
//
//  body -> SHA-256 -> stripe buffers (one copy, straight into the shard records' payloads)
//  -> ISA-L parity -> XXH3 per shard -> headers -> one batch of k+m writes on k+m distinct
//  disks -> ... -> grouped fdatasync -> grouped LMDB commit.
//
// Synchronously (Commit), each batch of writes runs before Appended returns. On an event
// loop (WriteOn), a batch goes to the loop's ring and the body goes on into a second set of
// stripe buffers meanwhile; CommitAsync then hands the upload to the store's commit thread
// (group_commit.h), which syncs and indexes it with whatever else is waiting.
#include <algorithm>
#include <cstring>

#include "storage/group_commit.h"
#include "storage/store_impl.h"

namespace cv::storage::internal {
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

using Written = std::vector<std::pair<ShardLoc, uint64_t>>;  // records on disk, with bytes

// Books records that reached the disk but will never be indexed as dead space (compaction's
// measure): at once, or (`wait` false, for an event loop) in the next commit group.
void BookDead(StoreImpl* store, Written written, bool wait) {
  if (written.empty()) return;
  const uint64_t cap = store->opts_.extent_bytes;
  auto fn = [written = std::move(written), cap](index::WriteTxn& txn) -> Status {
    for (const auto& [loc, bytes] : written) {
      CV_TRY(AddExtentBytes(txn, loc, cap, 0, static_cast<int64_t>(bytes)));
    }
    return {};
  };
  auto report = [](const Status& s) {
    if (!s) Log(LogLevel::kWarn, "abort_accounting_failed", {{"error", s.error().ToString()}});
  };
  if (wait) {
    report(store->index_->Update(fn));
  } else {
    store->UpdateAsync(std::move(fn), report);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------

class WriterImpl final : public Writer {
 public:
  WriterImpl(StoreImpl* store, ObjectKey key, uint64_t size, Layout layout)
      : store_(store), key_(std::move(key)), size_(size), hb_(HeaderBytes(key_)),
        token_(std::make_shared<Token>(Token{this})) {
    const auto& o = store_->opts_;
    rec_.size = size;
    rec_.created_ns = NowNanos();
    rec_.layout = layout;
    if (layout == Layout::kErasure) {
      rec_.k = static_cast<uint8_t>(o.k);
      rec_.m = static_cast<uint8_t>(o.m);
      rec_.shard_unit = o.shard_unit;
      // A body shorter than a shard goes whole into the first buffer (then RelayoutShortStripe
      // spreads it over shards of ceil(size / k)): no buffer needs more than that.
      record_cap_ = RecordBytes(key_, static_cast<uint32_t>(std::min<uint64_t>(o.shard_unit, size)));
    } else {
      rec_.k = static_cast<uint8_t>(o.m + 1);  // copies
      rec_.m = 0;
      rec_.shard_unit = 0;
      record_cap_ = RecordBytes(key_, static_cast<uint32_t>(size));
    }
    AddBufferSet();
  }

  ~WriterImpl() override {
    token_->writer = nullptr;  // writes still in flight book their own records
    if (!committed_) BookDead(store_, std::move(written_), /*wait=*/ring_ == nullptr);
  }

  Status Append(std::span<const uint8_t> data) override {
    if (failed_) return tl::unexpected(*failed_);
    if (received_ + data.size() > size_) {
      return Fail(Error{ErrorKind::kInvalidArgument, 0, "body longer than announced"});
    }
    while (!data.empty()) {
      const std::span<uint8_t> w = Window();
      if (w.empty()) return Err(ErrorKind::kInternal, "Append on a Writer that writes on a ring");
      const size_t n = std::min(w.size(), data.size());
      std::memcpy(w.data(), data.data(), n);
      CV_TRY(Appended(n));
      data = data.subspan(n);
    }
    return {};
  }

  std::span<uint8_t> Window() override {
    if (failed_ || received_ == size_ || cur_ == kNone) return {};
    if (rec_.layout == Layout::kReplicated) {
      return {Buf(0) + hb_ + received_, static_cast<size_t>(size_ - received_)};
    }
    // Up to the end of the current shard's payload (or of the body).
    const uint64_t unit = rec_.shard_unit;
    const size_t shard = static_cast<size_t>(fill_ / unit);
    const size_t off = static_cast<size_t>(fill_ % unit);
    const size_t n = static_cast<size_t>(std::min<uint64_t>(unit - off, size_ - received_));
    return {Buf(shard) + hb_ + off, n};
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
    if (rec_.layout == Layout::kErasure) {
      fill_ += n;
      if (fill_ == uint64_t{rec_.shard_unit} * rec_.k) CV_TRY(FlushStripe());
    }
    // On a ring the last writes start with the last byte; synchronously they wait for Commit.
    if (ring_ && received_ == size_) return Seal();
    return {};
  }

  void WriteOn(AsyncRing& ring) override {
    ring_ = &ring;
    // An empty body is complete already: no Appended will seal it, so its copies start here.
    if (size_ == 0) (void)Seal();  // an error stays in status()
  }

  void WhenWritten(std::function<void()> done) override {
    if (!ring_) {
      done();
      return;
    }
    if (CanGoOn()) {
      ring_->Submit({}, [done = std::move(done)](Status) { done(); });  // runs inside Poll
      return;
    }
    waiter_ = std::move(done);
  }

  Result<ObjectInfo> Commit() override {
    CV_TRY(ReadyToCommit());
    // Durable before indexed (rule 3).
    if (Status s = store_->disks_.Sync(synced_); !s) return tl::unexpected(Fail(s.error()).error());
    bool existed = false;
    Status s = store_->index_->Update([&](index::WriteTxn& txn) { return IndexIn(txn, &existed); });
    return Finish(std::move(s), existed);
  }

  // ---- for StoreImpl::CommitAsync ----

  // Every record written and none in flight; seals first (synchronously) if no ring did.
  Status ReadyToCommit() {
    if (failed_) return tl::unexpected(*failed_);
    if (committed_) return Err(ErrorKind::kInternal, "already committed");
    if (received_ != size_) {
      return Fail(Error{ErrorKind::kInvalidArgument, 0, "body shorter than announced"});
    }
    if (!sealed_) CV_TRY(Seal());
    if (inflight_ > 0) return Err(ErrorKind::kInternal, "commit while writes are in flight");
    return {};
  }

  const GroupCommit::SyncList& synced() const { return synced_; }

  // The object's index records; `existed`: the same object was there already.
  Status IndexIn(index::WriteTxn& txn, bool* existed) {
    *existed = false;
    CV_TRY(RefuseIfDeviceDeleted(txn, key_.device));
    CV_TRY_ASSIGN(auto cur, txn.GetObject(key_));
    if (cur.has_value()) {
      const ObjectRecord& old = *cur;
      if (old.size != rec_.size || old.sha256 != rec_.sha256) {
        return Err(ErrorKind::kConflict, "object exists with different content");
      }
      *existed = true;
      for (const auto& [loc, bytes] : written_) {
        CV_TRY(AddExtentBytes(txn, loc, store_->opts_.extent_bytes, 0, static_cast<int64_t>(bytes)));
      }
      return {};
    }
    CV_TRY(txn.PutObject(key_, rec_));
    return store_->AccountRecords(txn, key_, rec_, /*live=*/true);
  }

  // What Commit returns, given how the sync and the index commit went.
  Result<ObjectInfo> Finish(Status s, bool existed) {
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
  static constexpr size_t kNone = SIZE_MAX;
  // On a ring: the stripe being filled plus the one being written.
  static constexpr size_t kRingBufferSets = 2;

  struct Token {
    WriterImpl* writer;  // nullptr once the Writer is gone
  };
  // One set of k+m record buffers (one for copies). Shared with the writes in flight, so
  // that the kernel's buffers outlive a Writer destroyed meanwhile.
  using BufferSet = std::vector<IoBuffer>;
  // A batch of record writes on the ring.
  struct RingWrite {
    std::shared_ptr<Token> owner;
    StoreImpl* store = nullptr;
    std::shared_ptr<BufferSet> bufs;
    size_t set = 0;
    std::vector<IoRequest> reqs;
    std::vector<Placement> placed;
    std::vector<size_t> disks;
    uint64_t len = 0;
    size_t slot = 0;  // first index in rec_.shards (striped), or SIZE_MAX: the copies
  };

  uint8_t* Buf(size_t i) { return (*sets_[cur_])[i].get(); }

  void AddBufferSet() {
    auto set = std::make_shared<BufferSet>();
    const size_t n = rec_.layout == Layout::kErasure ? size_t{rec_.k} + rec_.m : 1;
    // Not cleared: every byte of a record that is written is set first (the header by
    // EncodeHeader, the payload by the body, RelayoutShortStripe or the parity, the tail
    // padding by FlushStripe or WriteCopies).
    for (size_t i = 0; i < n; ++i) set->push_back(store_->env_->AllocateIo(record_cap_));
    sets_.push_back(std::move(set));
    busy_.push_back(false);
    cur_ = sets_.size() - 1;
  }

  bool CanGoOn() const {
    if (failed_) return true;
    if (received_ == size_) return inflight_ == 0;
    return cur_ != kNone;
  }

  Status Fail(Error e) {
    failed_ = e;
    return tl::unexpected(std::move(e));
  }

  // The body is complete: checks it against its name and writes what remains.
  Status Seal() {
    sealed_ = true;
    rec_.sha256 = sha_.Final();
    if (IsContentAddressed(key_.type) && ToHex(rec_.sha256) != key_.name) {
      return Fail(Error{ErrorKind::kInvalidArgument, 0, "body does not match its SHA-256 name"});
    }
    if (rec_.layout == Layout::kReplicated) return WriteCopies();
    if (fill_ > 0) return FlushStripe();
    return {};
  }

  // After a batch of record writes ran: disk health, sequence numbers for the sync, and
  // where the records went (`locs`, in request order). Whatever reached a disk goes to
  // `written`. Returns the batch's error, naming full disks.
  static Status Settle(StoreImpl* store, std::span<const Placement> placed,
                       std::span<const size_t> disks, std::span<const IoRequest> reqs,
                       uint64_t len, GroupCommit::SyncList* synced, Written* written,
                       std::vector<ShardLoc>* locs) {
    std::vector<size_t> full;
    for (size_t i = 0; i < reqs.size(); ++i) {
      const auto& p = placed[i];
      ShardLoc loc{p.extent->disk, p.extent->id, p.offset};
      written->emplace_back(loc, len);  // a failed write may still have left garbage there
      if (reqs[i].result < 0 || static_cast<uint64_t>(reqs[i].result) != len) {
        p.extent->poisoned = true;  // a torn record may sit there: append elsewhere from now on
        const int errno_of_write = reqs[i].result < 0 ? static_cast<int>(-reqs[i].result) : EIO;
        const Error err = ErrnoError(errno_of_write, "shard write").value();
        if (err.kind == ErrorKind::kNoSpace) full.push_back(disks[i]);
        store->disks_.ReportError(disks[i], err);
        continue;
      }
      store->disks_.ReportSuccess(disks[i]);
      const uint64_t seq = p.extent->write_seq.fetch_add(1) + 1;
      if (synced) synced->emplace_back(p.extent, seq);
      locs->push_back(loc);
    }
    Status s = detail::BatchStatus(reqs);
    if (!s) {
      std::sort(full.begin(), full.end());
      return tl::unexpected(store->disks_.NameFullDisks(s.error(), full));
    }
    return {};
  }

  // Writes the records of the current buffer set (bufs[i], len) to distinct disks; their
  // locations go to rec_.shards from `slot` on (SIZE_MAX: the copies, in disk order).
  Status WriteRecords(std::span<uint8_t* const> bufs, uint64_t len, size_t slot) {
    std::vector<size_t> disks;
    auto placed = store_->Place(bufs.size(), len, {}, &disks);
    if (!placed) return Fail(placed.error());
    std::vector<IoRequest> reqs(bufs.size());
    for (size_t i = 0; i < bufs.size(); ++i) {
      reqs[i] = {IoRequest::Op::kWrite, (*placed)[i].extent->file.get(), (*placed)[i].offset,
                 bufs[i], len};
    }
    if (!ring_) {
      (void)store_->env_->Execute(reqs);  // every request has its own result
      std::vector<ShardLoc> locs;
      Status s = Settle(store_, *placed, disks, reqs, len, &synced_, &written_, &locs);
      if (!s) return Fail(s.error());
      PutLocs(slot, std::move(locs));
      return {};
    }
    auto w = std::make_shared<RingWrite>();
    w->owner = token_;
    w->store = store_;
    w->bufs = sets_[cur_];
    w->set = cur_;
    w->reqs = std::move(reqs);
    w->placed = std::move(*placed);
    w->disks = std::move(disks);
    w->len = len;
    w->slot = slot;
    busy_[cur_] = true;
    ++inflight_;
    ring_->Submit(w->reqs, [w](Status) {
      if (WriterImpl* self = w->owner->writer) {
        self->RingWritten(*w);
        return;
      }
      // The Writer is gone (the client went away): only the books remain.
      Written written;
      std::vector<ShardLoc> locs;
      (void)Settle(w->store, w->placed, w->disks, w->reqs, w->len, nullptr, &written, &locs);
      BookDead(w->store, std::move(written), /*wait=*/false);
    });
    // The next stripe goes into a free set, or a new one, or waits (Window() is empty).
    cur_ = kNone;
    for (size_t i = 0; i < sets_.size(); ++i) {
      if (!busy_[i]) cur_ = i;
    }
    if (cur_ == kNone && sets_.size() < kRingBufferSets && received_ < size_) AddBufferSet();
    return {};
  }

  void RingWritten(RingWrite& w) {
    --inflight_;
    busy_[w.set] = false;
    if (cur_ == kNone) cur_ = w.set;
    std::vector<ShardLoc> locs;
    Status s = Settle(store_, w.placed, w.disks, w.reqs, w.len, &synced_, &written_, &locs);
    if (!s) {
      if (!failed_) failed_ = s.error();
    } else {
      PutLocs(w.slot, std::move(locs));
    }
    if (waiter_ && CanGoOn()) std::exchange(waiter_, nullptr)();
  }

  void PutLocs(size_t slot, std::vector<ShardLoc> locs) {
    if (slot == SIZE_MAX) {
      // Copies are interchangeable; keep them in disk order (an index rebuild finds them so).
      std::sort(locs.begin(), locs.end(), ShardLocLess);
      rec_.shards = std::move(locs);
      return;
    }
    if (rec_.shards.size() < slot + locs.size()) rec_.shards.resize(slot + locs.size());
    std::copy(locs.begin(), locs.end(), rec_.shards.begin() + static_cast<ptrdiff_t>(slot));
  }

  Status FlushStripe() {
    const uint32_t stripe = next_stripe_++;
    const uint32_t L = ShardLen(rec_, stripe);
    const size_t k = rec_.k, m = rec_.m;
    if (L < rec_.shard_unit) {
      // Data of a short stripe is laid out with shard length L, not shard_unit: move it.
      RelayoutShortStripe(L);
    }
    uint8_t* payload[erasure::kMaxShards];
    for (size_t i = 0; i < k + m; ++i) payload[i] = Buf(i) + hb_;
    store_->codec_->Encode(L, std::span<const uint8_t* const>(payload, k),
                           std::span<uint8_t* const>(payload + k, m));
    const uint64_t rb = RecordBytes(key_, L);
    for (size_t i = 0; i < k + m; ++i) {
      RecordHeader h = Header(stripe, static_cast<uint8_t>(i), L);
      h.payload_xxh3 = PayloadChecksum(std::span<const uint8_t>(payload[i], L));
      EncodeHeader(h, std::span<uint8_t>(Buf(i), hb_));
      std::memset(Buf(i) + hb_ + L, 0, rb - hb_ - L);
    }
    uint8_t* records[erasure::kMaxShards];
    for (size_t i = 0; i < k + m; ++i) records[i] = Buf(i);
    fill_ = 0;
    return WriteRecords(std::span<uint8_t* const>(records, k + m), rb, size_t{stripe} * (k + m));
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
      std::memcpy(scratch.data() + b, Buf(s) + hb_ + off, n);
      b += n;
    }
    for (size_t i = 0; i < rec_.k; ++i) {
      uint8_t* dst = Buf(i) + hb_;
      const uint64_t begin = uint64_t{i} * L;
      const uint64_t n = begin < fill_ ? std::min<uint64_t>(L, fill_ - begin) : 0;
      if (n) std::memcpy(dst, scratch.data() + begin, n);
      std::memset(dst + n, 0, L - n);
    }
  }

  Status WriteCopies() {
    const uint32_t len = static_cast<uint32_t>(size_);
    RecordHeader h = Header(0, 0, len);
    h.payload_xxh3 = PayloadChecksum(std::span<const uint8_t>(Buf(0) + hb_, len));
    EncodeHeader(h, std::span<uint8_t>(Buf(0), hb_));
    std::memset(Buf(0) + hb_ + len, 0, record_cap_ - hb_ - len);  // the tail padding
    std::vector<uint8_t*> records(rec_.k, Buf(0));
    return WriteRecords(records, record_cap_, SIZE_MAX);
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
  std::vector<std::shared_ptr<BufferSet>> sets_;
  std::vector<bool> busy_;  // sets_[i] is being written
  size_t cur_ = kNone;      // the set being filled; kNone: all are being written
  uint64_t fill_ = 0;       // bytes in the current stripe
  uint64_t received_ = 0;   // bytes of the body so far
  uint32_t next_stripe_ = 0;
  Sha256 sha_;
  std::optional<Error> failed_;
  bool sealed_ = false;
  bool committed_ = false;
  AsyncRing* ring_ = nullptr;
  size_t inflight_ = 0;  // batches on the ring
  std::function<void()> waiter_;
  std::shared_ptr<Token> token_;
  GroupCommit::SyncList synced_;
  Written written_;  // every record put on disk, with its bytes
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

void StoreImpl::CommitAsync(std::unique_ptr<Writer> writer,
                            std::function<Status(index::WriteTxn&)> also,
                            std::function<void(Result<ObjectInfo>)> done) {
  std::shared_ptr<WriterImpl> w(static_cast<WriterImpl*>(writer.release()));
  if (Status ready = w->ReadyToCommit(); !ready) {
    GroupCommit::Job job;
    job.done = [w, done = std::move(done), err = ready.error()](Status) mutable {
      done(tl::unexpected(std::move(err)));
    };
    commits_->Submit(std::move(job));
    return;
  }
  auto existed = std::make_shared<bool>(false);
  GroupCommit::Job job;
  job.sync = w->synced();
  job.update = [w, existed, also = std::move(also)](index::WriteTxn& txn) -> Status {
    if (also) CV_TRY(also(txn));
    return w->IndexIn(txn, existed.get());
  };
  job.done = [w, existed, done = std::move(done)](Status s) mutable {
    done(w->Finish(std::move(s), *existed));
  };
  commits_->Submit(std::move(job));
}

void StoreImpl::UpdateAsync(std::function<Status(index::WriteTxn&)> fn,
                            std::function<void(Status)> done) {
  GroupCommit::Job job;
  job.update = std::move(fn);
  job.done = std::move(done);
  commits_->Submit(std::move(job));
}

void StoreImpl::WaitForCommits() { commits_->WaitIdle(); }

}  // namespace cv::storage::internal
