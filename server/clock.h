// Time source of the scheduler. Everything that reads the time (leases,
// timestamps, queue waits) asks a Clock, so tests drive time by hand.
#ifndef HALFTIME_SERVER_CLOCK_H_
#define HALFTIME_SERVER_CLOCK_H_

#include "absl/time/time.h"

namespace halftime::server {

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

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_CLOCK_H_
