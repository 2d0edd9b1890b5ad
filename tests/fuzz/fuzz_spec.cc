// libFuzzer target: the spec loader on arbitrary bytes.
//
// The input is a spec document (YAML or JSON). Its last line, when it holds
// a '=', is also applied as a `--set` override, both while parsing and on a
// known-valid spec. Beyond "no crash, no hang, no sanitizer report", a spec
// that loads must survive a round trip: rendered as YAML and as JSON it
// loads again to the same spec.
#include <google/protobuf/util/message_differencer.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/spec.h"

namespace {

using halftime::ApplySpecOverride;
using halftime::FormatJobSpec;
using halftime::ParseJobSpec;
using halftime::SpecFormat;

// A spec every override can be tried on.
const halftime::v1::JobSpec& ValidSpec() {
  static const halftime::v1::JobSpec* spec = [] {
    auto parsed = ParseJobSpec(
        "name: fuzz\nmodel: {builtin: gpt-nano}\n"
        "data: {kind: synthetic}\nsteps: 10\n");
    if (!parsed.ok()) std::abort();
    return new halftime::v1::JobSpec(*parsed);
  }();
  return *spec;
}

void Fail(const char* what, const halftime::v1::JobSpec& spec,
          const std::string& text, const absl::Status& status) {
  std::fprintf(stderr, "fuzz_spec: %s\nspec:\n%s\nrendered:\n%s\nstatus: %s\n",
               what, spec.DebugString().c_str(), text.c_str(),
               status.ToString().c_str());
  std::abort();
}

// A loaded spec renders to text that loads to the same spec.
void CheckRoundTrip(const halftime::v1::JobSpec& spec) {
  for (SpecFormat format : {SpecFormat::kYaml, SpecFormat::kJson}) {
    std::string text = FormatJobSpec(spec, format);
    auto again = ParseJobSpec(text, "rendered");
    if (!again.ok()) {
      Fail("a loaded spec does not load again once rendered", spec, text,
           again.status());
    }
    if (!google::protobuf::util::MessageDifferencer::Equals(spec, *again)) {
      Fail("a rendered spec loads to a different spec", spec, text,
           absl::OkStatus());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> overrides;
  const size_t last_line = text.rfind('\n');
  if (last_line != absl::string_view::npos &&
      text.find('=', last_line) != absl::string_view::npos) {
    overrides.emplace_back(text.substr(last_line + 1));
  }

  auto spec = ParseJobSpec(text, "fuzz");
  if (spec.ok()) {
    CheckRoundTrip(*spec);
    (void)halftime::ValidateDataRootPaths(*spec);
  }
  if (!overrides.empty()) {
    auto with_override = ParseJobSpec(text, "fuzz", overrides);
    if (with_override.ok()) CheckRoundTrip(*with_override);
    halftime::v1::JobSpec valid = ValidSpec();
    if (ApplySpecOverride(&valid, overrides[0]).ok()) {
      halftime::ApplyJobSpecDefaults(&valid);
      if (halftime::ValidateJobSpec(valid).ok()) CheckRoundTrip(valid);
    }
  }
  return 0;
}
