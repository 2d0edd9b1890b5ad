#include "client/cli.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

namespace halftime {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

struct CliRun {
  int exit_code;
  std::string out;
  std::string err;
};

CliRun RunHalftime(std::vector<std::string> args) {
  args.insert(args.begin(), "halftime");
  std::ostringstream out, err;
  int code = RunCli(args, out, err);
  return {code, out.str(), err.str()};
}

const std::string kExamples = HALFTIME_EXAMPLES;
const std::string kCorpus = HALFTIME_SPEC_CORPUS;

TEST(CliValidateTest, AcceptsTheExamples) {
  CliRun run = RunHalftime({"validate", kExamples + "/pretrain-gpt-nano.yaml",
                            kExamples + "/finetune-bf16-mixed.yaml"});
  EXPECT_EQ(run.exit_code, kExitOk) << run.err;
  EXPECT_THAT(run.out, HasSubstr("name: gpt-nano-pretrain"));
  EXPECT_THAT(run.out, HasSubstr("---"));
  EXPECT_THAT(run.err, HasSubstr("2 specs valid"));
}

TEST(CliValidateTest, JsonOutputParsesAndHoldsResolvedFields) {
  CliRun run = RunHalftime(
      {"validate", kExamples + "/finetune-bf16-mixed.yaml", "-o", "json"});
  ASSERT_EQ(run.exit_code, kExitOk) << run.err;
  nlohmann::json spec = nlohmann::json::parse(run.out);
  EXPECT_EQ(spec["precision"], "bf16-mixed");
  EXPECT_EQ(spec["loss_scaling"]["mode"], "none");
  EXPECT_EQ(spec["optimizer"]["beta2"], 0.999);
}

TEST(CliValidateTest, InvalidSpecExitsTwoAndNamesTheField) {
  CliRun run = RunHalftime({"validate", kCorpus + "/invalid/lr-negative.yaml"});
  EXPECT_EQ(run.exit_code, kExitBadInput);
  EXPECT_THAT(run.out, IsEmpty());
  EXPECT_THAT(run.err, HasSubstr("lr-negative.yaml:6:13: optimizer.lr: must be "
                                 "greater than 0"));
}

TEST(CliValidateTest, OneBadSpecAmongGoodOnesFailsTheRun) {
  CliRun run = RunHalftime({"validate", kExamples + "/finetune-fp32.yaml",
                            kCorpus + "/invalid/steps-zero.yaml"});
  EXPECT_EQ(run.exit_code, kExitBadInput);
  EXPECT_THAT(run.out, HasSubstr("gpt-nano-finetune-fp32"));
  EXPECT_THAT(run.err, HasSubstr("steps: must be between 1 and 100000000"));
}

TEST(CliValidateTest, SetOverridesAField) {
  CliRun run = RunHalftime({"validate", kExamples + "/finetune-fp32.yaml",
                            "--set", "optimizer.lr=0.002", "-o", "json"});
  ASSERT_EQ(run.exit_code, kExitOk) << run.err;
  EXPECT_EQ(nlohmann::json::parse(run.out)["optimizer"]["lr"], 0.002);
}

TEST(CliValidateTest, MissingFileAndBadUsageExitTwo) {
  CliRun missing = RunHalftime({"validate", "/nonexistent.yaml"});
  EXPECT_EQ(missing.exit_code, kExitBadInput);
  EXPECT_THAT(missing.err, HasSubstr("/nonexistent.yaml: no such file"));

  CliRun no_args = RunHalftime({"validate"});
  EXPECT_EQ(no_args.exit_code, kExitBadInput);
  CliRun bad_format =
      RunHalftime({"validate", kExamples + "/finetune-fp32.yaml", "-o", "xml"});
  EXPECT_EQ(bad_format.exit_code, kExitBadInput);
  CliRun unknown_verb = RunHalftime({"frobnicate"});
  EXPECT_EQ(unknown_verb.exit_code, kExitBadInput);
}

TEST(CliValidateTest, HelpExitsZero) {
  CliRun run = RunHalftime({"--help"});
  EXPECT_EQ(run.exit_code, kExitOk);
  EXPECT_THAT(run.out, HasSubstr("validate"));
}

}  // namespace
}  // namespace halftime
