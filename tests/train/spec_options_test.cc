#include "train/spec_options.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "common/spec.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class ConfinePathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("halftime-confine-" + std::to_string(::getpid()));
    fs::create_directories(root_ / "data");
    std::ofstream(root_ / "data" / "a.txt") << "hello";
    fs::create_directories(root_.string() + "-outside");
    std::ofstream(root_.string() + "-outside/secret") << "x";
    fs::create_symlink(root_.string() + "-outside/secret",
                       root_ / "data" / "link");
  }
  void TearDown() override {
    fs::remove_all(root_);
    fs::remove_all(root_.string() + "-outside");
  }
  fs::path root_;
};

TEST_F(ConfinePathTest, RelativePathsResolveUnderTheRoot) {
  absl::StatusOr<std::string> p = ConfinePath("data.path", "data/a.txt", root_);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p, (fs::canonical(root_) / "data" / "a.txt").string());
}

TEST_F(ConfinePathTest, EscapesAreRefusedNamingTheField) {
  for (std::string bad :
       {std::string("../etc/passwd"), std::string("/etc/passwd"),
        std::string("data/../../x"), root_.string() + "-outside/secret",
        std::string("data/link")}) {
    absl::StatusOr<std::string> p = ConfinePath("data.path", bad, root_);
    ASSERT_EQ(p.status().code(), absl::StatusCode::kPermissionDenied) << bad;
    EXPECT_THAT(p.status().message(), HasSubstr("data.path: "));
    EXPECT_THAT(p.status().message(), HasSubstr("is outside the data root"));
  }
}

TEST_F(ConfinePathTest, NoRootMeansNoConfinement) {
  EXPECT_EQ(*ConfinePath("data.path", "/etc/passwd", ""), "/etc/passwd");
}

TEST(TrainOptionsFromSpecTest, MapsEveryField) {
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(R"(
name: m
model: {builtin: gpt-micro, init_from: w.safetensors}
data: {kind: tokens, path: t.bin, seq_len: 64, eval_fraction: 0.2, vocab_size: 1000}
precision: bf16-master
loss_scaling: {mode: dynamic, init_scale: 1024, growth_interval: 7, hysteresis: 2,
               on_min_scale: fallback, fallback_precision: fp32, min_scale_patience: 3}
optimizer: {name: sgd, lr: 0.05, momentum: 0.7}
lr_schedule: {warmup_steps: 5, decay: linear, min_lr_ratio: 0.2}
batch_size: 4
grad_accumulation: 3
max_grad_norm: 0.5
steps: 50
seed: 9
eval: {every_steps: 10, batches: 2}
checkpoint: {every_steps: 25}
resources: {device: cpu}
threads: 2
)");
  ASSERT_TRUE(spec.ok()) << spec.status();
  engine::TrainOptions o = TrainOptionsFromSpec(*spec);
  EXPECT_EQ(o.model.builtin, "gpt-micro");
  EXPECT_EQ(o.model.init_from, "w.safetensors");
  EXPECT_EQ(o.data.kind, engine::DataKind::kTokens);
  EXPECT_EQ(o.data.seq_len, 64);
  EXPECT_EQ(o.data.eval_fraction, 0.2);
  EXPECT_EQ(o.data.vocab_size, 1000);
  EXPECT_EQ(o.precision, engine::Precision::kBf16Master);
  EXPECT_EQ(o.loss_scaling.mode, engine::LossScalingMode::kDynamic);
  EXPECT_EQ(o.loss_scaling.init_scale, 1024);
  EXPECT_EQ(o.loss_scaling.growth_interval, 7);
  EXPECT_EQ(o.loss_scaling.hysteresis, 2);
  EXPECT_EQ(o.loss_scaling.on_min_scale, engine::OnMinScale::kFallback);
  EXPECT_EQ(o.loss_scaling.fallback_precision, engine::Precision::kFp32);
  EXPECT_EQ(o.loss_scaling.min_scale_patience, 3);
  EXPECT_EQ(o.optimizer.name, engine::OptimizerName::kSgd);
  EXPECT_EQ(o.optimizer.lr, 0.05);
  EXPECT_EQ(o.optimizer.momentum, 0.7);
  EXPECT_EQ(o.optimizer.weight_decay, 0.0);
  EXPECT_EQ(o.lr_schedule.warmup_steps, 5);
  EXPECT_EQ(o.lr_schedule.decay, engine::LrDecay::kLinear);
  EXPECT_EQ(o.lr_schedule.min_lr_ratio, 0.2);
  EXPECT_EQ(o.batch_size, 4);
  EXPECT_EQ(o.grad_accumulation, 3);
  EXPECT_EQ(o.max_grad_norm, 0.5);
  EXPECT_EQ(o.steps, 50);
  EXPECT_EQ(o.seed, 9);
  EXPECT_EQ(o.eval.every_steps, 10);
  EXPECT_EQ(o.eval.batches, 2);
  EXPECT_EQ(o.checkpoint.every_steps, 25);
  EXPECT_EQ(o.device, engine::DeviceRequest::kCpu);
  EXPECT_EQ(o.threads, 2);
}

TEST(TrainOptionsFromSpecTest, MapsTheDataTokenizerEvalAndOutputFields) {
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(R"(
name: m
model: {pretrained: models/qwen}
data: {kind: jsonl, path: chat.jsonl, tokenizer: tok/tokenizer.json,
       packing: true, chat_template: chatml}
eval: {prompts: ["a", "b"], max_new_tokens: 5}
output: {dtype: fp16, export_with_checkpoints: true}
steps: 3
)");
  ASSERT_TRUE(spec.ok()) << spec.status();
  engine::TrainOptions o = TrainOptionsFromSpec(*spec);
  EXPECT_EQ(o.data.kind, engine::DataKind::kJsonl);
  EXPECT_EQ(o.data.tokenizer, "tok/tokenizer.json");
  EXPECT_TRUE(o.data.packing);
  EXPECT_EQ(o.eval.max_new_tokens, 5);
  EXPECT_EQ(o.output.dtype, engine::ExportDtype::kFp16);
  EXPECT_TRUE(o.output.export_with_checkpoints);

  spec = ParseJobSpec(R"(
name: m
model: {builtin: gpt-nano}
data: {kind: tokens, path: t.bin, token_dtype: uint32, vocab_size: 100000}
steps: 3
)");
  ASSERT_TRUE(spec.ok()) << spec.status();
  o = TrainOptionsFromSpec(*spec);
  EXPECT_EQ(o.data.token_dtype, engine::TokenDtype::kUint32);
  EXPECT_EQ(o.output.dtype, engine::ExportDtype::kSource);
}

TEST(TrainOptionsFromSpecTest, MapsTheBf16PureUpdate) {
  for (const auto& [text, update] :
       std::vector<std::pair<std::string, engine::PureUpdate>>{
           {"", engine::PureUpdate::kKahan},
           {"optimizer: {pure_update: kahan}\n", engine::PureUpdate::kKahan},
           {"optimizer: {pure_update: stochastic-rounding}\n",
            engine::PureUpdate::kStochasticRounding}}) {
    absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(
        "name: m\nmodel: {builtin: gpt-nano}\ndata: {kind: synthetic}\n"
        "precision: bf16-pure\nsteps: 5\n" +
        text);
    ASSERT_TRUE(spec.ok()) << spec.status();
    EXPECT_EQ(TrainOptionsFromSpec(*spec).optimizer.pure_update, update)
        << text;
  }
}

}  // namespace
}  // namespace halftime
