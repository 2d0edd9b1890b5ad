#include "engine/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "engine/hf/pretrained.h"
#include "engine/models/families.h"

namespace halftime::engine {
namespace {

TrainStatus Invalid(const std::string& msg) {
  return TrainStatus::Error(TrainStatus::kInvalidInput, msg);
}

// The next id from fp32 `logits` [vocab] on the CPU.
int32_t NextId(const at::Tensor& logits, const GenerateOptions& options,
               at::Generator& generator) {
  if (options.temperature <= 0.0) {
    return static_cast<int32_t>(logits.argmax().item<int64_t>());
  }
  at::Tensor probs = at::softmax(logits / options.temperature, -1);
  if (options.top_p < 1.0) {
    auto [sorted, order] = probs.sort(/*dim=*/-1, /*descending=*/true);
    // Keep a token while the mass before it is below top_p (so the most
    // likely token always stays).
    const at::Tensor before = sorted.cumsum(-1) - sorted;
    sorted.masked_fill_(before.ge(options.top_p), 0.0);
    probs = at::zeros_like(probs).scatter_(-1, order, sorted);
  }
  return static_cast<int32_t>(
      at::multinomial(probs, 1, false, generator).item<int64_t>());
}

}  // namespace

TrainStatus Generate(TrainModel& model, const std::vector<int32_t>& prompt,
                     const GenerateOptions& options, at::Device device,
                     std::vector<int32_t>* out) {
  out->clear();
  if (prompt.empty()) return Invalid("the prompt has no tokens");
  if (options.max_new_tokens < 0) {
    return Invalid("max_new_tokens must not be negative");
  }
  if (!(options.temperature >= 0.0) || !(options.top_p > 0.0) ||
      options.top_p > 1.0) {
    return Invalid("temperature must be >= 0 and top_p in (0, 1]");
  }
  const int64_t vocab = model.vocab_size();
  if (vocab <= 0) {
    return Invalid("this model cannot generate text (not a language model)");
  }
  const int64_t context = model.max_positions();
  if (context > 0 && static_cast<int64_t>(prompt.size()) >= context) {
    return Invalid("the prompt has " + std::to_string(prompt.size()) +
                   " tokens; the model's context holds " +
                   std::to_string(context) + ", so none is left to generate");
  }
  for (int32_t id : prompt) {
    if (id < 0 || id >= vocab) {
      return Invalid("prompt token " + std::to_string(id) +
                     " is outside the model's vocabulary of " +
                     std::to_string(vocab));
    }
  }
  try {
    at::NoGradGuard no_grad;
    at::Generator generator =
        at::make_generator<at::CPUGeneratorImpl>(options.seed);
    KvCache cache;
    std::vector<int64_t> ids(prompt.begin(), prompt.end());
    at::Tensor input = at::tensor(ids, at::kLong).unsqueeze(0).to(device);
    at::Tensor logits = model.Decode(input, &cache);
    for (int i = 0; i < options.max_new_tokens; ++i) {
      const at::Tensor last = logits.select(1, logits.size(1) - 1)
                                  .squeeze(0)
                                  .to(at::kCPU, at::kFloat);
      const int32_t next = NextId(last, options, generator);
      out->push_back(next);
      if (std::find(options.stop_ids.begin(), options.stop_ids.end(), next) !=
          options.stop_ids.end()) {
        break;
      }
      // The context is full: a model cannot place another position.
      if (i + 1 == options.max_new_tokens ||
          (context > 0 && cache.length + 1 >= context)) {
        break;
      }
      input = at::full({1, 1}, static_cast<int64_t>(next),
                       at::TensorOptions().dtype(at::kLong).device(device));
      logits = model.Decode(input, &cache);
    }
  } catch (const c10::Error& e) {
    return TrainStatus::Error(
        TrainStatus::kTrainingFailed,
        std::string("generation failed: ") + e.what_without_backtrace());
  }
  return TrainStatus::Ok();
}

TrainStatus LoadPretrainedModel(const std::string& dir, at::ScalarType dtype,
                                std::unique_ptr<TrainModel>* out,
                                int64_t* vocab_size) {
  std::unique_ptr<hf::PretrainedFolder> folder;
  TrainStatus st = hf::PretrainedFolder::Open(dir, &folder);
  if (!st.ok()) return st;
  const PretrainedBuilder build = PretrainedBuilderFor(folder->config().family);
  if (build == nullptr) {
    return Invalid(dir + ": " + folder->config().architecture +
                   " has no model code");
  }
  if (vocab_size != nullptr) *vocab_size = folder->config().vocab_size;
  try {
    return build(*folder, dtype, out);
  } catch (const c10::Error& e) {
    return Invalid(dir + ": " + e.what_without_backtrace());
  }
}

}  // namespace halftime::engine
