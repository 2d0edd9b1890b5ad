#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>

#include <atomic>
#include <future>
#include <thread>

#include "server/sqlite_store.h"
#include "tests/server/test_util.h"

namespace halftime::server {
namespace {

absl::Status ApplySync(Store* store, StoreMutation m) {
  std::promise<absl::Status> done;
  store->Apply(std::move(m), [&](absl::Status s) { done.set_value(s); });
  return done.get_future().get();
}

JobRecord Job(int64_t seq, const std::string& key = "") {
  JobRecord r;
  r.seq = seq;
  r.job.set_id("j-" + std::to_string(seq));
  r.job.set_state(v1::JOB_STATE_QUEUED);
  r.idempotency_key = key;
  r.restarts = 2;
  r.cancel_requested = true;
  r.cancel_reason = "why";
  r.enqueue_time = absl::FromUnixSeconds(42);
  return r;
}

v1::JobEvent Event(const std::string& job, int64_t seq) {
  v1::JobEvent e;
  e.set_job_id(job);
  e.set_sequence(seq);
  e.set_kind(v1::JOB_EVENT_KIND_STATE_CHANGED);
  e.set_message("event " + std::to_string(seq));
  return e;
}

TEST(SqliteStoreTest, PersistsAcrossReopen) {
  testing::TempDir dir;
  std::string path = dir.path() + "/db";
  {
    auto store = SqliteStore::Open(testing::StoreOptions(path, true));
    ASSERT_TRUE(store.ok()) << store.status();
    StoreMutation m;
    m.jobs.push_back(Job(1, "key"));
    m.events.push_back(Event("j-1", 1));
    m.events.push_back(Event("j-1", 2));
    v1::Worker w;
    w.set_name("w1");
    m.workers.push_back(w);
    m.checkpoints.push_back({"j-1", 100, 1, "/x", 5, "abc"});
    m.logs.emplace_back("j-1", std::vector<std::string>{"a", "b"});
    v1::Savings s;
    s.set_speedup(2);
    m.savings.emplace_back("j-1", s);
    ASSERT_TRUE(ApplySync(store->get(), std::move(m)).ok());
  }
  auto store = SqliteStore::Open(testing::StoreOptions(path, true));
  ASSERT_TRUE(store.ok());
  auto snapshot = (*store)->Load();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  ASSERT_EQ(snapshot->jobs.size(), 1u);
  const JobRecord& r = snapshot->jobs[0];
  EXPECT_EQ(r.job.id(), "j-1");
  EXPECT_EQ(r.idempotency_key, "key");
  EXPECT_EQ(r.restarts, 2);
  EXPECT_TRUE(r.cancel_requested);
  EXPECT_EQ(r.enqueue_time, absl::FromUnixSeconds(42));
  ASSERT_EQ(snapshot->workers.size(), 1u);
  ASSERT_EQ(snapshot->checkpoints.size(), 1u);
  EXPECT_EQ(snapshot->checkpoints[0].step, 100);
  ASSERT_EQ(snapshot->savings.size(), 1u);
  EXPECT_EQ(snapshot->savings[0].second.speedup(), 2);
  auto events = (*store)->ReadEvents("j-1", 0, 10);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[1].message(), "event 2");
  EXPECT_EQ((*store)->ReadEvents("j-1", 1, 10)->size(), 1u);
  EXPECT_EQ(*(*store)->ReadLogs("j-1"), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE((*store)->ReadLogs("j-2")->empty());
}

TEST(SqliteStoreTest, DuplicateEventFailsTheBatch) {
  testing::TempDir dir;
  auto store =
      SqliteStore::Open(testing::StoreOptions(dir.path() + "/db", false));
  ASSERT_TRUE(store.ok());
  StoreMutation m;
  m.events.push_back(Event("j-1", 1));
  ASSERT_TRUE(ApplySync(store->get(), m).ok());
  absl::Status s = ApplySync(store->get(), m);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ((*store)->ReadEvents("j-1", 0, 10)->size(), 1u);
}

TEST(SqliteStoreTest, ConcurrentMutationsShareCommits) {
  testing::TempDir dir;
  auto store =
      SqliteStore::Open(testing::StoreOptions(dir.path() + "/db", true));
  ASSERT_TRUE(store.ok());
  constexpr int kThreads = 8, kEach = 20;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        StoreMutation m;
        m.events.push_back(Event("j-" + std::to_string(t), i + 1));
        if (ApplySync(store->get(), std::move(m)).ok()) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads * kEach);
  // Group commit: fewer transactions than mutations (each thread waits
  // for its commit, so up to kThreads mutations share one).
  EXPECT_LT((*store)->commits(), kThreads * kEach);
}

TEST(SqliteStoreTest, SchemaVersionRecordedAndNewerRefused) {
  testing::TempDir dir;
  std::string path = dir.path() + "/db";
  ASSERT_TRUE(SqliteStore::Open(testing::StoreOptions(path, false)).ok());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v2(db, "SELECT MAX(version) FROM schema_version", -1, &stmt,
                     nullptr);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(stmt, 0), SqliteStore::kSchemaVersion);
  sqlite3_finalize(stmt);
  sqlite3_exec(db, "INSERT INTO schema_version VALUES (999)", nullptr, nullptr,
               nullptr);
  sqlite3_close(db);
  auto reopened = SqliteStore::Open(testing::StoreOptions(path, false));
  EXPECT_EQ(reopened.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SqliteStoreTest, LoadReadsUnfinishedJobsAndCountsTheRest) {
  testing::TempDir dir;
  std::string path = dir.path() + "/db";
  {
    auto store = SqliteStore::Open(testing::StoreOptions(path, true));
    ASSERT_TRUE(store.ok()) << store.status();
    StoreMutation m;
    const v1::JobState states[] = {
        v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_QUEUED,
        v1::JOB_STATE_FAILED,    v1::JOB_STATE_RUNNING,
        v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_CANCELLED,
        v1::JOB_STATE_SUCCEEDED};  // the newest job is finished
    for (int i = 0; i < 7; ++i) {
      JobRecord r = Job(i + 1);
      r.job.set_state(states[i]);
      m.jobs.push_back(r);
    }
    ASSERT_TRUE(ApplySync(store->get(), std::move(m)).ok());
    (*store)->Close();
  }
  auto store = SqliteStore::Open(testing::StoreOptions(path, true));
  ASSERT_TRUE(store.ok());
  auto snapshot = (*store)->Load();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  std::vector<std::string> ids;
  for (const JobRecord& r : snapshot->jobs) ids.push_back(r.job.id());
  EXPECT_THAT(ids, ::testing::ElementsAre("j-2", "j-4"));
  EXPECT_THAT(snapshot->finished_jobs,
              ::testing::UnorderedElementsAre(
                  ::testing::Pair(v1::JOB_STATE_SUCCEEDED, 3),
                  ::testing::Pair(v1::JOB_STATE_FAILED, 1),
                  ::testing::Pair(v1::JOB_STATE_CANCELLED, 1)));
  EXPECT_EQ(snapshot->max_job_seq, 7);
  // The finished ones are still there for readers.
  JobQuery query;
  query.job_id = "j-7";
  auto finished = (*store)->ReadJobs(query);
  ASSERT_TRUE(finished.ok()) << finished.status();
  ASSERT_EQ(finished->size(), 1u);
  EXPECT_EQ((*finished)[0].job.state(), v1::JOB_STATE_SUCCEEDED);
  (*store)->Close();
}

TEST(SqliteStoreTest, EmptyStoreHasNoLastSequence) {
  testing::TempDir dir;
  auto store =
      SqliteStore::Open(testing::StoreOptions(dir.path() + "/db", false));
  ASSERT_TRUE(store.ok());
  auto snapshot = (*store)->Load();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_EQ(snapshot->max_job_seq, 0);
  EXPECT_TRUE(snapshot->finished_jobs.empty());
  (*store)->Close();
}

TEST(SqliteStoreTest, VersionOneStoreIsMigrated) {
  // A store written by the first schema (no jobs_by_state index) opens,
  // gains the index and keeps its jobs.
  testing::TempDir dir;
  std::string path = dir.path() + "/db";
  {
    auto store = SqliteStore::Open(testing::StoreOptions(path, true));
    ASSERT_TRUE(store.ok());
    StoreMutation m;
    m.jobs.push_back(Job(1));
    ASSERT_TRUE(ApplySync(store->get(), std::move(m)).ok());
    (*store)->Close();
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "DROP INDEX jobs_by_state; DELETE FROM schema_version "
                         "WHERE version > 1",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto store = SqliteStore::Open(testing::StoreOptions(path, true));
  ASSERT_TRUE(store.ok()) << store.status();
  auto snapshot = (*store)->Load();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  ASSERT_EQ(snapshot->jobs.size(), 1u);
  (*store)->Close();
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v2(db,
                     "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' "
                     "AND name = 'jobs_by_state'",
                     -1, &stmt, nullptr);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(stmt, 0), 1);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

TEST(SqliteStoreTest, ApplyAfterCloseFails) {
  testing::TempDir dir;
  auto store =
      SqliteStore::Open(testing::StoreOptions(dir.path() + "/db", false));
  ASSERT_TRUE(store.ok());
  (*store)->Close();
  absl::Status status;
  (*store)->Apply(StoreMutation{}, [&](absl::Status s) { status = s; });
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
}

// RLIMIT_FSIZE lowered for the scope (the soft limit only, so it can be
// raised again without privileges), with SIGXFSZ ignored so that writes past
// it fail with EFBIG, as in halftime-scheduler.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &saved_);
    old_handler_ = signal(SIGXFSZ, SIG_IGN);
    rlimit lowered = saved_;
    lowered.rlim_cur = bytes;
    ok_ = setrlimit(RLIMIT_FSIZE, &lowered) == 0;
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved_);
    signal(SIGXFSZ, old_handler_);
  }
  bool ok() const { return ok_; }

 private:
  rlimit saved_{};
  void (*old_handler_)(int) = SIG_DFL;
  bool ok_ = false;
};

TEST(SqliteStoreTest, FullDiskIsResourceExhaustedAndTheStoreRecovers) {
  testing::TempDir dir;
  std::string path = dir.path() + "/db";
  auto store = SqliteStore::Open(testing::StoreOptions(path, true));
  ASSERT_TRUE(store.ok()) << store.status();
  StoreMutation first;
  first.jobs.push_back(Job(1));
  first.events.push_back(Event("j-1", 1));
  ASSERT_TRUE(ApplySync(store->get(), std::move(first)).ok());

  // A batch too large for the room left: no file may grow at all.
  auto big = [](int64_t seq) {
    StoreMutation m;
    JobRecord r = Job(seq);
    r.job.mutable_spec()->set_name(std::string(256 << 10, 'x'));
    m.jobs.push_back(r);
    m.events.push_back(Event(r.job.id(), 1));
    return m;
  };
  {
    FileSizeLimit full(0);
    ASSERT_TRUE(full.ok());
    absl::Status status = ApplySync(store->get(), big(2));
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
    EXPECT_THAT(std::string(status.message()),
                ::testing::HasSubstr("scheduler storage is full"));
    EXPECT_THAT(std::string(status.message()),
                ::testing::HasSubstr("File too large"));
  }
  // Room again: the store works, and holds what it acknowledged only.
  ASSERT_TRUE(ApplySync(store->get(), big(3)).ok());
  (*store)->Close();
  auto reopened = SqliteStore::Open(testing::StoreOptions(path, true));
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  auto snapshot = (*reopened)->Load();
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  std::vector<std::string> ids;
  for (const JobRecord& r : snapshot->jobs) ids.push_back(r.job.id());
  EXPECT_THAT(ids, ::testing::ElementsAre("j-1", "j-3"));
  (*reopened)->Close();

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  std::string check;
  sqlite3_exec(
      db, "PRAGMA integrity_check",
      [](void* out, int, char** values, char**) {
        *static_cast<std::string*>(out) += values[0] ? values[0] : "";
        return 0;
      },
      &check, nullptr);
  sqlite3_close(db);
  EXPECT_EQ(check, "ok");
}

}  // namespace
}  // namespace halftime::server
