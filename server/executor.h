// A small pool of threads for work that may block (file I/O, fsync), so
// gRPC reactors never block their threads.
#ifndef HALFTIME_SERVER_EXECUTOR_H_
#define HALFTIME_SERVER_EXECUTOR_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace halftime::server {

// Runs posted closures on a fixed set of threads, in FIFO order.
//
// Thread-safety: thread-safe.
class Executor {
 public:
  // Starts `threads` (>= 1) threads.
  explicit Executor(int threads);

  // Runs what was posted, then joins the threads.
  ~Executor();

  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Queues `work`. After Shutdown began, `work` runs inline.
  void Post(std::function<void()> work) ABSL_LOCKS_EXCLUDED(mu_);

  // Runs what was posted and joins the threads. Idempotent.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  absl::Mutex mu_;
  absl::CondVar cv_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Written by the constructor only.
  std::vector<std::thread> threads_;
};

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_EXECUTOR_H_
