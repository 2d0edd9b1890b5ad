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
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void TransferWatchdog::Progress() {
  std::lock_guard<std::mutex> lock(mu_);
  last_progress_ = Clock::now();
}

bool TransferWatchdog::stalled() const {
  std::lock_guard<std::mutex> lock(mu_);
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
  std::unique_lock<std::mutex> lock(mu_);
  while (!done_) {
    const Clock::time_point deadline = last_progress_ + stall_;
    if (Clock::now() >= deadline) {
      stalled_ = true;
      context_->TryCancel();
      return;
    }
    // Woken by the destructor, or at the deadline to look again (progress
    // moves it on without a wake-up).
    cv_.wait_until(lock, deadline);
  }
}

}  // namespace halftime
