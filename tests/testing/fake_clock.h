// A Clock (common/clock.h) that moves only when told, for the tests of
// the scheduler and the worker.
#ifndef HALFTIME_TESTS_TESTING_FAKE_CLOCK_H_
#define HALFTIME_TESTS_TESTING_FAKE_CLOCK_H_

#include <mutex>

#include "absl/time/time.h"
#include "common/clock.h"

namespace halftime::testing {

// Thread-safety: thread-safe.
class FakeClock : public Clock {
 public:
  absl::Time Now() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    std::lock_guard<std::mutex> lock(mu_);
    now_ += d;
  }

 private:
  mutable std::mutex mu_;
  absl::Time now_ = absl::FromUnixSeconds(1'700'000'000);
};

}  // namespace halftime::testing

#endif  // HALFTIME_TESTS_TESTING_FAKE_CLOCK_H_
