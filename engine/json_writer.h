// A minimal JSON writer (the engine carries no JSON library).
//
// Builds one object at a time: JsonObject o; o.Add("step", 3); o.str().
// Strings are escaped per RFC 8259 (quote, backslash, control characters as
// \uXXXX); non-finite doubles are written as null (JSON has no inf/NaN).
//
// Thread safety: not thread-safe; a local value.

#ifndef HALFTIME_ENGINE_JSON_WRITER_H_
#define HALFTIME_ENGINE_JSON_WRITER_H_

#include <cstdint>
#include <string>

namespace halftime::engine {

// Returns `s` as a quoted, escaped JSON string.
std::string JsonQuote(const std::string& s);
// Shortest round-tripping text of `v`, or "null" if not finite.
std::string JsonNumber(double v);

class JsonObject {
 public:
  JsonObject& Add(const std::string& key, const std::string& value);
  JsonObject& Add(const std::string& key, const char* value);
  JsonObject& Add(const std::string& key, double value);
  JsonObject& Add(const std::string& key, int64_t value);
  JsonObject& Add(const std::string& key, int value);
  JsonObject& Add(const std::string& key, bool value);
  // Adds `raw_json` verbatim (a nested object or array).
  JsonObject& AddRaw(const std::string& key, const std::string& raw_json);
  // The object text, "{...}".
  std::string str() const { return "{" + body_ + "}"; }

 private:
  void Key(const std::string& key);
  std::string body_;
};

}  // namespace halftime::engine

#endif  // HALFTIME_ENGINE_JSON_WRITER_H_
