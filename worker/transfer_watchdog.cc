#include "worker/transfer_watchdog.h"

#include "absl/strings/str_cat.h"

namespace halftime {

TransferWatchdog::TransferWatchdog(grpc::ClientContext* context,
                                   std::chrono::milliseconds stall)
    : context_(context), stall_(stall), last_progress_(Clock::now()) {
  thread_ = std::thread([this] { Watch(); });
}

TransferWatchdog::~TransferWatchdog() {
  {
    absl::MutexLock lock(&mu_);
    done_ = true;
  }
  cv_.SignalAll();
  thread_.join();
}

void TransferWatchdog::Progress() {
  absl::MutexLock lock(&mu_);
  last_progress_ = Clock::now();
}

bool TransferWatchdog::stalled() const {
  absl::MutexLock lock(&mu_);
  return stalled_;
}

absl::Status TransferWatchdog::Outcome(absl::Status finished,
                                       absl::string_view transfer,
                                       int64_t bytes) const {
  if (!stalled()) return finished;
  return absl::DeadlineExceededError(
      absl::StrCat(transfer, " made no progress for ",
                   std::chrono::duration<double>(stall_).count(), " s after ",
                   bytes, " bytes"));
}

void TransferWatchdog::Watch() {
  absl::MutexLock lock(&mu_);
  while (!done_) {
    const Clock::time_point deadline = last_progress_ + stall_;
    if (Clock::now() >= deadline) {
      stalled_ = true;
      context_->TryCancel();
      return;
    }
    // Woken by the destructor, or at the deadline to look again (progress
    // moves it on without a wake-up). The deadline is on the steady clock,
    // which absl does not take: wait for what is left of it.
    cv_.WaitWithTimeout(&mu_, absl::FromChrono(deadline - Clock::now()));
  }
}

}  // namespace halftime
