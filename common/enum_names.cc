#include "common/enum_names.h"

#include <cctype>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace halftime {
namespace {

// "JobState" -> "JOB_STATE_": the prefix protobuf style puts on values.
std::string ValuePrefix(const google::protobuf::EnumDescriptor* type) {
  std::string prefix;
  for (char c : type->name()) {
    if (std::isupper(static_cast<unsigned char>(c)) && !prefix.empty()) {
      prefix += '_';
    }
    prefix += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return prefix + "_";
}

template <typename Enum>
absl::StatusOr<Enum> ParseEnum(const google::protobuf::EnumDescriptor* type,
                               absl::string_view name, absl::string_view what) {
  const auto* value = FindEnumByShortName(type, name);
  if (value == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown ", what, " \"", name, "\"; expected one of ",
                     absl::StrJoin(EnumShortNames(type), ", ")));
  }
  return static_cast<Enum>(value->number());
}

}  // namespace

std::string EnumShortName(const google::protobuf::EnumValueDescriptor* value) {
  if (value == nullptr || value->number() == 0) return "";
  const std::string prefix = ValuePrefix(value->type());
  absl::string_view full = value->name();
  if (full.substr(0, prefix.size()) == prefix)
    full.remove_prefix(prefix.size());
  std::string out;
  out.reserve(full.size());
  for (char c : full) {
    out += c == '_'
               ? '-'
               : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string EnumShortName(const google::protobuf::EnumDescriptor* type,
                          int number) {
  return EnumShortName(type->FindValueByNumber(number));
}

const google::protobuf::EnumValueDescriptor* FindEnumByShortName(
    const google::protobuf::EnumDescriptor* type, absl::string_view name) {
  for (int i = 0; i < type->value_count(); ++i) {
    const auto* value = type->value(i);
    if (value->number() != 0 && EnumShortName(value) == name) return value;
  }
  return nullptr;
}

std::vector<std::string> EnumShortNames(
    const google::protobuf::EnumDescriptor* type) {
  std::vector<std::string> names;
  for (int i = 0; i < type->value_count(); ++i) {
    if (type->value(i)->number() != 0)
      names.push_back(EnumShortName(type->value(i)));
  }
  return names;
}

std::string PrecisionName(v1::Precision precision) {
  return EnumShortName(v1::Precision_descriptor(), precision);
}

std::string JobStateName(v1::JobState state) {
  return EnumShortName(v1::JobState_descriptor(), state);
}

absl::StatusOr<v1::Precision> ParsePrecision(absl::string_view name) {
  return ParseEnum<v1::Precision>(v1::Precision_descriptor(), name,
                                  "precision");
}

absl::StatusOr<v1::JobState> ParseJobState(absl::string_view name) {
  return ParseEnum<v1::JobState>(v1::JobState_descriptor(), name, "job state");
}

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

precision::Mode ToMode(v1::Precision precision) {
  precision::Mode mode = precision::Mode::kAuto;
  precision::ParseMode(PrecisionName(precision), &mode);
  return mode;
}

v1::Precision ToProto(precision::Mode mode) {
  const auto* value = FindEnumByShortName(v1::Precision_descriptor(),
                                          precision::ModeName(mode));
  return value != nullptr ? static_cast<v1::Precision>(value->number())
                          : v1::PRECISION_UNSPECIFIED;
}

const precision::Rules* RulesOf(v1::Precision precision) {
  return precision::RulesOf(ToMode(precision));
}

bool RunsNatively(const v1::WorkerCapabilities& caps, precision::Mode mode) {
  if (caps.device_kind() != v1::DEVICE_KIND_CUDA && precision::NeedsCuda(mode))
    return false;
  const v1::Precision wanted = ToProto(mode);
  for (int p : caps.native_precisions()) {
    if (p == wanted) return true;
  }
  return false;
}

bool RunsEmulated(const v1::WorkerCapabilities& caps, precision::Mode mode) {
  if (caps.device_kind() == v1::DEVICE_KIND_CUDA || RunsNatively(caps, mode)) {
    return false;
  }
  const v1::Precision wanted = ToProto(mode);
  for (int p : caps.emulated_precisions()) {
    if (p == wanted) return precision::RunsEmulated(mode, {});
  }
  return false;
}

}  // namespace halftime
