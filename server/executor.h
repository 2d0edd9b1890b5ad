// A small pool of threads for work that may block (file I/O, fsync), so
// gRPC reactors never block their threads.
#ifndef HALFTIME_SERVER_EXECUTOR_H_
#define HALFTIME_SERVER_EXECUTOR_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

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
  void Post(std::function<void()> work);

  // Runs what was posted and joins the threads. Idempotent.
  void Shutdown();

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_EXECUTOR_H_
