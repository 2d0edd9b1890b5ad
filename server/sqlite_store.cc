#include "server/sqlite_store.h"

#include <sqlite3.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "halftime/v1/scheduler.pb.h"

namespace halftime::server {
namespace {

// Migration N (1-based) brings the schema from version N-1 to N.
constexpr const char* kMigrations[] = {
    // 1: initial schema.
    R"sql(
CREATE TABLE jobs (
  id TEXT PRIMARY KEY,
  seq INTEGER NOT NULL UNIQUE,
  state INTEGER NOT NULL,
  idempotency_key TEXT,
  restarts INTEGER NOT NULL,
  cancel_requested INTEGER NOT NULL,
  cancel_reason TEXT NOT NULL,
  enqueue_time_us INTEGER NOT NULL,
  job BLOB NOT NULL);
CREATE INDEX jobs_by_idempotency_key ON jobs(idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE TABLE events (
  job_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  kind INTEGER NOT NULL,
  event BLOB NOT NULL,
  PRIMARY KEY (job_id, seq)) WITHOUT ROWID;
CREATE TABLE workers (
  name TEXT PRIMARY KEY,
  worker BLOB NOT NULL);
CREATE TABLE checkpoints (
  job_id TEXT PRIMARY KEY,
  step INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  path TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  sha256 TEXT NOT NULL);
CREATE TABLE savings (
  job_id TEXT PRIMARY KEY,
  precision INTEGER NOT NULL,
  savings BLOB NOT NULL);
CREATE TABLE logs (
  job_id TEXT PRIMARY KEY,
  lines BLOB NOT NULL);
)sql",
    // 2: start-up reads only unfinished jobs and counts the others.
    R"sql(
CREATE INDEX jobs_by_state ON jobs(state);
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) ==
                  SqliteStore::kSchemaVersion,
              "one migration per schema version");

// The status of a failed SQLite call (`rc`, an extended result code) whose
// error text is `message`; `call_errno` is errno as the call left it (SQLite
// records the OS error of few failures itself: a failed WAL write at COMMIT
// is a bare SQLITE_IOERR_WRITE). A full disk, a file-size limit (EFBIG) or a
// quota is RESOURCE_EXHAUSTED, naming the storage: the request was not
// stored and may be retried once an operator has made room. Other I/O
// failures are INTERNAL, also naming the storage (not UNAVAILABLE, which
// clients retry at once, e.g. the CLI's submit).
absl::Status SqliteStatus(sqlite3* db, int rc, absl::string_view message,
                          int call_errno) {
  const int primary = rc & 0xff;
  const bool io = primary == SQLITE_IOERR || primary == SQLITE_FULL ||
                  primary == SQLITE_CANTOPEN;
  // OS errors mean something only for I/O failures.
  int os_error = 0;
  if (io) {
    os_error = sqlite3_system_errno(db);
    if (os_error == 0) os_error = call_errno;
  }
  std::string text = absl::StrCat("sqlite: ", message);
  if (os_error != 0) absl::StrAppend(&text, " (", std::strerror(os_error), ")");
  if (primary == SQLITE_FULL ||
      (io && (os_error == ENOSPC || os_error == EFBIG || os_error == EDQUOT))) {
    return absl::ResourceExhaustedError(
        absl::StrCat("scheduler storage is full: ", text));
  }
  if (io) {
    return absl::InternalError(
        absl::StrCat("scheduler storage failed: ", text));
  }
  return absl::InternalError(text);
}

absl::Status SqliteError(sqlite3* db, absl::string_view what,
                         int call_errno = 0) {
  return SqliteStatus(db, sqlite3_extended_errcode(db),
                      absl::StrCat(what, ": ", sqlite3_errmsg(db)), call_errno);
}

absl::Status ExecOn(sqlite3* db, const char* sql) {
  char* error = nullptr;
  errno = 0;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &error);
  const int call_errno = errno;
  if (rc != SQLITE_OK) {
    absl::Status status =
        SqliteStatus(db, sqlite3_extended_errcode(db),
                     error != nullptr ? error : "exec failed", call_errno);
    sqlite3_free(error);
    return status;
  }
  return absl::OkStatus();
}

// RAII wrapper of a prepared statement used once.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) {
      stmt_ = nullptr;
    }
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  absl::Status status() const {
    return stmt_ != nullptr ? absl::OkStatus() : SqliteError(db_, "prepare");
  }
  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

void BindText(sqlite3_stmt* stmt, int index, const std::string& text) {
  sqlite3_bind_text(stmt, index, text.data(), static_cast<int>(text.size()),
                    SQLITE_TRANSIENT);
}

void BindBlob(sqlite3_stmt* stmt, int index, const std::string& blob) {
  sqlite3_bind_blob(stmt, index, blob.data(), static_cast<int>(blob.size()),
                    SQLITE_TRANSIENT);
}

std::string ColumnText(sqlite3_stmt* stmt, int index) {
  const unsigned char* text = sqlite3_column_text(stmt, index);
  return text == nullptr
             ? std::string()
             : std::string(
                   reinterpret_cast<const char*>(text),
                   static_cast<size_t>(sqlite3_column_bytes(stmt, index)));
}

template <typename Message>
absl::Status ColumnMessage(sqlite3_stmt* stmt, int index, Message* message,
                           absl::string_view what) {
  const void* blob = sqlite3_column_blob(stmt, index);
  int size = sqlite3_column_bytes(stmt, index);
  if (!message->ParseFromArray(blob, size)) {
    return absl::DataLossError(absl::StrCat("store: corrupt ", what, " row"));
  }
  return absl::OkStatus();
}

// The columns ReadJobRow decodes, in its order.
constexpr const char* kJobColumns =
    "seq, idempotency_key, restarts, cancel_requested, cancel_reason, "
    "enqueue_time_us, job";

// Decodes the current row of a SELECT of kJobColumns into `record`.
// DATA_LOSS when the job blob does not parse.
absl::Status ReadJobRow(sqlite3_stmt* stmt, JobRecord* record) {
  record->seq = sqlite3_column_int64(stmt, 0);
  record->idempotency_key = ColumnText(stmt, 1);
  record->restarts = sqlite3_column_int(stmt, 2);
  record->cancel_requested = sqlite3_column_int(stmt, 3) != 0;
  record->cancel_reason = ColumnText(stmt, 4);
  record->enqueue_time = absl::FromUnixMicros(sqlite3_column_int64(stmt, 5));
  return ColumnMessage(stmt, 6, &record->job, "job");
}

// Runs a write statement to completion and resets it for reuse.
absl::Status StepDone(sqlite3* db, sqlite3_stmt* stmt, absl::string_view what) {
  errno = 0;
  int rc = sqlite3_step(stmt);
  const int call_errno = errno;
  if (rc != SQLITE_DONE) {
    absl::Status status = SqliteError(db, what, call_errno);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return status;
  }
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
  return absl::OkStatus();
}

absl::StatusOr<sqlite3*> OpenDb(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
      nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = absl::InternalError(
        absl::StrCat("sqlite: cannot open ", path, ": ",
                     db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    sqlite3_close(db);
    return status;
  }
  sqlite3_busy_timeout(db, 10000);
  return db;
}

absl::Status Migrate(sqlite3* db) {
  if (absl::Status s = ExecOn(db,
                              "CREATE TABLE IF NOT EXISTS schema_version "
                              "(version INTEGER NOT NULL)");
      !s.ok()) {
    return s;
  }
  int version = 0;
  {
    Statement select(db, "SELECT MAX(version) FROM schema_version");
    if (!select.status().ok()) return select.status();
    if (sqlite3_step(select.get()) == SQLITE_ROW &&
        sqlite3_column_type(select.get(), 0) != SQLITE_NULL) {
      version = sqlite3_column_int(select.get(), 0);
    }
  }
  if (version > SqliteStore::kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "store: schema version ", version, " is newer than this build's ",
        SqliteStore::kSchemaVersion));
  }
  for (int next = version + 1; next <= SqliteStore::kSchemaVersion; ++next) {
    if (absl::Status s = ExecOn(db, "BEGIN IMMEDIATE"); !s.ok()) return s;
    absl::Status s = ExecOn(db, kMigrations[next - 1]);
    if (s.ok()) {
      s = ExecOn(db,
                 absl::StrCat("INSERT INTO schema_version VALUES (", next, ")")
                     .c_str());
    }
    if (s.ok()) s = ExecOn(db, "COMMIT");
    if (!s.ok()) {
      ExecOn(db, "ROLLBACK").IgnoreError();
      return absl::InternalError(absl::StrCat("store: migration to version ",
                                              next, " failed: ", s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(
    Options options) {
  absl::StatusOr<sqlite3*> writer = OpenDb(options.path);
  if (!writer.ok()) return writer.status();
  auto fail = [&](absl::Status status) {
    sqlite3_close(*writer);
    return status;
  };
  if (absl::Status s = ExecOn(*writer, "PRAGMA journal_mode=WAL"); !s.ok()) {
    return fail(s);
  }
  if (absl::Status s =
          ExecOn(*writer, options.durable ? "PRAGMA synchronous=FULL"
                                          : "PRAGMA synchronous=OFF");
      !s.ok()) {
    return fail(s);
  }
  if (absl::Status s = Migrate(*writer); !s.ok()) return fail(s);
  absl::StatusOr<sqlite3*> reader = OpenDb(options.path);
  if (!reader.ok()) return fail(reader.status());

  std::unique_ptr<SqliteStore> store(
      new SqliteStore(*writer, *reader, std::move(options)));
  struct {
    sqlite3_stmt** stmt;
    const char* sql;
  } statements[] = {
      {&store->put_job_,
       "INSERT OR REPLACE INTO jobs (id, seq, state, idempotency_key, "
       "restarts, cancel_requested, cancel_reason, enqueue_time_us, job) "
       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"},
      {&store->put_event_,
       "INSERT INTO events (job_id, seq, kind, event) VALUES (?, ?, ?, ?)"},
      {&store->put_worker_,
       "INSERT OR REPLACE INTO workers (name, worker) VALUES (?, ?)"},
      {&store->put_checkpoint_,
       "INSERT OR REPLACE INTO checkpoints (job_id, step, attempt, path, "
       "bytes, sha256) VALUES (?, ?, ?, ?, ?, ?)"},
      {&store->put_log_,
       "INSERT OR REPLACE INTO logs (job_id, lines) VALUES (?, ?)"},
      {&store->put_savings_,
       "INSERT OR REPLACE INTO savings (job_id, precision, savings) "
       "VALUES (?, ?, ?)"},
  };
  for (auto& statement : statements) {
    if (sqlite3_prepare_v3(store->writer_db_, statement.sql, -1,
                           SQLITE_PREPARE_PERSISTENT, statement.stmt,
                           nullptr) != SQLITE_OK) {
      return SqliteError(store->writer_db_, "prepare");
    }
  }
  store->writer_ = std::thread([s = store.get()] { s->WriterLoop(); });
  return store;
}

SqliteStore::SqliteStore(sqlite3* writer, sqlite3* reader, Options options)
    : options_(std::move(options)), writer_db_(writer), reader_db_(reader) {}

SqliteStore::~SqliteStore() {
  Close();
  for (sqlite3_stmt* stmt : {put_job_, put_event_, put_worker_, put_checkpoint_,
                             put_log_, put_savings_}) {
    sqlite3_finalize(stmt);
  }
  sqlite3_close(writer_db_);
  sqlite3_close(reader_db_);
}

absl::Status SqliteStore::Exec(const char* sql) {
  return ExecOn(writer_db_, sql);
}

void SqliteStore::Apply(StoreMutation mutation, Done done) {
  {
    absl::MutexLock lock(&mu_);
    if (!closing_) {
      queue_.push_back(
          Pending{std::move(mutation), std::move(done), absl::OkStatus()});
      cv_.Signal();
      return;
    }
  }
  done(absl::FailedPreconditionError("store: closed"));
}

void SqliteStore::DiscardQueued(const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  for (Pending& pending : queue_) {
    if (pending.discarded.ok()) pending.discarded = status;
  }
}

void SqliteStore::WriterLoop() {
  for (;;) {
    std::deque<Pending> batch;
    {
      absl::MutexLock lock(&mu_);
      while (!closing_ && queue_.empty()) cv_.Wait(&mu_);
      if (queue_.empty()) return;  // closing and drained
      batch.swap(queue_);
    }
    bool writes = false;
    for (const Pending& pending : batch) {
      if (!pending.mutation.empty() && pending.discarded.ok()) writes = true;
    }
    absl::Status status;
    if (writes) {
      absl::Time start = absl::Now();
      status = Exec("BEGIN IMMEDIATE");
      if (status.ok()) {
        for (const Pending& pending : batch) {
          if (!pending.discarded.ok()) continue;
          status = ApplyOne(pending.mutation);
          if (!status.ok()) break;
        }
      }
      if (status.ok()) status = Exec("COMMIT");
      if (!status.ok()) Exec("ROLLBACK").IgnoreError();
      if (status.ok() && options_.on_commit) {
        options_.on_commit(static_cast<int>(batch.size()), absl::Now() - start);
      }
      absl::MutexLock lock(&mu_);
      if (status.ok()) ++commits_;
    }
    for (Pending& pending : batch) {
      pending.done(pending.discarded.ok() ? status : pending.discarded);
    }
  }
}

absl::Status SqliteStore::ApplyOne(const StoreMutation& m) {
  for (const JobRecord& record : m.jobs) {
    sqlite3_stmt* s = put_job_;
    BindText(s, 1, record.job.id());
    sqlite3_bind_int64(s, 2, record.seq);
    sqlite3_bind_int(s, 3, record.job.state());
    if (!record.idempotency_key.empty()) {
      BindText(s, 4, record.idempotency_key);
    }
    sqlite3_bind_int(s, 5, record.restarts);
    sqlite3_bind_int(s, 6, record.cancel_requested ? 1 : 0);
    BindText(s, 7, record.cancel_reason);
    sqlite3_bind_int64(s, 8, absl::ToUnixMicros(record.enqueue_time));
    BindBlob(s, 9, record.job.SerializeAsString());
    if (absl::Status st = StepDone(writer_db_, s, "write job"); !st.ok()) {
      return st;
    }
  }
  for (const v1::JobEvent& event : m.events) {
    sqlite3_stmt* s = put_event_;
    BindText(s, 1, event.job_id());
    sqlite3_bind_int64(s, 2, event.sequence());
    sqlite3_bind_int(s, 3, event.kind());
    BindBlob(s, 4, event.SerializeAsString());
    if (absl::Status st = StepDone(writer_db_, s, "write event"); !st.ok()) {
      return st;
    }
  }
  for (const v1::Worker& worker : m.workers) {
    sqlite3_stmt* s = put_worker_;
    BindText(s, 1, worker.name());
    BindBlob(s, 2, worker.SerializeAsString());
    if (absl::Status st = StepDone(writer_db_, s, "write worker"); !st.ok()) {
      return st;
    }
  }
  for (const CheckpointRecord& checkpoint : m.checkpoints) {
    sqlite3_stmt* s = put_checkpoint_;
    BindText(s, 1, checkpoint.job_id);
    sqlite3_bind_int64(s, 2, checkpoint.step);
    sqlite3_bind_int(s, 3, checkpoint.attempt);
    BindText(s, 4, checkpoint.path);
    sqlite3_bind_int64(s, 5, checkpoint.bytes);
    BindText(s, 6, checkpoint.sha256);
    if (absl::Status st = StepDone(writer_db_, s, "write checkpoint");
        !st.ok()) {
      return st;
    }
  }
  for (const auto& [job_id, lines] : m.logs) {
    v1::GetJobLogsResponse blob;
    for (const std::string& line : lines) blob.add_lines(line);
    sqlite3_stmt* s = put_log_;
    BindText(s, 1, job_id);
    BindBlob(s, 2, blob.SerializeAsString());
    if (absl::Status st = StepDone(writer_db_, s, "write logs"); !st.ok()) {
      return st;
    }
  }
  for (const auto& [job_id, savings] : m.savings) {
    sqlite3_stmt* s = put_savings_;
    BindText(s, 1, job_id);
    sqlite3_bind_int(s, 2, savings.precision());
    BindBlob(s, 3, savings.SerializeAsString());
    if (absl::Status st = StepDone(writer_db_, s, "write savings"); !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<StoreSnapshot> SqliteStore::Load() {
  absl::MutexLock lock(&read_mu_);
  StoreSnapshot snapshot;
  const std::string finished =
      absl::StrCat("(", v1::JOB_STATE_SUCCEEDED, ", ", v1::JOB_STATE_FAILED,
                   ", ", v1::JOB_STATE_CANCELLED, ")");
  {
    Statement q(reader_db_, absl::StrCat("SELECT ", kJobColumns,
                                         " FROM jobs WHERE state NOT IN ",
                                         finished, " ORDER BY seq")
                                .c_str());
    if (!q.status().ok()) return q.status();
    int rc;
    while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
      JobRecord record;
      if (absl::Status s = ReadJobRow(q.get(), &record); !s.ok()) return s;
      snapshot.jobs.push_back(std::move(record));
    }
    if (rc != SQLITE_DONE) return SqliteError(reader_db_, "read jobs");
  }
  {
    Statement q(reader_db_,
                absl::StrCat("SELECT state, COUNT(*) FROM jobs WHERE state IN ",
                             finished, " GROUP BY state")
                    .c_str());
    if (!q.status().ok()) return q.status();
    int rc;
    while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
      snapshot.finished_jobs[static_cast<v1::JobState>(
          sqlite3_column_int(q.get(), 0))] = sqlite3_column_int64(q.get(), 1);
    }
    if (rc != SQLITE_DONE) return SqliteError(reader_db_, "count jobs");
  }
  {
    Statement q(reader_db_, "SELECT MAX(seq) FROM jobs");
    if (!q.status().ok()) return q.status();
    if (sqlite3_step(q.get()) != SQLITE_ROW) {
      return SqliteError(reader_db_, "read the last job sequence");
    }
    snapshot.max_job_seq = sqlite3_column_int64(q.get(), 0);  // NULL reads 0
  }
  {
    Statement q(reader_db_, "SELECT worker FROM workers ORDER BY name");
    if (!q.status().ok()) return q.status();
    int rc;
    while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
      v1::Worker worker;
      if (absl::Status s = ColumnMessage(q.get(), 0, &worker, "worker");
          !s.ok()) {
        return s;
      }
      snapshot.workers.push_back(std::move(worker));
    }
    if (rc != SQLITE_DONE) return SqliteError(reader_db_, "read workers");
  }
  {
    Statement q(reader_db_,
                "SELECT job_id, step, attempt, path, bytes, sha256 FROM "
                "checkpoints");
    if (!q.status().ok()) return q.status();
    int rc;
    while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
      CheckpointRecord c;
      c.job_id = ColumnText(q.get(), 0);
      c.step = sqlite3_column_int64(q.get(), 1);
      c.attempt = sqlite3_column_int(q.get(), 2);
      c.path = ColumnText(q.get(), 3);
      c.bytes = sqlite3_column_int64(q.get(), 4);
      c.sha256 = ColumnText(q.get(), 5);
      snapshot.checkpoints.push_back(std::move(c));
    }
    if (rc != SQLITE_DONE) return SqliteError(reader_db_, "read checkpoints");
  }
  {
    Statement q(reader_db_,
                "SELECT s.job_id, s.savings FROM savings s JOIN jobs j ON "
                "j.id = s.job_id ORDER BY j.seq");
    if (!q.status().ok()) return q.status();
    int rc;
    while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
      v1::Savings savings;
      if (absl::Status s = ColumnMessage(q.get(), 1, &savings, "savings");
          !s.ok()) {
        return s;
      }
      snapshot.savings.emplace_back(ColumnText(q.get(), 0), std::move(savings));
    }
    if (rc != SQLITE_DONE) return SqliteError(reader_db_, "read savings");
  }
  return snapshot;
}

absl::StatusOr<std::vector<v1::JobEvent>> SqliteStore::ReadEvents(
    const std::string& job_id, int64_t after, int64_t limit) {
  absl::MutexLock lock(&read_mu_);
  Statement q(reader_db_,
              "SELECT event FROM events WHERE job_id = ? AND seq > ? ORDER BY "
              "seq LIMIT ?");
  if (!q.status().ok()) return q.status();
  BindText(q.get(), 1, job_id);
  sqlite3_bind_int64(q.get(), 2, after);
  sqlite3_bind_int64(q.get(), 3, limit);
  std::vector<v1::JobEvent> events;
  int rc;
  while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
    v1::JobEvent event;
    if (absl::Status s = ColumnMessage(q.get(), 0, &event, "event"); !s.ok()) {
      return s;
    }
    events.push_back(std::move(event));
  }
  if (rc != SQLITE_DONE) return SqliteError(reader_db_, "read events");
  return events;
}

absl::StatusOr<std::vector<JobRecord>> SqliteStore::ReadJobs(
    const JobQuery& query) {
  std::string sql =
      absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE seq < ?");
  if (!query.job_id.empty()) absl::StrAppend(&sql, " AND id = ?");
  if (!query.idempotency_key.empty()) {
    absl::StrAppend(&sql, " AND idempotency_key = ?");
  }
  if (!query.states.empty()) {
    absl::StrAppend(&sql, " AND state IN (");
    for (size_t i = 0; i < query.states.size(); ++i) {
      absl::StrAppend(&sql, i == 0 ? "?" : ", ?");
    }
    absl::StrAppend(&sql, ")");
  }
  absl::StrAppend(&sql, " ORDER BY seq DESC LIMIT ?");
  absl::MutexLock lock(&read_mu_);
  Statement q(reader_db_, sql.c_str());
  if (!q.status().ok()) return q.status();
  int index = 1;
  sqlite3_bind_int64(q.get(), index++, query.before_seq);
  if (!query.job_id.empty()) BindText(q.get(), index++, query.job_id);
  if (!query.idempotency_key.empty()) {
    BindText(q.get(), index++, query.idempotency_key);
  }
  for (int state : query.states) sqlite3_bind_int(q.get(), index++, state);
  sqlite3_bind_int(q.get(), index++, query.limit);
  std::vector<JobRecord> records;
  int rc;
  while ((rc = sqlite3_step(q.get())) == SQLITE_ROW) {
    JobRecord record;
    if (absl::Status s = ReadJobRow(q.get(), &record); !s.ok()) return s;
    records.push_back(std::move(record));
  }
  if (rc != SQLITE_DONE) return SqliteError(reader_db_, "read jobs");
  return records;
}

absl::StatusOr<std::vector<std::string>> SqliteStore::ReadLogs(
    const std::string& job_id) {
  absl::MutexLock lock(&read_mu_);
  Statement q(reader_db_, "SELECT lines FROM logs WHERE job_id = ?");
  if (!q.status().ok()) return q.status();
  BindText(q.get(), 1, job_id);
  std::vector<std::string> lines;
  int rc = sqlite3_step(q.get());
  if (rc == SQLITE_ROW) {
    v1::GetJobLogsResponse blob;
    if (absl::Status s = ColumnMessage(q.get(), 0, &blob, "logs"); !s.ok()) {
      return s;
    }
    lines.assign(blob.lines().begin(), blob.lines().end());
  } else if (rc != SQLITE_DONE) {
    return SqliteError(reader_db_, "read logs");
  }
  return lines;
}

void SqliteStore::Close() {
  {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    closing_ = true;
    closed_ = true;
    cv_.Signal();
  }
  if (writer_.joinable()) writer_.join();
}

int64_t SqliteStore::commits() const {
  absl::MutexLock lock(&mu_);
  return commits_;
}

}  // namespace halftime::server
