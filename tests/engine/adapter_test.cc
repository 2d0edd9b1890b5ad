// LoRA jobs (engine/adapter.h) on Hugging Face folders: loss parity with an
// independent plain-PyTorch LoRA (python/hf_reference.py lora), PEFT files
// read back by a reader written here, merged weights, exact resume and the
// base's identity, base dtypes' measured memory, generation from base plus
// adapter, and refusals that name the field.

#include "engine/adapter.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/generate.h"
#include "engine/hf/peft_config.h"
#include "engine/train.h"
#include "tests/engine/python_fixture.h"
#include "tests/engine/test_util.h"

namespace halftime::engine {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::RunPython;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A safetensors reader of this test's own: the header's names, dtypes and
// shapes, and F32 tensors' values.
struct SafetensorsEntry {
  std::string dtype;
  std::vector<int64_t> shape;
  at::Tensor values;  // F32 only
};
std::map<std::string, SafetensorsEntry> ReadSafetensorsHere(
    const std::string& path) {
  const std::string bytes = ReadAll(path);
  std::map<std::string, SafetensorsEntry> out;
  if (bytes.size() < 8) return out;
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, n));
  const size_t data = 8 + n;
  for (const auto& [name, e] : header.items()) {
    if (name == "__metadata__") continue;
    SafetensorsEntry entry;
    entry.dtype = e["dtype"].get<std::string>();
    entry.shape = e["shape"].get<std::vector<int64_t>>();
    const auto offsets = e["data_offsets"].get<std::vector<size_t>>();
    if (entry.dtype == "F32") {
      std::vector<float> v((offsets[1] - offsets[0]) / 4);
      std::memcpy(v.data(), bytes.data() + data + offsets[0], v.size() * 4);
      entry.values = at::tensor(v).view(entry.shape);
    }
    out[name] = entry;
  }
  return out;
}

class AdapterTest : public testing::PythonFixtureTest {
 protected:
  std::string MakeFolder(const std::string& name, const std::string& args) {
    const std::string folder = dir_.File(name);
    EXPECT_EQ(RunPython("hf_reference.py", "make " + folder + " " + args), 0);
    return folder;
  }

  TrainOptions LoraJob(const std::string& folder, int steps) {
    TrainOptions o;
    o.model.pretrained = folder;
    o.data.kind = DataKind::kTensors;
    o.data.path = dir_.File("tokens.pt");
    o.data.shuffle = false;
    o.data.eval_fraction = 0.1;
    o.precision = Precision::kFp32;
    o.batch_size = 4;
    o.steps = steps;
    o.optimizer.lr = 1e-2;
    o.threads = 1;
    o.eval.every_steps = 0;
    o.checkpoint.every_steps = 0;
    o.adapter.kind = AdapterKind::kLora;
    o.adapter.rank = 4;
    o.adapter.alpha = 8;
    o.adapter.target_modules = {"all-linear"};
    o.out_dir = dir_.File("out-" + fs::path(folder).filename().string());
    return o;
  }

  TrainStatus Run(const TrainOptions& o, std::vector<double>* losses,
                  TrainSummary* summary = nullptr) {
    TrainCallbacks cb;
    cb.on_step = [&](const StepReport& r) {
      if (losses != nullptr) losses->push_back(r.loss);
    };
    return Train(o, cb, summary);
  }
};

TEST_F(AdapterTest, LoraLossesMatchPlainPyTorchOverTenSteps) {
  for (const auto& [name, args] :
       std::vector<std::pair<std::string, std::string>>{
           {"lora-llama", "--arch llama --rope llama3"},
           {"lora-qwen2", "--arch qwen2"},
           {"lora-gpt2", "--arch gpt2"}}) {
    SCOPED_TRACE(name);
    const std::string f = MakeFolder(name, args);
    TrainOptions o = LoraJob(f, 10);
    const std::string init = dir_.File(name + "-init.safetensors");
    TrainStatus st = ExportInitialWeights(o, init);
    ASSERT_TRUE(st.ok()) << st.message;
    std::vector<double> ours;
    TrainSummary summary;
    st = Run(o, &ours, &summary);
    ASSERT_TRUE(st.ok()) << st.message;
    const std::string out = dir_.File(name + "-py.txt");
    ASSERT_EQ(RunPython("hf_reference.py",
                        "lora " + f + " " + dir_.File("tokens.pt") + " " +
                            init + " " + out +
                            " --rank 4 --alpha 8 --steps 10 --batch 4 --lr "
                            "1e-2 --eval-fraction 0.1"),
              0);
    const std::vector<double> theirs = testing::ReadNumbers(out);
    ASSERT_EQ(ours.size(), 10u);
    ASSERT_EQ(theirs.size(), 10u);
    for (size_t i = 0; i < ours.size(); ++i) {
      EXPECT_LE(std::abs(ours[i] - theirs[i]), 1e-4 * std::abs(theirs[i]))
          << "step " << i + 1 << ": ours " << ours[i] << " pytorch "
          << theirs[i];
    }
    EXPECT_LT(ours.back(), ours.front());
    // Only the adapters train.
    EXPECT_TRUE(summary.has_adapter);
    EXPECT_LT(summary.trainable_parameters, summary.parameters / 4);
    EXPECT_EQ(summary.adapter.base_dtype, "fp32");
    EXPECT_EQ(summary.adapter.base_hash.size(), 64u);
  }
}

TEST_F(AdapterTest, PeftFilesAndMergedWeightsReadBack) {
  const std::string f = MakeFolder("peft-llama", "--arch llama");
  TrainOptions o = LoraJob(f, 4);
  o.adapter.target_modules = {"q_proj", "v_proj", "down_proj"};
  o.adapter.rslora = true;
  o.output.merge = true;
  TrainSummary summary;
  TrainStatus st = Run(o, nullptr, &summary);
  ASSERT_TRUE(st.ok()) << st.message;
  ASSERT_EQ(summary.final_adapter, o.out_dir + "/adapter");
  ASSERT_EQ(summary.final_hf, o.out_dir + "/hf");

  const nlohmann::json config = nlohmann::json::parse(
      ReadAll(summary.final_adapter + "/" + std::string(hf::kPeftConfigFile)));
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["r"], 4);
  EXPECT_EQ(config["lora_alpha"], 8);
  EXPECT_EQ(config["use_rslora"], true);
  EXPECT_EQ(config["base_model_name_or_path"], f);
  EXPECT_EQ(config["target_modules"],
            nlohmann::json({"down_proj", "q_proj", "v_proj"}));

  const auto adapter = ReadSafetensorsHere(summary.final_adapter + "/" +
                                           std::string(hf::kPeftWeightsFile));
  const auto base = ReadSafetensorsHere(f + "/model.safetensors");
  const auto merged =
      ReadSafetensorsHere(summary.final_hf + "/model.safetensors");
  const nlohmann::json cfg = nlohmann::json::parse(ReadAll(f + "/config.json"));
  const int64_t layers = cfg["num_hidden_layers"];
  EXPECT_EQ(adapter.size(), static_cast<size_t>(layers * 3 * 2));
  const double scale = 8.0 / std::sqrt(4.0);  // rsLoRA: alpha / sqrt(r)
  for (int64_t i = 0; i < layers; ++i) {
    for (const char* module :
         {"self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"}) {
      const std::string m = "model.layers." + std::to_string(i) + "." + module;
      const std::string key = "base_model.model." + m;
      ASSERT_EQ(adapter.count(key + ".lora_A.weight"), 1u) << key;
      const SafetensorsEntry& a = adapter.at(key + ".lora_A.weight");
      const SafetensorsEntry& b = adapter.at(key + ".lora_B.weight");
      const std::vector<int64_t>& w = base.at(m + ".weight").shape;
      EXPECT_EQ(a.shape, (std::vector<int64_t>{4, w[1]})) << key;
      EXPECT_EQ(b.shape, (std::vector<int64_t>{w[0], 4})) << key;
      EXPECT_EQ(a.dtype, "F32");
      const at::Tensor expect =
          base.at(m + ".weight").values + scale * b.values.mm(a.values);
      EXPECT_TRUE(
          at::allclose(merged.at(m + ".weight").values, expect, 1e-6, 1e-6))
          << m;
      // The adapter trained: B moved off zero.
      EXPECT_GT(b.values.abs().max().item<float>(), 0.0f) << m;
    }
    // Untargeted layers are the base's, bit for bit.
    const std::string k =
        "model.layers." + std::to_string(i) + ".self_attn.k_proj.weight";
    EXPECT_TRUE(at::equal(merged.at(k).values, base.at(k).values));
  }
}

TEST_F(AdapterTest, ResumeIsExactAndRefusesAnotherBase) {
  const std::string f = MakeFolder("resume-llama", "--arch llama");
  TrainOptions straight = LoraJob(f, 6);
  straight.adapter.dropout = 0.1;  // resumes the dropout draws too
  straight.out_dir = dir_.File("straight");
  std::vector<double> all;
  ASSERT_TRUE(Run(straight, &all).ok());

  TrainOptions first = straight;
  first.out_dir = dir_.File("split");
  first.steps = 3;
  first.checkpoint.every_steps = 3;
  std::vector<double> part;
  TrainSummary s1;
  ASSERT_TRUE(Run(first, &part, &s1).ok());
  TrainOptions second = straight;
  second.out_dir = dir_.File("split");
  second.resume_from = s1.last_checkpoint;
  TrainStatus st = Run(second, &part);
  ASSERT_TRUE(st.ok()) << st.message;
  ASSERT_EQ(part.size(), all.size());
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(part[i], all[i]) << i;

  // The same folder path with other weights in it.
  const std::string other = MakeFolder("resume-other", "--arch llama --seed 9");
  fs::copy_file(other + "/model.safetensors", f + "/model.safetensors",
                fs::copy_options::overwrite_existing);
  st = Run(second, nullptr);
  EXPECT_EQ(st.code, TrainStatus::kInvalidInput);
  EXPECT_THAT(st.message, HasSubstr("another base model"));
}

TEST_F(AdapterTest, QuantizedBaseUsesLessMemoryAndStillTrains) {
  // Wide enough that the decoder's linear weights dominate the peak.
  const std::string f = MakeFolder(
      "mem-llama", "--arch llama --hidden 256 --intermediate 768 --layers 4");
  std::map<std::string, int64_t> peak;
  double first_loss = 0;
  // fp16, which a CPU cannot multiply in, is stored in fp16 and computed
  // in the job's precision (fp32 here), as the summary says.
  for (BaseDtype d : {BaseDtype::kFp32, BaseDtype::kBf16, BaseDtype::kFp16,
                      BaseDtype::kNf4, BaseDtype::kInt8}) {
    SCOPED_TRACE(BaseDtypeName(d));
    TrainOptions o = LoraJob(f, 3);
    o.batch_size = 1;
    o.adapter.base_dtype = d;
    o.out_dir = dir_.File(std::string("mem-") + BaseDtypeName(d));
    std::vector<double> losses;
    TrainSummary s;
    TrainStatus st = Run(o, &losses, &s);
    ASSERT_TRUE(st.ok()) << st.message;
    // The first step sees the base alone (B starts at zero): a quantized
    // base gives nearly the fp32 base's loss.
    if (first_loss == 0) first_loss = losses.front();
    EXPECT_NEAR(losses.front(), first_loss, 0.02 * first_loss);
    EXPECT_TRUE(std::isfinite(losses.back()));
    EXPECT_EQ(s.adapter.base_dtype, BaseDtypeName(d));
    EXPECT_EQ(s.adapter.compute_dtype, "fp32");
    peak[BaseDtypeName(d)] = s.peak_memory_bytes;
    if (d == BaseDtype::kNf4 || d == BaseDtype::kInt8) {
      EXPECT_GT(s.adapter.quantization_error_mean, 0.0);
      EXPECT_LT(s.adapter.quantization_error_max,
                d == BaseDtype::kNf4 ? 0.12 : 0.01);
    } else {
      EXPECT_EQ(s.adapter.quantization_error_max, 0.0);
    }
  }
  EXPECT_LT(peak["nf4"], peak["bf16"]);
  EXPECT_LT(peak["fp16"], peak["fp32"]);
  EXPECT_LT(peak["bf16"], peak["fp32"]);
  EXPECT_LT(peak["int8"], peak["bf16"]);
}

TEST_F(AdapterTest, PrecisionModesApplyToTheAdapters) {
  const std::string f = MakeFolder("modes-llama", "--arch llama");
  std::vector<double> fp32;
  ASSERT_TRUE(Run(LoraJob(f, 6), &fp32).ok());
  for (Precision p :
       {Precision::kBf16Mixed, Precision::kBf16Master, Precision::kBf16Pure}) {
    for (BaseDtype d : {BaseDtype::kDefault, BaseDtype::kNf4}) {
      SCOPED_TRACE(std::string(PrecisionName(p)) + " " + BaseDtypeName(d));
      TrainOptions o = LoraJob(f, 6);
      o.precision = p;
      o.allow_emulation = true;  // bf16 emulated where the CPU lacks it
      o.adapter.base_dtype = d;
      std::vector<double> losses;
      TrainSummary s;
      TrainStatus st = Run(o, &losses, &s);
      ASSERT_TRUE(st.ok()) << st.message;
      EXPECT_EQ(s.adapter.compute_dtype, "bf16");
      EXPECT_EQ(s.adapter.base_dtype, d == BaseDtype::kNf4 ? "nf4" : "bf16");
      ASSERT_EQ(losses.size(), fp32.size());
      for (size_t i = 0; i < losses.size(); ++i) {
        EXPECT_NEAR(losses[i], fp32[i], 0.03 * fp32[i]) << "step " << i + 1;
      }
      EXPECT_LT(losses.back(), losses.front());
      // bf16-mixed keeps fp32 adapters; the others hold them in bf16 (with
      // fp32 masters in the optimizer for bf16-master).
      const int64_t adapter_bytes = s.weight_bytes - s.adapter.base_bytes;
      EXPECT_EQ(adapter_bytes,
                s.trainable_parameters * (p == Precision::kBf16Mixed ? 4 : 2));
    }
  }
}

TEST_F(AdapterTest, GenerateFromBasePlusAdapterEqualsTheMergedFolder) {
  const std::string f = MakeFolder("gen-base", "--arch qwen2");
  TrainOptions o = LoraJob(f, 5);
  o.output.merge = true;
  TrainSummary s;
  ASSERT_TRUE(Run(o, nullptr, &s).ok());

  std::unique_ptr<TrainModel> base;
  ASSERT_TRUE(LoadPretrainedModel(f, at::kFloat, &base, nullptr).ok());
  std::unique_ptr<AdaptedModel> adapted;
  TrainStatus st = AdaptedModel::LoadPeft(s.final_adapter, at::kFloat,
                                          std::move(base), &adapted);
  ASSERT_TRUE(st.ok()) << st.message;
  std::unique_ptr<TrainModel> merged;
  ASSERT_TRUE(
      LoadPretrainedModel(s.final_hf, at::kFloat, &merged, nullptr).ok());
  const std::vector<int32_t> prompt = {5, 17, 42, 3};
  GenerateOptions g;
  g.max_new_tokens = 10;
  std::vector<int32_t> a, b;
  ASSERT_TRUE(Generate(*adapted, prompt, g, at::kCPU, &a).ok());
  ASSERT_TRUE(Generate(*merged, prompt, g, at::kCPU, &b).ok());
  EXPECT_EQ(a, b);

  // A PEFT folder whose tensors do not fit is refused with the key named.
  const std::string bad = dir_.File("bad-adapter");
  fs::create_directories(bad);
  fs::copy_file(s.final_adapter + "/" + hf::kPeftConfigFile,
                bad + "/" + hf::kPeftConfigFile);
  ASSERT_TRUE(WriteSafetensors(bad + "/" + hf::kPeftWeightsFile,
                               {{"base_model.model.model.layers.0.self_attn."
                                 "q_proj.lora_A.weight",
                                 at::zeros({3, 3})}})
                  .ok());
  ASSERT_TRUE(LoadPretrainedModel(f, at::kFloat, &base, nullptr).ok());
  st = AdaptedModel::LoadPeft(bad, at::kFloat, std::move(base), &adapted);
  EXPECT_EQ(st.code, TrainStatus::kInvalidInput);
  EXPECT_THAT(st.message, HasSubstr("q_proj.lora_A.weight"));
}

TEST_F(AdapterTest, BadAdapterSettingsNameTheField) {
  const std::string f = MakeFolder("bad-llama", "--arch llama");
  struct Case {
    std::function<void(TrainOptions&)> edit;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {[](TrainOptions& o) { o.adapter.target_modules = {"qproj"}; },
       "adapter.target_modules: 'qproj' matches no linear layer"},
      {[](TrainOptions& o) { o.adapter.rank = 0; }, "adapter.rank"},
      {[](TrainOptions& o) { o.adapter.dropout = 1.0; }, "adapter.dropout"},
      {[](TrainOptions& o) { o.adapter.modules_to_save = {"lm_hed"}; },
       "adapter.modules_to_save: 'lm_hed'"},
      {[](TrainOptions& o) {
         o.adapter.kind = AdapterKind::kNone;
         o.output.merge = true;
       },
       "output.merge needs an adapter"},
  };
  for (const Case& c : cases) {
    TrainOptions o = LoraJob(f, 2);
    c.edit(o);
    TrainStatus st = Run(o, nullptr);
    EXPECT_EQ(st.code, TrainStatus::kInvalidInput) << c.needle;
    EXPECT_THAT(st.message, HasSubstr(c.needle));
  }
  // A model without decoder linear layers.
  TrainOptions mlp;
  mlp.model.builtin = "mlp";
  mlp.data.kind = DataKind::kTensors;
  mlp.data.path = dir_.File("regression.pt");
  mlp.model.loss = LossKind::kMse;
  mlp.steps = 1;
  mlp.adapter.kind = AdapterKind::kLora;
  TrainStatus st = Run(mlp, nullptr);
  EXPECT_EQ(st.code, TrainStatus::kInvalidInput);
  EXPECT_THAT(st.message, HasSubstr("no linear layers an adapter can wrap"));
}

TEST_F(AdapterTest, ModulesToSaveTrainInFullAndExportUnderPeftNames) {
  const std::string f = MakeFolder("save-llama", "--arch llama");
  TrainOptions o = LoraJob(f, 3);
  o.adapter.target_modules = {"q_proj"};
  o.adapter.modules_to_save = {"lm_head"};
  TrainSummary s;
  TrainStatus st = Run(o, nullptr, &s);
  ASSERT_TRUE(st.ok()) << st.message;
  const auto adapter = ReadSafetensorsHere(s.final_adapter + "/" +
                                           std::string(hf::kPeftWeightsFile));
  ASSERT_EQ(adapter.count("base_model.model.lm_head.weight"), 1u);
  const auto base = ReadSafetensorsHere(f + "/model.safetensors");
  EXPECT_FALSE(at::equal(adapter.at("base_model.model.lm_head.weight").values,
                         base.at("lm_head.weight").values));
  EXPECT_EQ(
      s.trainable_parameters, base.at("lm_head.weight").values.numel() + [&] {
        int64_t n = 0;
        for (const auto& [k, e] : adapter) {
          if (k.find("lora_") != std::string::npos) {
            n += e.values.numel();
          }
        }
        return n;
      }());
}

}  // namespace
}  // namespace halftime::engine
