// The memory estimate (common/memory_estimate.h) against measured peaks:
// real halftime-train runs of GPT and Llama shapes, full fine-tunes and
// LoRA, in fp32, bf16-mixed and bf16-pure and on fp32, bf16, int8 and nf4
// bases, each within 15% of the peak the run reports (the counting CPU
// allocator's, or the CUDA allocator's where the trainer runs on a GPU).

#include "common/memory_estimate.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "base/cpu_info.h"
#include "common/spec.h"

namespace halftime {
namespace {

namespace fs = std::filesystem;

class MemoryEstimateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::system("/usr/bin/python3 -c 'import torch' 2>/dev/null") != 0) {
      GTEST_SKIP() << "/usr/bin/python3 with torch is missing";
    }
    dir_ = fs::temp_directory_path() /
           ("halftime-mem-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    // A Llama shape wide enough that weights and activations both count.
    llama_ = (dir_ / "llama").string();
    ASSERT_EQ(Shell(std::string("/usr/bin/python3 ") + HALFTIME_HF_REFERENCE +
                    " make " + llama_ +
                    " --arch llama --hidden 256 --intermediate 688 --layers 4 "
                    "--vocab 2048 --max-positions 256"),
              0);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  static int Shell(const std::string& command) {
    const int status = std::system(command.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  static std::string Read(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // Runs `body` (the spec's lines past the name) and returns the measured
  // peak next to the estimate for the spec's precision and base dtype.
  void Check(const std::string& name, const std::string& body) {
    SCOPED_TRACE(name);
    const fs::path spec_path = dir_ / (name + ".yaml");
    std::ofstream(spec_path) << "name: " << name << "\n" << body;
    const fs::path out = dir_ / ("out-" + name);
    const std::string command = std::string(HALFTIME_TRAIN_BINARY) + " '" +
                                spec_path.string() + "' --out '" +
                                out.string() +
                                "' --threads 1 --quiet --allow-emulation 2>" +
                                (dir_ / "stderr.txt").string();
    ASSERT_EQ(Shell(command), 0) << Read(dir_ / "stderr.txt");
    const nlohmann::json summary =
        nlohmann::json::parse(Read(out / "summary.json"));
    const int64_t measured = summary["peak_memory_bytes"].get<int64_t>();

    absl::StatusOr<v1::JobSpec> spec = LoadJobSpecFile(spec_path.string(), {});
    ASSERT_TRUE(spec.ok()) << spec.status();
    absl::StatusOr<v1::ModelShape> shape = ModelShapeOf(*spec, true);
    ASSERT_TRUE(shape.ok()) << shape.status();
    // On a CUDA machine the trainer runs there and reports the CUDA
    // allocator's peak.
    EstimateDevice device;
    device.cuda = summary["device"].get<std::string>().rfind("cuda", 0) == 0;
    device.bf16_emulated = !device.cuda && !cpu::HasNativeBf16(cpu::Flags());
    const v1::MemoryEstimate e = EstimateMemory(
        *spec, *shape, spec->precision(), spec->adapter().base_dtype(), device);
    const double error =
        (static_cast<double>(e.total_bytes()) - measured) / measured;
    std::printf(
        "%-22s measured %8.2f MiB  estimated %8.2f MiB (%+.1f%%): weights "
        "%.2f grads %.2f optimizer %.2f activations %.2f workspace %.2f\n",
        name.c_str(), measured / 1048576.0, e.total_bytes() / 1048576.0,
        100 * error, e.weight_bytes() / 1048576.0,
        e.gradient_bytes() / 1048576.0, e.optimizer_state_bytes() / 1048576.0,
        e.activation_bytes() / 1048576.0, e.workspace_bytes() / 1048576.0);
    EXPECT_LE(std::abs(error), 0.15)
        << "measured " << measured << " estimated " << e.total_bytes();
    // The run's own parameter counts agree with the estimator's.
    const ParameterCount count = CountParameters(*spec, *shape);
    EXPECT_EQ(summary["parameters"].get<int64_t>(), count.total);
    EXPECT_EQ(summary["trainable_parameters"].get<int64_t>(), count.trainable);
  }

  std::string Llama() const { return "model: {pretrained: " + llama_ + "}\n"; }

  fs::path dir_;
  std::string llama_;
};

constexpr const char* kGptData =
    "model: {builtin: gpt-micro}\n"
    "data: {kind: synthetic, seq_len: 128, vocab_size: 256}\n";
constexpr const char* kLlamaData =
    "data: {kind: synthetic, seq_len: 128, vocab_size: 2048}\n";
constexpr const char* kRun =
    "batch_size: 4\nsteps: 3\neval: {every_steps: 0, batches: 1}\n"
    "checkpoint: {every_steps: 0}\nsavings: {baseline: none}\n";

TEST_F(MemoryEstimateTest, GptFullFineTunes) {
  Check("gpt-fp32", std::string(kGptData) + kRun + "precision: fp32\n");
  Check("gpt-bf16-mixed",
        std::string(kGptData) + kRun + "precision: bf16-mixed\n");
  Check("gpt-bf16-pure",
        std::string(kGptData) + kRun + "precision: bf16-pure\n");
}

TEST_F(MemoryEstimateTest, LlamaFullFineTunes) {
  Check("llama-fp32", Llama() + kLlamaData + kRun + "precision: fp32\n");
  Check("llama-bf16-mixed",
        Llama() + kLlamaData + kRun + "precision: bf16-mixed\n");
}

TEST_F(MemoryEstimateTest, LlamaLora) {
  Check("lora-fp32", Llama() + kLlamaData + kRun +
                         "precision: fp32\n"
                         "adapter: {kind: lora, rank: 16, target_modules: "
                         "all-linear}\n");
  Check("lora-bf16-mixed", Llama() + kLlamaData + kRun +
                               "precision: bf16-mixed\n"
                               "adapter: {kind: lora, rank: 8}\n");
  Check("lora-nf4", Llama() + kLlamaData + kRun +
                        "precision: bf16-mixed\n"
                        "adapter: {kind: lora, rank: 8, base_dtype: nf4, "
                        "target_modules: all-linear}\n");
  Check("lora-int8-fp32", Llama() + kLlamaData + kRun +
                              "precision: fp32\n"
                              "adapter: {kind: lora, base_dtype: int8, "
                              "target_modules: [q_proj, v_proj, down_proj]}\n");
}

TEST_F(MemoryEstimateTest, GptLora) {
  Check("gpt-lora-fp32", std::string(kGptData) + kRun +
                             "precision: fp32\n"
                             "adapter: {kind: lora, rank: 8}\n");
}

}  // namespace
}  // namespace halftime
