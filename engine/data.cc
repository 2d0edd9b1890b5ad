#include "engine/data.h"

#include <torch/csrc/jit/serialization/import.h>
#include <torch/serialize.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "base/utf8.h"

namespace halftime::engine {
namespace {

constexpr uint64_t kTrainStream = 0x7261696eULL;
constexpr uint64_t kEvalStream = 0x6576616cULL;
constexpr uint64_t kPermStream = 0x7065726dULL;
constexpr int32_t kLlmcMagic = 20240520;

TrainStatus Invalid(const std::string& msg) {
  return TrainStatus::Error(TrainStatus::kInvalidInput, msg);
}

uint64_t Mix(uint64_t seed, uint64_t stream, uint64_t index) {
  return SplitMix64(SplitMix64(seed ^ SplitMix64(stream)) ^ index);
}

TrainStatus ReadFile(const std::string& path, std::string* out) {
  if (path.empty()) return Invalid("data.path is empty");
  std::ifstream in(path, std::ios::binary);
  if (!in) return Invalid("data file " + path + " cannot be opened (missing?)");
  out->assign(std::istreambuf_iterator<char>(in),
              std::istreambuf_iterator<char>());
  if (in.bad()) return Invalid("data file " + path + " could not be read");
  if (out->empty()) return Invalid("data file " + path + " is empty");
  return TrainStatus::Ok();
}

std::string DescribeIValue(const c10::IValue& v) { return v.tagKind(); }

}  // namespace

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

TrainStatus Dataset::Open(const DataOptions& options, uint64_t seed,
                          int batch_size, std::unique_ptr<Dataset>* out) {
  std::unique_ptr<Dataset> d(new Dataset());
  d->options_ = options;
  d->seed_ = seed;
  d->batch_size_ = batch_size;
  d->seq_len_ = options.seq_len;
  const std::string& path = options.path;
  if (options.seq_len <= 0) return Invalid("data.seq_len must be positive");
  if (options.eval_fraction < 0.0 || options.eval_fraction >= 1.0) {
    return Invalid("data.eval_fraction must be in [0, 1)");
  }
  if (options.vocab_size < 0 || options.vocab_size > 65536) {
    return Invalid("data.vocab_size must be in [0, 65536]");
  }

  switch (options.kind) {
    case DataKind::kText: {
      std::string bytes;
      TrainStatus st = ReadFile(path, &bytes);
      if (!st.ok()) return st;
      const std::size_t bad = utf8::FindInvalid(bytes);
      if (bad != std::string_view::npos) {
        return Invalid("data file " + path +
                       " is not UTF-8 text (invalid byte at offset " +
                       std::to_string(bad) + "); use kind tokens or tensors");
      }
      d->tokens_.assign(bytes.begin(), bytes.end());
      for (size_t i = 0; i < bytes.size(); ++i) {
        d->tokens_[i] = static_cast<unsigned char>(bytes[i]);
      }
      d->vocab_size_ = 256;
      break;
    }
    case DataKind::kTokens: {
      std::string bytes;
      TrainStatus st = ReadFile(path, &bytes);
      if (!st.ok()) return st;
      size_t offset = 0;
      int64_t count = -1;
      if (bytes.size() >= 1024) {
        int32_t header[3];
        std::memcpy(header, bytes.data(), sizeof(header));
        if (header[0] == kLlmcMagic) {
          // llm.c: 256 int32 header {magic, version, token count}, then
          // uint16 tokens.
          offset = 1024;
          count = header[2];
          if (header[1] != 1) {
            return Invalid("data file " + path +
                           ": unsupported llm.c token file version " +
                           std::to_string(header[1]) + " (want 1)");
          }
          const int64_t have =
              static_cast<int64_t>((bytes.size() - offset) / 2);
          if (count <= 0 || have != count || (bytes.size() - offset) % 2) {
            return Invalid("data file " + path +
                           " is truncated: its header "
                           "says " +
                           std::to_string(count) + " tokens, the file holds " +
                           std::to_string(have));
          }
        }
      }
      if (count < 0) {
        if (bytes.size() % 2 != 0) {
          return Invalid("data file " + path +
                         " is truncated: " + std::to_string(bytes.size()) +
                         " bytes is not a whole number of uint16 tokens");
        }
        count = static_cast<int64_t>(bytes.size() / 2);
      }
      d->tokens_.resize(count);
      std::memcpy(d->tokens_.data(), bytes.data() + offset, count * 2);
      const int64_t max_token =
          *std::max_element(d->tokens_.begin(), d->tokens_.end());
      if (options.vocab_size > 0 && max_token >= options.vocab_size) {
        return Invalid("data file " + path + " holds token " +
                       std::to_string(max_token) +
                       ", not below data.vocab_size " +
                       std::to_string(options.vocab_size));
      }
      d->vocab_size_ =
          options.vocab_size > 0 ? options.vocab_size : max_token + 1;
      break;
    }
    case DataKind::kSynthetic: {
      const int64_t vocab = options.vocab_size > 0 ? options.vocab_size : 256;
      const int64_t n = std::max<int64_t>(options.synthetic_tokens, 2);
      d->tokens_.resize(n);
      // A learnable stream: mostly an affine bigram rule, 1 in 8 random.
      uint64_t prev = seed % vocab;
      for (int64_t i = 0; i < n; ++i) {
        const uint64_t r = Mix(seed, 0x73796eULL, i);
        prev = (r % 8 == 0) ? (r >> 8) % vocab : (prev * 7 + 3) % vocab;
        d->tokens_[i] = static_cast<uint16_t>(prev);
      }
      d->vocab_size_ = vocab;
      break;
    }
    case DataKind::kTensors: {
      std::string bytes;
      TrainStatus st = ReadFile(path, &bytes);
      if (!st.ok()) return st;
      c10::IValue value;
      std::string pickle_error;
      try {
        value =
            torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
      } catch (const std::exception& e) {
        pickle_error = e.what();
      }
      at::Tensor x, y;
      if (!pickle_error.empty()) {
        // A TorchScript container module with `inputs`/`targets` attributes
        // (the usual way to save tensors from C++ for Python and back).
        try {
          torch::jit::Module m = torch::jit::load(path, at::kCPU);
          x = m.attr("inputs").toTensor();
          y = m.attr("targets").toTensor();
        } catch (const std::exception&) {
          return Invalid("data file " + path +
                         " is neither a torch.save file nor a TorchScript "
                         "container with inputs/targets");
        }
      } else if (value.isGenericDict()) {
        auto dict = value.toGenericDict();
        for (const auto& [kx, ky] :
             {std::pair<const char*, const char*>{"inputs", "targets"},
              {"x", "y"}}) {
          if (dict.contains(kx) && dict.contains(ky)) {
            if (!dict.at(kx).isTensor() || !dict.at(ky).isTensor()) {
              return Invalid("data file " + path + ": '" + kx + "' and '" + ky +
                             "' must be tensors");
            }
            x = dict.at(kx).toTensor();
            y = dict.at(ky).toTensor();
            break;
          }
        }
        if (!x.defined()) {
          return Invalid("data file " + path +
                         ": dict has no 'inputs' and 'targets' keys");
        }
      } else if ((value.isTuple() || value.isList()) &&
                 (value.isTuple() ? value.toTupleRef().elements().size()
                                  : value.toListRef().size()) == 2) {
        const auto elems = value.isTuple() ? value.toTupleRef().elements().vec()
                                           : value.toList().vec();
        if (!elems[0].isTensor() || !elems[1].isTensor()) {
          return Invalid("data file " + path +
                         ": (inputs, targets) must both be tensors");
        }
        x = elems[0].toTensor();
        y = elems[1].toTensor();
      } else {
        return Invalid("data file " + path + " holds a " +
                       DescribeIValue(value) +
                       "; want {'inputs': Tensor, 'targets': Tensor} or "
                       "(inputs, targets)");
      }
      if (x.dim() < 1 || y.dim() < 1 || x.size(0) != y.size(0)) {
        return Invalid("data file " + path +
                       ": inputs and targets need the same first dimension "
                       "(samples); got " +
                       std::to_string(x.dim() ? x.size(0) : 0) + " and " +
                       std::to_string(y.dim() ? y.size(0) : 0));
      }
      if (!(x.is_floating_point() || x.scalar_type() == at::kLong ||
            x.scalar_type() == at::kInt)) {
        return Invalid("data file " + path + ": inputs have dtype " +
                       std::string(c10::toString(x.scalar_type())) +
                       "; want a floating type or int64 token ids");
      }
      if (!(y.is_floating_point() || y.scalar_type() == at::kLong ||
            y.scalar_type() == at::kInt)) {
        return Invalid("data file " + path + ": targets have dtype " +
                       std::string(c10::toString(y.scalar_type())) +
                       "; want int64 class ids or a floating type");
      }
      // Files saved from CUDA tensors load onto the GPU; batches are cut
      // on the CPU and moved per step.
      x = x.to(at::kCPU);
      y = y.to(at::kCPU);
      if (!x.is_floating_point()) x = x.to(at::kLong);
      if (!y.is_floating_point()) y = y.to(at::kLong);
      if (x.is_floating_point()) x = x.to(at::kFloat);
      if (y.is_floating_point()) y = y.to(at::kFloat);
      d->inputs_ = x.contiguous();
      d->targets_ = y.contiguous();
      const int64_t n = x.size(0);
      d->eval_rows_ =
          options.eval_fraction > 0.0
              ? std::max<int64_t>(1, std::llround(n * options.eval_fraction))
              : 0;
      d->train_rows_ = n - d->eval_rows_;
      if (d->train_rows_ < 1) {
        return Invalid("data file " + path + " has " + std::to_string(n) +
                       " samples; too few for a training split with "
                       "eval_fraction " +
                       std::to_string(options.eval_fraction));
      }
      if (x.scalar_type() == at::kLong) {
        d->vocab_size_ =
            std::max<int64_t>(options.vocab_size, x.max().item<int64_t>() + 1);
        if (x.min().item<int64_t>() < 0) {
          return Invalid("data file " + path + ": negative token id in inputs");
        }
      }
      if (y.scalar_type() == at::kLong) {
        if (y.min().item<int64_t>() < 0) {
          return Invalid("data file " + path +
                         ": negative class id in targets");
        }
        d->num_classes_ = y.max().item<int64_t>() + 1;
      }
      if (x.scalar_type() == at::kLong && x.numel() > 0) {
        d->max_token_id_ = x.max().item<int64_t>();
        if (y.scalar_type() == at::kLong && y.numel() > 0) {
          d->max_token_id_ =
              std::max(d->max_token_id_, y.max().item<int64_t>());
        }
      }
      d->seq_len_ = x.dim() >= 2 ? x.size(1) : 1;
      *out = std::move(d);
      return TrainStatus::Ok();
    }
  }

  // Token streams: split and check lengths.
  const int64_t n = static_cast<int64_t>(d->tokens_.size());
  const int64_t need = options.seq_len + 1;
  d->eval_tokens_ =
      options.eval_fraction > 0.0
          ? std::max<int64_t>(need, std::llround(n * options.eval_fraction))
          : 0;
  d->train_tokens_ = n - d->eval_tokens_;
  if (d->train_tokens_ < need) {
    const std::string where = options.kind == DataKind::kSynthetic
                                  ? "synthetic data"
                                  : "data file " + path;
    return Invalid(where + " has " + std::to_string(n) +
                   " tokens; too short for data.seq_len " +
                   std::to_string(options.seq_len) + " with eval_fraction " +
                   std::to_string(options.eval_fraction) + " (needs at least " +
                   std::to_string(need + d->eval_tokens_) + ")");
  }
  d->max_token_id_ = *std::max_element(d->tokens_.begin(), d->tokens_.end());
  *out = std::move(d);
  return TrainStatus::Ok();
}

int64_t Dataset::tokens_per_sample() const {
  if (is_token_stream()) return seq_len_;
  return inputs_.scalar_type() == at::kLong && inputs_.dim() >= 2
             ? inputs_.size(1)
             : 1;
}

Batch Dataset::TokenBatch(int64_t begin, int64_t len, uint64_t stream,
                          int64_t index, bool shuffle) {
  const int64_t T = seq_len_;
  const int64_t B = batch_size_;
  const int64_t windows = len - T;  // valid start offsets: [0, windows)
  at::Tensor x = at::empty({B, T}, at::kLong);
  at::Tensor y = at::empty({B, T}, at::kLong);
  int64_t* px = x.data_ptr<int64_t>();
  int64_t* py = y.data_ptr<int64_t>();
  for (int64_t r = 0; r < B; ++r) {
    const int64_t row = index * B + r;
    int64_t start;
    if (shuffle) {
      start = static_cast<int64_t>(Mix(seed_, stream, row) %
                                   static_cast<uint64_t>(windows));
    } else {
      start = (row * T) % windows;
    }
    const uint16_t* src = tokens_.data() + begin + start;
    for (int64_t t = 0; t < T; ++t) {
      px[r * T + t] = src[t];
      py[r * T + t] = src[t + 1];
    }
  }
  return {x, y};
}

const std::vector<int64_t>& Dataset::Permutation(int64_t epoch) {
  if (epoch != perm_epoch_) {
    perm_.resize(train_rows_);
    for (int64_t i = 0; i < train_rows_; ++i) perm_[i] = i;
    for (int64_t i = train_rows_ - 1; i > 0; --i) {
      const int64_t j = static_cast<int64_t>(
          Mix(seed_, kPermStream + epoch, i) % static_cast<uint64_t>(i + 1));
      std::swap(perm_[i], perm_[j]);
    }
    perm_epoch_ = epoch;
  }
  return perm_;
}

Batch Dataset::TrainBatch(int64_t index) {
  if (is_token_stream()) {
    return TokenBatch(0, train_tokens_, kTrainStream, index, options_.shuffle);
  }
  std::vector<int64_t> rows(batch_size_);
  for (int64_t r = 0; r < batch_size_; ++r) {
    const int64_t g = index * batch_size_ + r;
    const int64_t epoch = g / train_rows_;
    const int64_t pos = g % train_rows_;
    rows[r] = options_.shuffle ? Permutation(epoch)[pos] : pos;
  }
  at::Tensor idx = at::tensor(rows, at::kLong);
  return {inputs_.index_select(0, idx), targets_.index_select(0, idx)};
}

Batch Dataset::EvalBatch(int64_t index) {
  if (is_token_stream()) {
    return TokenBatch(train_tokens_, eval_tokens_, kEvalStream, index, true);
  }
  std::vector<int64_t> rows(batch_size_);
  for (int64_t r = 0; r < batch_size_; ++r) {
    rows[r] = train_rows_ + (index * batch_size_ + r) % eval_rows_;
  }
  at::Tensor idx = at::tensor(rows, at::kLong);
  return {inputs_.index_select(0, idx), targets_.index_select(0, idx)};
}

}  // namespace halftime::engine
