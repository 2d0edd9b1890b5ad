// Job specs: load a YAML or JSON document into a v1::JobSpec, fill defaults,
// validate, apply `--set key=value` overrides and render the result back.
//
// Every error is INVALID_ARGUMENT (NOT_FOUND for a missing file) and its
// message lists each problem on its own line as
//   SOURCE:LINE:COLUMN: FIELD.PATH: REASON
// (location left out when there is none, e.g. for a spec built in code).
// Malformed input of any kind (binary data, huge files, deep nesting, NaN,
// huge integers) yields an error, never a crash or a hang.
//
// Thread-safety: every function is thread-safe; none keeps state.
#ifndef HALFTIME_COMMON_SPEC_H_
#define HALFTIME_COMMON_SPEC_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "halftime/v1/job_spec.pb.h"

namespace halftime {

// Largest spec document accepted, in bytes.
inline constexpr std::size_t kMaxSpecBytes = 1 << 20;

enum class SpecFormat { kYaml, kJson };

// Parses `text` (YAML or JSON; JSON is read as YAML flow syntax), applies
// `overrides` ("optimizer.lr=1e-3"), fills defaults and validates.
// `source` names the document in error messages (usually the file path).
absl::StatusOr<v1::JobSpec> ParseJobSpec(
    absl::string_view text, absl::string_view source = "spec",
    const std::vector<std::string>& overrides = {});

// Reads `path` and parses it as ParseJobSpec does. NOT_FOUND when the file
// does not exist; INVALID_ARGUMENT when it cannot be read or is too large.
absl::StatusOr<v1::JobSpec> LoadJobSpecFile(
    const std::string& path, const std::vector<std::string>& overrides = {});

// Sets every absent field of `spec` to its default. Idempotent. The loss
// scaling mode of an `auto` spec stays unset until the precision is
// resolved (see ResolvePrecision).
void ApplyJobSpecDefaults(v1::JobSpec* spec);

// Validates a spec whose defaults are applied; reports every problem.
absl::Status ValidateJobSpec(const v1::JobSpec& spec);

// Checks the file paths of a spec a scheduler accepts (data.path,
// model.torchscript, model.init_from): each is relative to a worker's data
// root and stays inside it, i.e. is not absolute and has no ".." climbing
// above it. (A worker confines them again after resolving symlinks; this
// check turns the plain attempts into an error at submit time.) Specs run
// by halftime-train on their own may use any path, so ValidateJobSpec does
// not check this. INVALID_ARGUMENT names every offending field.
absl::Status ValidateDataRootPaths(const v1::JobSpec& spec);

// Sets `spec.precision` to the concrete `precision` (never AUTO) and fills
// the defaults that depend on it (loss-scaling mode; bf16-pure's update).
void ResolvePrecision(v1::JobSpec* spec, v1::Precision precision);

// Applies one "dotted.field.path=value" assignment, the value written as in
// the spec file. INVALID_ARGUMENT names the unknown field or bad value.
absl::Status ApplySpecOverride(v1::JobSpec* spec, absl::string_view assignment);

// Renders a spec in the spec file format (keys in declaration order, enums
// by short name, fields never set left out).
std::string FormatJobSpec(const v1::JobSpec& spec, SpecFormat format);

}  // namespace halftime

#endif  // HALFTIME_COMMON_SPEC_H_
