// Hugging Face folders (config.json + safetensors) trained by the engine,
// against a plain-PyTorch rebuild of the same models from transformers'
// published modelling rules (python/hf_reference.py): loss parity per
// architecture in fp32 and bf16-mixed, and hostile folders refused with the
// file and tensor named. Skipped only when /usr/bin/python3 or its torch is
// missing.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/generate.h"
#include "engine/hf/export.h"
#include "engine/train.h"
#include "tests/engine/python_fixture.h"
#include "tests/engine/test_util.h"

namespace halftime::engine {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::PythonTorchAvailable;
using testing::RunPython;
using testing::ScratchDir;

constexpr int kSteps = 6;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class PretrainedTest : public testing::PythonFixtureTest {
 protected:
  // Writes a folder with hf_reference.py make; returns its path.
  std::string MakeFolder(const std::string& name, const std::string& args) {
    const std::string folder = dir_.File(name);
    EXPECT_EQ(RunPython("hf_reference.py", "make " + folder + " " + args), 0);
    return folder;
  }

  TrainOptions Job(const std::string& folder, Precision p) {
    TrainOptions o;
    o.model.pretrained = folder;
    o.data.kind = DataKind::kTensors;
    o.data.path = dir_.File("tokens.pt");  // 64-token vocab, 32-token rows
    o.data.shuffle = false;
    o.data.eval_fraction = 0.1;
    o.precision = p;
    o.allow_emulation = true;  // bf16 emulated where the CPU lacks it
    o.batch_size = 4;
    o.steps = kSteps;
    o.optimizer.lr = 1e-3;
    o.max_grad_norm = 1.0;
    o.threads = 1;
    o.eval.every_steps = 0;
    o.checkpoint.every_steps = 0;
    o.out_dir = dir_.File("out-" + fs::path(folder).filename().string());
    return o;
  }

  TrainStatus OurLosses(const TrainOptions& o, std::vector<double>* losses) {
    TrainCallbacks cb;
    cb.on_step = [&](const StepReport& r) { losses->push_back(r.loss); };
    return Train(o, cb, nullptr);
  }

  std::vector<double> TheirLosses(const std::string& folder,
                                  const std::string& precision) {
    const std::string out = folder + "-py-" + precision + ".txt";
    EXPECT_EQ(RunPython("hf_reference.py",
                        "train " + folder + " " + dir_.File("tokens.pt") + " " +
                            out + " --precision " + precision + " --steps " +
                            std::to_string(kSteps) +
                            " --batch 4 --lr 1e-3 --eval-fraction 0.1"),
              0);
    return testing::ReadNumbers(out);
  }

  void ExpectParity(const std::string& folder, Precision p,
                    const std::string& precision, double rel_tol) {
    std::vector<double> ours;
    TrainStatus st = OurLosses(Job(folder, p), &ours);
    ASSERT_TRUE(st.ok()) << st.message;
    const std::vector<double> theirs = TheirLosses(folder, precision);
    ASSERT_EQ(ours.size(), static_cast<size_t>(kSteps));
    ASSERT_EQ(theirs.size(), static_cast<size_t>(kSteps));
    for (size_t i = 0; i < ours.size(); ++i) {
      EXPECT_LE(std::abs(ours[i] - theirs[i]) / std::abs(theirs[i]), rel_tol)
          << folder << " step " << i + 1 << ": ours " << ours[i] << " pytorch "
          << theirs[i];
    }
    // It trained: the loss fell.
    EXPECT_LT(ours.back(), ours.front()) << folder;
  }

  // Trains `folder` and expects kInvalidInput with every `needles` in the
  // message.
  void ExpectRefused(const std::string& folder,
                     const std::vector<std::string>& needles) {
    std::vector<double> losses;
    TrainStatus st = OurLosses(Job(folder, Precision::kFp32), &losses);
    EXPECT_EQ(st.code, TrainStatus::kInvalidInput) << st.message;
    for (const std::string& n : needles) {
      EXPECT_THAT(st.message, HasSubstr(n));
    }
    EXPECT_TRUE(losses.empty());
  }
};

TEST_F(PretrainedTest, LlamaShardedBf16StorageLlama3RopeMatchesPyTorch) {
  const std::string f = MakeFolder("llama",
                                   "--arch llama --dtype bfloat16 --shards 2 "
                                   "--rope llama3");
  ExpectParity(f, Precision::kFp32, "fp32", 1e-4);
  ExpectParity(f, Precision::kBf16Mixed, "bf16-mixed", 1e-2);
}

TEST_F(PretrainedTest, MistralTiedLinearRopeMatchesPyTorch) {
  const std::string f =
      MakeFolder("mistral", "--arch mistral --tied --rope linear");
  ExpectParity(f, Precision::kFp32, "fp32", 1e-4);
}

TEST_F(PretrainedTest, Qwen2QkvBiasFp16StorageMatchesPyTorch) {
  const std::string f = MakeFolder("qwen2", "--arch qwen2 --dtype float16");
  ExpectParity(f, Precision::kFp32, "fp32", 1e-4);
}

TEST_F(PretrainedTest, Qwen3QkNormAndWideHeadsMatchPyTorch) {
  const std::string f = MakeFolder("qwen3", "--arch qwen3 --tied");
  ExpectParity(f, Precision::kFp32, "fp32", 1e-4);
  ExpectParity(f, Precision::kBf16Mixed, "bf16-mixed", 1e-2);
}

TEST_F(PretrainedTest, Gpt2Conv1DMatchesPyTorch) {
  const std::string f = MakeFolder("gpt2", "--arch gpt2");
  ExpectParity(f, Precision::kFp32, "fp32", 1e-4);
  ExpectParity(f, Precision::kBf16Mixed, "bf16-mixed", 1e-2);
}

TEST_F(PretrainedTest, Bf16MasterAndPureTrainFromTheFolder) {
  const std::string f = MakeFolder("llama", "--arch llama --dtype bfloat16");
  for (Precision p : {Precision::kBf16Master, Precision::kBf16Pure}) {
    std::vector<double> losses;
    TrainOptions o = Job(f, p);
    o.steps = 10;
    TrainStatus st = OurLosses(o, &losses);
    ASSERT_TRUE(st.ok()) << st.message;
    ASSERT_EQ(losses.size(), 10u);
    EXPECT_LT(losses.back(), losses.front());
  }
}

TEST_F(PretrainedTest, FinalWeightsKeepHuggingFaceNamesAndShapes) {
  const std::string f = MakeFolder("llama", "--arch llama --dtype bfloat16");
  TrainOptions o = Job(f, Precision::kBf16Mixed);
  o.steps = 2;
  TrainSummary summary;
  TrainStatus st = Train(o, TrainCallbacks(), &summary);
  ASSERT_TRUE(st.ok()) << st.message;
  NamedTensors before, after;
  ASSERT_TRUE(ReadSafetensors(f + "/model.safetensors", &before).ok());
  ASSERT_TRUE(ReadSafetensors(summary.final_weights, &after).ok());
  std::map<std::string, std::vector<int64_t>> want, got;
  for (const auto& [name, t] : before) want[name] = t.sizes().vec();
  for (const auto& [name, t] : after) got[name] = t.sizes().vec();
  EXPECT_EQ(got, want);
}

// Every tensor of a folder's safetensors files, by name.
std::map<std::string, at::Tensor> FolderTensors(const std::string& folder) {
  std::map<std::string, at::Tensor> out;
  for (const auto& entry : fs::directory_iterator(folder)) {
    if (entry.path().extension() != ".safetensors") continue;
    NamedTensors t;
    EXPECT_TRUE(ReadSafetensors(entry.path().string(), &t).ok());
    for (auto& [name, value] : t) out[name] = value;
  }
  return out;
}

TEST_F(PretrainedTest, ExportWithoutStepsGivesBackTheSameTensorsExactly) {
  for (const auto& [name, args] :
       std::vector<std::pair<std::string, std::string>>{
           {"llama32", "--arch llama --shards 2 --rope llama3"},
           {"qwen3bf16", "--arch qwen3 --tied --dtype bfloat16"},
           {"gpt2", "--arch gpt2"}}) {
    SCOPED_TRACE(name);
    const std::string f = MakeFolder(name, args);
    TrainOptions o = Job(f, Precision::kFp32);
    o.steps = 0;  // load, then export: a conversion
    TrainSummary summary;
    TrainStatus st = Train(o, TrainCallbacks(), &summary);
    ASSERT_TRUE(st.ok()) << st.message;
    ASSERT_EQ(summary.final_hf, o.out_dir + "/hf");
    EXPECT_EQ(ReadAll(f + "/config.json"),
              ReadAll(summary.final_hf + "/config.json"));
    std::map<std::string, at::Tensor> source = FolderTensors(f);
    // GPT-2's causal-mask buffers are recomputed, not weights.
    for (auto it = source.begin(); it != source.end();) {
      it = it->first.size() > 10 && it->first.compare(it->first.size() - 10, 10,
                                                      ".attn.bias") == 0
               ? source.erase(it)
               : std::next(it);
    }
    const std::map<std::string, at::Tensor> exported =
        FolderTensors(summary.final_hf);
    ASSERT_EQ(exported.size(), source.size());
    for (const auto& [tensor, value] : source) {
      ASSERT_TRUE(exported.count(tensor)) << tensor;
      EXPECT_EQ(exported.at(tensor).scalar_type(), value.scalar_type())
          << tensor;
      EXPECT_TRUE(at::equal(exported.at(tensor), value)) << tensor;
    }
  }
}

TEST_F(PretrainedTest, OutputDtypeConvertsAndCheckpointsCarryAnExport) {
  const std::string f =
      MakeFolder("llama-bf16", "--arch llama --dtype bfloat16");
  TrainOptions o = Job(f, Precision::kFp32);
  o.steps = 4;
  o.checkpoint.every_steps = 2;
  o.checkpoint.keep = 1;
  o.output.dtype = ExportDtype::kFp32;
  o.output.export_with_checkpoints = true;
  TrainSummary summary;
  TrainStatus st = Train(o, TrainCallbacks(), &summary);
  ASSERT_TRUE(st.ok()) << st.message;
  for (const auto& [name, t] : FolderTensors(summary.final_hf)) {
    EXPECT_EQ(t.scalar_type(), at::kFloat) << name;
  }
  // The newest checkpoint has its export beside it; the pruned one's went
  // with it.
  const fs::path ckpts = fs::path(o.out_dir) / "checkpoints";
  EXPECT_TRUE(fs::exists(ckpts / "step-00000004.hf" / "config.json"));
  EXPECT_TRUE(fs::exists(ckpts / "step-00000004.hf" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(ckpts / "step-00000002.hf"));
  EXPECT_FALSE(fs::exists(ckpts / "step-00000002.ckpt"));
  // The final export and the last checkpoint's hold the same weights.
  const auto last = FolderTensors((ckpts / "step-00000004.hf").string());
  for (const auto& [name, t] : FolderTensors(summary.final_hf)) {
    EXPECT_TRUE(at::equal(t, last.at(name))) << name;
  }
}

// Greedy generation with the KV cache gives the tokens a plain-PyTorch
// full recompute picks, per architecture, and the cached logits equal the
// uncached ones.
TEST_F(PretrainedTest, GreedyGenerationMatchesPyTorch) {
  for (const auto& [name, args] :
       std::vector<std::pair<std::string, std::string>>{
           {"gen-llama", "--arch llama --rope llama3"},
           {"gen-qwen2", "--arch qwen2"},
           {"gen-qwen3", "--arch qwen3 --tied"},
           {"gen-gpt2", "--arch gpt2"}}) {
    SCOPED_TRACE(name);
    const std::string f = MakeFolder(name, args);
    std::unique_ptr<TrainModel> model;
    TrainStatus st = LoadPretrainedModel(f, at::kFloat, &model, nullptr);
    ASSERT_TRUE(st.ok()) << st.message;
    const std::vector<int32_t> prompt = {5, 17, 42, 3, 77, 11};
    GenerateOptions g;
    g.max_new_tokens = 12;
    std::vector<int32_t> ours;
    st = Generate(*model, prompt, g, at::kCPU, &ours);
    ASSERT_TRUE(st.ok()) << st.message;
    const std::string out = dir_.File(name + "-greedy.txt");
    ASSERT_EQ(RunPython("hf_reference.py", "greedy " + f + " " + out +
                                               " --new 12 --prompt " +
                                               "5,17,42,3,77,11"),
              0);
    std::vector<int32_t> theirs;
    for (double v : testing::ReadNumbers(out)) {
      theirs.push_back(static_cast<int32_t>(v));
    }
    EXPECT_EQ(ours, theirs);

    // One pass over prompt + completion against the cache's steps.
    at::NoGradGuard no_grad;
    std::vector<int64_t> all(prompt.begin(), prompt.end());
    all.insert(all.end(), ours.begin(), ours.end());
    const at::Tensor ids = at::tensor(all, at::kLong).unsqueeze(0);
    const at::Tensor full = model->Output(Batch(ids, ids));
    KvCache cache;
    std::vector<at::Tensor> pieces = {
        model->Decode(ids.narrow(1, 0, 6), &cache)};
    for (int64_t t = 6; t < ids.size(1); ++t) {
      pieces.push_back(model->Decode(ids.narrow(1, t, 1), &cache));
    }
    EXPECT_EQ(cache.length, ids.size(1));
    EXPECT_TRUE(at::allclose(at::cat(pieces, 1), full, 1e-4, 1e-5));
  }
}

TEST_F(PretrainedTest, SamplingIsSeededAndTopPKeepsTheLikeliest) {
  const std::string f = MakeFolder("sample", "--arch llama");
  std::unique_ptr<TrainModel> model;
  ASSERT_TRUE(LoadPretrainedModel(f, at::kFloat, &model, nullptr).ok());
  GenerateOptions g;
  g.max_new_tokens = 16;
  g.temperature = 1.0;
  g.seed = 7;
  std::vector<int32_t> a, b, c, greedy, nucleus;
  ASSERT_TRUE(Generate(*model, {1, 2, 3}, g, at::kCPU, &a).ok());
  ASSERT_TRUE(Generate(*model, {1, 2, 3}, g, at::kCPU, &b).ok());
  g.seed = 8;
  ASSERT_TRUE(Generate(*model, {1, 2, 3}, g, at::kCPU, &c).ok());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // A nucleus too small for a second token is greedy decoding.
  g.top_p = 1e-6;
  ASSERT_TRUE(Generate(*model, {1, 2, 3}, g, at::kCPU, &nucleus).ok());
  g = GenerateOptions();
  g.max_new_tokens = 16;
  ASSERT_TRUE(Generate(*model, {1, 2, 3}, g, at::kCPU, &greedy).ok());
  EXPECT_EQ(nucleus, greedy);
  // Stop ids end the completion, and are kept.
  g.stop_ids = {greedy[3]};
  std::vector<int32_t> stopped;
  ASSERT_TRUE(Generate(*model, {1, 2, 3}, g, at::kCPU, &stopped).ok());
  const auto first = std::find(greedy.begin(), greedy.end(), greedy[3]);
  EXPECT_EQ(stopped, std::vector<int32_t>(greedy.begin(), first + 1));
  // Bad prompts are refused, not crashed on.
  std::vector<int32_t> none;
  EXPECT_EQ(Generate(*model, {}, g, at::kCPU, &none).code,
            TrainStatus::kInvalidInput);
  EXPECT_EQ(Generate(*model, {100000}, g, at::kCPU, &none).code,
            TrainStatus::kInvalidInput);
  // Generation stops when the sequence fills the 64-position context; a
  // prompt that fills it leaves nothing to generate.
  std::vector<int32_t> long_prompt(60, 7), tail;
  g = GenerateOptions();
  g.max_new_tokens = 16;
  ASSERT_TRUE(Generate(*model, long_prompt, g, at::kCPU, &tail).ok());
  EXPECT_EQ(tail.size(), 4u);
  EXPECT_EQ(
      Generate(*model, std::vector<int32_t>(64, 7), g, at::kCPU, &none).code,
      TrainStatus::kInvalidInput);
}

TEST_F(PretrainedTest, ExportShardsPastTheShardSizeWithAnIndex) {
  const std::string f = MakeFolder("llama", "--arch llama");
  NamedTensors weights;
  std::vector<HfTensor> layout;
  for (const auto& [name, value] : FolderTensors(f)) {
    weights.emplace_back(name, value);
    layout.push_back({name, name, false});
  }
  const std::string out = dir_.File("sharded-export");
  ASSERT_TRUE(hf::ExportFolder(f, layout, weights, at::kBFloat16, out,
                               /*max_shard_bytes=*/40000)
                  .ok());
  EXPECT_TRUE(fs::exists(out + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(out + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(out + ".tmp"));
  int shards = 0;
  for (const auto& e : fs::directory_iterator(out)) {
    if (e.path().extension() == ".safetensors") {
      ++shards;
      EXPECT_LE(fs::file_size(e.path()), 40000u + 4096u) << e.path();
    }
  }
  EXPECT_GT(shards, 2);
  // The engine and the plain-PyTorch reference both read it back: the
  // first losses agree with those of the source (rounded to bf16).
  std::vector<double> ours;
  TrainOptions o = Job(out, Precision::kFp32);
  o.steps = 2;
  ASSERT_TRUE(OurLosses(o, &ours).ok());
  const std::vector<double> theirs = TheirLosses(out, "fp32");
  ASSERT_EQ(theirs.size(), static_cast<size_t>(kSteps));
  EXPECT_NEAR(ours[0], theirs[0], 1e-4 * theirs[0]);
  EXPECT_NEAR(ours[1], theirs[1], 1e-4 * theirs[1]);
}

// Rewrites the JSON text of `path` by replacing `from` with `to`.
void Edit(const std::string& path, const std::string& from,
          const std::string& to) {
  std::string text = ReadAll(path);
  const size_t at = text.find(from);
  ASSERT_NE(at, std::string::npos) << from << " not in " << path;
  text.replace(at, from.size(), to);
  testing::WriteBytes(path, text);
}

TEST_F(PretrainedTest, HostileFoldersNameTheFileAndTheCause) {
  const std::string base = MakeFolder("base", "--arch llama");
  const std::string st_file = "model.safetensors";
  auto copy = [&](const std::string& name) {
    const std::string to = dir_.File(name);
    fs::copy(base, to, fs::copy_options::recursive);
    return to;
  };

  // No folder at all, and a folder without config.json.
  ExpectRefused(dir_.File("nowhere"), {"nowhere"});
  {
    const std::string f = copy("noconfig");
    fs::remove(f + "/config.json");
    ExpectRefused(f, {"config.json"});
  }
  // An architecture with no model code.
  {
    const std::string f = copy("arch");
    Edit(f + "/config.json", "LlamaForCausalLM", "FalconForCausalLM");
    ExpectRefused(f, {"config.json", "FalconForCausalLM", "LlamaForCausalLM"});
  }
  // A config field of the wrong type.
  {
    const std::string f = copy("field");
    Edit(f + "/config.json", "\"num_attention_heads\": 4",
         "\"num_attention_heads\": \"four\"");
    ExpectRefused(f, {"num_attention_heads"});
  }
  // A config whose shapes disagree with the weights.
  {
    const std::string f = copy("shape");
    Edit(f + "/config.json", "\"intermediate_size\": 112",
         "\"intermediate_size\": 128");
    ExpectRefused(f, {"model.layers.0.mlp.gate_proj.weight", "112", "128"});
  }
  // A vocabulary smaller than the data's ids.
  {
    const std::string f = copy("vocab");
    Edit(f + "/config.json", "\"vocab_size\": 96", "\"vocab_size\": 32");
    ExpectRefused(f, {"token id", "vocab_size 32"});
  }
  // A truncated weights file.
  {
    const std::string f = copy("cut");
    const std::string all = ReadAll(f + "/" + st_file);
    testing::WriteBytes(f + "/" + st_file, all.substr(0, all.size() - 100));
    ExpectRefused(f, {st_file});
  }
  // A header that lies: a tensor's range reaches past the file.
  {
    const std::string f = copy("lying");
    std::string all = ReadAll(f + "/" + st_file);
    const size_t at = all.find("\"data_offsets\":[0,");
    const size_t at2 = all.find("\"data_offsets\": [0, ");
    ASSERT_TRUE(at != std::string::npos || at2 != std::string::npos);
    // Grow the first tensor's end offset by a digit: past the file and
    // overlapping the next tensor.
    const size_t comma = all.find(',', at != std::string::npos ? at : at2);
    const size_t space = all.find_first_not_of(' ', comma + 1);
    all.insert(space, "9");
    // Keep the 8-byte length prefix consistent with the longer header.
    uint64_t n = 0;
    std::memcpy(&n, all.data(), 8);
    ++n;
    std::memcpy(all.data(), &n, 8);
    testing::WriteBytes(f + "/" + st_file, all);
    ExpectRefused(f, {st_file, "model.embed_tokens.weight"});
  }
  // A tensor the model does not use, and one it needs that is missing.
  {
    const std::string f = dir_.File("extra");
    ASSERT_EQ(RunPython("hf_reference.py", "make " + f + " --arch llama"), 0);
    ASSERT_EQ(std::system(("/usr/bin/python3 -c \"import sys; sys.path.insert("
                           "0, '" HALFTIME_ENGINE_PYTHON_DIR
                           "'); import safetensors_io as s, torch; "
                           "t, m = s.read('" +
                           f + "/" + st_file +
                           "'); t['model.layers.0.extra.weight'] = "
                           "torch.zeros(3); del t['model.norm.weight']; "
                           "s.write('" +
                           f + "/" + st_file + "', t, m)\"")
                              .c_str()),
              0);
    ExpectRefused(f, {"model.norm.weight"});
    ASSERT_EQ(std::system(("/usr/bin/python3 -c \"import sys; sys.path.insert("
                           "0, '" HALFTIME_ENGINE_PYTHON_DIR
                           "'); import safetensors_io as s, torch; "
                           "t, m = s.read('" +
                           f + "/" + st_file +
                           "'); t['model.norm.weight'] = torch.ones(64); "
                           "s.write('" +
                           f + "/" + st_file + "', t, m)\"")
                              .c_str()),
              0);
    ExpectRefused(f, {"model.layers.0.extra.weight"});
  }
  // A sharded folder whose index names a file outside it, and one whose
  // index points a tensor at a shard that lacks it.
  {
    const std::string f = MakeFolder("sharded", "--arch llama --shards 2");
    const std::string index = f + "/model.safetensors.index.json";
    const std::string text = ReadAll(index);
    Edit(index, "\"model-00002-of-00002.safetensors\"",
         "\"../base/model.safetensors\"");
    ExpectRefused(f, {"model.safetensors.index.json", "../base"});
    testing::WriteBytes(index, text);
    Edit(index, "\"model.norm.weight\": \"model-00002-of-00002.safetensors\"",
         "\"model.norm.weight\": \"model-00001-of-00002.safetensors\"");
    ExpectRefused(f, {"model.norm.weight", "model-00001-of-00002.safetensors"});
  }
}

}  // namespace
}  // namespace halftime::engine
