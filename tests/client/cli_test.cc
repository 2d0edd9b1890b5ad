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

TEST(CliEstimateTest, PrintsEachPrecisionNextToTheDevicesMemory) {
  // finetune-fp32.yaml: gpt-nano, whose shape the preset gives.
  CliRun run = RunHalftime({"estimate", kExamples + "/finetune-fp32.yaml"});
  ASSERT_EQ(run.exit_code, kExitOk) << run.err;
  EXPECT_THAT(run.out, HasSubstr("PEAK"));
  EXPECT_THAT(run.out, HasSubstr("fp32"));
  EXPECT_THAT(run.out, HasSubstr("trainable"));

  CliRun json = RunHalftime(
      {"estimate", kExamples + "/finetune-fp32.yaml", "--set", "precision=auto",
       "--set", "adapter.kind=lora", "--device", "cuda:h100", "-o", "json"});
  ASSERT_EQ(json.exit_code, kExitOk) << json.err;
  const nlohmann::json j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["device_memory_bytes"], int64_t{81559} << 20);
  EXPECT_LT(j["trainable_parameters"].get<int64_t>(),
            j["parameters"].get<int64_t>() / 10);
  // Every mode a CUDA device runs, each on four base dtypes.
  ASSERT_EQ(j["estimates"].size(), 7u * 4u);
  for (const auto& e : j["estimates"]) {
    // The peak: weights and optimizer state, plus the larger of
    // activations with workspace and gradients.
    const int64_t held = e["weight_bytes"].get<int64_t>() +
                         e["optimizer_state_bytes"].get<int64_t>();
    EXPECT_GE(e["total_bytes"].get<int64_t>(),
              held + e["activation_bytes"].get<int64_t>() +
                  e["workspace_bytes"].get<int64_t>());
    EXPECT_GE(e["total_bytes"].get<int64_t>(),
              held + e["gradient_bytes"].get<int64_t>());
    EXPECT_TRUE(e["fits"].get<bool>());
  }
  CliRun table = RunHalftime({"estimate", kExamples + "/finetune-fp32.yaml",
                              "--set", "adapter.kind=lora"});
  EXPECT_THAT(table.out, HasSubstr("nf4"));
  EXPECT_THAT(table.out, HasSubstr("a full fp32 fine-tune of this model: "));
  EXPECT_THAT(table.out, HasSubstr("(estimated)"));

  CliRun bad = RunHalftime(
      {"estimate", kExamples + "/finetune-fp32.yaml", "--device", "cuda:b300"});
  EXPECT_EQ(bad.exit_code, kExitBadInput);
  EXPECT_THAT(bad.err, HasSubstr("unknown GPU; one of h200, h100"));
  CliRun mlp =
      RunHalftime({"estimate", kExamples + "/finetune-fp32.yaml", "--set",
                   "model.builtin=mlp", "--set", "data.kind=tensors", "--set",
                   "data.path=x.pt", "--set", "model.loss=mse"});
  EXPECT_EQ(mlp.exit_code, kExitBadInput);
  EXPECT_THAT(mlp.err, HasSubstr("cannot estimate"));
}

TEST(CliValidateTest, HelpExitsZero) {
  CliRun run = RunHalftime({"--help"});
  EXPECT_EQ(run.exit_code, kExitOk);
  EXPECT_THAT(run.out, HasSubstr("validate"));
}

}  // namespace
}  // namespace halftime
