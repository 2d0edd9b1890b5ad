// Structured logging: one line per event, `key=value` pairs, to a stream
// (stderr in the binary, nothing in most tests). Values with spaces, quotes
// or `=` are quoted. Callers never pass secrets (tokens).
#ifndef HALFTIME_SERVER_LOGGER_H_
#define HALFTIME_SERVER_LOGGER_H_

#include <cstdio>
#include <initializer_list>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace halftime::server {

// Writes `ts=... event=NAME key=value ...` lines.
//
// Thread-safety: thread-safe; lines from concurrent callers never
// interleave.
class Logger {
 public:
  using Field = std::pair<absl::string_view, std::string>;

  // Logs to `out` (not owned; must outlive the logger); nullptr discards
  // every line.
  explicit Logger(std::FILE* out) : out_(out) {}

  Logger(const Logger&) = delete;
  Logger& operator=(const Logger&) = delete;

  // Writes one line for `event` with `fields` in order. Never fails.
  void Log(absl::string_view event, std::initializer_list<Field> fields);

  // True when lines go somewhere (callers may skip building fields).
  bool enabled() const { return out_ != nullptr; }

 private:
  std::FILE* const out_;
  // Serializes the lines written to out_ (one fprintf per line).
  absl::Mutex mu_;
};

}  // namespace halftime::server

#endif  // HALFTIME_SERVER_LOGGER_H_
