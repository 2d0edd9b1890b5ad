// Worker leases: each heartbeat (or registration) renews a worker's lease
// until now + grace; a worker whose lease runs out loses its jobs.
#ifndef HALFTIME_SERVER_LEASES_H_
#define HALFTIME_SERVER_LEASES_H_

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"

namespace halftime::server {

// Lease deadlines by worker name.
//
// Thread-safety: thread-compatible (the job manager calls it under its
// lock).
class LeaseTable {
 public:
  // `grace` is how long a lease lasts after each renewal.
  explicit LeaseTable(absl::Duration grace) : grace_(grace) {}

  // Extends `worker`'s lease to `now` + grace (creating it when absent).
  void Renew(const std::string& worker, absl::Time now) {
    deadlines_[worker] = now + grace_;
  }

  // Forgets `worker`'s lease (e.g. it was declared lost).
  void Remove(const std::string& worker) { deadlines_.erase(worker); }

  // True when `worker` holds a lease.
  bool Holds(const std::string& worker) const {
    return deadlines_.contains(worker);
  }

  // Removes and returns (sorted by name) the workers whose lease ended
  // before or at `now`.
  std::vector<std::string> TakeExpired(absl::Time now);

  absl::Duration grace() const { return grace_; }

 private:
  const absl::Duration grace_;
  absl::flat_hash_map<std::string, absl::Time> deadlines_;
};

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_LEASES_H_
