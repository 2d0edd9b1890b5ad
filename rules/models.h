// The built-in models a spec's `model.builtin` may name, and which of them are
// language models. Spec validation (common/spec.cc) and the engine
// (engine/model.cc) both read this list; the engine's tests build
// every entry.
//
// Thread safety: constants and pure functions; safe from any thread.

#ifndef HALFTIME_RULES_MODELS_H_
#define HALFTIME_RULES_MODELS_H_

#include <string>
#include <vector>

namespace halftime::models {

// A built-in GPT's shape (0 for the MLP).
struct GptShapeDefaults {
  int n_layer = 0;
  int n_embd = 0;
  int n_head = 0;
  int block_size = 0;
  // 0: the data's vocabulary.
  int vocab_size = 0;
};

struct Builtin {
  const char* name;
  // A language model trains on token data with cross_entropy; otherwise
  // (the MLP) on tensors with either loss.
  bool language_model;
  GptShapeDefaults gpt;
};

// Every built-in model, in the order the docs list them.
const std::vector<Builtin>& Builtins();

// The entry named `name`; nullptr when there is none.
const Builtin* FindBuiltin(const std::string& name);

// "gpt-nano, gpt-micro, gpt-small, mlp": for error messages.
std::string BuiltinNames();

}  // namespace halftime::models

#endif  // HALFTIME_RULES_MODELS_H_
