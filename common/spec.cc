#include "common/spec.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/reflection.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/utf8.h"
#include "common/enum_names.h"
#include "common/proto_json.h"
#include "engine/hf/peft_config.h"
#include "rules/models.h"
#include "rules/precision.h"

namespace halftime {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

constexpr std::size_t kMaxStringBytes = 4096;
// Items in a list field (eval.prompts).
constexpr int kMaxListItems = 64;
constexpr int kMaxProblems = 50;

// A location in the source document (1-based), when known.
struct Location {
  int line = 0;
  int column = 0;
};

// Collects problems, each with a field path and maybe a location.
class Problems {
 public:
  explicit Problems(absl::string_view source) : source_(source) {}

  void Add(const std::string& path, const std::string& reason,
           std::optional<Location> at = std::nullopt) {
    if (lines_.size() >= kMaxProblems) {
      truncated_ = true;
      return;
    }
    std::string line;
    if (!source_.empty()) absl::StrAppend(&line, source_, ":");
    if (at) absl::StrAppend(&line, at->line, ":", at->column, ":");
    if (!line.empty()) line += " ";
    if (!path.empty()) absl::StrAppend(&line, path, ": ");
    line += reason;
    lines_.push_back(std::move(line));
  }

  bool empty() const { return lines_.empty(); }

  absl::Status ToStatus() const {
    if (lines_.empty()) return absl::OkStatus();
    std::string message = absl::StrJoin(lines_, "\n");
    if (truncated_) message += "\n(more problems not shown)";
    return absl::InvalidArgumentError(message);
  }

 private:
  std::string source_;
  std::vector<std::string> lines_;
  bool truncated_ = false;
};

std::string Quote(absl::string_view s) {
  constexpr std::size_t kShown = 60;
  std::string out = "\"";
  for (char c : s.substr(0, kShown)) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      out += absl::StrCat("\\x", absl::Hex(u, absl::kZeroPad2));
    } else {
      out += c;
    }
  }
  if (s.size() > kShown) out += "...";
  return out + "\"";
}

// A key as it can be shown in a message: itself when plain, else quoted.
std::string PrintableKey(absl::string_view key) {
  const bool plain = !key.empty() && key.size() <= 64 &&
                     std::all_of(key.begin(), key.end(), [](char c) {
                       return std::isalnum(static_cast<unsigned char>(c)) ||
                              c == '_' || c == '-';
                     });
  return plain ? std::string(key) : Quote(key);
}

std::string JoinPath(const std::string& parent, absl::string_view key) {
  return parent.empty() ? std::string(key) : absl::StrCat(parent, ".", key);
}

// Levenshtein distance, for "did you mean" hints.
std::size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1,
                         diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// The closest candidate to `word`, or "" when none is close enough to help.
std::string Nearest(absl::string_view word,
                    const std::vector<std::string>& candidates) {
  if (word.size() > 64) return "";
  std::string best;
  std::size_t best_distance = std::max<std::size_t>(2, word.size() / 3) + 1;
  for (const auto& candidate : candidates) {
    std::size_t d = EditDistance(word, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  return best;
}

// Names other training tools use for our keys.
std::string KnownAlias(absl::string_view word,
                       const std::vector<std::string>& candidates) {
  static const std::map<std::string, std::string, std::less<>> kAliases = {
      {"learning_rate", "lr"},
      {"lr_scheduler", "lr_schedule"},
      {"scheduler", "lr_schedule"},
      {"epochs", "steps"},
      {"max_steps", "steps"},
      {"num_steps", "steps"},
      {"train_steps", "steps"},
      {"micro_batch_size", "batch_size"},
      {"batch", "batch_size"},
      {"gradient_accumulation_steps", "grad_accumulation"},
      {"accumulation_steps", "grad_accumulation"},
      {"clip_grad_norm", "max_grad_norm"},
      {"grad_clip", "max_grad_norm"},
      {"dtype", "precision"},
      {"mixed_precision", "precision"},
      {"amp", "precision"},
      {"grad_scaler", "loss_scaling"},
      {"loss_scale", "loss_scaling"},
      {"optim", "optimizer"},
      {"dataset", "data"},
      {"block_size", "seq_len"},
      {"context_length", "seq_len"},
      {"warmup", "warmup_steps"},
  };
  auto it = kAliases.find(word);
  if (it == kAliases.end()) {
    // A misspelt alias ("lerning_rate") still points at the right key.
    std::size_t best = 3;
    for (auto alias = kAliases.begin(); alias != kAliases.end(); ++alias) {
      std::size_t d = EditDistance(word, alias->first);
      if (d < best && alias->first.size() > 4) {
        best = d;
        it = alias;
      }
    }
    if (it == kAliases.end()) return "";
  }
  return std::find(candidates.begin(), candidates.end(), it->second) !=
                 candidates.end()
             ? it->second
             : "";
}

std::string DidYouMean(absl::string_view word,
                       const std::vector<std::string>& candidates) {
  std::string nearest = KnownAlias(word, candidates);
  if (nearest.empty()) nearest = Nearest(word, candidates);
  return nearest.empty() ? ""
                         : absl::StrCat("; did you mean \"", nearest, "\"?");
}

std::vector<std::string> FieldNames(const Descriptor* type) {
  std::vector<std::string> names;
  for (int i = 0; i < type->field_count(); ++i) {
    names.push_back(type->field(i)->name());
  }
  return names;
}

// Parses a whole string as an integer; nullopt when it is not one.
std::optional<int64_t> ParseInteger(absl::string_view text, bool* overflow) {
  *overflow = false;
  if (!text.empty() && text[0] == '+') text.remove_prefix(1);
  int64_t value = 0;
  auto [end, ec] =
      std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range) {
    *overflow = true;
    return std::nullopt;
  }
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
    return std::nullopt;
  }
  return value;
}

// Parses a whole string as a number, accepting YAML's .inf/.nan spellings so
// that they can be refused with a clear reason.
std::optional<double> ParseNumber(absl::string_view text) {
  std::string lower;
  for (char c : text)
    lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  absl::string_view t = lower;
  bool negative = false;
  if (!t.empty() && (t[0] == '+' || t[0] == '-')) {
    negative = t[0] == '-';
    t.remove_prefix(1);
  }
  if (t == ".inf" || t == "inf" || t == "infinity") {
    return negative ? -std::numeric_limits<double>::infinity()
                    : std::numeric_limits<double>::infinity();
  }
  if (t == ".nan" || t == "nan")
    return std::numeric_limits<double>::quiet_NaN();
  if (t.empty() ||
      !(std::isdigit(static_cast<unsigned char>(t[0])) || t[0] == '.')) {
    return std::nullopt;
  }
  double value = 0;
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), value);
  if (ec == std::errc::result_out_of_range) {
    return std::numeric_limits<double>::infinity();
  }
  if (ec != std::errc() || end != t.data() + t.size()) return std::nullopt;
  value = negative ? -value : value;
  return value == 0.0 ? 0.0 : value;  // -0 is 0
}

std::optional<Location> MarkToLocation(const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return std::nullopt;
  return Location{mark.line + 1, mark.column + 1};
}

// Sets one scalar field from its spec-file text. Returns the reason when
// the text does not fit the field's type.
std::optional<std::string> SetScalar(Message* message,
                                     const FieldDescriptor* field,
                                     absl::string_view text) {
  const Reflection* reflection = message->GetReflection();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING: {
      if (text.size() > kMaxStringBytes) {
        return absl::StrCat("is ", text.size(), " bytes long; the limit is ",
                            kMaxStringBytes);
      }
      reflection->SetString(message, field, std::string(text));
      return std::nullopt;
    }
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64: {
      bool overflow = false;
      std::optional<int64_t> value = ParseInteger(text, &overflow);
      const bool is32 = field->cpp_type() == FieldDescriptor::CPPTYPE_INT32;
      const int64_t lo = is32 ? std::numeric_limits<int32_t>::min()
                              : std::numeric_limits<int64_t>::min();
      const int64_t hi = is32 ? std::numeric_limits<int32_t>::max()
                              : std::numeric_limits<int64_t>::max();
      if (overflow || (value && (*value < lo || *value > hi))) {
        return absl::StrCat("integer ", Quote(text), " is out of range [", lo,
                            ", ", hi, "]");
      }
      if (!value) {
        std::optional<double> number = ParseNumber(text);
        if (number && std::isfinite(*number) &&
            *number == std::floor(*number) && std::abs(*number) <= 1e15) {
          value = static_cast<int64_t>(*number);  // e.g. 1e3 or 100.0
        } else {
          return absl::StrCat("must be an integer, got ", Quote(text));
        }
      }
      if (is32) {
        reflection->SetInt32(message, field, static_cast<int32_t>(*value));
      } else {
        reflection->SetInt64(message, field, *value);
      }
      return std::nullopt;
    }
    case FieldDescriptor::CPPTYPE_DOUBLE: {
      std::optional<double> value = ParseNumber(text);
      if (!value) return absl::StrCat("must be a number, got ", Quote(text));
      if (!std::isfinite(*value)) {
        return absl::StrCat("must be a finite number, got ", Quote(text));
      }
      reflection->SetDouble(message, field, *value);
      return std::nullopt;
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      if (text == "true" || text == "True" || text == "TRUE") {
        reflection->SetBool(message, field, true);
      } else if (text == "false" || text == "False" || text == "FALSE") {
        reflection->SetBool(message, field, false);
      } else {
        return absl::StrCat("must be true or false, got ", Quote(text));
      }
      return std::nullopt;
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const EnumDescriptor* type = field->enum_type();
      const auto* value = FindEnumByShortName(type, text);
      if (value == nullptr) {
        std::vector<std::string> names = EnumShortNames(type);
        return absl::StrCat("unknown value ", Quote(text), "; expected one of ",
                            absl::StrJoin(names, ", "),
                            DidYouMean(text, names));
      }
      reflection->SetEnum(message, field, value);
      return std::nullopt;
    }
    default:
      return std::string("has a type the spec format does not support");
  }
}

// Counts parser events, to tell an empty document from a real one.
class EventCounter : public YAML::EventHandler {
 public:
  int events = 0;
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override { ++events; }
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override { ++events; }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {
    ++events;
  }
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    ++events;
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    ++events;
  }
  void OnMapEnd() override {}
};

// Loads the first document and says whether a second one follows. Unlike
// YAML::LoadAll this is bounded: yaml-cpp 0.7 yields empty documents
// forever (allocating until killed) for text that starts with ','.
std::vector<YAML::Node> LoadAtMostTwoDocuments(absl::string_view text) {
  std::istringstream stream{std::string(text)};
  YAML::Parser parser(stream);
  EventCounter first;
  if (!parser.HandleNextDocument(first)) return {};
  EventCounter second;
  const bool has_second = parser.HandleNextDocument(second);
  if (has_second && (first.events == 0 || second.events == 0)) {
    throw YAML::ParserException(
        YAML::Mark::null_mark(),
        "stray flow character (',', ']' or '}') outside any list or mapping");
  }
  std::vector<YAML::Node> documents = {YAML::Load(std::string(text))};
  if (has_second) documents.emplace_back();
  return documents;
}

// Fills a message from a YAML mapping, recording each field's location.
class DocumentReader {
 public:
  DocumentReader(Problems* problems, std::map<std::string, Location>* locations)
      : problems_(problems), locations_(locations) {}

  void ReadMessage(const YAML::Node& node, Message* message,
                   const std::string& path) {
    if (node.IsNull()) return;
    if (!node.IsMap()) {
      problems_->Add(
          path,
          absl::StrCat("expected a mapping of keys, got ", KindName(node)),
          MarkToLocation(node.Mark()));
      return;
    }
    const Descriptor* type = message->GetDescriptor();
    std::set<std::string> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      // Copies: yaml-cpp iterators yield a temporary pair.
      const YAML::Node key = it->first;
      const YAML::Node value = it->second;
      if (!key.IsScalar()) {
        problems_->Add(path, "keys must be plain names",
                       MarkToLocation(key.Mark()));
        continue;
      }
      const std::string& name = key.Scalar();
      const std::string field_path = JoinPath(path, name);
      std::optional<Location> at = MarkToLocation(key.Mark());
      if (!seen.insert(name).second) {
        problems_->Add(field_path, "duplicate key", at);
        continue;
      }
      const FieldDescriptor* field = type->FindFieldByName(name);
      if (field == nullptr) {
        problems_->Add(
            JoinPath(path, PrintableKey(name)),
            absl::StrCat("unknown key", DidYouMean(name, FieldNames(type))),
            at);
        continue;
      }
      if (at) (*locations_)[field_path] = *at;
      ReadField(value, message, field, field_path);
    }
  }

 private:
  static std::string KindName(const YAML::Node& node) {
    if (node.IsSequence()) return "a list";
    if (node.IsMap()) return "a mapping";
    if (node.IsScalar())
      return absl::StrCat("the value ", Quote(node.Scalar()));
    return "nothing";
  }

  void ReadField(const YAML::Node& value, Message* message,
                 const FieldDescriptor* field, const std::string& path) {
    std::optional<Location> at = MarkToLocation(value.Mark());
    if (value.IsNull()) return;  // "key:" with no value means "not given"
    if (field->is_repeated()) {
      ReadList(value, message, field, path);
      return;
    }
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      ReadMessage(value,
                  message->GetReflection()->MutableMessage(message, field),
                  path);
      return;
    }
    if (!value.IsScalar()) {
      problems_->Add(
          path, absl::StrCat("expected a single value, got ", KindName(value)),
          at);
      return;
    }
    if (std::optional<std::string> reason =
            SetScalar(message, field, value.Scalar())) {
      problems_->Add(path, *reason, at);
    }
  }

  // A list of strings (the only repeated fields a spec has), e.g.
  // eval.prompts; element i is reported as path[i]. A single value stands
  // for a list of one (target_modules: all-linear, as PEFT writes it).
  void ReadList(const YAML::Node& value, Message* message,
                const FieldDescriptor* field, const std::string& path) {
    std::optional<Location> at = MarkToLocation(value.Mark());
    if (field->cpp_type() != FieldDescriptor::CPPTYPE_STRING) {
      problems_->Add(path, "lists are not supported here", at);
      return;
    }
    const Reflection* reflection = message->GetReflection();
    if (value.IsScalar()) {
      reflection->AddString(message, field, value.Scalar());
      return;
    }
    if (!value.IsSequence()) {
      problems_->Add(
          path, absl::StrCat("expected a list, got ", KindName(value)), at);
      return;
    }
    for (std::size_t i = 0; i < value.size(); ++i) {
      const YAML::Node item = value[i];
      if (!item.IsScalar()) {
        problems_->Add(absl::StrCat(path, "[", i, "]"),
                       absl::StrCat("expected text, got ", KindName(item)),
                       MarkToLocation(item.Mark()));
        continue;
      }
      reflection->AddString(message, field, item.Scalar());
    }
  }

  Problems* problems_;
  std::map<std::string, Location>* locations_;
};

// Runs `check` for every problem the validator reports, attaching the
// location of the field (or of its closest parent) when known.
class LocatingSink {
 public:
  LocatingSink(Problems* problems,
               const std::map<std::string, Location>* locations,
               const std::map<std::string, std::string>* overridden = nullptr)
      : problems_(problems), locations_(locations), overridden_(overridden) {}
  void operator()(const std::string& path, const std::string& reason) const {
    std::optional<Location> at;
    if (overridden_ != nullptr) {
      auto it = overridden_->find(path);
      if (it != overridden_->end()) {
        problems_->Add(path,
                       absl::StrCat(reason, " (from --set ", it->second, ")"));
        return;
      }
    }
    if (locations_ != nullptr) {
      std::string p = path;
      while (!p.empty()) {
        auto it = locations_->find(p);
        if (it != locations_->end()) {
          at = it->second;
          break;
        }
        std::size_t dot = p.rfind('.');
        p = dot == std::string::npos ? "" : p.substr(0, dot);
      }
    }
    problems_->Add(path, reason, at);
  }

 private:
  Problems* problems_;
  const std::map<std::string, Location>* locations_;
  const std::map<std::string, std::string>* overridden_;
};

std::string Num(double v) {
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), v);
  return ec == std::errc() ? std::string(buffer, end) : absl::StrCat(v);
}

template <typename Sink>
class Validator {
 public:
  explicit Validator(const Sink& sink) : sink_(sink) {}

  void Run(const v1::JobSpec& spec) {
    ValidateEnumsAndLengths(spec, "");
    ValidateName(spec.name());
    ValidateModel(spec.model());
    ValidateData(spec);
    ValidateEvalAndOutput(spec);
    ValidateAdapter(spec);
    ValidateShape(spec.model());
    ValidatePrecisionAndScaling(spec);
    ValidateOptimizer(spec.optimizer());
    if (!spec.has_steps()) {
      sink_("steps", "required: the number of optimizer steps to run");
    } else {
      // steps: 0 loads a pretrained folder and exports it (a conversion,
      // e.g. to output.dtype), training nothing.
      IntRange("steps", spec.steps(), spec.model().pretrained().empty() ? 1 : 0,
               100'000'000);
      if (spec.steps() >= 1 &&
          spec.lr_schedule().warmup_steps() > spec.steps()) {
        sink_("lr_schedule.warmup_steps",
              absl::StrCat("is ", spec.lr_schedule().warmup_steps(),
                           ", more than steps (", spec.steps(), ")"));
      }
    }
    IntRange("lr_schedule.warmup_steps", spec.lr_schedule().warmup_steps(), 0,
             100'000'000);
    DoubleRange("lr_schedule.min_lr_ratio", spec.lr_schedule().min_lr_ratio(),
                0, 1);
    if (spec.lr_schedule().decay() == v1::LR_DECAY_CONSTANT &&
        spec.lr_schedule().has_min_lr_ratio() &&
        spec.lr_schedule().min_lr_ratio() != 1.0 &&
        spec.lr_schedule().min_lr_ratio() != 0.1) {
      sink_("lr_schedule.min_lr_ratio",
            "has no effect with decay: constant; use cosine or linear");
    }
    IntRange("batch_size", spec.batch_size(), 1, 65536);
    IntRange("grad_accumulation", spec.grad_accumulation(), 1, 4096);
    DoubleRange("max_grad_norm", spec.max_grad_norm(), 0, 1e6);
    IntRange("seed", spec.seed(), 0, std::numeric_limits<int64_t>::max());
    IntRange("checkpoint.every_steps", spec.checkpoint().every_steps(), 0,
             100'000'000);
    IntRange("threads", spec.threads(), 0, 1024);
    IntRange("priority", spec.priority(), -1000, 1000);
    IntRange("max_restarts", spec.max_restarts(), 0, 100);
    ValidateResources(spec);
    IntRange("savings.probe_steps", spec.savings().probe_steps(), 1, 1000);
  }

 private:
  // Enum fields hold one of their values, and strings are no longer than
  // the spec reader allows: a spec that comes as a proto (SubmitJob) can
  // carry any number and any length there.
  void ValidateEnumsAndLengths(const Message& message,
                               const std::string& prefix) {
    const Descriptor* type = message.GetDescriptor();
    const Reflection* reflection = message.GetReflection();
    for (int i = 0; i < type->field_count(); ++i) {
      const FieldDescriptor* field = type->field(i);
      const std::string path = JoinPath(prefix, field->name());
      if (field->is_repeated()) {
        if (field->cpp_type() != FieldDescriptor::CPPTYPE_STRING) continue;
        const int count = reflection->FieldSize(message, field);
        if (count > kMaxListItems) {
          sink_(path, absl::StrCat("has ", count, " items; the limit is ",
                                   kMaxListItems));
        }
        for (int j = 0; j < count && j < kMaxListItems; ++j) {
          const std::size_t size =
              reflection->GetRepeatedString(message, field, j).size();
          if (size > kMaxStringBytes) {
            sink_(absl::StrCat(path, "[", j, "]"),
                  absl::StrCat("is ", size, " bytes long; the limit is ",
                               kMaxStringBytes));
          }
        }
        continue;
      }
      if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE &&
          reflection->HasField(message, field)) {
        ValidateEnumsAndLengths(reflection->GetMessage(message, field), path);
      } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_STRING &&
                 path != "name") {  // ValidateName has a tighter limit
        std::string scratch;
        const std::size_t size =
            reflection->GetStringReference(message, field, &scratch).size();
        if (size > kMaxStringBytes) {
          sink_(path, absl::StrCat("is ", size, " bytes long; the limit is ",
                                   kMaxStringBytes));
        }
      } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_ENUM) {
        const int number = reflection->GetEnumValue(message, field);
        if (field->enum_type()->FindValueByNumber(number) == nullptr) {
          sink_(path,
                absl::StrCat(
                    "unknown value ", number, "; expected one of ",
                    absl::StrJoin(EnumShortNames(field->enum_type()), ", ")));
        }
      }
    }
  }

  void IntRange(const std::string& path, int64_t value, int64_t lo,
                int64_t hi) {
    if (value < lo || value > hi) {
      sink_(path,
            absl::StrCat("must be between ", lo, " and ", hi, ", got ", value));
    }
  }

  void DoubleRange(const std::string& path, double value, double lo,
                   double hi) {
    if (!std::isfinite(value)) {
      sink_(path, "must be a finite number");
    } else if (value < lo || value > hi) {
      sink_(path, absl::StrCat("must be between ", Num(lo), " and ", Num(hi),
                               ", got ", Num(value)));
    }
  }

  // lo < value <= hi
  void PositiveUpTo(const std::string& path, double value, double hi) {
    if (!std::isfinite(value)) {
      sink_(path, "must be a finite number");
    } else if (value <= 0 || value > hi) {
      sink_(path, absl::StrCat("must be greater than 0 and at most ", Num(hi),
                               ", got ", Num(value)));
    }
  }

  void ValidatePath(const std::string& path, const std::string& value) {
    if (value.find('\0') != std::string::npos) {
      sink_(path, "must not contain NUL bytes");
    } else if (utf8::FindInvalid(value) != std::string_view::npos) {
      sink_(path, "must be valid UTF-8");
    }
  }

  void ValidateName(const std::string& name) {
    if (name.empty()) {
      sink_("name", "required: a non-empty job name");
      return;
    }
    if (name.size() > 128) {
      sink_("name", absl::StrCat("is ", name.size(),
                                 " characters long; the limit is 128"));
      return;
    }
    for (char c : name) {
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' ||
            c == '_' || c == '-')) {
        sink_("name", absl::StrCat("may hold only letters, digits, '.', '_' "
                                   "and '-'; got ",
                                   Quote(std::string(1, c))));
        return;
      }
    }
  }

  void ValidateModel(const v1::ModelSpec& model) {
    static const std::vector<std::string> kBuiltins = [] {
      std::vector<std::string> names;
      for (const models::Builtin& b : models::Builtins()) {
        names.push_back(b.name);
      }
      return names;
    }();
    static const std::vector<std::string> kLosses = {"cross_entropy", "mse"};
    const int sources = !model.builtin().empty() +
                        !model.torchscript().empty() +
                        !model.pretrained().empty();
    if (sources != 1) {
      sink_(
          "model",
          sources == 0
              ? absl::StrCat("required: set builtin (", models::BuiltinNames(),
                             "), torchscript or pretrained")
              : "set exactly one of builtin, torchscript and pretrained");
    }
    if (!model.builtin().empty() &&
        std::find(kBuiltins.begin(), kBuiltins.end(), model.builtin()) ==
            kBuiltins.end()) {
      sink_("model.builtin",
            absl::StrCat("unknown model ", Quote(model.builtin()),
                         "; expected one of ", absl::StrJoin(kBuiltins, ", "),
                         DidYouMean(model.builtin(), kBuiltins)));
    }
    if (std::find(kLosses.begin(), kLosses.end(), model.loss()) ==
        kLosses.end()) {
      sink_("model.loss",
            absl::StrCat("unknown loss ", Quote(model.loss()),
                         "; expected one of ", absl::StrJoin(kLosses, ", "),
                         DidYouMean(model.loss(), kLosses)));
    }
    const models::Builtin* builtin = models::FindBuiltin(model.builtin());
    if (builtin != nullptr && builtin->language_model &&
        model.loss() != "cross_entropy") {
      sink_("model.loss", absl::StrCat(model.builtin(),
                                       " is a language model; its loss is "
                                       "cross_entropy"));
    }
    if (!model.pretrained().empty() && model.loss() != "cross_entropy") {
      sink_("model.loss",
            "a pretrained model is a language model; its loss is "
            "cross_entropy");
    }
    ValidatePath("model.torchscript", model.torchscript());
    ValidatePath("model.pretrained", model.pretrained());
    ValidatePath("model.init_from", model.init_from());
  }

  void ValidateData(const v1::JobSpec& spec) {
    const v1::DataSpec& data = spec.data();
    const bool pretrained = !spec.model().pretrained().empty();
    if (data.kind() == v1::DATA_KIND_UNSPECIFIED) {
      sink_("data.kind",
            "required: one of text, tokens, tensors, synthetic, jsonl");
    } else if (data.kind() == v1::DATA_KIND_SYNTHETIC) {
      if (!data.path().empty())
        sink_("data.path", "synthetic data takes no path");
    } else if (data.path().empty()) {
      sink_("data.path",
            absl::StrCat("required for ",
                         EnumShortName(v1::DataKind_descriptor(), data.kind()),
                         " data"));
    }
    ValidatePath("data.path", data.path());
    ValidatePath("data.tokenizer", data.tokenizer());
    IntRange("data.seq_len", data.seq_len(), 1, 65536);
    DoubleRange("data.eval_fraction", data.eval_fraction(), 0, 0.5);
    if (data.has_vocab_size()) {
      IntRange("data.vocab_size", data.vocab_size(), 2, 1 << 20);
    }
    const bool text_like =
        data.kind() == v1::DATA_KIND_TEXT || data.kind() == v1::DATA_KIND_JSONL;
    // Text is tokenized by data.tokenizer, else by the pretrained folder's
    // tokenizer, else (text only) byte by byte.
    const bool has_tokenizer = !data.tokenizer().empty() || pretrained;
    if (!data.tokenizer().empty() && !text_like) {
      sink_("data.tokenizer", "applies to text and jsonl data only");
    }
    if (data.kind() == v1::DATA_KIND_JSONL && !has_tokenizer) {
      sink_("data.tokenizer",
            "required for jsonl data (or a model.pretrained folder with a "
            "tokenizer.json)");
    }
    if (text_like && has_tokenizer && data.has_vocab_size()) {
      sink_("data.vocab_size",
            "is set by the tokenizer for text and jsonl data; remove it");
    } else if (data.kind() == v1::DATA_KIND_TEXT && data.has_vocab_size() &&
               data.vocab_size() != 256) {
      sink_("data.vocab_size", absl::StrCat("text data is byte-level; its "
                                            "vocabulary is 256, got ",
                                            data.vocab_size()));
    }
    if (data.token_dtype() != v1::TOKEN_DTYPE_UNSPECIFIED &&
        data.kind() != v1::DATA_KIND_TOKENS) {
      sink_("data.token_dtype", "applies to tokens data only");
    }
    if (data.kind() == v1::DATA_KIND_TOKENS &&
        data.token_dtype() != v1::TOKEN_DTYPE_UINT32 &&
        data.vocab_size() > 65536) {
      sink_("data.vocab_size",
            absl::StrCat("uint16 token files hold ids below 65536; got ",
                         data.vocab_size(),
                         " (set data.token_dtype: uint32 for a larger "
                         "vocabulary)"));
    }
    if (data.has_packing() && data.kind() != v1::DATA_KIND_JSONL) {
      sink_("data.packing", "applies to jsonl data only");
    }
    if (data.chat_template() != v1::CHAT_TEMPLATE_UNSPECIFIED &&
        data.kind() != v1::DATA_KIND_JSONL) {
      sink_("data.chat_template", "applies to jsonl data only");
    }
  }

  void ValidateEvalAndOutput(const v1::JobSpec& spec) {
    const v1::EvalSpec& eval = spec.eval();
    const v1::DataSpec& data = spec.data();
    IntRange("eval.every_steps", eval.every_steps(), 0, 100'000'000);
    IntRange("eval.batches", eval.batches(), 1, 10'000);
    IntRange("eval.max_new_tokens", eval.max_new_tokens(), 1, 4096);
    if (eval.prompts_size() > 0) {
      // A prompt needs text-to-ids and back: a tokenizer, or byte-level
      // text data on a built-in model.
      const bool text_like = data.kind() == v1::DATA_KIND_TEXT ||
                             data.kind() == v1::DATA_KIND_JSONL;
      if (!text_like && spec.model().pretrained().empty()) {
        sink_("eval.prompts",
              "need a tokenizer: text or jsonl data, or a model.pretrained "
              "folder");
      }
      if (!spec.model().torchscript().empty() ||
          spec.model().builtin() == "mlp") {
        sink_("eval.prompts", "need a language model");
      }
      for (int i = 0; i < eval.prompts_size(); ++i) {
        if (eval.prompts(i).empty()) {
          sink_(absl::StrCat("eval.prompts[", i, "]"), "is empty");
        }
      }
    }
    const v1::OutputSpec& output = spec.output();
    // An adapter job exports its adapters even off a built-in model.
    if (spec.model().pretrained().empty() &&
        spec.adapter().kind() == v1::ADAPTER_KIND_UNSPECIFIED) {
      if (output.dtype() != v1::OUTPUT_DTYPE_UNSPECIFIED) {
        sink_("output.dtype",
              "applies to a model.pretrained job's exported hf/ folder");
      }
      if (output.has_export_with_checkpoints()) {
        sink_("output.export_with_checkpoints",
              "applies to a model.pretrained job's exported hf/ folder");
      }
    }
  }

  // Module names as PEFT and Hugging Face spell them.
  void ModuleNames(const std::string& path,
                   const google::protobuf::RepeatedPtrField<std::string>& names,
                   bool allow_all_linear) {
    for (int i = 0; i < names.size(); ++i) {
      const std::string& n = names.Get(i);
      const std::string item = absl::StrCat(path, "[", i, "]");
      const bool plain =
          !n.empty() && std::all_of(n.begin(), n.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) || c == '_' ||
                   c == '.' || c == '-';
          });
      if (!plain) {
        sink_(item, absl::StrCat("is not a module name: ", Quote(n)));
      } else if (n == engine::hf::kAllLinear &&
                 (!allow_all_linear || names.size() > 1)) {
        sink_(item, allow_all_linear
                        ? "all-linear stands alone: it already names every "
                          "linear layer"
                        : "all-linear is a target_modules value");
      }
    }
  }

  // model.shape, as `halftime submit` writes it or a user sets it: the
  // memory estimate multiplies these, so each stays within what any model
  // published has, and the estimate within int64.
  void ValidateShape(const v1::ModelSpec& model) {
    if (!model.has_shape()) return;
    const v1::ModelShape& s = model.shape();
    if (s.family() != "llama" && s.family() != "gpt2") {
      sink_("model.shape.family", "must be llama or gpt2");
    }
    IntRange("model.shape.vocab_size", s.vocab_size(), 1, 10'000'000);
    IntRange("model.shape.hidden_size", s.hidden_size(), 1, 1'000'000);
    IntRange("model.shape.intermediate_size", s.intermediate_size(), 1,
             10'000'000);
    IntRange("model.shape.num_layers", s.num_layers(), 1, 10'000);
    IntRange("model.shape.num_heads", s.num_heads(), 1, 10'000);
    IntRange("model.shape.num_kv_heads", s.num_kv_heads(), 1, 10'000);
    IntRange("model.shape.head_dim", s.head_dim(), 1, 100'000);
    IntRange("model.shape.max_positions", s.max_positions(), 0, 100'000'000);
  }

  void ValidateAdapter(const v1::JobSpec& spec) {
    const v1::AdapterSpec& a = spec.adapter();
    const bool merge = spec.output().has_merge() && spec.output().merge();
    if (a.kind() == v1::ADAPTER_KIND_UNSPECIFIED) {
      if (a.has_rank() || a.has_alpha() || a.has_dropout() ||
          a.target_modules_size() > 0 || a.has_rslora() ||
          a.base_dtype() != v1::BASE_DTYPE_UNSPECIFIED ||
          a.has_double_quant() || a.modules_to_save_size() > 0) {
        sink_("adapter.kind", "required with the other adapter keys: lora");
      }
      if (merge) sink_("output.merge", "needs an adapter (adapter.kind: lora)");
      return;
    }
    const v1::ModelSpec& m = spec.model();
    if (!m.torchscript().empty() || m.builtin() == "mlp") {
      sink_("adapter",
            "needs a language model: a gpt built-in or model.pretrained");
    }
    IntRange("adapter.rank", a.rank(), 1, 4096);
    DoubleRange("adapter.alpha", a.alpha(), 1e-6, 1e6);
    if (!(a.dropout() >= 0 && a.dropout() < 1)) {
      sink_("adapter.dropout", "must be in [0, 1)");
    }
    ModuleNames("adapter.target_modules", a.target_modules(), true);
    ModuleNames("adapter.modules_to_save", a.modules_to_save(), false);
    if (merge && m.pretrained().empty()) {
      sink_("output.merge",
            "writes a merged Hugging Face folder: it needs model.pretrained");
    }
  }

  void ValidatePrecisionAndScaling(const v1::JobSpec& spec) {
    const v1::LossScalingSpec& ls = spec.loss_scaling();
    const std::string precision = PrecisionName(spec.precision());
    if (spec.precision() == v1::PRECISION_UNSPECIFIED) {
      sink_("precision", "required");
    }
    if (ls.mode() == v1::LOSS_SCALING_MODE_STATIC && !ls.has_init_scale()) {
      sink_("loss_scaling.init_scale",
            "required with mode: static (the fixed scale to use)");
    }
    const precision::Rules* rules = RulesOf(spec.precision());
    if (rules != nullptr && *rules->no_loss_scaling_reason != '\0' &&
        (ls.mode() == v1::LOSS_SCALING_MODE_DYNAMIC ||
         ls.mode() == v1::LOSS_SCALING_MODE_STATIC)) {
      sink_("loss_scaling.mode",
            absl::StrCat(
                precision, " ", rules->no_loss_scaling_reason,
                "; use mode: none, got ",
                EnumShortName(v1::LossScalingMode_descriptor(), ls.mode())));
    }
    if (ls.has_init_scale()) {
      PositiveUpTo("loss_scaling.init_scale", ls.init_scale(), 0x1p127);
    }
    DoubleRange("loss_scaling.growth_factor", ls.growth_factor(), 1, 1000);
    if (ls.growth_factor() == 1.0 &&
        ls.mode() == v1::LOSS_SCALING_MODE_DYNAMIC) {
      sink_("loss_scaling.growth_factor",
            "must be greater than 1 for dynamic scaling");
    }
    if (!(ls.backoff_factor() > 0 && ls.backoff_factor() < 1)) {
      sink_("loss_scaling.backoff_factor",
            absl::StrCat("must be between 0 and 1 (exclusive), got ",
                         Num(ls.backoff_factor())));
    }
    IntRange("loss_scaling.growth_interval", ls.growth_interval(), 1,
             1'000'000'000);
    IntRange("loss_scaling.hysteresis", ls.hysteresis(), 1, 1000);
    PositiveUpTo("loss_scaling.min_scale", ls.min_scale(), 0x1p127);
    PositiveUpTo("loss_scaling.max_scale", ls.max_scale(), 0x1p127);
    if (ls.min_scale() > ls.max_scale()) {
      sink_("loss_scaling.min_scale",
            absl::StrCat("is ", Num(ls.min_scale()), ", above max_scale (",
                         Num(ls.max_scale()), ")"));
    } else if (ls.mode() == v1::LOSS_SCALING_MODE_DYNAMIC &&
               ls.init_scale() > 0 &&
               (ls.init_scale() < ls.min_scale() ||
                ls.init_scale() > ls.max_scale())) {
      sink_("loss_scaling.init_scale",
            absl::StrCat("is ", Num(ls.init_scale()),
                         ", outside [min_scale, "
                         "max_scale] = [",
                         Num(ls.min_scale()), ", ", Num(ls.max_scale()), "]"));
    }
    IntRange("loss_scaling.min_scale_patience", ls.min_scale_patience(), 1,
             1'000'000);
    const precision::Rules* fallback = RulesOf(ls.fallback_precision());
    if (fallback == nullptr || !fallback->fallback_target) {
      // The default first.
      std::vector<std::string> targets = {
          precision::ModeName(precision::loss_scaling::kFallbackPrecision)};
      for (const precision::Rules& r : precision::AllModes()) {
        if (r.fallback_target && r.name != targets[0])
          targets.push_back(r.name);
      }
      sink_("loss_scaling.fallback_precision",
            absl::StrCat("must be ", absl::StrJoin(targets, " or "), ", got ",
                         PrecisionName(ls.fallback_precision())));
    }
  }

  void ValidateOptimizer(const v1::OptimizerSpec& opt) {
    PositiveUpTo("optimizer.lr", opt.lr(), 10);
    DoubleRange("optimizer.weight_decay", opt.weight_decay(), 0, 1);
    if (opt.name() == v1::OPTIMIZER_NAME_ADAMW) {
      DoubleRange("optimizer.beta1", opt.beta1(), 0, 0.999999);
      DoubleRange("optimizer.beta2", opt.beta2(), 0, 0.999999999);
      PositiveUpTo("optimizer.eps", opt.eps(), 1);
      if (opt.has_momentum()) {
        sink_("optimizer.momentum", "applies to sgd only; adamw uses beta1");
      }
    } else if (opt.name() == v1::OPTIMIZER_NAME_SGD) {
      DoubleRange("optimizer.momentum", opt.momentum(), 0, 0.999999);
      for (const char* key : {"beta1", "beta2", "eps"}) {
        const FieldDescriptor* f = opt.GetDescriptor()->FindFieldByName(key);
        if (opt.GetReflection()->HasField(opt, f)) {
          sink_(absl::StrCat("optimizer.", key), "applies to adamw only");
        }
      }
    }
  }

  void ValidateResources(const v1::JobSpec& spec) {
    const v1::ResourceSpec& res = spec.resources();
    const std::string& cc = res.min_compute_capability();
    if (!cc.empty()) {
      std::vector<absl::string_view> parts = absl::StrSplit(cc, '.');
      bool ok = parts.size() == 2;
      for (auto part : parts) {
        ok = ok && !part.empty() && part.size() <= 3 &&
             std::all_of(part.begin(), part.end(), [](char c) {
               return std::isdigit(static_cast<unsigned char>(c));
             });
      }
      if (!ok) {
        sink_("resources.min_compute_capability",
              absl::StrCat("must look like \"8.0\" (major.minor), got ",
                           Quote(cc)));
      } else if (res.device() == v1::DEVICE_KIND_CPU) {
        sink_("resources.min_compute_capability",
              "applies to CUDA devices, but resources.device is cpu");
      }
    }
    if (res.memory_bytes() < 0) {
      sink_("resources.memory_bytes",
            absl::StrCat("must be 0 or more, got ", res.memory_bytes()));
    }
    if (res.device() == v1::DEVICE_KIND_CPU &&
        precision::NeedsCuda(ToMode(spec.precision()))) {
      sink_("precision", absl::StrCat(PrecisionName(spec.precision()),
                                      " needs a CUDA device, but "
                                      "resources.device is cpu"));
    }
  }

  const Sink& sink_;
};

}  // namespace

void ApplyJobSpecDefaults(v1::JobSpec* spec) {
  if (spec->precision() == v1::PRECISION_UNSPECIFIED) {
    spec->set_precision(v1::PRECISION_AUTO);
  }
  v1::ModelSpec* model = spec->mutable_model();
  if (model->loss().empty()) model->set_loss("cross_entropy");

  v1::DataSpec* data = spec->mutable_data();
  if (!data->has_seq_len()) data->set_seq_len(128);
  if (!data->has_eval_fraction()) data->set_eval_fraction(0.1);
  // Text and jsonl data take their vocabulary from a tokenizer when there is
  // one (data.tokenizer or the pretrained folder's).
  const bool tokenized_text =
      (data->kind() == v1::DATA_KIND_TEXT ||
       data->kind() == v1::DATA_KIND_JSONL) &&
      (!data->tokenizer().empty() || !model->pretrained().empty());
  if (!data->has_vocab_size() && !tokenized_text) {
    data->set_vocab_size(data->kind() == v1::DATA_KIND_TOKENS ? 50257 : 256);
  }
  if (data->kind() == v1::DATA_KIND_TOKENS &&
      data->token_dtype() == v1::TOKEN_DTYPE_UNSPECIFIED) {
    data->set_token_dtype(v1::TOKEN_DTYPE_UINT16);
  }
  if (data->kind() == v1::DATA_KIND_JSONL && !data->has_packing()) {
    data->set_packing(false);
  }
  if (!spec->eval().has_max_new_tokens()) {
    spec->mutable_eval()->set_max_new_tokens(32);
  }
  if (spec->adapter().kind() == v1::ADAPTER_KIND_LORA) {
    v1::AdapterSpec* a = spec->mutable_adapter();
    if (!a->has_rank()) a->set_rank(8);
    if (!a->has_alpha()) a->set_alpha(16);
    if (!a->has_dropout()) a->set_dropout(0);
    if (!a->has_rslora()) a->set_rslora(false);
    if (a->base_dtype() == v1::BASE_DTYPE_NF4 && !a->has_double_quant()) {
      a->set_double_quant(true);
    }
    if (!spec->output().has_merge()) spec->mutable_output()->set_merge(false);
  }

  v1::LossScalingSpec* ls = spec->mutable_loss_scaling();
  // A static scale has no default: the user must choose it.
  namespace defaults = precision::loss_scaling;
  if (!ls->has_init_scale() && ls->mode() != v1::LOSS_SCALING_MODE_STATIC) {
    ls->set_init_scale(defaults::kInitScale);
  }
  if (!ls->has_growth_factor()) ls->set_growth_factor(defaults::kGrowthFactor);
  if (!ls->has_backoff_factor()) {
    ls->set_backoff_factor(defaults::kBackoffFactor);
  }
  if (!ls->has_growth_interval()) {
    ls->set_growth_interval(defaults::kGrowthInterval);
  }
  if (!ls->has_hysteresis()) ls->set_hysteresis(defaults::kHysteresis);
  if (!ls->has_min_scale()) ls->set_min_scale(defaults::kMinScale);
  if (!ls->has_max_scale()) ls->set_max_scale(defaults::kMaxScale);
  if (ls->on_min_scale() == v1::ON_MIN_SCALE_UNSPECIFIED) {
    ls->set_on_min_scale(v1::ON_MIN_SCALE_FAIL);
  }
  if (!ls->has_min_scale_patience()) {
    ls->set_min_scale_patience(defaults::kMinScalePatience);
  }
  if (ls->fallback_precision() == v1::PRECISION_UNSPECIFIED) {
    ls->set_fallback_precision(ToProto(defaults::kFallbackPrecision));
  }
  if (spec->precision() != v1::PRECISION_AUTO) {
    ResolvePrecision(spec, spec->precision());
  }

  v1::OptimizerSpec* opt = spec->mutable_optimizer();
  if (opt->name() == v1::OPTIMIZER_NAME_UNSPECIFIED) {
    opt->set_name(v1::OPTIMIZER_NAME_ADAMW);
  }
  if (!opt->has_lr()) opt->set_lr(3e-4);
  if (!opt->has_weight_decay()) {
    opt->set_weight_decay(opt->name() == v1::OPTIMIZER_NAME_ADAMW ? 0.01 : 0.0);
  }
  if (opt->name() == v1::OPTIMIZER_NAME_ADAMW) {
    if (!opt->has_beta1()) opt->set_beta1(0.9);
    if (!opt->has_beta2()) opt->set_beta2(0.999);
    if (!opt->has_eps()) opt->set_eps(1e-8);
  } else if (!opt->has_momentum()) {
    opt->set_momentum(0.9);
  }

  v1::LrScheduleSpec* lr = spec->mutable_lr_schedule();
  if (!lr->has_warmup_steps()) lr->set_warmup_steps(0);
  if (lr->decay() == v1::LR_DECAY_UNSPECIFIED)
    lr->set_decay(v1::LR_DECAY_CONSTANT);
  if (!lr->has_min_lr_ratio()) lr->set_min_lr_ratio(0.1);

  if (!spec->has_batch_size()) spec->set_batch_size(16);
  if (!spec->has_grad_accumulation()) spec->set_grad_accumulation(1);
  if (!spec->has_max_grad_norm()) spec->set_max_grad_norm(1.0);
  if (!spec->has_seed()) spec->set_seed(1);
  if (!spec->mutable_checkpoint()->has_every_steps()) {
    spec->mutable_checkpoint()->set_every_steps(100);
  }
  if (!spec->mutable_eval()->has_every_steps())
    spec->mutable_eval()->set_every_steps(50);
  if (!spec->mutable_eval()->has_batches())
    spec->mutable_eval()->set_batches(8);
  if (spec->resources().device() == v1::DEVICE_KIND_UNSPECIFIED) {
    spec->mutable_resources()->set_device(v1::DEVICE_KIND_ANY);
  }
  if (!spec->resources().has_memory_bytes()) {
    spec->mutable_resources()->set_memory_bytes(0);
  }
  if (spec->resources().emulation() == v1::EMULATION_UNSPECIFIED) {
    spec->mutable_resources()->set_emulation(v1::EMULATION_DENY);
  }
  if (!spec->has_priority()) spec->set_priority(0);
  if (!spec->has_max_restarts()) spec->set_max_restarts(3);
  if (!spec->has_threads()) spec->set_threads(0);
  if (spec->savings().baseline() == v1::BASELINE_MODE_UNSPECIFIED) {
    spec->mutable_savings()->set_baseline(v1::BASELINE_MODE_PROBE);
  }
  if (!spec->savings().has_probe_steps()) {
    spec->mutable_savings()->set_probe_steps(10);
  }
}

void ResolvePrecision(v1::JobSpec* spec, v1::Precision precision) {
  spec->set_precision(precision);
  v1::OptimizerSpec* opt = spec->mutable_optimizer();
  const precision::Rules* rules = RulesOf(precision);
  if (rules != nullptr && rules->weights == precision::Weights::kHalfOnly &&
      opt->pure_update() == v1::PURE_UPDATE_UNSPECIFIED) {
    opt->set_pure_update(v1::PURE_UPDATE_KAHAN);
  }
  v1::LossScalingSpec* ls = spec->mutable_loss_scaling();
  if (ls->mode() == v1::LOSS_SCALING_MODE_UNSPECIFIED) {
    ls->set_mode(rules != nullptr && rules->default_dynamic_scaling
                     ? v1::LOSS_SCALING_MODE_DYNAMIC
                     : v1::LOSS_SCALING_MODE_NONE);
  }
}

absl::Status ValidateJobSpec(const v1::JobSpec& spec) {
  Problems problems("");
  LocatingSink sink(&problems, nullptr);
  Validator<LocatingSink>(sink).Run(spec);
  return problems.ToStatus();
}

absl::Status ValidateDataRootPaths(const v1::JobSpec& spec) {
  Problems problems("");
  auto check = [&problems](const std::string& field, const std::string& path) {
    if (path.empty()) return;
    if (path[0] == '/') {
      problems.Add(field, absl::StrCat("must be relative to the worker's data "
                                       "root, got the absolute path ",
                                       Quote(path)));
      return;
    }
    int depth = 0;
    for (absl::string_view part : absl::StrSplit(path, '/')) {
      if (part.empty() || part == ".") continue;
      depth += part == ".." ? -1 : 1;
      if (depth < 0) {
        problems.Add(field, absl::StrCat("must stay inside the worker's data "
                                         "root, but \"..\" leads out of it: ",
                                         Quote(path)));
        return;
      }
    }
  };
  check("data.path", spec.data().path());
  check("model.torchscript", spec.model().torchscript());
  check("model.pretrained", spec.model().pretrained());
  check("model.init_from", spec.model().init_from());
  return problems.ToStatus();
}

absl::Status ApplySpecOverride(v1::JobSpec* spec,
                               absl::string_view assignment) {
  const std::size_t eq = assignment.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--set ", Quote(assignment),
                     ": expected FIELD=VALUE, e.g. optimizer.lr=1e-3"));
  }
  const std::string path(assignment.substr(0, eq));
  const absl::string_view text = assignment.substr(eq + 1);
  Message* message = spec;
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  std::string walked;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const Descriptor* type = message->GetDescriptor();
    const FieldDescriptor* field = type->FindFieldByName(parts[i]);
    walked = JoinPath(walked, parts[i]);
    if (field == nullptr || field->is_repeated()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--set ", path, ": unknown key ", Quote(walked),
                       DidYouMean(parts[i], FieldNames(type))));
    }
    const bool last = i + 1 == parts.size();
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (last) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--set ", path, ": is a section; set one of its keys, e.g. ", path,
            ".", field->message_type()->field(0)->name(), "=..."));
      }
      message = message->GetReflection()->MutableMessage(message, field);
      continue;
    }
    if (!last) {
      return absl::InvalidArgumentError(
          absl::StrCat("--set ", path, ": ", walked, " is not a section"));
    }
    // Accept the value as YAML would read it (so quoting works the same).
    std::string value(text);
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
        value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    }
    if (std::optional<std::string> reason = SetScalar(message, field, value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--set ", path, ": ", *reason));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::JobSpec> ParseJobSpec(
    absl::string_view text, absl::string_view source,
    const std::vector<std::string>& overrides) {
  Problems problems(source);
  if (text.size() > kMaxSpecBytes) {
    problems.Add("", absl::StrCat("spec is ", text.size(),
                                  " bytes; the limit is ", kMaxSpecBytes));
    return problems.ToStatus();
  }
  if (text.size() >= 2 && ((text[0] == '\xff' && text[1] == '\xfe') ||
                           (text[0] == '\xfe' && text[1] == '\xff'))) {
    problems.Add("", "spec is UTF-16; save it as UTF-8");
    return problems.ToStatus();
  }
  if (std::size_t nul = text.find('\0'); nul != absl::string_view::npos) {
    problems.Add("", absl::StrCat("spec holds a NUL byte at offset ", nul,
                                  "; is it a binary file?"));
    return problems.ToStatus();
  }
  if (std::size_t bad = utf8::FindInvalid({text.data(), text.size()});
      bad != std::string_view::npos) {
    problems.Add("",
                 absl::StrCat("spec is not valid UTF-8 (offset ", bad, ")"));
    return problems.ToStatus();
  }

  // JSON documents are read as YAML (one reader, one set of locations),
  // but YAML forgives some JSON errors (trailing commas), so check the
  // syntax strictly first.
  const std::size_t first = text.find_first_not_of(" \t\r\n");
  if (first != absl::string_view::npos && text[first] == '{') {
    try {
      nlohmann::json parsed = nlohmann::json::parse(text.begin(), text.end());
      (void)parsed;
    } catch (const nlohmann::json::parse_error& e) {
      std::string what = e.what();
      // "[json.exception.parse_error.101] parse error at line 1, column 29:
      // syntax error ..." -> keep what follows the bracketed id.
      const std::size_t cut = what.find("] ");
      problems.Add(
          "",
          absl::StrCat("cannot parse JSON: ",
                       cut == std::string::npos ? what : what.substr(cut + 2)));
      return problems.ToStatus();
    }
  }

  std::vector<YAML::Node> documents;
  try {
    documents = LoadAtMostTwoDocuments(text);
  } catch (const YAML::DeepRecursion& e) {
    problems.Add(
        "", absl::StrCat("nesting is deeper than ", e.depth() - 1, " levels"),
        MarkToLocation(e.mark));
    return problems.ToStatus();
  } catch (const YAML::Exception& e) {
    std::string reason = e.msg.empty() ? "malformed YAML/JSON" : e.msg;
    if (text.find("\n\t") != absl::string_view::npos ||
        (!text.empty() && text[0] == '\t')) {
      reason += " (YAML does not allow tabs for indentation)";
    }
    problems.Add("", absl::StrCat("cannot parse: ", reason),
                 MarkToLocation(e.mark));
    return problems.ToStatus();
  } catch (const std::exception& e) {
    problems.Add("", absl::StrCat("cannot parse: ", e.what()));
    return problems.ToStatus();
  }
  if (documents.size() != 1 || documents[0].IsNull()) {
    problems.Add("", documents.size() > 1
                         ? "holds more than one YAML document (or a stray ',' "
                           "at the top level); put one job in each file"
                         : "is empty; a job spec needs at least name, model, "
                           "data and steps");
    return problems.ToStatus();
  }
  if (!documents[0].IsMap()) {
    problems.Add("", "must be a mapping of keys (name, model, data, ...)",
                 MarkToLocation(documents[0].Mark()));
    return problems.ToStatus();
  }

  v1::JobSpec spec;
  std::map<std::string, Location> locations;
  try {
    DocumentReader(&problems, &locations).ReadMessage(documents[0], &spec, "");
  } catch (const YAML::Exception& e) {
    problems.Add("", absl::StrCat("cannot parse: ", e.msg),
                 MarkToLocation(e.mark));
  }
  if (!problems.empty()) return problems.ToStatus();

  std::map<std::string, std::string> overridden;
  for (const std::string& assignment : overrides) {
    absl::Status status = ApplySpecOverride(&spec, assignment);
    if (!status.ok()) {
      problems.Add("", std::string(status.message()));
    } else {
      overridden[assignment.substr(0, assignment.find('='))] = assignment;
    }
  }
  if (!problems.empty()) return problems.ToStatus();

  ApplyJobSpecDefaults(&spec);
  LocatingSink sink(&problems, &locations, &overridden);
  Validator<LocatingSink>(sink).Run(spec);
  if (!problems.empty()) return problems.ToStatus();
  return spec;
}

absl::StatusOr<v1::JobSpec> LoadJobSpecFile(
    const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  }
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot open for reading"));
  }
  std::string text;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof(buffer)) || in.gcount() > 0) {
    text.append(buffer, static_cast<std::size_t>(in.gcount()));
    if (text.size() > kMaxSpecBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": spec is larger than ", kMaxSpecBytes,
                       " bytes; the limit is ", kMaxSpecBytes));
    }
  }
  return ParseJobSpec(text, path, overrides);
}

std::string FormatJobSpec(const v1::JobSpec& spec, SpecFormat format) {
  const nlohmann::ordered_json tree = ProtoToJson(spec, ProtoJsonStyle::kSpec);
  if (format == SpecFormat::kJson) return tree.dump(2) + "\n";
  return JsonToYaml(tree);
}

}  // namespace halftime
