#include "rules/models.h"

namespace halftime::models {

const std::vector<Builtin>& Builtins() {
  static const std::vector<Builtin> kBuiltins = {
      {"gpt-nano", true},
      {"gpt-micro", true},
      {"gpt-small", true},
      {"mlp", false},
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
