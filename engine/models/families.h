// Internal: the model families' entry points, one file each in this
// directory, and the registry that maps a Hugging Face architecture's
// family (hf/model_config.h) to the builder of its model. Adding an
// architecture means a family file (or an entry in an existing family's
// config reading) and a row in kPretrainedBuilders (registry.cc).
//
// Thread safety: builders are not thread-safe; one model build at a time.

#ifndef HALFTIME_ENGINE_MODELS_FAMILIES_H_
#define HALFTIME_ENGINE_MODELS_FAMILIES_H_

#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "engine/hf/pretrained.h"
#include "engine/model.h"
#include "engine/options.h"
#include "engine/status.h"

namespace halftime::engine {

// Builds a model from a pretrained folder, its weights taken in `dtype` on
// the CPU. kInvalidInput naming the file and tensor on any mismatch.
using PretrainedBuilder = TrainStatus (*)(hf::PretrainedFolder& folder,
                                          at::ScalarType dtype,
                                          std::unique_ptr<TrainModel>* out);

// The builder for `family`; nullptr when none is registered.
PretrainedBuilder PretrainedBuilderFor(hf::Family family);

// models/llama.cc: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM,
// Qwen3ForCausalLM.
TrainStatus BuildLlama(hf::PretrainedFolder& folder, at::ScalarType dtype,
                       std::unique_ptr<TrainModel>* out);
// models/gpt.cc: GPT2LMHeadModel.
TrainStatus BuildGpt2(hf::PretrainedFolder& folder, at::ScalarType dtype,
                      std::unique_ptr<TrainModel>* out);

// models/mlp.cc: three Linear layers with GELU, for tensor data.
std::unique_ptr<TrainModel> MakeMlp(int64_t in, int64_t hidden, int64_t out,
                                    LossKind loss);

// models/torchscript.cc: a torch.jit.save'd module whose parameters are
// trained and whose output is fed to `loss`. kInvalidInput naming the file
// when it cannot be loaded or has no parameters.
TrainStatus LoadTorchScript(const std::string& path, LossKind loss,
                            std::unique_ptr<TrainModel>* out);

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_MODELS_FAMILIES_H_
