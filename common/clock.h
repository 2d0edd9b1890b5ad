// Time source of the scheduler and the worker daemon. Everything that reads
// the time (leases, timestamps, queue waits, reconnect backoff, probe
// timing) asks a Clock, so tests drive time by hand.
#ifndef HALFTIME_COMMON_CLOCK_H_
#define HALFTIME_COMMON_CLOCK_H_

#include "absl/time/time.h"

namespace halftime {

// Interface of a time source.
//
// Thread-safety: implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;

  // Returns the current time.
  virtual absl::Time Now() const = 0;
};

// The system's wall clock.
//
// Thread-safety: thread-safe (stateless).
class RealClock : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

}  // namespace halftime

#endif  // HALFTIME_COMMON_CLOCK_H_
