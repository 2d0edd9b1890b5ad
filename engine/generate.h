// Text generation with a trained or pretrained language model: the prompt
// runs once through the model, then each new token costs one position's
// work against the model's key/value cache (TrainModel::Decode).
//
// Thread safety: Generate uses the model it is given; one call per model at
// a time.

#ifndef HALFTIME_ENGINE_GENERATE_H_
#define HALFTIME_ENGINE_GENERATE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/model.h"
#include "engine/status.h"

namespace halftime::engine {

struct GenerateOptions {
  int max_new_tokens = 32;
  // 0 = greedy (the arg-max token each step, deterministic); above 0 the
  // next token is drawn from softmax(logits / temperature).
  double temperature = 0.0;
  // Sampling only: draw from the smallest set of most likely tokens whose
  // probabilities sum to at least top_p (1 = all tokens).
  double top_p = 1.0;
  // Seeds the sampling generator; the same seed gives the same tokens.
  uint64_t seed = 0;
  // Generation stops after any of these ids (which is kept in the output).
  std::vector<int32_t> stop_ids;
};

// Continues `prompt` with `model` (on `device`, in its current dtype; the
// caller sets any autocast) and puts the new ids in *out; generation also
// stops when the sequence fills the model's context. kInvalidInput for an
// empty prompt or one that fills the context, an id outside the model's
// vocabulary, bad options or a model that cannot generate;
// kTrainingFailed (naming the cause) when libtorch fails.
TrainStatus Generate(TrainModel& model, const std::vector<int32_t>& prompt,
                     const GenerateOptions& options, at::Device device,
                     std::vector<int32_t>* out);

// Builds the model of Hugging Face folder `dir` (config.json and
// safetensors), its weights in `dtype` on the CPU, for generation or
// inspection. Errors as BuildModel's.
TrainStatus LoadPretrainedModel(const std::string& dir, at::ScalarType dtype,
                                std::unique_ptr<TrainModel>* out,
                                int64_t* vocab_size);

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_GENERATE_H_
