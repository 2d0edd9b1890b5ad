// Short, user-facing names of the API's enums: PRECISION_BF16_MIXED is
// "bf16-mixed", DATA_KIND_TEXT is "text". The spec format, the CLI and the
// metrics labels all use these names.
//
// Thread-safety: every function is pure and thread-safe.
#ifndef HALFTIME_COMMON_ENUM_NAMES_H_
#define HALFTIME_COMMON_ENUM_NAMES_H_

#include <google/protobuf/descriptor.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "halftime/v1/job.pb.h"
#include "halftime/v1/job_spec.pb.h"
#include "halftime/v1/worker.pb.h"
#include "rules/precision.h"

namespace halftime {

// Returns the short name of `value` (e.g. "bf16-mixed"), or "" for the
// UNSPECIFIED value and for numbers the enum does not define.
std::string EnumShortName(const google::protobuf::EnumValueDescriptor* value);
std::string EnumShortName(const google::protobuf::EnumDescriptor* type,
                          int number);

// Finds the value of `type` whose short name is `name`; nullptr when none
// (UNSPECIFIED is never matched).
const google::protobuf::EnumValueDescriptor* FindEnumByShortName(
    const google::protobuf::EnumDescriptor* type, absl::string_view name);

// All short names of `type` in declaration order, UNSPECIFIED left out.
std::vector<std::string> EnumShortNames(
    const google::protobuf::EnumDescriptor* type);

// Convenience wrappers for the enums users type most.
std::string PrecisionName(v1::Precision precision);
std::string JobStateName(v1::JobState state);
// Parses "bf16-mixed" etc. INVALID_ARGUMENT lists the valid names.
absl::StatusOr<v1::Precision> ParsePrecision(absl::string_view name);
absl::StatusOr<v1::JobState> ParseJobState(absl::string_view name);
// True for the states a job never leaves: SUCCEEDED, FAILED and CANCELLED.
bool IsTerminal(v1::JobState state);

// The precision rules' mode of a proto precision, matched by name: kAuto for
// PRECISION_AUTO and PRECISION_UNSPECIFIED (and any number the rules do not
// name). ToProto is its inverse; PRECISION_UNSPECIFIED for a mode the proto
// lacks (tests/rules/precision_rules_test.cc forbids one).
precision::Mode ToMode(v1::Precision precision);
v1::Precision ToProto(precision::Mode mode);
// The rules of a proto precision; nullptr for auto and unspecified.
const precision::Rules* RulesOf(v1::Precision precision);

// Whether a worker with `caps` runs `mode` natively: it reports the mode, and
// the mode does not need CUDA where the worker has none (such a report is
// not believed).
bool RunsNatively(const v1::WorkerCapabilities& caps, precision::Mode mode);

// Whether a worker with `caps` runs `mode` only by emulation: it lists the
// mode as emulated, does not run it natively, and the rules allow emulating
// it on a CPU (rules/precision.h RunsEmulated; a CUDA worker claiming it is
// not believed).
bool RunsEmulated(const v1::WorkerCapabilities& caps, precision::Mode mode);

}  // namespace halftime

#endif  // HALFTIME_COMMON_ENUM_NAMES_H_
