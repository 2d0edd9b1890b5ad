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
// The largest vocabulary a token id may index (uint32 files, tokenizers).
constexpr int64_t kMaxVocabulary = int64_t{1} << 24;
// The target of a position the loss skips (CrossEntropy's ignore index).
constexpr int64_t kIgnoredTarget = -100;

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
  // Ids live in int32 streams; only uint16 token files bound them lower.
  const int64_t id_limit = options.kind == DataKind::kTokens &&
                                   options.token_dtype == TokenDtype::kUint16
                               ? int64_t{65536}
                               : kMaxVocabulary;
  if (options.vocab_size < 0 || options.vocab_size > id_limit) {
    return Invalid("data.vocab_size must be in [0, " +
                   std::to_string(id_limit) + "]");
  }
  const std::string where =
      path.empty() ? std::string("the data") : "data file " + path;
  if (options.kind == DataKind::kJsonl)
    return FinishExamples(std::move(d), where, out);
  if (options.kind == DataKind::kText && options.tokenized != nullptr) {
    // Text a tokenizer has read: one running stream of its ids.
    const TokenizedData& t = *options.tokenized;
    if (t.ids.empty()) return Invalid(where + " holds no tokens");
    d->tokens_ = t.ids;
    d->vocab_size_ = t.vocab_size;
    return FinishStream(std::move(d), where, out);
  }

  switch (options.kind) {
    case DataKind::kJsonl:
      break;  // handled above
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
      const bool wide = options.token_dtype == TokenDtype::kUint32;
      const size_t width = wide ? 4 : 2;
      const char* dtype_name = wide ? "uint32" : "uint16";
      size_t offset = 0;
      int64_t count = -1;
      if (!wide && bytes.size() >= 1024) {
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
        if (bytes.size() % width != 0) {
          return Invalid("data file " + path +
                         " is truncated: " + std::to_string(bytes.size()) +
                         " bytes is not a whole number of " + dtype_name +
                         " tokens (data.token_dtype)");
        }
        count = static_cast<int64_t>(bytes.size() / width);
      }
      d->tokens_.resize(count);
      const unsigned char* src =
          reinterpret_cast<const unsigned char*>(bytes.data()) + offset;
      int64_t max_token = 0;
      for (int64_t i = 0; i < count; ++i) {
        // Little-endian whatever the host.
        uint32_t v = 0;
        for (size_t b = 0; b < width; ++b) {
          v |= static_cast<uint32_t>(src[i * width + b]) << (8 * b);
        }
        if (v >= static_cast<uint32_t>(kMaxVocabulary)) {
          return Invalid("data file " + path + " holds token " +
                         std::to_string(v) + " at index " + std::to_string(i) +
                         ", past the largest supported vocabulary (" +
                         std::to_string(kMaxVocabulary) +
                         "); is data.token_dtype right?");
        }
        d->tokens_[i] = static_cast<int32_t>(v);
        max_token = std::max<int64_t>(max_token, v);
      }
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
        d->tokens_[i] = static_cast<int32_t>(prev);
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

  return FinishStream(std::move(d), where, out);
}

TrainStatus Dataset::FinishStream(std::unique_ptr<Dataset> d,
                                  const std::string& where,
                                  std::unique_ptr<Dataset>* out) {
  // Token streams: split and check lengths.
  const DataOptions& options = d->options_;
  const int64_t n = static_cast<int64_t>(d->tokens_.size());
  const int64_t need = options.seq_len + 1;
  d->eval_tokens_ =
      options.eval_fraction > 0.0
          ? std::max<int64_t>(need, std::llround(n * options.eval_fraction))
          : 0;
  d->train_tokens_ = n - d->eval_tokens_;
  if (d->train_tokens_ < need) {
    return Invalid(
        (options.kind == DataKind::kSynthetic ? "synthetic data" : where) +
        " has " + std::to_string(n) + " tokens; too short for data.seq_len " +
        std::to_string(options.seq_len) + " with eval_fraction " +
        std::to_string(options.eval_fraction) + " (needs at least " +
        std::to_string(need + d->eval_tokens_) + ")");
  }
  d->max_token_id_ = *std::max_element(d->tokens_.begin(), d->tokens_.end());
  *out = std::move(d);
  return TrainStatus::Ok();
}

TrainStatus Dataset::FinishExamples(std::unique_ptr<Dataset> d,
                                    const std::string& where,
                                    std::unique_ptr<Dataset>* out) {
  const DataOptions& options = d->options_;
  if (options.tokenized == nullptr || options.tokenized->starts.empty()) {
    return Invalid(where + " holds no examples");
  }
  const TokenizedData& t = *options.tokenized;
  const int64_t n_ids = static_cast<int64_t>(t.ids.size());
  if (t.trained.size() != t.ids.size()) {
    return Invalid(where + ": the loss mask and the ids differ in length");
  }
  if (t.vocab_size <= 0 || t.vocab_size > kMaxVocabulary) {
    return Invalid(where + ": tokenizer vocabulary " +
                   std::to_string(t.vocab_size) + " is out of range");
  }
  const int64_t T = options.seq_len;
  // Each example takes min(length, T) slots; its last slot's target (the
  // next example's first id) is never trained. An example whose trained
  // targets all lie past T is dropped.
  struct Span {
    int64_t start, end;
  };
  std::vector<Span> kept;
  for (size_t i = 0; i < t.starts.size(); ++i) {
    const int64_t start = t.starts[i];
    const int64_t end = i + 1 < t.starts.size() ? t.starts[i + 1] : n_ids;
    if (start < 0 || end > n_ids || end < start) {
      return Invalid(where + ": example " + std::to_string(i) +
                     " spans ids outside the data");
    }
    bool trains = false;
    for (int64_t j = start + 1; j <= std::min(end - 1, start + T); ++j) {
      trains = trains || t.trained[j] != 0;
    }
    if (!trains) {
      ++d->dropped_examples_;
      continue;
    }
    kept.push_back({start, end});
  }
  const int64_t n = static_cast<int64_t>(kept.size());
  if (n == 0) {
    return Invalid(where + " has no example with a trained token within " +
                   "data.seq_len " + std::to_string(T) + " tokens");
  }
  int64_t eval_examples =
      options.eval_fraction > 0.0
          ? std::max<int64_t>(1, std::llround(n * options.eval_fraction))
          : 0;
  if (n - eval_examples < 1) {
    return Invalid(where + " has " + std::to_string(n) +
                   " usable examples; too few for a training split with "
                   "eval_fraction " +
                   std::to_string(options.eval_fraction));
  }
  // Lays examples [first, last) into rows.
  auto lay = [&](int64_t first, int64_t last) {
    int64_t rows = 0;
    int64_t free_slots = 0;
    for (int64_t i = first; i < last; ++i) {
      const int64_t len = std::min(kept[i].end - kept[i].start, T);
      if (!options.packing || len > free_slots) {
        d->rows_.emplace_back();
        free_slots = T;
        ++rows;
      }
      d->rows_.back().push_back({kept[i].start, len, kept[i].end});
      free_slots -= len;
    }
    return rows;
  };
  d->train_rows_ = lay(0, n - eval_examples);
  d->eval_rows_ = lay(n - eval_examples, n);
  d->examples_ = options.tokenized;
  d->vocab_size_ = t.vocab_size;
  int64_t max_id = 0;
  for (int32_t id : t.ids) {
    if (id < 0 || id >= t.vocab_size) {
      return Invalid(where + " holds token " + std::to_string(id) +
                     ", outside the tokenizer's vocabulary of " +
                     std::to_string(t.vocab_size));
    }
    max_id = std::max<int64_t>(max_id, id);
  }
  d->max_token_id_ = max_id;
  *out = std::move(d);
  return TrainStatus::Ok();
}

Batch Dataset::RowsBatch(const std::vector<int64_t>& rows) const {
  const int64_t T = seq_len_;
  const int64_t B = static_cast<int64_t>(rows.size());
  const TokenizedData& t = *examples_;
  at::Tensor x = at::zeros({B, T}, at::kLong);
  at::Tensor y = at::full({B, T}, kIgnoredTarget, at::kLong);
  at::Tensor pos = at::zeros({B, T}, at::kLong);
  // Padding is a segment of its own, so it never attends to an example.
  at::Tensor seg = at::full({B, T}, -1, at::kLong);
  int64_t* px = x.data_ptr<int64_t>();
  int64_t* py = y.data_ptr<int64_t>();
  int64_t* ppos = pos.data_ptr<int64_t>();
  int64_t* pseg = seg.data_ptr<int64_t>();
  int64_t tokens = 0;
  for (int64_t r = 0; r < B; ++r) {
    int64_t slot = r * T;
    int64_t segment = 0;
    for (const Piece& piece : rows_[rows[r]]) {
      for (int64_t s = 0; s < piece.len; ++s, ++slot) {
        const int64_t i = piece.start + s;
        px[slot] = t.ids[i];
        if (i + 1 < piece.end && t.trained[i + 1] != 0) py[slot] = t.ids[i + 1];
        ppos[slot] = s;
        pseg[slot] = segment;
      }
      ++segment;
      tokens += piece.len;
    }
  }
  Batch batch{x, y};
  if (options_.packing) {
    batch.positions = pos;
    batch.segments = seg;
  }
  batch.tokens = tokens;
  return batch;
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
    const int32_t* src = tokens_.data() + begin + start;
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
  if (!tokens_.empty()) {
    return TokenBatch(0, train_tokens_, kTrainStream, index, options_.shuffle);
  }
  std::vector<int64_t> rows(batch_size_);
  for (int64_t r = 0; r < batch_size_; ++r) {
    const int64_t g = index * batch_size_ + r;
    const int64_t epoch = g / train_rows_;
    const int64_t pos = g % train_rows_;
    rows[r] = options_.shuffle ? Permutation(epoch)[pos] : pos;
  }
  if (!rows_.empty()) return RowsBatch(rows);
  at::Tensor idx = at::tensor(rows, at::kLong);
  return {inputs_.index_select(0, idx), targets_.index_select(0, idx)};
}

Batch Dataset::EvalBatch(int64_t index) {
  if (!tokens_.empty()) {
    return TokenBatch(train_tokens_, eval_tokens_, kEvalStream, index, true);
  }
  std::vector<int64_t> rows(batch_size_);
  for (int64_t r = 0; r < batch_size_; ++r) {
    rows[r] = train_rows_ + (index * batch_size_ + r) % eval_rows_;
  }
  if (!rows_.empty()) return RowsBatch(rows);
  at::Tensor idx = at::tensor(rows, at::kLong);
  return {inputs_.index_select(0, idx), targets_.index_select(0, idx)};
}

}  // namespace halftime::engine
