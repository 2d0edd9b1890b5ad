// TransferWatchdog: cancels a streaming gRPC call that stops making progress.
//
// A checkpoint transfer's size is open-ended, so a fixed deadline either
// fails big checkpoints on healthy but slow links or lets a stuck transfer
// hang for hours. Instead the call gets a long outer deadline and this
// watchdog, which cancels it once no chunk has moved for `stall`.
//
// Thread-safety: Progress() and stalled() may be called from any thread.
// The watchdog's own thread ends in the destructor, which must run before
// the ClientContext it watches is destroyed.
#ifndef HALFTIME_WORKER_TRANSFER_WATCHDOG_H_
#define HALFTIME_WORKER_TRANSFER_WATCHDOG_H_

#include <grpcpp/client_context.h>

#include <chrono>
#include <cstdint>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace halftime {

class TransferWatchdog {
 public:
  // Watches `context` (not owned) from now on.
  TransferWatchdog(grpc::ClientContext* context,
                   std::chrono::milliseconds stall);
  ~TransferWatchdog() ABSL_LOCKS_EXCLUDED(mu_);
  TransferWatchdog(const TransferWatchdog&) = delete;
  TransferWatchdog& operator=(const TransferWatchdog&) = delete;

  // A chunk moved: the stall clock starts again.
  void Progress() ABSL_LOCKS_EXCLUDED(mu_);
  // True once the watchdog has cancelled the call.
  bool stalled() const ABSL_LOCKS_EXCLUDED(mu_);
  // `finished` (the call's own status) unless the watchdog cancelled it;
  // then DEADLINE_EXCEEDED naming `transfer` (e.g. "checkpoint upload"),
  // the stall and the `bytes` moved before it.
  absl::Status Outcome(absl::Status finished, absl::string_view transfer,
                       int64_t bytes) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  using Clock = std::chrono::steady_clock;
  void Watch() ABSL_LOCKS_EXCLUDED(mu_);

  grpc::ClientContext* const context_;
  const std::chrono::milliseconds stall_;
  mutable absl::Mutex mu_;
  absl::CondVar cv_;  // signalled (with mu_) when done_ is set
  Clock::time_point last_progress_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool stalled_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace halftime

#endif  // HALFTIME_WORKER_TRANSFER_WATCHDOG_H_
