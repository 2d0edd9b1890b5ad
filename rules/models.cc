#include "rules/models.h"

namespace halftime::models {

const std::vector<Builtin>& Builtins() {
  static const std::vector<Builtin> kBuiltins = {
      {"gpt-nano", true, {4, 128, 4, 256, 0}},
      {"gpt-micro", true, {6, 384, 6, 256, 0}},
      // GPT-2 124M's shape.
      {"gpt-small", true, {12, 768, 12, 1024, 50257}},
      {"mlp", false, {}},
  };
  return kBuiltins;
}

const Builtin* FindBuiltin(const std::string& name) {
  for (const Builtin& b : Builtins()) {
    if (name == b.name) return &b;
  }
  return nullptr;
}

std::string BuiltinNames() {
  std::string names;
  for (const Builtin& b : Builtins()) {
    if (!names.empty()) names += ", ";
    names += b.name;
  }
  return names;
}

}  // namespace halftime::models
