#include "engine/models/families.h"

namespace halftime::engine {
namespace {

struct RegistryEntry {
  hf::Family family;
  PretrainedBuilder build;
};
constexpr RegistryEntry kPretrainedBuilders[] = {
    {hf::Family::kLlama, &BuildLlama},
    {hf::Family::kGpt2, &BuildGpt2},
};

}  // namespace

PretrainedBuilder PretrainedBuilderFor(hf::Family family) {
  for (const RegistryEntry& e : kPretrainedBuilders) {
    if (e.family == family) return e.build;
  }
  return nullptr;
}

}  // namespace halftime::engine
