// lmdb_env: thin RAII wrappers over the LMDB C API (internal to index/).
//
// Env owns an MDB_env; ReadTxn and WriteTxn are distinct move-only types that abort in their
// destructors unless committed. Every LMDB return code becomes a cv::Error in exactly one
// place (MdbError); MDB_NOTFOUND is a value (std::nullopt / false), never an error.
//
// Nothing here serialises transactions against mdb_env_set_mapsize: the caller (index.cc)
// guarantees that SetMapSize runs with no transaction open in this process.
//
// Views returned by Get and Cursor point into the memory map: they stay valid until the
// transaction ends or, in a write transaction, until its next write. Copy before that.
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "common/common.h"

namespace cv::index::mdb {

// MDB_MAP_FULL -> kNoSpace; MDB_CORRUPTED, MDB_PAGE_NOTFOUND, MDB_INVALID,
// MDB_VERSION_MISMATCH -> kCorruption; MDB_READERS_FULL -> kUnavailable; an errno -> as
// cv::ErrnoError (ENOSPC -> kNoSpace, ...); everything else -> kIOError. The context is
// `what` plus mdb_strerror(rc).
Error MdbError(int rc, std::string_view what);
inline tl::unexpected<Error> Fail(int rc, std::string_view what) {
  return tl::unexpected<Error>(MdbError(rc, what));
}

inline MDB_val ToVal(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
inline std::string_view ToView(const MDB_val& v) {
  return std::string_view(static_cast<const char*>(v.mv_data), v.mv_size);
}

class Env {
 public:
  struct Options {
    std::string dir;  // must exist
    uint64_t map_bytes = 0;
    unsigned max_dbs = 0;
    unsigned max_readers = 0;
  };
  // Opens with MDB_NOTLS (a read transaction is not tied to a thread) and nothing that
  // weakens durability: a commit returns after fdatasync.
  static Result<Env> Open(const Options& options);

  Env(Env&& other) noexcept : env_(std::exchange(other.env_, nullptr)) {}
  Env& operator=(Env&& other) noexcept;
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;
  ~Env();

  MDB_env* get() const { return env_; }
  // REQUIRES: no transaction of this environment is active in this process (LMDB unmaps
  // and remaps the file; it checks only for a write transaction).
  Status SetMapSize(uint64_t bytes);
  uint64_t MapSize() const;
  uint64_t LastTxnId() const;
  // Hot consistent copy into an open file, omitting free pages (MDB_CP_COMPACT). Opens its
  // own read transaction, so the REQUIRES of SetMapSize applies to its whole duration.
  Status CopyCompactTo(int fd);

 private:
  explicit Env(MDB_env* env) : env_(env) {}
  MDB_env* env_ = nullptr;
};

// A read-only snapshot (MDB_RDONLY). Movable between threads thanks to MDB_NOTLS.
class ReadTxn {
 public:
  static Result<ReadTxn> Begin(const Env& env);
  ReadTxn(ReadTxn&& other) noexcept : txn_(std::exchange(other.txn_, nullptr)) {}
  ReadTxn& operator=(ReadTxn&&) = delete;
  ReadTxn(const ReadTxn&) = delete;
  ~ReadTxn();
  MDB_txn* get() const { return txn_; }

 private:
  explicit ReadTxn(MDB_txn* txn) : txn_(txn) {}
  MDB_txn* txn_ = nullptr;
};

// A write transaction, top-level or nested in a parent. LMDB ties a top-level write
// transaction to the thread that began it: begin, use and commit it on one thread.
//
// LMDB marks a transaction unusable after a failed write (MDB_TXN_ERROR), and committing a
// failed child poisons its parent. So the wrapper remembers the first failed write
// (failed()) and whether any call returned MDB_MAP_FULL (map_full()); the owner aborts
// instead of committing when either is set.
class WriteTxn {
 public:
  static Result<WriteTxn> Begin(const Env& env);
  // REQUIRES: `parent` is not used until the child is committed or aborted.
  static Result<WriteTxn> BeginNested(WriteTxn& parent);
  WriteTxn(WriteTxn&& other) noexcept;
  WriteTxn& operator=(WriteTxn&&) = delete;
  WriteTxn(const WriteTxn&) = delete;
  ~WriteTxn();

  MDB_txn* get() const { return txn_; }
  Status Put(MDB_dbi dbi, std::string_view key, std::string_view value);
  // False if the key was absent.
  Result<bool> Del(MDB_dbi dbi, std::string_view key);
  // Opens (creating if missing) a named database; the handle outlives this transaction
  // once it commits, and is invalid if it aborts.
  Result<MDB_dbi> OpenDb(const char* name);
  // Ends the transaction whether or not it succeeds. For a top-level transaction success
  // means durable (synced).
  Status Commit();
  void Abort();

  bool map_full() const { return map_full_; }
  const std::optional<Error>& failed() const { return failed_; }

 private:
  explicit WriteTxn(MDB_txn* txn) : txn_(txn) {}
  tl::unexpected<Error> Record(int rc, std::string_view what);
  MDB_txn* txn_ = nullptr;
  bool map_full_ = false;
  std::optional<Error> failed_;
};

// A lookup in any transaction. See the header comment for the lifetime of the view.
Result<std::optional<std::string_view>> Get(MDB_txn* txn, MDB_dbi dbi, std::string_view key);

// A cursor over one database of one transaction, closed by the destructor.
class Cursor {
 public:
  using Entry = std::pair<std::string_view, std::string_view>;  // key, value
  static Result<Cursor> Open(MDB_txn* txn, MDB_dbi dbi);
  Cursor(Cursor&& other) noexcept : cursor_(std::exchange(other.cursor_, nullptr)) {}
  Cursor& operator=(Cursor&&) = delete;
  Cursor(const Cursor&) = delete;
  ~Cursor();

  Result<std::optional<Entry>> First();
  // The first entry whose key is >= `key`.
  Result<std::optional<Entry>> SeekAtLeast(std::string_view key);
  Result<std::optional<Entry>> Next();

 private:
  explicit Cursor(MDB_cursor* cursor) : cursor_(cursor) {}
  Result<std::optional<Entry>> Step(MDB_val* key, MDB_cursor_op op);
  MDB_cursor* cursor_ = nullptr;
};

}  // namespace cv::index::mdb
