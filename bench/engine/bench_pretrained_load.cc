// Peak memory of loading a Hugging Face folder: builds the model from DIR
// in one training dtype and prints, as one JSON line, the weights' bytes in
// that dtype, the process's resident set before the load, and its peak
// (VmHWM) after. Run by bench/engine/pretrained_load.py, one process per
// dtype (a peak only grows).
//
//   bench_pretrained_load DIR bf16|fp32

#include <ATen/ATen.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/hf/pretrained.h"
#include "engine/models/families.h"

namespace {

// The kB value of `key` ("VmRSS", "VmHWM") in /proc/self/status.
long StatusKb(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0)
      return std::stol(line.substr(key.size() + 1));
  }
  return -1;
}

// Starts VmHWM again from the current resident set, so that a transient
// peak of start-up is not taken for the load's.
void ResetPeak() { std::ofstream("/proc/self/clear_refs") << "5"; }

}  // namespace

int main(int argc, char** argv) {
  using namespace halftime::engine;
  if (argc != 3 ||
      (std::string(argv[2]) != "bf16" && std::string(argv[2]) != "fp32")) {
    std::fprintf(stderr, "usage: %s DIR bf16|fp32\n", argv[0]);
    return 2;
  }
  const at::ScalarType dtype =
      std::string(argv[2]) == "bf16" ? at::kBFloat16 : at::kFloat;
  // libtorch's own start-up allocations happen before the baseline.
  (void)at::ones({16}).to(dtype).sum().item<double>();
  ResetPeak();
  const long rss_before = StatusKb("VmRSS");
  std::unique_ptr<hf::PretrainedFolder> folder;
  TrainStatus st = hf::PretrainedFolder::Open(argv[1], &folder);
  std::unique_ptr<TrainModel> model;
  if (st.ok())
    st = PretrainedBuilderFor(folder->config().family)(*folder, dtype, &model);
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", st.message.c_str());
    return 2;
  }
  int64_t bytes = 0;
  for (const auto& [name, p] : model->NamedParameters()) bytes += p.nbytes();
  const nlohmann::json line = {{"dtype", argv[2]},
                               {"weight_bytes", bytes},
                               {"rss_before_kb", rss_before},
                               {"peak_kb", StatusKb("VmHWM")}};
  std::printf("%s\n", line.dump().c_str());
  return 0;
}
