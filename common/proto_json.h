// Protobuf messages as JSON trees, and JSON trees as YAML: the one walker and
// the one emitter behind spec printing (FormatJobSpec, `halftime validate`)
// and the CLI's `-o json|yaml` documents.
//
// Thread-safety: pure functions; thread-safe.
#ifndef HALFTIME_COMMON_PROTO_JSON_H_
#define HALFTIME_COMMON_PROTO_JSON_H_

#include <google/protobuf/message.h>

#include <nlohmann/json.hpp>
#include <string>

namespace halftime {

enum class ProtoJsonStyle {
  // API documents: keyed by proto field names in declaration order. Every
  // field appears: scalars always (zero values included), `optional`
  // scalars and sub-messages when set, repeated fields as arrays. Enums are
  // short names ("running", "bf16-mixed"; "unspecified" for 0), 64-bit
  // integers numbers, Timestamps RFC 3339 strings, and a JobSpec in the
  // kSpec style.
  kDocument,
  // Spec files: only the fields that are set, empty sub-messages left out,
  // enums by short name; reads back through ParseJobSpec to the same spec.
  kSpec,
};

nlohmann::ordered_json ProtoToJson(
    const google::protobuf::Message& message,
    ProtoJsonStyle style = ProtoJsonStyle::kDocument);

// Renders a JSON tree as a block-style YAML document (strings quoted only
// where YAML needs it, floats that read as floats in YAML 1.1 and 1.2).
// Ends with a newline.
std::string JsonToYaml(const nlohmann::ordered_json& value);

}  // namespace halftime

#endif  // HALFTIME_COMMON_PROTO_JSON_H_
