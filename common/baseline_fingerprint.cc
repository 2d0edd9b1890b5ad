#include "common/baseline_fingerprint.h"

#include "absl/strings/str_cat.h"
#include "common/sha256.h"

namespace halftime {

std::string BaselineFingerprint(const v1::JobSpec& spec,
                                const v1::WorkerCapabilities& caps) {
  const int threads =
      spec.threads() > 0 ? spec.threads() : caps.threads_per_job();
  // One field per line, named, so that no two different inputs can
  // produce the same text (names and values are length-prefixed).
  std::string text;
  auto add = [&text](const char* name, const std::string& value) {
    absl::StrAppend(&text, name, "=", value.size(), ":", value, "\n");
  };
  add("model.builtin", spec.model().builtin());
  add("model.torchscript", spec.model().torchscript());
  // Only when set, so that cached baselines of earlier jobs keep their keys.
  if (!spec.model().pretrained().empty()) {
    add("model.pretrained", spec.model().pretrained());
  }
  add("model.loss", spec.model().loss());
  add("data.kind", absl::StrCat(spec.data().kind()));
  add("data.path", spec.data().path());
  add("data.seq_len", absl::StrCat(spec.data().seq_len()));
  add("data.vocab_size", absl::StrCat(spec.data().vocab_size()));
  // Only when set, as above: what the tokens are and how they are laid out
  // decides the step's cost.
  const v1::DataSpec& data = spec.data();
  if (data.token_dtype() != v1::TOKEN_DTYPE_UNSPECIFIED) {
    add("data.token_dtype", absl::StrCat(data.token_dtype()));
  }
  if (!data.tokenizer().empty()) add("data.tokenizer", data.tokenizer());
  if (data.has_packing()) add("data.packing", absl::StrCat(data.packing()));
  if (data.chat_template() != v1::CHAT_TEMPLATE_UNSPECIFIED) {
    add("data.chat_template", absl::StrCat(data.chat_template()));
  }
  // An adapter job's baseline is the same adapter on an fp32 base: what it
  // trains decides the cost, not the job's base dtype.
  const v1::AdapterSpec& adapter = spec.adapter();
  if (adapter.kind() != v1::ADAPTER_KIND_UNSPECIFIED) {
    add("adapter.kind", absl::StrCat(adapter.kind()));
    add("adapter.rank", absl::StrCat(adapter.rank()));
    for (const std::string& t : adapter.target_modules()) {
      add("adapter.target_modules", t);
    }
    for (const std::string& m : adapter.modules_to_save()) {
      add("adapter.modules_to_save", m);
    }
  }
  add("batch_size", absl::StrCat(spec.batch_size()));
  add("grad_accumulation", absl::StrCat(spec.grad_accumulation()));
  add("optimizer", absl::StrCat(spec.optimizer().name()));
  add("device.kind", absl::StrCat(caps.device_kind()));
  add("device.name", caps.device_name());
  add("threads", absl::StrCat(threads));
  add("torch_version", caps.torch_version());
  add("blas", caps.blas());
  return Sha256::Of(text).substr(0, 16);
}

}  // namespace halftime
