#include "server/leases.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace halftime::server {
namespace {

TEST(LeaseTableTest, ExpiresAfterGrace) {
  LeaseTable leases(absl::Seconds(15));
  absl::Time t0 = absl::FromUnixSeconds(100);
  leases.Renew("b", t0);
  leases.Renew("a", t0 + absl::Seconds(5));
  EXPECT_TRUE(leases.TakeExpired(t0 + absl::Seconds(14)).empty());
  EXPECT_EQ(leases.TakeExpired(t0 + absl::Seconds(15)),
            std::vector<std::string>{"b"});
  EXPECT_FALSE(leases.Holds("b"));
  EXPECT_EQ(leases.TakeExpired(t0 + absl::Seconds(60)),
            std::vector<std::string>{"a"});
}

}  // namespace
}  // namespace halftime::server
