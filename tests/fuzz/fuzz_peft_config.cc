// libFuzzer target: a PEFT adapter_config.json on arbitrary bytes.
//
// Beyond "no crash, no hang, no sanitizer report", an accepted config must
// be one the adapter code can use without checking again (a rank in range,
// a positive finite alpha, a dropout in [0, 1), named targets), and writing
// it back and parsing that must give the same config.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "engine/hf/peft_config.h"

namespace {

using halftime::engine::hf::FormatPeftConfig;
using halftime::engine::hf::ParsePeftConfig;
using halftime::engine::hf::PeftConfig;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_peft_config: %s\n", what.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  PeftConfig c;
  std::string error;
  if (!ParsePeftConfig(text, "adapter_config.json", &c, &error)) {
    if (error.rfind("adapter_config.json: ", 0) != 0) {
      Fail("error does not name the file: " + error);
    }
    return 0;
  }
  if (c.rank < 1 || c.rank > (1 << 20)) Fail("rank out of range accepted");
  if (!std::isfinite(c.alpha) || !(c.alpha > 0)) Fail("bad alpha accepted");
  if (!(c.dropout >= 0 && c.dropout < 1)) Fail("bad dropout accepted");
  for (const std::string& t : c.target_modules) {
    if (t.empty()) Fail("an empty target accepted");
  }
  PeftConfig again;
  if (!ParsePeftConfig(FormatPeftConfig(c), "adapter_config.json", &again,
                       &error)) {
    Fail("its own output refused: " + error);
  }
  if (again.rank != c.rank || again.alpha != c.alpha ||
      again.dropout != c.dropout || again.rslora != c.rslora ||
      again.target_modules != c.target_modules ||
      again.modules_to_save != c.modules_to_save ||
      again.base_model_name_or_path != c.base_model_name_or_path) {
    Fail("a round trip changed the config");
  }
  return 0;
}
