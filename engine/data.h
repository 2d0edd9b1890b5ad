// Internal: training data sources and deterministic batching.
//
// Instruction data (jsonl, tokenized by halftime-train) is a list of
// examples, each a span of ids with the ids the loss predicts marked. Its
// last eval_fraction examples are held out. Examples are laid into rows of
// seq_len slots in file order, one per row (padded) or, with packing, as
// many as fit (positions and attention restart at each); the rows are then
// visited like tensor data's.
// Token data (text, tokens, synthetic) is one token stream; its tail
// (eval_fraction) is the held-out split. A training micro-batch is a pure
// function of (seed, micro-batch index): each row starts at a splitmix64-
// derived offset (shuffle) or at the next seq_len window (no shuffle), so the
// data position in a checkpoint is just that index. Tensor data (inputs,
// targets) keeps its last eval_fraction rows for eval and visits the rest in
// a seeded per-epoch permutation (or in order without shuffle).
//
// Thread safety: Dataset is immutable after Open() except for a per-epoch
// permutation cache; use from one thread.

#ifndef HALFTIME_ENGINE_DATA_H_
#define HALFTIME_ENGINE_DATA_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/options.h"
#include "engine/status.h"

namespace halftime::engine {

struct Batch {
  Batch() = default;
  Batch(at::Tensor inputs, at::Tensor targets)
      : inputs(std::move(inputs)), targets(std::move(targets)) {}

  at::Tensor inputs;
  at::Tensor targets;
  // [B, T] int64: each token's position within its example, where rows
  // pack several examples; undefined = 0..T-1 in every row.
  at::Tensor positions;
  // [B, T] int64: which example of its row each token belongs to;
  // attention stays inside one. Undefined = one sequence per row.
  at::Tensor segments;
  // Input tokens that are not padding (throughput counts these); -1 = all.
  int64_t tokens = -1;
};

// splitmix64 of `x`; the data order's only source of randomness.
uint64_t SplitMix64(uint64_t x);

class Dataset {
 public:
  // Loads and validates the data. Errors name the path and the problem
  // (missing, empty, truncated, too short for seq_len, wrong dtype).
  static TrainStatus Open(const DataOptions& options, uint64_t seed,
                          int batch_size, std::unique_ptr<Dataset>* out);

  // The `index`-th training micro-batch (deterministic).
  Batch TrainBatch(int64_t index);
  // The `index`-th eval batch (the same batches at every evaluation).
  Batch EvalBatch(int64_t index);

  // True for token data (inputs/targets are int64 [B, seq_len]): streams
  // and instruction examples.
  bool is_token_stream() const { return !tokens_.empty() || !rows_.empty(); }
  // Instruction examples left out because truncation to seq_len left them
  // no trained target.
  int64_t dropped_examples() const { return dropped_examples_; }
  // Token ids are < vocab_size (token streams; tensor data with int64
  // inputs sets it to max input + 1).
  int64_t vocab_size() const { return vocab_size_; }
  // The largest token id the data holds (inputs and int64 targets); -1 for
  // floating-point tensor data. A pretrained model's vocabulary is checked
  // against it, not against the declared data.vocab_size.
  int64_t max_token_id() const { return max_token_id_; }
  // Tensor data: per-sample input/target shapes and dtypes.
  const at::Tensor& inputs() const { return inputs_; }
  const at::Tensor& targets() const { return targets_; }
  // Number of classes for cross-entropy on tensor data (max target + 1).
  int64_t num_classes() const { return num_classes_; }
  int64_t seq_len() const { return seq_len_; }
  // Tokens per sample for throughput (seq_len, or 1 for tensor data without
  // a sequence dimension).
  int64_t tokens_per_sample() const;
  bool has_eval() const { return eval_rows_ > 0 || eval_tokens_ > 0; }

 private:
  Dataset() = default;
  Batch TokenBatch(int64_t begin, int64_t len, uint64_t stream, int64_t index,
                   bool shuffle);
  const std::vector<int64_t>& Permutation(int64_t epoch);
  // The rest of Open for token streams and for instruction examples;
  // `where` names the data in errors.
  static TrainStatus FinishStream(std::unique_ptr<Dataset> d,
                                  const std::string& where,
                                  std::unique_ptr<Dataset>* out);
  static TrainStatus FinishExamples(std::unique_ptr<Dataset> d,
                                    const std::string& where,
                                    std::unique_ptr<Dataset>* out);
  Batch RowsBatch(const std::vector<int64_t>& rows) const;
  // One slice of an example laid into a row: ids [start, start + len) of
  // an example whose ids end at `end`.
  struct Piece {
    int64_t start;
    int64_t len;
    int64_t end;
  };

  DataOptions options_;
  uint64_t seed_ = 0;
  int batch_size_ = 1;
  int64_t seq_len_ = 0;
  int64_t vocab_size_ = 0;
  int64_t max_token_id_ = -1;
  // Token streams.
  std::vector<int32_t> tokens_;
  // Instruction examples: the ids, and each row's pieces (rows
  // [0, train_rows_) train, the rest evaluate).
  std::shared_ptr<const TokenizedData> examples_;
  std::vector<std::vector<Piece>> rows_;
  int64_t dropped_examples_ = 0;
  int64_t train_tokens_ = 0;
  int64_t eval_tokens_ = 0;
  // Tensor data.
  at::Tensor inputs_;
  at::Tensor targets_;
  int64_t train_rows_ = 0;
  int64_t eval_rows_ = 0;
  int64_t num_classes_ = 0;
  int64_t perm_epoch_ = -1;
  std::vector<int64_t> perm_;
};

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_DATA_H_
