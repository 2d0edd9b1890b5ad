#include "engine/model.h"

#include <string>

#include "engine/hf/pretrained.h"
#include "engine/models/common.h"
#include "engine/models/families.h"
#include "rules/models.h"

namespace halftime::engine {
namespace {

at::Tensor ApplyLoss(LossKind kind, const at::Tensor& out,
                     const at::Tensor& targets) {
  if (kind == LossKind::kMse) {
    return at::mse_loss(out.to(at::kFloat),
                        targets.to(at::kFloat).reshape(out.sizes()));
  }
  return CrossEntropy(out.reshape({-1, out.size(-1)}), targets.reshape({-1}));
}

// A Hugging Face folder: its architecture's builder, and the data checked
// against the model's vocabulary and context.
TrainStatus BuildPretrained(const ModelOptions& options, const Dataset& data,
                            at::ScalarType param_dtype,
                            std::unique_ptr<TrainModel>* out) {
  if (options.loss != LossKind::kCrossEntropy) {
    return InvalidModel(
        "model.loss must be cross_entropy for a pretrained "
        "language model");
  }
  if (!data.is_token_stream() && data.inputs().is_floating_point()) {
    return InvalidModel(
        "model.pretrained needs token data (text, tokens, "
        "synthetic, or tensors of int64 token ids)");
  }
  std::unique_ptr<hf::PretrainedFolder> folder;
  TrainStatus st = hf::PretrainedFolder::Open(options.pretrained, &folder);
  if (!st.ok()) return st;
  const hf::ModelConfig& c = folder->config();
  if (data.max_token_id() >= c.vocab_size) {
    return InvalidModel(
        "the data holds token id " + std::to_string(data.max_token_id()) +
        ", not below the vocab_size " + std::to_string(c.vocab_size) +
        " of model.pretrained " + options.pretrained);
  }
  if (data.seq_len() > c.max_positions) {
    return InvalidModel("data.seq_len " + std::to_string(data.seq_len()) +
                        " exceeds the context of model.pretrained " +
                        options.pretrained + " (" +
                        std::to_string(c.max_positions) + " positions)");
  }
  if (c.sliding_window > 0 && data.seq_len() > c.sliding_window) {
    return InvalidModel("data.seq_len " + std::to_string(data.seq_len()) +
                        " exceeds the sliding_window " +
                        std::to_string(c.sliding_window) + " of " +
                        options.pretrained +
                        "; windowed attention is not supported yet");
  }
  const PretrainedBuilder build = PretrainedBuilderFor(c.family);
  if (build == nullptr) {
    return InvalidModel("model.pretrained " + options.pretrained + ": " +
                        c.architecture + " has no model code");
  }
  return build(*folder, param_dtype, out);
}

}  // namespace

at::Tensor TrainModel::Loss(const Batch& batch) {
  return ApplyLoss(loss_kind(), Output(batch), batch.targets);
}

void TrainModel::Evaluate(const Batch& batch, double* loss_sum,
                          int64_t* correct, int64_t* total) {
  const at::Tensor out = Output(batch);
  *loss_sum += ApplyLoss(loss_kind(), out, batch.targets).item<double>();
  if (loss_kind() != LossKind::kCrossEntropy) return;
  const at::Tensor predicted = out.argmax(-1).reshape({-1});
  const at::Tensor targets =
      batch.targets.reshape({-1}).to(predicted.scalar_type());
  *correct += predicted.eq(targets).sum().item<int64_t>();
  *total += targets.numel();
}

TrainStatus BuildModel(const ModelOptions& options, const Dataset& data,
                       at::ScalarType param_dtype,
                       std::unique_ptr<TrainModel>* out) {
  if (!options.torchscript.empty()) {
    return LoadTorchScript(options.torchscript, options.loss, out);
  }
  if (!options.pretrained.empty()) {
    return BuildPretrained(options, data, param_dtype, out);
  }
  const models::Builtin* builtin = models::FindBuiltin(options.builtin);
  if (builtin == nullptr) {
    return InvalidModel("model.builtin '" + options.builtin +
                        "' is not one of " + models::BuiltinNames());
  }
  if (!builtin->language_model) {  // the MLP
    if (data.is_token_stream()) {
      return InvalidModel("model.builtin mlp needs data.kind tensors");
    }
    const at::Tensor& x = data.inputs();
    if (!x.is_floating_point()) {
      return InvalidModel(
          "model.builtin mlp needs floating-point inputs; the data "
          "holds token ids (use a gpt model)");
    }
    const int64_t in = x.numel() / x.size(0);
    int64_t outputs;
    if (options.loss == LossKind::kCrossEntropy) {
      if (data.targets().is_floating_point()) {
        return InvalidModel(
            "model.loss cross_entropy needs int64 class targets; "
            "use model.loss mse for floating-point targets");
      }
      outputs = data.num_classes();
    } else {
      outputs = data.targets().numel() / data.targets().size(0);
    }
    *out = MakeMlp(in, options.mlp_hidden, outputs, options.loss);
    return TrainStatus::Ok();
  }
  GptConfig config;
  if (!GptPreset(options.builtin, options.gpt, data.vocab_size(), &config)) {
    return InvalidModel("model.builtin '" + options.builtin +
                        "' is a language model without a GPT preset");
  }
  if (!data.is_token_stream() && data.inputs().is_floating_point()) {
    return InvalidModel(
        "model.builtin " + options.builtin +
        " needs token data (text, tokens, synthetic, or tensors "
        "of int64 token ids)");
  }
  if (options.loss != LossKind::kCrossEntropy) {
    return InvalidModel("model.loss must be cross_entropy for " +
                        options.builtin);
  }
  if (data.vocab_size() > config.vocab_size) {
    return InvalidModel("data vocabulary " + std::to_string(data.vocab_size()) +
                        " exceeds model " + options.builtin + "'s vocabulary " +
                        std::to_string(config.vocab_size));
  }
  if (data.seq_len() > config.block_size) {
    return InvalidModel("data.seq_len " + std::to_string(data.seq_len()) +
                        " exceeds model " + options.builtin + "'s context " +
                        std::to_string(config.block_size));
  }
  if (config.n_embd % config.n_head != 0) {
    return InvalidModel("model gpt n_embd must be a multiple of n_head");
  }
  *out = MakeGpt(config);
  return TrainStatus::Ok();
}

}  // namespace halftime::engine