#include "common/status.h"

#include <gtest/gtest.h>

namespace halftime {
namespace {

TEST(StatusTest, OkStaysOk) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(StatusTest, CodesAndMessagesRoundTrip) {
  for (int code = 1; code <= 16; ++code) {
    absl::Status original(static_cast<absl::StatusCode>(code), "why");
    grpc::Status wire = ToGrpcStatus(original);
    EXPECT_EQ(static_cast<int>(wire.error_code()), code);
    EXPECT_EQ(wire.error_message(), "why");
    EXPECT_EQ(FromGrpcStatus(wire), original);
  }
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("job j-1")).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace halftime
