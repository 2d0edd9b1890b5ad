// Internal: what every model family file shares: parameter lists of a
// torch::nn::Module, and ParamTree, which registers tensors under dotted
// Hugging Face names.
//
// Thread safety: not thread-safe; owned by one model.

#ifndef HALFTIME_ENGINE_MODELS_COMMON_H_
#define HALFTIME_ENGINE_MODELS_COMMON_H_

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/status.h"

namespace halftime::engine {

using NamedParams = std::vector<std::pair<std::string, at::Tensor>>;

inline NamedParams ModuleParams(torch::nn::Module& m) {
  NamedParams out;
  for (auto& p : m.named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

inline int64_t CountParams(const NamedParams& ps) {
  int64_t n = 0;
  for (const auto& [name, p] : ps) n += p.numel();
  return n;
}

inline TrainStatus InvalidModel(const std::string& msg) {
  return TrainStatus::Error(TrainStatus::kInvalidInput, msg);
}

// A module tree built from names: Add("model.layers.0.mlp.up_proj.weight",
// t) registers `t` as parameter "weight" of submodule model/layers/0/mlp/
// up_proj, creating the submodules on the way, so named_parameters() and
// to() see Hugging Face's names and layout. The returned tensor shares
// `t`'s TensorImpl, which to() keeps (it swaps the data), so a family may
// hold it across casts.
class ParamTree : public torch::nn::Module {
 public:
  at::Tensor Add(const std::string& dotted, at::Tensor t) {
    ParamTree* node = this;
    size_t start = 0;
    for (size_t dot; (dot = dotted.find('.', start)) != std::string::npos;
         start = dot + 1) {
      const std::string part = dotted.substr(start, dot - start);
      std::shared_ptr<ParamTree> child;
      for (const auto& c : node->named_children()) {
        if (c.key() == part) {
          child = std::dynamic_pointer_cast<ParamTree>(c.value());
        }
      }
      if (child == nullptr) {
        child = node->register_module(part, std::make_shared<ParamTree>());
      }
      node = child.get();
    }
    return node->register_parameter(dotted.substr(start), std::move(t));
  }
};

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_MODELS_COMMON_H_
