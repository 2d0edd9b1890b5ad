#include "server/savings.h"

#include <gtest/gtest.h>

namespace halftime::server {
namespace {

TEST(PriceTableTest, ExactThenLongestPartThenDefault) {
  PriceTable prices;
  ASSERT_TRUE(prices.AddFlag("H100=4").ok());
  ASSERT_TRUE(prices.AddFlag("NVIDIA H100 80GB HBM3=5").ok());
  ASSERT_TRUE(prices.AddFlag("a100=2.5").ok());
  prices.default_price = 1;
  EXPECT_EQ(prices.PriceFor("NVIDIA H100 80GB HBM3"), 5);
  EXPECT_EQ(prices.PriceFor("NVIDIA H100 PCIe"), 4);
  EXPECT_EQ(prices.PriceFor("NVIDIA A100-SXM4-40GB"), 2.5);
  EXPECT_EQ(prices.PriceFor("Intel Xeon"), 1);
  EXPECT_EQ(prices.AddFlag("nope").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(prices.AddFlag("x=-1").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(prices.AddFlag("x=abc").code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace halftime::server
