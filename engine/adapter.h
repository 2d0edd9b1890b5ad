// Internal: LoRA fine-tuning on a frozen base (adapter.kind: lora).
//
// AdaptedModel wraps a built model: every base tensor is frozen, each
// linear layer named by adapter.target_modules gets a LoRA adapter
// (A [rank, in] drawn as PEFT's kaiming-uniform init, B [out, rank] zero,
// so training starts from the base), and only the adapters plus the
// modules_to_save are trainable. The decoder's linear weights are stored
// in adapter.base_dtype (fp32, bf16, fp16, nf4 or int8) and computed in
// the job's compute dtype, materialized per layer (quantize.h); the
// embeddings, norms, biases and output head are frozen in the compute
// dtype. Module names and target matching follow PEFT: a target matches a
// module whose name equals it or ends in "." + target; "all-linear" is
// every decoder linear layer.
//
// The adapters export in PEFT's format (adapter_config.json and
// adapter_model.safetensors with base_model.model.<module>.lora_A.weight
// keys) and load back from it (generate --adapter), and merge into the
// base as W + scale · B · A.
//
// Thread safety: not thread-safe; owned by one training loop.

#ifndef HALFTIME_ENGINE_ADAPTER_H_
#define HALFTIME_ENGINE_ADAPTER_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/model.h"
#include "engine/options.h"
#include "engine/report.h"
#include "engine/status.h"

namespace halftime::engine {

// The dtype a float `base_dtype` stores the base's linear weights in
// (kDefault: `compute_dtype`); Undefined for the quantized ones (nf4, int8).
at::ScalarType BaseStorageDtype(BaseDtype base_dtype,
                                at::ScalarType compute_dtype);

class AdaptedModel : public TrainModel {
 public:
  // Freezes `base` and adds adapters as `options` says; trainable
  // parameters are created in fp32 from the current torch seed. kInvalidInput
  // naming the adapter field when the model cannot take adapters (MLP,
  // TorchScript), a target or modules_to_save entry matches no module, or
  // rank, alpha or dropout are out of range.
  static TrainStatus Wrap(const AdapterOptions& options,
                          at::ScalarType compute_dtype,
                          std::unique_ptr<TrainModel> base,
                          std::unique_ptr<AdaptedModel>* out);

  // Reads the PEFT folder `dir` (adapter_config.json, adapter_model.
  // safetensors), wraps `base` with its adapters and loads their values.
  // kInvalidInput naming the file and key or field on any mismatch.
  static TrainStatus LoadPeft(const std::string& dir,
                              at::ScalarType compute_dtype,
                              std::unique_ptr<TrainModel> base,
                              std::unique_ptr<AdaptedModel>* out);

  at::Tensor Output(const Batch& batch) override;
  LossKind loss_kind() const override { return base_->loss_kind(); }
  // The adapters ("<module>.lora_A.weight", "<module>.lora_B.weight") and
  // the modules_to_save tensors, under their base names.
  NamedTensors NamedParameters() override { return trainable_; }
  // Moves everything to `device`: the trainable tensors in `dtype`, frozen
  // dense tensors in the compute dtype, quantized storage as it is.
  void To(at::Device device, at::ScalarType dtype) override;
  // Frozen weights cost forward and the input gradient (4 FLOPs per
  // parameter and token), trainable ones 6.
  double TrainFlopsPerToken(int64_t seq_len) const override;
  std::vector<HfTensor> HfLayout() const override { return base_->HfLayout(); }
  int64_t vocab_size() const override { return base_->vocab_size(); }
  int64_t max_positions() const override { return base_->max_positions(); }
  at::Tensor Decode(const at::Tensor& inputs, KvCache* cache) override {
    return base_->Decode(inputs, cache);
  }

  const AdapterReport& report() const { return report_; }

  // Every base parameter (by its name in the base model) with the adapters
  // merged in, W + scale · B · A, in fp32; `trained` holds the trainable
  // tensors' values by name (the optimizer's fp32 copies).
  NamedTensors MergedWeights(const NamedTensors& trained) const;

  // Writes `dir` as a PEFT adapter folder: adapter_config.json naming
  // `base_path`, and adapter_model.safetensors with `trained` (as for
  // MergedWeights) in `dtype` under PEFT's keys. Built beside `dir` and
  // renamed into place. kTrainingFailed naming the path on a write error.
  TrainStatus WritePeft(const std::string& dir, const std::string& base_path,
                        const NamedTensors& trained,
                        at::ScalarType dtype) const;

 private:
  struct Adapted {
    LinearLayer layer;
    std::shared_ptr<LoraWeights> lora;
    bool transposed = false;  // GPT-2 Conv1D (PEFT's fan_in_fan_out)
  };

  AdaptedModel(const AdapterOptions& options, at::ScalarType compute_dtype,
               std::unique_ptr<TrainModel> base)
      : options_(options),
        compute_dtype_(compute_dtype),
        base_(std::move(base)) {}
  TrainStatus Build();
  // The PEFT key of each trainable tensor, by its name here.
  std::vector<std::pair<std::string, std::string>> PeftKeys() const;

  AdapterOptions options_;
  at::ScalarType compute_dtype_;
  std::unique_ptr<TrainModel> base_;
  // "transformer." for GPT2LMHeadModel: the base's module names carry it,
  // its parameter names do not.
  std::string module_root_;
  std::vector<Adapted> adapted_;
  // The targets as written to adapter_config.json.
  std::vector<std::string> resolved_targets_;
  NamedTensors trainable_;
  // Frozen dense base tensors (moved in the compute dtype by To()).
  std::vector<at::Tensor> frozen_dense_;
  // Frozen weights in another dtype or quantized, by base parameter name.
  std::map<std::string, std::shared_ptr<FrozenWeight>> frozen_weights_;
  int64_t frozen_parameters_ = 0;
  int64_t lora_parameters_ = 0;
  // The base's TrainFlopsPerToken at seq_len 0 (6 N) and its growth per
  // position (attention), measured before any weight was emptied.
  double base_flops_ = 0.0;
  double attention_flops_per_position_ = 0.0;
  AdapterReport report_;
};

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_ADAPTER_H_
