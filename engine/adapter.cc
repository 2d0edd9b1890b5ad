#include "engine/adapter.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "engine/hf/peft_config.h"
#include "engine/models/common.h"

namespace halftime::engine {
namespace {

namespace fs = std::filesystem;

TrainStatus Invalid(const std::string& msg) {
  return TrainStatus::Error(TrainStatus::kInvalidInput, msg);
}

constexpr const char* kPeftPrefix = "base_model.model.";

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// PEFT's rule for a list of target_modules: the module's full name, or a
// suffix after a dot.
bool MatchesTarget(const std::string& module, const std::string& target) {
  return module == target || EndsWith(module, "." + target);
}

std::string ModuleOf(const std::string& param) {
  const size_t dot = param.rfind('.');
  return dot == std::string::npos ? "" : param.substr(0, dot);
}

std::string LastPart(const std::string& module) {
  const size_t dot = module.rfind('.');
  return dot == std::string::npos ? module : module.substr(dot + 1);
}

const char* DtypeName(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return "fp32";
    case at::kBFloat16:
      return "bf16";
    case at::kHalf:
      return "fp16";
    default:
      return c10::toString(t);
  }
}

// SHA-256 over each tensor's name, dtype, shape and bytes, in order.
std::string HashTensors(const NamedTensors& tensors) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  for (const auto& [name, t] : tensors) {
    std::ostringstream head;
    head << name << '\0' << c10::toString(t.scalar_type()) << '\0' << t.sizes()
         << '\0';
    const std::string h = head.str();
    EVP_DigestUpdate(ctx, h.data(), h.size());
    const at::Tensor bytes = t.detach().cpu().contiguous();
    EVP_DigestUpdate(ctx, bytes.data_ptr(), bytes.nbytes());
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_DigestFinal_ex(ctx, digest, &size);
  EVP_MD_CTX_free(ctx);
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < size; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 15];
  }
  return hex;
}

}  // namespace

at::ScalarType BaseStorageDtype(BaseDtype d, at::ScalarType compute_dtype) {
  switch (d) {
    case BaseDtype::kDefault:
      return compute_dtype;
    case BaseDtype::kFp32:
      return at::kFloat;
    case BaseDtype::kBf16:
      return at::kBFloat16;
    case BaseDtype::kFp16:
      return at::kHalf;
    case BaseDtype::kNf4:
    case BaseDtype::kInt8:
      break;
  }
  return at::ScalarType::Undefined;
}

TrainStatus AdaptedModel::Wrap(const AdapterOptions& options,
                               at::ScalarType compute_dtype,
                               std::unique_ptr<TrainModel> base,
                               std::unique_ptr<AdaptedModel>* out) {
  std::unique_ptr<AdaptedModel> model(
      new AdaptedModel(options, compute_dtype, std::move(base)));
  TrainStatus st = model->Build();
  if (!st.ok()) return st;
  *out = std::move(model);
  return TrainStatus::Ok();
}

TrainStatus AdaptedModel::Build() {
  const AdapterOptions& o = options_;
  if (o.rank < 1) return Invalid("adapter.rank must be at least 1");
  if (!(o.alpha > 0)) return Invalid("adapter.alpha must be positive");
  if (!(o.dropout >= 0 && o.dropout < 1)) {
    return Invalid("adapter.dropout must be in [0, 1)");
  }
  std::vector<LinearLayer> layers = base_->LinearLayers();
  if (layers.empty()) {
    return Invalid(
        "adapter: this model has no linear layers an adapter can wrap; "
        "adapters need a gpt built-in or a Hugging Face folder "
        "(model.pretrained)");
  }
  const LinearLayer& first = layers.front();
  module_root_ = first.module.substr(
      0, first.module.size() - ModuleOf(first.weight_param).size());
  base_flops_ = base_->TrainFlopsPerToken(0);
  attention_flops_per_position_ = base_->TrainFlopsPerToken(1) - base_flops_;
  NamedTensors base_params = base_->NamedParameters();
  report_.base_hash = HashTensors(base_params);

  // Modules trained in full: whole modules, never adapted (as in PEFT).
  std::set<std::string> saved_params, saved_modules;
  for (const std::string& m : o.modules_to_save) {
    bool any = false;
    for (const auto& [name, t] : base_params) {
      const std::string module = module_root_ + ModuleOf(name);
      if (MatchesTarget(module, m)) {
        saved_params.insert(name);
        saved_modules.insert(module);
        any = true;
      }
    }
    if (!any) {
      return Invalid("adapter.modules_to_save: '" + m +
                     "' matches no module of this model (a tied output "
                     "head is the input embedding: name that instead)");
    }
  }

  std::vector<std::string> targets = o.target_modules.empty()
                                         ? base_->DefaultAdapterTargets()
                                         : o.target_modules;
  const bool all_linear = hf::IsAllLinear(targets);
  std::vector<bool> chosen(layers.size(), all_linear);
  if (!all_linear) {
    for (const std::string& t : targets) {
      bool any = false;
      for (size_t i = 0; i < layers.size(); ++i) {
        if (MatchesTarget(layers[i].module, t)) chosen[i] = any = true;
      }
      if (!any) {
        std::set<std::string> names;
        for (const LinearLayer& l : layers) names.insert(LastPart(l.module));
        std::string list;
        for (const std::string& n : names)
          list += (list.empty() ? "" : ", ") + n;
        return Invalid("adapter.target_modules: '" + t +
                       "' matches no linear layer of this model (its layers: " +
                       list + ", or " + hf::kAllLinear + ")");
      }
    }
  }
  std::set<std::string> resolved;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (saved_modules.count(layers[i].module) > 0) chosen[i] = false;
    if (chosen[i]) resolved.insert(LastPart(layers[i].module));
  }
  resolved_targets_.assign(resolved.begin(), resolved.end());

  std::map<std::string, bool> transposed;
  for (const HfTensor& t : base_->HfLayout()) {
    transposed[t.param_name] = t.transposed;
  }
  for (auto& [name, t] : base_params) t.requires_grad_(false);
  const at::ScalarType dense = BaseStorageDtype(o.base_dtype, compute_dtype_);
  std::set<std::string> handled;
  double error_sum = 0.0;
  int quantized = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LinearLayer& l = layers[i];
    if (saved_modules.count(l.module) > 0) continue;
    Projection& p = *l.projection;
    at::Tensor w = p.weight;
    const int64_t out = w.size(0), in = w.size(1);
    if (dense == compute_dtype_) {
      frozen_dense_.push_back(w);
    } else {
      if (o.base_dtype == BaseDtype::kNf4) {
        p.frozen = FrozenWeight::Nf4(w, o.double_quant, compute_dtype_);
      } else if (o.base_dtype == BaseDtype::kInt8) {
        p.frozen = FrozenWeight::Int8(w, compute_dtype_);
      } else {
        p.frozen = FrozenWeight::Dense(w.to(dense), compute_dtype_);
      }
      if (p.frozen->storage() != FrozenStorage::kDense) {
        error_sum += p.frozen->relative_error();
        report_.quantization_error_max = std::max(
            report_.quantization_error_max, p.frozen->relative_error());
        ++quantized;
      }
      frozen_weights_[l.weight_param] = p.frozen;
      // The layer computes from the frozen copy; the original is freed.
      w.set_data(at::empty({0}, w.options()));
    }
    frozen_parameters_ += out * in;
    handled.insert(l.weight_param);
    if (p.bias.defined()) {
      frozen_dense_.push_back(p.bias);
      frozen_parameters_ += p.bias.numel();
      handled.insert(l.bias_param);
    }
    if (!chosen[i]) continue;
    auto lora = std::make_shared<LoraWeights>();
    // PEFT's init: kaiming_uniform(a = sqrt(5)) is U(-1/sqrt(in),
    // 1/sqrt(in)); B starts at zero, so the first step sees the base.
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    lora->a = at::empty({o.rank, in}, at::kFloat).uniform_(-bound, bound);
    lora->b = at::zeros({out, o.rank}, at::kFloat);
    lora->scale = o.rslora ? o.alpha / std::sqrt(static_cast<double>(o.rank))
                           : o.alpha / o.rank;
    lora->dropout = o.dropout;
    p.lora = lora;
    trainable_.emplace_back(l.module + ".lora_A.weight", lora->a);
    trainable_.emplace_back(l.module + ".lora_B.weight", lora->b);
    adapted_.push_back({l, lora, transposed[l.weight_param]});
    lora_parameters_ += lora->a.numel() + lora->b.numel();
  }
  for (auto& [name, t] : base_params) {
    if (handled.count(name) > 0) continue;
    if (saved_params.count(name) > 0) {
      trainable_.emplace_back(name, t);
    } else {
      frozen_dense_.push_back(t);
      frozen_parameters_ += t.numel();
    }
  }
  report_.adapted_layers = static_cast<int>(adapted_.size());
  report_.trainable_parameters = CountParams(trainable_);
  report_.total_parameters = frozen_parameters_ + report_.trainable_parameters;
  report_.base_dtype = o.base_dtype == BaseDtype::kDefault
                           ? DtypeName(compute_dtype_)
                           : BaseDtypeName(o.base_dtype);
  report_.compute_dtype = DtypeName(compute_dtype_);
  report_.quantization_error_mean = quantized > 0 ? error_sum / quantized : 0.0;
  return TrainStatus::Ok();
}

at::Tensor AdaptedModel::Output(const Batch& batch) {
  return base_->Output(batch);
}

void AdaptedModel::To(at::Device device, at::ScalarType dtype) {
  int64_t bytes = 0;
  for (at::Tensor& t : frozen_dense_) {
    t.set_data(t.to(device, compute_dtype_));
    bytes += t.nbytes();
  }
  for (auto& [name, f] : frozen_weights_) {
    f->To(device);
    bytes += f->bytes();
  }
  for (auto& [name, t] : trainable_) t.set_data(t.to(device, dtype));
  report_.base_bytes = bytes;
}

double AdaptedModel::TrainFlopsPerToken(int64_t seq_len) const {
  const double base = base_flops_ / 6.0;
  const double saved =
      static_cast<double>(report_.trainable_parameters - lora_parameters_);
  return 4.0 * (base - saved) + 6.0 * (saved + lora_parameters_) +
         attention_flops_per_position_ * seq_len;
}

std::vector<std::pair<std::string, std::string>> AdaptedModel::PeftKeys()
    const {
  std::vector<std::pair<std::string, std::string>> keys;
  for (const auto& [name, t] : trainable_) {
    const bool adapter =
        EndsWith(name, ".lora_A.weight") || EndsWith(name, ".lora_B.weight");
    keys.emplace_back(name, std::string(kPeftPrefix) +
                                (adapter ? name : module_root_ + name));
  }
  return keys;
}

NamedTensors AdaptedModel::MergedWeights(const NamedTensors& trained) const {
  std::map<std::string, at::Tensor> by_name(trained.begin(), trained.end());
  std::map<std::string, const Adapted*> adapter_of;
  for (const Adapted& a : adapted_) adapter_of[a.layer.weight_param] = &a;
  NamedTensors merged;
  for (const auto& [name, t] : base_->NamedParameters()) {
    at::Tensor w;
    if (auto it = by_name.find(name); it != by_name.end()) {
      w = it->second.detach().to(at::kCPU, at::kFloat);
    } else if (auto f = frozen_weights_.find(name);
               f != frozen_weights_.end()) {
      w = f->second->Materialize(at::kFloat).cpu();
    } else {
      w = t.detach().to(at::kCPU, at::kFloat);
    }
    if (auto a = adapter_of.find(name); a != adapter_of.end()) {
      const std::string& module = a->second->layer.module;
      const at::Tensor lora_a =
          by_name.at(module + ".lora_A.weight").to(at::kCPU, at::kFloat);
      const at::Tensor lora_b =
          by_name.at(module + ".lora_B.weight").to(at::kCPU, at::kFloat);
      w = w + a->second->lora->scale * lora_b.mm(lora_a);
    }
    merged.emplace_back(name, w);
  }
  return merged;
}

TrainStatus AdaptedModel::WritePeft(const std::string& dir,
                                    const std::string& base_path,
                                    const NamedTensors& trained,
                                    at::ScalarType dtype) const {
  std::map<std::string, at::Tensor> by_name(trained.begin(), trained.end());
  NamedTensors tensors;
  for (const auto& [name, key] : PeftKeys()) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      return Invalid("adapter export: no trained tensor " + name);
    }
    tensors.emplace_back(key, it->second.detach().to(at::kCPU, dtype));
  }
  hf::PeftConfig config;
  config.rank = options_.rank;
  config.alpha = options_.alpha;
  config.dropout = options_.dropout;
  config.target_modules = resolved_targets_;
  config.modules_to_save = options_.modules_to_save;
  config.rslora = options_.rslora;
  for (const Adapted& a : adapted_) config.fan_in_fan_out |= a.transposed;
  config.base_model_name_or_path = base_path;

  return WriteFolderAtomically(dir, [&](const fs::path& staging) {
    TrainStatus st = WriteSafetensors((staging / hf::kPeftWeightsFile).string(),
                                      tensors, {{"format", "pt"}});
    if (!st.ok()) return st;
    return WriteFileAtomically((staging / hf::kPeftConfigFile).string(),
                               hf::FormatPeftConfig(config));
  });
}

TrainStatus AdaptedModel::LoadPeft(const std::string& dir,
                                   at::ScalarType compute_dtype,
                                   std::unique_ptr<TrainModel> base,
                                   std::unique_ptr<AdaptedModel>* out) {
  const std::string config_path =
      (fs::path(dir) / hf::kPeftConfigFile).string();
  std::ifstream in(config_path, std::ios::binary);
  if (!in) return Invalid("adapter: cannot read " + config_path);
  std::stringstream text;
  text << in.rdbuf();
  hf::PeftConfig config;
  std::string error;
  if (!hf::ParsePeftConfig(text.str(), config_path, &config, &error)) {
    return Invalid(error);
  }
  AdapterOptions o;
  o.kind = AdapterKind::kLora;
  o.rank = config.rank;
  o.alpha = config.alpha;
  o.dropout = config.dropout;
  o.rslora = config.rslora;
  o.target_modules = config.target_modules;
  o.modules_to_save = config.modules_to_save;
  TrainStatus st = Wrap(o, compute_dtype, std::move(base), out);
  if (!st.ok()) {
    return Invalid(config_path + ": " + st.message);
  }
  const std::string weights_path =
      (fs::path(dir) / hf::kPeftWeightsFile).string();
  NamedTensors tensors;
  st = ReadSafetensors(weights_path, &tensors);
  if (!st.ok()) return st;
  std::map<std::string, at::Tensor> by_key(tensors.begin(), tensors.end());
  std::map<std::string, at::Tensor> mine((*out)->trainable_.begin(),
                                         (*out)->trainable_.end());
  at::NoGradGuard no_grad;
  for (const auto& [name, key] : (*out)->PeftKeys()) {
    auto it = by_key.find(key);
    if (it == by_key.end()) {
      return Invalid(weights_path + " has no tensor " + key);
    }
    at::Tensor& t = mine.at(name);
    if (!it->second.sizes().equals(t.sizes())) {
      std::ostringstream msg;
      msg << weights_path << ": tensor " << key << " has shape "
          << it->second.sizes() << ", the model wants " << t.sizes();
      return Invalid(msg.str());
    }
    t.copy_(it->second);
    by_key.erase(it);
  }
  if (!by_key.empty()) {
    return Invalid(weights_path + ": tensor " + by_key.begin()->first +
                   " has no place in this model (adapter_config.json names "
                   "other modules)");
  }
  return TrainStatus::Ok();
}

}  // namespace halftime::engine
