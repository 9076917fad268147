#include "index/lmdb_env.h"

#include <sys/stat.h>

namespace cv::index::mdb {

Error MdbError(int rc, std::string_view what) {
  std::string context = std::string(what) + ": " + mdb_strerror(rc);
  if (rc > 0) {  // an errno from the OS
    Error e = ErrnoError(rc, std::move(context)).value();
    if (e.kind == ErrorKind::kNoSpace) {
      // Not the data disks: the file system of the index directory.
      e.public_message =
          "the file system that holds the node's index is full: new objects cannot be recorded "
          "until an operator frees space on it ([storage] index_dir)";
    }
    return e;
  }
  ErrorKind kind = ErrorKind::kIOError;
  switch (rc) {
    case MDB_MAP_FULL:
      kind = ErrorKind::kNoSpace;
      break;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
      kind = ErrorKind::kCorruption;
      break;
    case MDB_READERS_FULL:
      kind = ErrorKind::kUnavailable;
      break;
    default:
      break;
  }
  return Error{kind, 0, std::move(context)};
}

// ---- Env ----

Result<Env> Env::Open(const Options& options) {
  MDB_env* raw = nullptr;
  int rc = mdb_env_create(&raw);
  if (rc != 0) return Fail(rc, "mdb_env_create");
  Env env(raw);  // closes on every early return below
  if ((rc = mdb_env_set_maxdbs(raw, options.max_dbs)) != 0) return Fail(rc, "mdb_env_set_maxdbs");
  if ((rc = mdb_env_set_maxreaders(raw, options.max_readers)) != 0) {
    return Fail(rc, "mdb_env_set_maxreaders");
  }
  if ((rc = mdb_env_set_mapsize(raw, options.map_bytes)) != 0) {
    return Fail(rc, "mdb_env_set_mapsize");
  }
  // Deliberately absent: MDB_NOSYNC, MDB_NOMETASYNC, MDB_WRITEMAP (commits must be durable,
  // and nested transactions do not work with MDB_WRITEMAP).
  if ((rc = mdb_env_open(raw, options.dir.c_str(), MDB_NOTLS, S_IRUSR | S_IWUSR)) != 0) {
    return Fail(rc, "mdb_env_open " + options.dir);
  }
  // Free reader slots left behind by a process that died with a read transaction open.
  int dead = 0;
  if ((rc = mdb_reader_check(raw, &dead)) != 0) return Fail(rc, "mdb_reader_check");
  return env;
}

Env& Env::operator=(Env&& other) noexcept {
  if (this != &other) {
    if (env_ != nullptr) mdb_env_close(env_);
    env_ = std::exchange(other.env_, nullptr);
  }
  return *this;
}

Env::~Env() {
  if (env_ != nullptr) mdb_env_close(env_);
}

Status Env::SetMapSize(uint64_t bytes) {
  int rc = mdb_env_set_mapsize(env_, bytes);
  if (rc != 0) return Fail(rc, "mdb_env_set_mapsize to " + std::to_string(bytes));
  return {};
}

uint64_t Env::MapSize() const {
  MDB_envinfo info{};
  mdb_env_info(env_, &info);
  return info.me_mapsize;
}

uint64_t Env::LastTxnId() const {
  MDB_envinfo info{};
  mdb_env_info(env_, &info);
  return info.me_last_txnid;
}

Status Env::CopyCompactTo(int fd) {
  int rc = mdb_env_copyfd2(env_, fd, MDB_CP_COMPACT);
  if (rc != 0) return Fail(rc, "mdb_env_copyfd2");
  return {};
}

// ---- ReadTxn ----

Result<ReadTxn> ReadTxn::Begin(const Env& env) {
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(env.get(), nullptr, MDB_RDONLY, &txn);
  if (rc != 0) return Fail(rc, "begin read transaction");
  return ReadTxn(txn);
}

ReadTxn::~ReadTxn() {
  if (txn_ != nullptr) mdb_txn_abort(txn_);
}

// ---- WriteTxn ----

Result<WriteTxn> WriteTxn::Begin(const Env& env) {
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(env.get(), nullptr, 0, &txn);
  if (rc != 0) return Fail(rc, "begin write transaction");
  return WriteTxn(txn);
}

Result<WriteTxn> WriteTxn::BeginNested(WriteTxn& parent) {
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(mdb_txn_env(parent.txn_), parent.txn_, 0, &txn);
  if (rc != 0) return Fail(rc, "begin nested write transaction");
  return WriteTxn(txn);
}

WriteTxn::WriteTxn(WriteTxn&& other) noexcept
    : txn_(std::exchange(other.txn_, nullptr)),
      map_full_(other.map_full_),
      failed_(std::move(other.failed_)) {}

WriteTxn::~WriteTxn() { Abort(); }

tl::unexpected<Error> WriteTxn::Record(int rc, std::string_view what) {
  if (rc == MDB_MAP_FULL) map_full_ = true;
  Error e = MdbError(rc, what);
  if (!failed_) failed_ = e;
  return tl::unexpected<Error>(std::move(e));
}

Status WriteTxn::Put(MDB_dbi dbi, std::string_view key, std::string_view value) {
  MDB_val k = ToVal(key), v = ToVal(value);
  int rc = mdb_put(txn_, dbi, &k, &v, 0);
  if (rc != 0) return Record(rc, "mdb_put");
  return {};
}

Result<bool> WriteTxn::Del(MDB_dbi dbi, std::string_view key) {
  MDB_val k = ToVal(key);
  int rc = mdb_del(txn_, dbi, &k, nullptr);
  if (rc == MDB_NOTFOUND) return false;
  if (rc != 0) return Record(rc, "mdb_del");
  return true;
}

Status WriteTxn::Commit() {
  // mdb_txn_commit frees the handle even when it fails.
  int rc = mdb_txn_commit(std::exchange(txn_, nullptr));
  if (rc != 0) return Record(rc, "mdb_txn_commit");
  return {};
}

void WriteTxn::Abort() {
  if (txn_ != nullptr) mdb_txn_abort(std::exchange(txn_, nullptr));
}

// ---- databases and cursors ----

Result<MDB_dbi> WriteTxn::OpenDb(const char* name) {
  MDB_dbi dbi = 0;
  int rc = mdb_dbi_open(txn_, name, MDB_CREATE, &dbi);
  if (rc != 0) return Record(rc, std::string("mdb_dbi_open ") + name);
  return dbi;
}

Result<std::optional<std::string_view>> Get(MDB_txn* txn, MDB_dbi dbi, std::string_view key) {
  MDB_val k = ToVal(key), v{};
  int rc = mdb_get(txn, dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  if (rc != 0) return Fail(rc, "mdb_get");
  return ToView(v);
}

Result<Cursor> Cursor::Open(MDB_txn* txn, MDB_dbi dbi) {
  MDB_cursor* cursor = nullptr;
  int rc = mdb_cursor_open(txn, dbi, &cursor);
  if (rc != 0) return Fail(rc, "mdb_cursor_open");
  return Cursor(cursor);
}

Cursor::~Cursor() {
  if (cursor_ != nullptr) mdb_cursor_close(cursor_);
}

Result<std::optional<Cursor::Entry>> Cursor::Step(MDB_val* key, MDB_cursor_op op) {
  MDB_val v{};
  int rc = mdb_cursor_get(cursor_, key, &v, op);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  if (rc != 0) return Fail(rc, "mdb_cursor_get");
  return Entry{ToView(*key), ToView(v)};
}

Result<std::optional<Cursor::Entry>> Cursor::First() {
  MDB_val k{};
  return Step(&k, MDB_FIRST);
}

Result<std::optional<Cursor::Entry>> Cursor::SeekAtLeast(std::string_view key) {
  MDB_val k = ToVal(key);
  return Step(&k, MDB_SET_RANGE);
}

Result<std::optional<Cursor::Entry>> Cursor::Next() {
  MDB_val k{};
  return Step(&k, MDB_NEXT);
}

}  // namespace cv::index::mdb
