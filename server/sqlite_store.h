// The default Store: one SQLite file in WAL mode.
//
// Durability: every mutation is committed with synchronous=FULL before its
// callback runs. A single writer thread takes every mutation queued since
// its last commit and applies them in one transaction (group commit), so
// concurrent submits share one fsync.
//
// Errors of writes: a full disk, a file-size limit or a quota (ENOSPC, EFBIG,
// EDQUOT) is RESOURCE_EXHAUSTED ("scheduler storage is full: ..."), other I/O
// failures INTERNAL ("scheduler storage failed: ..."); the failed batch is
// rolled back and the store keeps working once space returns.
//
// Schema: versioned migrations recorded in `schema_version`; opening an
// older file upgrades it, opening a newer one fails. Jobs, events, workers,
// checkpoints, savings and logs each have a table; rows hold the protobuf
// message as a blob next to the columns that are queried.
#ifndef HALFTIME_SERVER_SQLITE_STORE_H_
#define HALFTIME_SERVER_SQLITE_STORE_H_

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace halftime::server {

// Store backed by SQLite.
//
// Thread-safety: thread-safe. Apply only queues; the writer thread owns the
// write connection; reads use a second connection under their own lock.
class SqliteStore : public Store {
 public:
  // Schema version this build writes.
  static constexpr int kSchemaVersion = 2;

  struct Options {
    // Database file; created when missing.
    std::string path;
    // fsync on every commit (synchronous=FULL). Only benchmarks of the
    // non-durable path turn it off.
    bool durable = true;
    // Called on the writer thread after each commit with the number of
    // mutations it carried and how long the transaction took (for
    // metrics). Optional; must not call back into the store.
    std::function<void(int mutations, absl::Duration duration)> on_commit;
  };

  // Opens (creating or migrating) the database. Errors: INTERNAL when the
  // file cannot be opened or migrated, FAILED_PRECONDITION when it was
  // written by a newer schema version.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(Options options);

  ~SqliteStore() override;

  absl::StatusOr<StoreSnapshot> Load() override ABSL_LOCKS_EXCLUDED(read_mu_);
  void Apply(StoreMutation mutation, Done done) override
      ABSL_LOCKS_EXCLUDED(mu_);
  void DiscardQueued(const absl::Status& status) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<std::vector<v1::JobEvent>> ReadEvents(
      const std::string& job_id, int64_t after, int64_t limit) override
      ABSL_LOCKS_EXCLUDED(read_mu_);
  absl::StatusOr<std::vector<JobRecord>> ReadJobs(
      const JobQuery& query) override ABSL_LOCKS_EXCLUDED(read_mu_);
  absl::StatusOr<std::vector<std::string>> ReadLogs(
      const std::string& job_id) override ABSL_LOCKS_EXCLUDED(read_mu_);
  void Close() override ABSL_LOCKS_EXCLUDED(mu_);

  // Number of transactions committed so far (for tests of group commit).
  int64_t commits() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Pending {
    StoreMutation mutation;
    Done done;
    // Set by DiscardQueued: not written, done gets this.
    absl::Status discarded;
  };

  SqliteStore(sqlite3* writer, sqlite3* reader, Options options);

  void WriterLoop() ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status ApplyOne(const StoreMutation& mutation);
  absl::Status Exec(const char* sql);

  const Options options_;
  sqlite3* const writer_db_;  // used by the writer thread only

  // Prepared write statements (writer thread only).
  sqlite3_stmt* put_job_ = nullptr;
  sqlite3_stmt* put_event_ = nullptr;
  sqlite3_stmt* put_worker_ = nullptr;
  sqlite3_stmt* put_checkpoint_ = nullptr;
  sqlite3_stmt* put_log_ = nullptr;
  sqlite3_stmt* put_savings_ = nullptr;

  // One connection serves every read; reads take turns on it.
  absl::Mutex read_mu_;
  sqlite3* const reader_db_ ABSL_GUARDED_BY(read_mu_);

  mutable absl::Mutex mu_;
  absl::CondVar cv_;  // signalled when queue_ grows or closing_ is set
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  int64_t commits_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread writer_;
};

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_SQLITE_STORE_H_
