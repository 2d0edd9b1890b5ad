// A job's predicted peak device memory, before it runs: from the model's
// dimensions (a built-in's preset, or a Hugging Face folder's config.json)
// and the spec (batch, sequence length, optimizer, adapter), per precision
// mode and, for adapter jobs, per base dtype. `halftime estimate` prints
// it, and the scheduler places a job only where it fits.
//
// The estimate follows what the engine holds: weights (master copies and a
// frozen base included), gradients and optimizer state of the trainable
// parameters, the activations autograd keeps for backward (per layer:
// norm inputs, the inputs of trainable linear layers, q, k, v, the
// attention probabilities on a CPU, the MLP's intermediates), and
// workspace (the logits' gradient, autocast's 16-bit weight copies, one
// dequantized layer). Gradients appear only as backward frees the
// activations, so the peak is weights + optimizer state + the larger of
// (activations + workspace) and gradients.
//
// Thread safety: pure functions; safe from any thread.

#ifndef HALFTIME_COMMON_MEMORY_ESTIMATE_H_
#define HALFTIME_COMMON_MEMORY_ESTIMATE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "halftime/v1/job.pb.h"
#include "halftime/v1/job_spec.pb.h"

namespace halftime {

// The dimensions of `spec`'s model: model.shape when set, a built-in GPT's
// preset (its vocabulary from data.vocab_size where the preset takes the
// data's), or, when `read_folder`, the pretrained folder's config.json.
// NotFound for models without one (mlp, TorchScript) or a folder not read;
// InvalidArgument naming config.json and the field when it is malformed.
absl::StatusOr<v1::ModelShape> ModelShapeOf(const v1::JobSpec& spec,
                                            bool read_folder);

// Sets spec->model.shape from the pretrained folder's config.json when it
// is not set (halftime submit does this, so the scheduler can estimate a
// folder it cannot read). OK and unchanged for other models.
absl::Status FillModelShape(v1::JobSpec* spec);

// What about the device changes the estimate.
struct EstimateDevice {
  // Fused attention keeps no attention probabilities.
  bool cuda = false;
  // A CPU without native bf16 computes bf16 by emulation
  // (engine/bf16_emulation.h): fp32 slices of the widest layer's operands
  // and a widened copy of its weight are held while it runs.
  bool bf16_emulated = false;
};

// The predicted peak of `spec` (defaults applied) with `shape`, run in
// `precision` (a concrete mode, never auto) with its frozen base in `base`
// (adapter jobs; unspecified = the compute dtype), on `device`.
v1::MemoryEstimate EstimateMemory(const v1::JobSpec& spec,
                                  const v1::ModelShape& shape,
                                  v1::Precision precision, v1::BaseDtype base,
                                  const EstimateDevice& device);

// The rows `halftime estimate` prints: the spec's precision (every
// concrete mode the device kind runs, for auto) and, for adapter jobs,
// every base dtype.
std::vector<v1::MemoryEstimate> EstimateTable(const v1::JobSpec& spec,
                                              const v1::ModelShape& shape,
                                              const EstimateDevice& device);

// Parameters of a model of `shape`, all and those an adapter trains.
struct ParameterCount {
  int64_t total = 0;
  int64_t trainable = 0;
};
ParameterCount CountParameters(const v1::JobSpec& spec,
                               const v1::ModelShape& shape);

}  // namespace halftime

#endif  // HALFTIME_COMMON_MEMORY_ESTIMATE_H_
