#include "common/spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

namespace halftime {
namespace {

using ::testing::HasSubstr;

constexpr char kMinimal[] = R"(name: t
model: {builtin: gpt-nano}
data: {kind: synthetic}
steps: 10
)";

v1::JobSpec MustParse(absl::string_view text) {
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(text, "t.yaml");
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : v1::JobSpec();
}

std::string ErrorOf(absl::string_view text) {
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(text, "t.yaml");
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(spec.status().message());
}

TEST(SpecTest, DefaultsFollowDesign) {
  v1::JobSpec spec = MustParse(kMinimal);
  EXPECT_EQ(spec.precision(), v1::PRECISION_AUTO);
  EXPECT_EQ(spec.loss_scaling().mode(), v1::LOSS_SCALING_MODE_UNSPECIFIED)
      << "auto's scaler is decided when the precision is resolved";
  EXPECT_EQ(spec.loss_scaling().init_scale(), 65536.0);
  EXPECT_EQ(spec.loss_scaling().growth_factor(), 2.0);
  EXPECT_EQ(spec.loss_scaling().backoff_factor(), 0.5);
  EXPECT_EQ(spec.loss_scaling().growth_interval(), 2000);
  EXPECT_EQ(spec.loss_scaling().hysteresis(), 1);
  EXPECT_EQ(spec.loss_scaling().min_scale(), 1.0);
  EXPECT_EQ(spec.loss_scaling().max_scale(), 16777216.0);
  EXPECT_EQ(spec.loss_scaling().on_min_scale(), v1::ON_MIN_SCALE_FAIL);
  EXPECT_EQ(spec.optimizer().name(), v1::OPTIMIZER_NAME_ADAMW);
  EXPECT_DOUBLE_EQ(spec.optimizer().lr(), 3e-4);
  EXPECT_EQ(spec.batch_size(), 16);
  EXPECT_EQ(spec.grad_accumulation(), 1);
  EXPECT_EQ(spec.max_grad_norm(), 1.0);
  EXPECT_EQ(spec.seed(), 1);
  EXPECT_EQ(spec.data().seq_len(), 128);
  EXPECT_EQ(spec.max_restarts(), 3);
  EXPECT_EQ(spec.savings().baseline(), v1::BASELINE_MODE_PROBE);
  EXPECT_EQ(spec.savings().probe_steps(), 10);
  EXPECT_EQ(spec.resources().device(), v1::DEVICE_KIND_ANY);
}

TEST(SpecTest, LossScalingDefaultDependsOnPrecision) {
  v1::JobSpec fp16 =
      MustParse(std::string(kMinimal) + "precision: fp16-mixed\n");
  EXPECT_EQ(fp16.loss_scaling().mode(), v1::LOSS_SCALING_MODE_DYNAMIC);
  v1::JobSpec bf16 =
      MustParse(std::string(kMinimal) + "precision: bf16-mixed\n");
  EXPECT_EQ(bf16.loss_scaling().mode(), v1::LOSS_SCALING_MODE_NONE);

  v1::JobSpec automatic = MustParse(kMinimal);
  ResolvePrecision(&automatic, v1::PRECISION_FP16_MASTER);
  EXPECT_EQ(automatic.precision(), v1::PRECISION_FP16_MASTER);
  EXPECT_EQ(automatic.loss_scaling().mode(), v1::LOSS_SCALING_MODE_DYNAMIC);
}

TEST(SpecTest, Bf16PureUpdatesWithKahanUnlessTold) {
  v1::JobSpec pure =
      MustParse(std::string(kMinimal) + "precision: bf16-pure\n");
  EXPECT_EQ(pure.optimizer().pure_update(), v1::PURE_UPDATE_KAHAN);
  v1::JobSpec rounding = MustParse(
      std::string(kMinimal) +
      "precision: bf16-pure\noptimizer: {pure_update: stochastic-rounding}\n");
  EXPECT_EQ(rounding.optimizer().pure_update(),
            v1::PURE_UPDATE_STOCHASTIC_ROUNDING);
  // Other modes keep fp32 weights: no default, and a bf16-pure spec reruns
  // in fp32 (its baseline probe) with the field left as it is.
  v1::JobSpec mixed =
      MustParse(std::string(kMinimal) + "precision: bf16-mixed\n");
  EXPECT_EQ(mixed.optimizer().pure_update(), v1::PURE_UPDATE_UNSPECIFIED);
  ASSERT_TRUE(ApplySpecOverride(&rounding, "precision=fp32").ok());
  ApplyJobSpecDefaults(&rounding);
  EXPECT_TRUE(ValidateJobSpec(rounding).ok());
}

TEST(SpecTest, SgdGetsSgdDefaults) {
  v1::JobSpec spec =
      MustParse(std::string(kMinimal) + "optimizer: {name: sgd, lr: 0.1}\n");
  EXPECT_EQ(spec.optimizer().weight_decay(), 0.0);
  EXPECT_EQ(spec.optimizer().momentum(), 0.9);
  EXPECT_FALSE(spec.optimizer().has_beta1());
}

TEST(SpecTest, JsonAndYamlGiveTheSameSpec) {
  v1::JobSpec from_yaml = MustParse(kMinimal);
  v1::JobSpec from_json = MustParse(
      R"({"name": "t", "model": {"builtin": "gpt-nano"},
          "data": {"kind": "synthetic"}, "steps": 10})");
  EXPECT_EQ(from_yaml.SerializeAsString(), from_json.SerializeAsString());
}

TEST(SpecTest, ErrorsCarryLineAndColumn) {
  EXPECT_EQ(ErrorOf("name: t\nmodel: {builtin: gpt-nano}\ndata: {kind: "
                    "synthetic}\nsteps: 10\noptimizer:\n  lr: -1\n"),
            "t.yaml:6:3: optimizer.lr: must be greater than 0 and at most 10, "
            "got -1");
}

TEST(SpecTest, ReportsEveryProblemNotJustTheFirst) {
  std::string error = ErrorOf(
      "name: t\nmodel: {builtin: gpt-nano}\ndata: {kind: synthetic}\n"
      "steps: 10\nbatch_size: 0\ngrad_accumulation: 0\n");
  EXPECT_THAT(error, HasSubstr("batch_size: must be between 1 and 65536"));
  EXPECT_THAT(error,
              HasSubstr("grad_accumulation: must be between 1 and 4096"));
}

TEST(SpecTest, NumbersAcceptScientificAndIntegralFloats) {
  v1::JobSpec spec = MustParse(std::string(kMinimal) +
                               "optimizer: {lr: 1e-3}\nbatch_size: 3.2e1\n");
  EXPECT_DOUBLE_EQ(spec.optimizer().lr(), 1e-3);
  EXPECT_EQ(spec.batch_size(), 32);
}

TEST(SpecTest, NegativeZeroIsZero) {
  v1::JobSpec spec = MustParse(std::string(kMinimal) + "max_grad_norm: -0.0\n");
  EXPECT_EQ(spec.max_grad_norm(), 0.0);
  EXPECT_FALSE(std::signbit(spec.max_grad_norm()));
}

TEST(SpecTest, InstructionDataKeysAndTheirRules) {
  v1::JobSpec spec = MustParse(R"(name: sft
model: {pretrained: models/qwen}
data: {kind: jsonl, path: chat.jsonl, packing: true, chat_template: chatml}
eval: {prompts: ["What is 2+2?", "Name a colour."], max_new_tokens: 8}
output: {dtype: bf16, export_with_checkpoints: true}
steps: 10
)");
  EXPECT_EQ(spec.data().kind(), v1::DATA_KIND_JSONL);
  EXPECT_TRUE(spec.data().packing());
  EXPECT_EQ(spec.data().chat_template(), v1::CHAT_TEMPLATE_CHATML);
  EXPECT_FALSE(spec.data().has_vocab_size()) << "the tokenizer's";
  ASSERT_EQ(spec.eval().prompts_size(), 2);
  EXPECT_EQ(spec.eval().prompts(1), "Name a colour.");
  EXPECT_EQ(spec.eval().max_new_tokens(), 8);
  EXPECT_EQ(spec.output().dtype(), v1::OUTPUT_DTYPE_BF16);

  v1::JobSpec tokens = MustParse(R"(name: t
model: {builtin: gpt-nano}
data: {kind: tokens, path: t.bin, token_dtype: uint32, vocab_size: 151936}
steps: 10
)");
  EXPECT_EQ(tokens.data().token_dtype(), v1::TOKEN_DTYPE_UINT32);
  EXPECT_EQ(MustParse(kMinimal).eval().max_new_tokens(), 32);

  EXPECT_THAT(ErrorOf(R"(name: t
model: {builtin: gpt-nano}
data: {kind: tokens, path: t.bin, vocab_size: 151936}
steps: 10
)"),
              HasSubstr("set data.token_dtype: uint32"));
  EXPECT_THAT(ErrorOf(R"(name: t
model: {builtin: gpt-nano}
data: {kind: jsonl, path: chat.jsonl}
steps: 10
)"),
              HasSubstr("data.tokenizer: required for jsonl data"));
  EXPECT_THAT(ErrorOf(R"(name: t
model: {builtin: gpt-nano}
data: {kind: text, path: a.txt, packing: true, chat_template: llama3}
steps: 10
)"),
              testing::AllOf(
                  HasSubstr("data.packing: applies to jsonl data only"),
                  HasSubstr("data.chat_template: applies to jsonl data only")));
  EXPECT_THAT(ErrorOf(R"(name: t
model: {builtin: gpt-nano}
data: {kind: text, path: a.txt, tokenizer: tok.json, vocab_size: 5000}
steps: 10
)"),
              HasSubstr("data.vocab_size: is set by the tokenizer"));
  EXPECT_THAT(ErrorOf(R"(name: t
model: {builtin: gpt-nano}
data: {kind: jsonl, path: c.jsonl, tokenizer: t.json, chat_template: vicuna}
steps: 10
)"),
              HasSubstr("expected one of llama3, chatml, mistral"));
  EXPECT_THAT(ErrorOf(R"(name: t
model: {builtin: gpt-nano}
data: {kind: synthetic}
eval: {prompts: ["hi"]}
output: {dtype: fp16}
steps: 10
)"),
              testing::AllOf(HasSubstr("eval.prompts: need a tokenizer"),
                             HasSubstr("output.dtype: applies to a "
                                       "model.pretrained job")));
  // A single value is a list of one.
  v1::JobSpec one = MustParse(R"(name: t
model: {builtin: gpt-nano}
data: {kind: text, path: a.txt}
eval: {prompts: "hi"}
steps: 10
)");
  ASSERT_EQ(one.eval().prompts_size(), 1);
  EXPECT_EQ(one.eval().prompts(0), "hi");
  EXPECT_THAT(ErrorOf(R"(name: t
model: {builtin: gpt-nano}
data: {kind: text, path: a.txt}
eval: {prompts: {a: 1}}
steps: 10
)"),
              HasSubstr("eval.prompts: expected a list"));
  EXPECT_THAT(ErrorOf(R"(name: t
model: {builtin: gpt-nano}
data: {kind: text, path: a.txt}
eval: {prompts: ["ok", {a: 1}]}
steps: 10
)"),
              HasSubstr("eval.prompts[1]: expected text, got a mapping"));
  EXPECT_THAT(ErrorOf(R"(name: t
model: {builtin: gpt-nano}
data: {kind: text, path: a.txt}
eval: {prompts: ["ok", ""]}
steps: 10
)"),
              HasSubstr("eval.prompts[1]: is empty"));
  // steps: 0 converts a pretrained folder; a built-in must train.
  EXPECT_EQ(MustParse(R"(name: c
model: {pretrained: m}
data: {kind: synthetic}
steps: 0
)")
                .steps(),
            0);
  EXPECT_THAT(ErrorOf(R"(name: t
model: {builtin: gpt-nano}
data: {kind: synthetic}
steps: 0
)"),
              HasSubstr("steps: must be between 1 and"));
}

TEST(SpecTest, AdapterKeysDefaultsAndRules) {
  v1::JobSpec spec = MustParse(R"(name: lora
model: {pretrained: models/qwen}
data: {kind: synthetic}
adapter: {kind: lora, base_dtype: nf4, target_modules: all-linear,
          modules_to_save: [lm_head]}
output: {merge: true}
steps: 10
)");
  const v1::AdapterSpec& a = spec.adapter();
  EXPECT_EQ(a.kind(), v1::ADAPTER_KIND_LORA);
  EXPECT_EQ(a.rank(), 8);
  EXPECT_EQ(a.alpha(), 16);
  EXPECT_EQ(a.dropout(), 0);
  EXPECT_FALSE(a.rslora());
  EXPECT_TRUE(a.double_quant()) << "nf4's default";
  ASSERT_EQ(a.target_modules_size(), 1) << "a single value is a list of one";
  EXPECT_EQ(a.target_modules(0), "all-linear");
  EXPECT_EQ(a.base_dtype(), v1::BASE_DTYPE_NF4);
  EXPECT_TRUE(spec.output().merge());
  // A built-in GPT takes adapters; its export needs no folder.
  EXPECT_EQ(MustParse(R"(name: t
model: {builtin: gpt-nano}
data: {kind: synthetic}
adapter: {kind: lora, rank: 4, target_modules: [c_attn, mlp.c_proj]}
output: {dtype: bf16}
steps: 10
)")
                .adapter()
                .target_modules_size(),
            2);

  EXPECT_THAT(ErrorOf(R"(name: t
model: {builtin: gpt-nano}
data: {kind: synthetic}
adapter: {rank: 8}
steps: 10
)"),
              HasSubstr("adapter.kind: required with the other adapter keys"));
  EXPECT_THAT(ErrorOf(R"(name: t
model: {builtin: mlp}
data: {kind: synthetic}
adapter: {kind: lora}
steps: 10
)"),
              HasSubstr("adapter: needs a language model"));
  const std::string bad = ErrorOf(R"(name: t
model: {builtin: gpt-nano}
data: {kind: synthetic}
adapter: {kind: lora, rank: 0, alpha: -1, dropout: 1.5,
          target_modules: [q_proj, all-linear, "q proj"], base_dtype: nf5}
steps: 10
)");
  EXPECT_THAT(bad, HasSubstr("adapter.base_dtype"));
  EXPECT_THAT(
      ErrorOf(R"(name: t
model: {builtin: gpt-nano}
data: {kind: synthetic}
adapter: {kind: lora, rank: 0, alpha: -1, dropout: 1.5,
          target_modules: [q_proj, all-linear, "q proj"]}
steps: 10
)"),
      testing::AllOf(
          HasSubstr("adapter.rank: must be between 1 and 4096"),
          HasSubstr("adapter.alpha"), HasSubstr("adapter.dropout"),
          HasSubstr("adapter.target_modules[1]: all-linear stands alone"),
          HasSubstr("adapter.target_modules[2]: is not a module name")));
  EXPECT_THAT(ErrorOf(R"(name: t
model: {builtin: gpt-nano}
data: {kind: synthetic}
adapter: {kind: lora}
output: {merge: true}
steps: 10
)"),
              HasSubstr("output.merge: writes a merged Hugging Face folder"));
  EXPECT_THAT(ErrorOf(R"(name: t
model: {builtin: gpt-nano}
data: {kind: synthetic}
output: {merge: true}
steps: 10
)"),
              HasSubstr("output.merge: needs an adapter"));
}

TEST(SpecTest, ModelShapeIsBounded) {
  v1::JobSpec spec = MustParse(R"(name: t
model: {pretrained: models/qwen, shape: {family: llama, vocab_size: 151936,
        hidden_size: 896, intermediate_size: 4864, num_layers: 24,
        num_heads: 14, num_kv_heads: 2, head_dim: 64}}
data: {kind: synthetic}
steps: 10
)");
  EXPECT_EQ(spec.model().shape().hidden_size(), 896);
  EXPECT_THAT(ErrorOf(R"(name: t
model: {pretrained: models/qwen, shape: {family: bert, vocab_size: -1,
        hidden_size: 999999999999, intermediate_size: 1, num_layers: 1,
        num_heads: 1, num_kv_heads: 1, head_dim: 1}}
data: {kind: synthetic}
steps: 10
)"),
              testing::AllOf(HasSubstr("model.shape.family: must be llama"),
                             HasSubstr("model.shape.vocab_size"),
                             HasSubstr("model.shape.hidden_size")));
}

TEST(SpecTest, OverridesApplyBeforeValidation) {
  absl::StatusOr<v1::JobSpec> spec =
      ParseJobSpec(kMinimal, "t.yaml",
                   {"optimizer.lr=0.01", "precision=bf16-pure", "name=renamed",
                    "resources.min_compute_capability=8.0"});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->optimizer().lr(), 0.01);
  EXPECT_EQ(spec->precision(), v1::PRECISION_BF16_PURE);
  EXPECT_EQ(spec->name(), "renamed");
  EXPECT_EQ(spec->resources().min_compute_capability(), "8.0");

  EXPECT_EQ(
      ParseJobSpec(kMinimal, "t.yaml", {"optimizer.lr=-1"}).status().message(),
      "t.yaml: optimizer.lr: must be greater than 0 and at most 10, "
      "got -1 (from --set optimizer.lr=-1)")
      << "an override has no place in the file";
}

TEST(SpecTest, OverrideErrorsNameTheField) {
  v1::JobSpec spec = MustParse(kMinimal);
  EXPECT_EQ(
      ApplySpecOverride(&spec, "optimizer.lerning_rate=1").message(),
      "--set optimizer.lerning_rate: unknown key \"optimizer.lerning_rate\"; "
      "did you mean \"lr\"?");
  EXPECT_EQ(ApplySpecOverride(&spec, "steps=many").message(),
            "--set steps: must be an integer, got \"many\"");
  EXPECT_EQ(ApplySpecOverride(&spec, "optimizer=adamw").message(),
            "--set optimizer: is a section; set one of its keys, e.g. "
            "optimizer.name=...");
  EXPECT_EQ(ApplySpecOverride(&spec, "steps").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplySpecOverride(&spec, "steps.x=1").message(),
            "--set steps.x: steps is not a section");
}

TEST(SpecTest, ValidateJobSpecWorksOnProtosWithoutALocation) {
  v1::JobSpec spec;
  spec.set_name("from-code");
  spec.mutable_model()->set_builtin("mlp");
  spec.mutable_data()->set_kind(v1::DATA_KIND_SYNTHETIC);
  spec.set_steps(5);
  ApplyJobSpecDefaults(&spec);
  EXPECT_TRUE(ValidateJobSpec(spec).ok());
  spec.set_batch_size(-3);
  EXPECT_EQ(ValidateJobSpec(spec).message(),
            "batch_size: must be between 1 and 65536, got -3");
}

// Regression (hostile requests, issue #9): a spec sent as a proto could
// carry enum numbers no value has (stored, never placeable, rendered as
// "precision: ") and strings of any length.
TEST(SpecTest, ProtoSpecsWithUnknownEnumNumbersOrHugeStringsAreRefused) {
  v1::JobSpec valid = MustParse(kMinimal);
  v1::JobSpec spec = valid;
  spec.set_precision(static_cast<v1::Precision>(99));
  spec.mutable_data()->set_kind(static_cast<v1::DataKind>(-1));
  spec.mutable_savings()->set_baseline(static_cast<v1::BaselineMode>(7));
  std::string message(ValidateJobSpec(spec).message());
  EXPECT_THAT(message, HasSubstr("precision: unknown value 99; expected one "
                                 "of fp32, tf32, fp16-mixed"));
  EXPECT_THAT(message, HasSubstr("data.kind: unknown value -1; expected one "
                                 "of text, tokens, tensors, synthetic"));
  EXPECT_THAT(message, HasSubstr("savings.baseline: unknown value 7"));

  spec = valid;
  spec.mutable_model()->set_init_from(std::string(5000, 'w'));
  spec.mutable_resources()->set_min_compute_capability(
      std::string(1 << 20, '8'));
  message = std::string(ValidateJobSpec(spec).message());
  EXPECT_THAT(message,
              HasSubstr("model.init_from: is 5000 bytes long; the limit is "
                        "4096"));
  EXPECT_THAT(message, HasSubstr("resources.min_compute_capability: is "
                                 "1048576 bytes long; the limit is 4096"));
  EXPECT_LT(message.size(), 1000u) << "the values are not echoed in full";
}

TEST(SpecTest, DataRootPathsMustBeRelativeAndStayInside) {
  v1::JobSpec spec = MustParse(kMinimal);
  EXPECT_TRUE(ValidateDataRootPaths(spec).ok());
  for (const char* ok : {"a.txt", "data/a.txt", "a/../b.txt", "./a/./b",
                         "a/b/../../c", "..a/b", "a/..b"}) {
    spec.mutable_data()->set_path(ok);
    EXPECT_TRUE(ValidateDataRootPaths(spec).ok()) << ok;
  }
  spec.mutable_data()->set_path("../../etc/passwd");
  EXPECT_EQ(ValidateDataRootPaths(spec).message(),
            "data.path: must stay inside the worker's data root, but \"..\" "
            "leads out of it: \"../../etc/passwd\"");
  spec.mutable_data()->set_path("a/b/../../../c");
  EXPECT_FALSE(ValidateDataRootPaths(spec).ok());
  spec.mutable_data()->set_path("data.txt");
  spec.mutable_model()->set_init_from("/root/.ssh/id_rsa");
  spec.mutable_model()->set_torchscript("x/../../m.pt");
  EXPECT_EQ(ValidateDataRootPaths(spec).message(),
            "model.torchscript: must stay inside the worker's data root, but "
            "\"..\" leads out of it: \"x/../../m.pt\"\n"
            "model.init_from: must be relative to the worker's data root, got "
            "the absolute path \"/root/.ssh/id_rsa\"");
  // Specs run by halftime-train alone may use any path.
  EXPECT_TRUE(ParseJobSpec("name: t\nmodel: {builtin: mlp, init_from: "
                           "/abs/w.safetensors}\ndata: {kind: text, path: "
                           "../d.txt}\nsteps: 1\n")
                  .ok());
}

TEST(SpecTest, OversizedInputIsRefusedQuickly) {
  std::string huge(100u << 20, 'a');  // 100 MB
  EXPECT_EQ(ParseJobSpec(huge, "big.yaml").status().message(),
            "big.yaml: spec is 104857600 bytes; the limit is 1048576");

  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / "halftime_spec_test_big.yaml";
  {
    std::ofstream out(path, std::ios::binary);
    std::string chunk(1 << 20, '#');
    for (int i = 0; i < 100; ++i) out << chunk;
  }
  absl::StatusOr<v1::JobSpec> spec = LoadJobSpecFile(path.string());
  std::filesystem::remove(path);
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(spec.status().message(), HasSubstr("the limit is 1048576"));
}

TEST(SpecTest, MissingFileIsNotFound) {
  EXPECT_EQ(LoadJobSpecFile("/nonexistent/halftime.yaml").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadJobSpecFile("/").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SpecTest, DeepNestingIsRefused) {
  for (const char* open : {"[", "{a: ", "- "}) {
    std::string text = "name: ";
    for (int i = 0; i < 100000 && text.size() < kMaxSpecBytes - 10; ++i) {
      text += open;
    }
    absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(text, "deep.yaml");
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << open;
  }
}

TEST(SpecTest, HugeIntegersAreOutOfRange) {
  EXPECT_THAT(
      ErrorOf(std::string(kMinimal) + "seed: 123456789012345678901234567890\n"),
      HasSubstr("seed: integer \"123456789012345678901234567890\" is "
                "out of range"));
  EXPECT_THAT(ErrorOf(std::string(kMinimal) + "optimizer: {lr: 1e400}\n"),
              HasSubstr("optimizer.lr: must be a finite number"));
}

// A small in-test fuzzer: random byte edits of valid specs never crash or
// hang the loader, and every refusal is INVALID_ARGUMENT with a message.
TEST(SpecTest, RandomMutationsNeverCrash) {
  const std::string seeds[] = {
      kMinimal,
      R"({"name": "j", "model": {"builtin": "gpt-nano"}, "data": {"kind": "text", "path": "a"}, "steps": 3, "loss_scaling": {"mode": "dynamic", "init_scale": 128}})",
      "name: a\nmodel:\n  builtin: mlp\ndata:\n  kind: tokens\n  path: x.bin\n"
      "precision: bf16-master\nlr_schedule: {warmup_steps: 2, decay: cosine}\n"
      "steps: 5\n"};
  const std::string alphabet =
      "{}[]:,-'\"\n\t &*!|>%@`#?0123456789.eE+naifNAIF\xff\xc3";
  std::mt19937 rng(42);
  int accepted = 0;
  for (int round = 0; round < 3000; ++round) {
    std::string text = seeds[round % 3];
    const int edits = 1 + static_cast<int>(rng() % 6);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      std::size_t pos = rng() % text.size();
      switch (rng() % 3) {
        case 0:
          text[pos] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          text.insert(pos, 1, alphabet[rng() % alphabet.size()]);
          break;
        default:
          text.erase(pos, 1 + rng() % 4);
      }
    }
    absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(text, "fuzz");
    if (spec.ok()) {
      ++accepted;
      EXPECT_TRUE(ValidateJobSpec(*spec).ok());
    } else {
      ASSERT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument)
          << text;
      ASSERT_FALSE(spec.status().message().empty());
    }
  }
  EXPECT_GT(accepted, 0) << "some mutations (e.g. in comments) stay valid";
}

TEST(SpecTest, FormatJsonIsParseableAndUsesShortNames) {
  v1::JobSpec spec =
      MustParse(std::string(kMinimal) + "precision: bf16-pure\n");
  std::string json = FormatJobSpec(spec, SpecFormat::kJson);
  EXPECT_THAT(json, HasSubstr("\"precision\": \"bf16-pure\""));
  EXPECT_THAT(json, HasSubstr("\"steps\": 10"));
  std::string yaml = FormatJobSpec(spec, SpecFormat::kYaml);
  EXPECT_THAT(yaml, HasSubstr("precision: bf16-pure"));
}

}  // namespace
}  // namespace halftime
