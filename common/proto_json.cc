#include "common/proto_json.h"

#include <google/protobuf/timestamp.pb.h>
#include <google/protobuf/util/time_util.h>

#include <cmath>
#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/enum_names.h"
#include "halftime/v1/job_spec.pb.h"

namespace halftime {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

std::string EnumJsonName(const google::protobuf::EnumValueDescriptor* value) {
  std::string name = EnumShortName(value);
  return name.empty() ? "unspecified" : name;
}

nlohmann::ordered_json MessageToJsonTree(const Message& message,
                                         ProtoJsonStyle style);

// One value of `field` (index -1: the singular value).
nlohmann::ordered_json FieldValueToJson(const Message& message,
                                        const FieldDescriptor* field, int index,
                                        ProtoJsonStyle style) {
  const Reflection* reflection = message.GetReflection();
  const bool repeated = index >= 0;
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return repeated ? reflection->GetRepeatedInt32(message, field, index)
                      : reflection->GetInt32(message, field);
    case FieldDescriptor::CPPTYPE_INT64:
      return repeated ? reflection->GetRepeatedInt64(message, field, index)
                      : reflection->GetInt64(message, field);
    case FieldDescriptor::CPPTYPE_UINT32:
      return repeated ? reflection->GetRepeatedUInt32(message, field, index)
                      : reflection->GetUInt32(message, field);
    case FieldDescriptor::CPPTYPE_UINT64:
      return repeated ? reflection->GetRepeatedUInt64(message, field, index)
                      : reflection->GetUInt64(message, field);
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return repeated ? reflection->GetRepeatedDouble(message, field, index)
                      : reflection->GetDouble(message, field);
    case FieldDescriptor::CPPTYPE_FLOAT:
      return repeated ? reflection->GetRepeatedFloat(message, field, index)
                      : reflection->GetFloat(message, field);
    case FieldDescriptor::CPPTYPE_BOOL:
      return repeated ? reflection->GetRepeatedBool(message, field, index)
                      : reflection->GetBool(message, field);
    case FieldDescriptor::CPPTYPE_STRING:
      return repeated ? reflection->GetRepeatedString(message, field, index)
                      : reflection->GetString(message, field);
    case FieldDescriptor::CPPTYPE_ENUM:
      return EnumJsonName(
          repeated ? reflection->GetRepeatedEnum(message, field, index)
                   : reflection->GetEnum(message, field));
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return MessageToJsonTree(
          repeated ? reflection->GetRepeatedMessage(message, field, index)
                   : reflection->GetMessage(message, field),
          style);
  }
  return nullptr;
}

nlohmann::ordered_json MessageToJsonTree(const Message& message,
                                         ProtoJsonStyle style) {
  const google::protobuf::Descriptor* descriptor = message.GetDescriptor();
  if (style == ProtoJsonStyle::kDocument) {
    if (descriptor == google::protobuf::Timestamp::descriptor()) {
      google::protobuf::Timestamp time;
      time.CopyFrom(message);
      return google::protobuf::util::TimeUtil::ToString(time);
    }
    if (descriptor == v1::JobSpec::descriptor()) {
      return MessageToJsonTree(message, ProtoJsonStyle::kSpec);
    }
  }
  const Reflection* reflection = message.GetReflection();
  nlohmann::ordered_json object = nlohmann::ordered_json::object();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    if (style == ProtoJsonStyle::kSpec) {
      // Set fields only; an empty sub-message or list says nothing.
      if (field->is_repeated()) {
        const int size = reflection->FieldSize(message, field);
        if (size == 0) continue;
        nlohmann::ordered_json array = nlohmann::ordered_json::array();
        for (int j = 0; j < size; ++j) {
          array.push_back(FieldValueToJson(message, field, j, style));
        }
        object[field->name()] = std::move(array);
        continue;
      }
      if (!reflection->HasField(message, field)) continue;
      nlohmann::ordered_json value =
          FieldValueToJson(message, field, -1, style);
      if (value.is_object() && value.empty()) continue;
      object[field->name()] = std::move(value);
      continue;
    }
    if (field->is_repeated()) {
      nlohmann::ordered_json array = nlohmann::ordered_json::array();
      const int size = reflection->FieldSize(message, field);
      for (int j = 0; j < size; ++j) {
        array.push_back(FieldValueToJson(message, field, j, style));
      }
      object[field->name()] = std::move(array);
      continue;
    }
    if (field->has_presence() && !reflection->HasField(message, field)) {
      continue;
    }
    object[field->name()] = FieldValueToJson(message, field, -1, style);
  }
  return object;
}

bool IsYamlReservedWord(absl::string_view text) {
  static const char* const kWords[] = {"true", "false", "yes", "no", "on",
                                       "off",  "null",  "y",   "n",  "~"};
  const std::string lower = absl::AsciiStrToLower(text);
  for (const char* word : kWords) {
    if (lower == word) return true;
  }
  return false;
}

// True when `text` reads back as the same string in YAML without quotes.
bool IsPlainYamlString(absl::string_view text) {
  if (text.empty() || IsYamlReservedWord(text)) return false;
  if (!absl::ascii_isalpha(static_cast<unsigned char>(text[0])) &&
      text[0] != '/' && text[0] != '_') {
    return false;  // Numbers, dates, indicators (-, ?, :, [, {, ...).
  }
  if (text.back() == ' ' || text.back() == ':') return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (absl::ascii_isalnum(c) || c >= 0x80) continue;
    if (c == ' ') {
      if (i + 1 < text.size() && text[i + 1] == '#') return false;
      continue;
    }
    if (c == ':') {
      if (i + 1 < text.size() && text[i + 1] == ' ') return false;
      continue;
    }
    if (std::string_view("._-/@+()=,").find(static_cast<char>(c)) ==
        std::string_view::npos) {
      return false;
    }
  }
  return true;
}

std::string YamlScalar(const nlohmann::ordered_json& value) {
  if (value.is_string()) {
    const std::string& text = value.get_ref<const std::string&>();
    if (IsPlainYamlString(text)) return text;
    return value.dump(-1, ' ', false,
                      nlohmann::ordered_json::error_handler_t::replace);
  }
  if (value.is_object()) return "{}";
  if (value.is_array()) return "[]";
  if (value.is_number_float()) {
    const double number = value.get<double>();
    if (std::isnan(number)) return ".nan";
    if (std::isinf(number)) return number > 0 ? ".inf" : "-.inf";
    // YAML 1.1 readers (PyYAML) take "1e-08" for a string: add the ".0".
    std::string text = value.dump();
    const std::size_t exponent = text.find_first_of("eE");
    if (exponent != std::string::npos && text.find('.') == std::string::npos) {
      text.insert(exponent, ".0");
    }
    return text;
  }
  return value.dump();
}

bool IsNonEmptyContainer(const nlohmann::ordered_json& value) {
  return (value.is_object() || value.is_array()) && !value.empty();
}

void EmitYaml(const nlohmann::ordered_json& value, int indent,
              std::string* out);

// Emits a sequence item: "- " then the item, whose first line shares the
// dash's line.
void EmitYamlItem(const nlohmann::ordered_json& item, int indent,
                  std::string* out) {
  const std::string pad(static_cast<std::size_t>(indent), ' ');
  if (!IsNonEmptyContainer(item)) {
    absl::StrAppend(out, pad, "- ", YamlScalar(item), "\n");
    return;
  }
  std::string nested;
  EmitYaml(item, indent + 2, &nested);
  // The nested block starts with indent + 2 spaces; the dash takes the
  // last two of them.
  absl::StrAppend(
      out, pad, "- ",
      absl::string_view(nested).substr(static_cast<std::size_t>(indent) + 2));
}

void EmitYaml(const nlohmann::ordered_json& value, int indent,
              std::string* out) {
  const std::string pad(static_cast<std::size_t>(indent), ' ');
  if (value.is_object()) {
    for (const auto& [key, child] : value.items()) {
      const std::string key_text = YamlScalar(nlohmann::ordered_json(key));
      if (IsNonEmptyContainer(child)) {
        absl::StrAppend(out, pad, key_text, ":\n");
        EmitYaml(child, child.is_array() ? indent : indent + 2, out);
      } else {
        absl::StrAppend(out, pad, key_text, ": ", YamlScalar(child), "\n");
      }
    }
    return;
  }
  if (value.is_array()) {
    for (const auto& item : value) EmitYamlItem(item, indent, out);
    return;
  }
  absl::StrAppend(out, pad, YamlScalar(value), "\n");
}

}  // namespace

nlohmann::ordered_json ProtoToJson(const Message& message,
                                   ProtoJsonStyle style) {
  return MessageToJsonTree(message, style);
}

std::string JsonToYaml(const nlohmann::ordered_json& value) {
  std::string out;
  if (!IsNonEmptyContainer(value)) return YamlScalar(value) + "\n";
  EmitYaml(value, 0, &out);
  return out;
}

}  // namespace halftime
