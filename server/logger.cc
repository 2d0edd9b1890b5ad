#include "server/logger.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace halftime::server {
namespace {

// Appends `value`, quoted and escaped when it holds spaces, quotes, `=` or
// control characters.
void AppendValue(std::string* out, absl::string_view value) {
  bool quote = value.empty();
  for (char c : value) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' ||
        static_cast<unsigned char>(c) < 0x20) {
      quote = true;
      break;
    }
  }
  if (!quote) {
    out->append(value.data(), value.size());
    return;
  }
  out->push_back('"');
  for (char c : value) {
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(c);
    } else if (c == '\n') {
      out->append("\\n");
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out->push_back(' ');
    } else {
      out->push_back(c);
    }
  }
  out->push_back('"');
}

}  // namespace

void Logger::Log(absl::string_view event, std::initializer_list<Field> fields) {
  if (out_ == nullptr) return;
  std::string line =
      absl::StrCat("ts=",
                   absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(),
                                    absl::UTCTimeZone()),
                   " event=");
  AppendValue(&line, event);
  for (const Field& field : fields) {
    line.push_back(' ');
    line.append(field.first.data(), field.first.size());
    line.push_back('=');
    AppendValue(&line, field.second);
  }
  line.push_back('\n');
  absl::MutexLock lock(&mu_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

}  // namespace halftime::server
