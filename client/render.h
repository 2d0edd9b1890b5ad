// How the CLI shows API messages: JSON and YAML documents that hold every
// field of the proto (enums by their short names, timestamps as RFC 3339),
// fixed-width tables that fit the terminal, and short human formats for
// durations, sizes, rates and savings.
//
// Thread-safety: every function is pure and thread-safe.
#ifndef HALFTIME_CLIENT_RENDER_H_
#define HALFTIME_CLIENT_RENDER_H_

#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/format.h"
#include "common/proto_json.h"
#include "halftime/v1/job.pb.h"
#include "halftime/v1/scheduler.pb.h"
#include "halftime/v1/worker.pb.h"

namespace halftime {

// The `-o` choices.
enum class OutputFormat { kTable, kJson, kYaml };

// Renders `message` in `format` (kJson: indented JSON; kYaml: YAML; kTable
// is not handled here and renders as YAML). Ends with a newline.
std::string RenderDocument(const google::protobuf::Message& message,
                           OutputFormat format);

// `text` as one line without control characters (tabs, newlines, escape
// sequences from a trainer's stderr become spaces), safe to print.
std::string OneLine(absl::string_view text);

// Columns a string takes on a terminal: UTF-8 code points.
int DisplayWidth(absl::string_view text);

// Cuts `text` to at most `width` columns, ending with "…" when cut.
std::string TruncateToWidth(absl::string_view text, int width);

// A text table with a header row. Columns shrink (flexible ones first,
// then the widest) until the table fits `max_width`; cut cells end in "…".
class Table {
 public:
  struct Column {
    std::string header;
    // Flexible columns give up width first (names, reasons, devices).
    bool flexible = false;
    bool align_right = false;
  };

  explicit Table(std::vector<Column> columns);

  // `cells` must hold one string per column.
  void AddRow(std::vector<std::string> cells);

  // Two spaces between columns; every line ends with a newline.
  std::string Render(int max_width) const;

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// Human formats.
std::string HumanDuration(absl::Duration duration);  // "4m12s", "1h05m"
std::string FormatCount(double value);               // "12.3k", "1.5M"
std::string FormatLossScale(double scale);           // "65536", "1.7e+07"
std::string FormatTimestamp(const google::protobuf::Timestamp& time);
std::string FormatAge(const google::protobuf::Timestamp& time,
                      absl::Time now);  // "5m00s ago"
std::string FormatShortAge(const google::protobuf::Timestamp& time,
                           absl::Time now);  // "5m", "2h", "3d"
absl::Time ToAbslTime(const google::protobuf::Timestamp& time);
bool IsSet(const google::protobuf::Timestamp& time);

// "running", "queued (no worker runs bf16-mixed natively)", ...
std::string DescribeJobState(const v1::Job& job);

// One line: "1.80x faster, 42% less memory (512.0 MiB), 95 device-s and
// 0.01 USD saved vs fp32 (probe)". The cost is left out when `currency` is
// empty.
std::string FormatSavingsSummary(const v1::Savings& savings,
                                 absl::string_view currency);

// `halftime get`: one "key: value" line per fact.
std::string FormatJobDetail(const v1::Job& job, absl::Time now, int width);

// `halftime list`.
std::string FormatJobTable(const std::vector<v1::Job>& jobs, absl::Time now,
                           int width);

// `halftime workers`.
std::string FormatWorkerTable(const std::vector<v1::Worker>& workers,
                              absl::Time now, int width);

// `halftime savings`: per-job rows, then fleet totals by precision.
std::string FormatSavingsTables(const v1::GetSavingsResponse& response,
                                int width);

// `halftime savings JOB`: one "key: value" line per figure.
std::string FormatSavingsDetail(const std::string& job_id,
                                const v1::Savings& savings,
                                absl::string_view currency, int width);

}  // namespace halftime

#endif  // HALFTIME_CLIENT_RENDER_H_
