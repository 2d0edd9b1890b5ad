#include "common/enum_names.h"

#include <gtest/gtest.h>

namespace halftime {
namespace {

TEST(EnumNamesTest, PrecisionShortNamesMatchDesign) {
  EXPECT_EQ(PrecisionName(v1::PRECISION_FP32), "fp32");
  EXPECT_EQ(PrecisionName(v1::PRECISION_TF32), "tf32");
  EXPECT_EQ(PrecisionName(v1::PRECISION_FP16_MIXED), "fp16-mixed");
  EXPECT_EQ(PrecisionName(v1::PRECISION_BF16_MIXED), "bf16-mixed");
  EXPECT_EQ(PrecisionName(v1::PRECISION_FP16_MASTER), "fp16-master");
  EXPECT_EQ(PrecisionName(v1::PRECISION_BF16_MASTER), "bf16-master");
  EXPECT_EQ(PrecisionName(v1::PRECISION_BF16_PURE), "bf16-pure");
  EXPECT_EQ(PrecisionName(v1::PRECISION_AUTO), "auto");
  EXPECT_EQ(PrecisionName(v1::PRECISION_UNSPECIFIED), "");
}

TEST(EnumNamesTest, EveryEnumRoundTrips) {
  for (const auto* type :
       {v1::Precision_descriptor(), v1::DataKind_descriptor(),
        v1::LossScalingMode_descriptor(), v1::OnMinScale_descriptor(),
        v1::OptimizerName_descriptor(), v1::LrDecay_descriptor(),
        v1::DeviceKind_descriptor(), v1::BaselineMode_descriptor(),
        v1::JobState_descriptor()}) {
    for (int i = 1; i < type->value_count(); ++i) {
      const auto* value = type->value(i);
      std::string name = EnumShortName(value);
      ASSERT_FALSE(name.empty()) << value->full_name();
      EXPECT_EQ(FindEnumByShortName(type, name), value) << name;
    }
  }
}

TEST(EnumNamesTest, ParsePrecisionRejectsUnknownWithChoices) {
  EXPECT_EQ(*ParsePrecision("bf16-pure"), v1::PRECISION_BF16_PURE);
  absl::StatusOr<v1::Precision> bad = ParsePrecision("int8");
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      bad.status().message(),
      "unknown precision \"int8\"; expected one of fp32, tf32, "
      "fp16-mixed, bf16-mixed, fp16-master, bf16-master, bf16-pure, auto");
  EXPECT_EQ(ParsePrecision("unspecified").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EnumNamesTest, JobStates) {
  EXPECT_EQ(JobStateName(v1::JOB_STATE_RUNNING), "running");
  EXPECT_EQ(*ParseJobState("succeeded"), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(ParseJobState("done").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace halftime
