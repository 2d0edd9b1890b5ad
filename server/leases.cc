#include "server/leases.h"

#include <algorithm>

namespace halftime::server {

std::vector<std::string> LeaseTable::TakeExpired(absl::Time now) {
  std::vector<std::string> expired;
  for (const auto& [worker, deadline] : deadlines_) {
    if (deadline <= now) expired.push_back(worker);
  }
  for (const std::string& worker : expired) deadlines_.erase(worker);
  std::sort(expired.begin(), expired.end());
  return expired;
}

}  // namespace halftime::server
