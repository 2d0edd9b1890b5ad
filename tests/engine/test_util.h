// Helpers shared by the trainer tests: scratch directories, small corpora,
// tiny model options, and running /usr/bin/python3.

#ifndef HALFTIME_TESTS_ENGINE_TEST_UTIL_H_
#define HALFTIME_TESTS_ENGINE_TEST_UTIL_H_

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/options.h"

namespace halftime::engine::testing {

// A fresh directory under TEST_TMPDIR or /tmp, removed on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/halftime-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    path_ = mkdtemp(buf.data());
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// The whitespace-separated numbers in `path` (a reference script's losses
// or loss scales); empty when it cannot be read.
inline std::vector<double> ReadNumbers(const std::string& path) {
  std::vector<double> v;
  std::ifstream in(path);
  double x;
  while (in >> x) v.push_back(x);
  return v;
}

// Deterministic English-like text: sentences drawn from a small grammar.
inline std::string MakeCorpus(size_t bytes, uint32_t seed = 1) {
  static const char* kSubjects[] = {"the cat",     "a dog",       "my friend",
                                    "the old man", "our teacher", "the bird"};
  static const char* kVerbs[] = {"sees",    "likes",   "finds",
                                 "carries", "watches", "follows"};
  static const char* kObjects[] = {"the ball",      "a red apple",
                                   "the small box", "a green hat",
                                   "the river",     "some bread"};
  std::string out;
  uint32_t x = seed;
  auto next = [&x](uint32_t n) {
    x = x * 1664525u + 1013904223u;
    return (x >> 16) % n;
  };
  while (out.size() < bytes) {
    out += kSubjects[next(6)];
    out += ' ';
    out += kVerbs[next(6)];
    out += ' ';
    out += kObjects[next(6)];
    out += next(4) == 0 ? ".\n" : ". ";
  }
  out.resize(bytes);
  return out;
}

// A tiny GPT job on a text file: fast enough for unit tests.
inline TrainOptions TinyTextJob(const std::string& text_path) {
  TrainOptions o;
  o.model.builtin = "gpt-nano";
  o.model.gpt.n_layer = 2;
  o.model.gpt.n_embd = 64;
  o.model.gpt.n_head = 4;
  o.model.gpt.block_size = 64;
  o.data.kind = DataKind::kText;
  o.data.path = text_path;
  o.data.seq_len = 32;
  o.batch_size = 8;
  o.steps = 10;
  o.threads = 1;  // 2 threads spin-wait badly on a loaded 2-core box
  o.precision = Precision::kFp32;
  // bf16 modes run emulated on a CPU without native bf16 (and natively
  // where it has it), so every test covers this machine's bf16 path.
  o.allow_emulation = true;
  o.optimizer.lr = 3e-3;
  o.eval.every_steps = 0;
  o.eval.batches = 4;
  o.checkpoint.every_steps = 0;
  o.seed = 5;
  return o;
}

// The GPT job python/gpt_parity.py mirrors, over `tokens_path` (the
// tokens.pt of make_fixtures.py), walking the data in order.
inline TrainOptions GptParityJob(Precision p, const std::string& tokens_path) {
  TrainOptions o;
  o.model.builtin = "gpt-nano";
  o.model.gpt = {2, 64, 4, 32, 0};
  o.data.kind = DataKind::kTensors;
  o.data.path = tokens_path;
  o.data.shuffle = false;
  o.data.eval_fraction = 0.1;
  o.precision = p;
  o.allow_emulation = true;  // as TinyTextJob
  o.batch_size = 8;
  o.steps = 20;
  o.optimizer.lr = 1e-3;
  o.max_grad_norm = 1.0;
  o.threads = 1;
  o.eval.every_steps = 0;
  o.checkpoint.every_steps = 0;
  o.seed = 3;
  return o;
}

// gpt_parity.py's arguments for GptParityJob, after WEIGHTS DATA OUT and
// --precision.
inline constexpr const char* kGptParityArgs =
    "--steps 20 --batch 8 --lr 1e-3 --n-layer 2 --n-embd 64 --n-head 4 "
    "--eval-fraction 0.1";

inline const char* kPython = "/usr/bin/python3";

// True when /usr/bin/python3 can import torch.
inline bool PythonTorchAvailable() {
  static const bool ok =
      std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
  return ok;
}

// Runs /usr/bin/python3 SCRIPT ARGS...; returns the exit status.
inline int RunPython(const std::string& script, const std::string& args) {
  const std::string cmd = std::string(kPython) + " " +
                          HALFTIME_ENGINE_PYTHON_DIR + "/" + script + " " +
                          args;
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace halftime::engine::testing

#endif  // HALFTIME_TESTS_ENGINE_TEST_UTIL_H_
