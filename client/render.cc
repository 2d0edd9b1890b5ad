#include "client/render.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/enum_names.h"
#include "common/spec.h"

namespace halftime {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

std::string Percent(double ratio) {
  return absl::StrFormat("%.0f%%", ratio * 100.0);
}

std::string ReportProgress(const v1::TrainingReport& report) {
  if (report.total_steps() <= 0) return absl::StrCat(report.step());
  return absl::StrCat(report.step(), "/", report.total_steps());
}

// "bf16-mixed", or "bf16-mixed (emulated)" for a run on a device that only
// emulates it.
std::string SavingsPrecision(v1::Precision precision, bool emulated) {
  return absl::StrCat(PrecisionName(precision), emulated ? " (emulated)" : "");
}

std::string JobPrecision(const v1::Job& job) {
  if (job.resolved_precision() != v1::PRECISION_UNSPECIFIED) {
    return SavingsPrecision(job.resolved_precision(), job.emulated());
  }
  return PrecisionName(job.spec().precision());
}

// The cost column: the amount at its device-hour price, or "-" when no
// price is configured (a 0 would read as "nothing saved").
std::string CostCell(const v1::Savings& savings) {
  if (savings.device_hour_price() <= 0) return "-";
  return absl::StrFormat("%.4g (at %.4g/h)", savings.cost_saved(),
                         savings.device_hour_price());
}

// "label:      value" lines of a detail view. A detail view wraps, never
// truncates: a queue reason or a degraded baseline's reason is what the
// user needs to read whole.
std::string RenderFacts(
    const std::vector<std::pair<std::string, std::string>>& facts, int width) {
  constexpr int kLabelWidth = 13;
  std::string out;
  for (const auto& [key, value] : facts) {
    const std::string label = absl::StrCat(key, ":");
    std::string line = absl::StrFormat("%-13s", label);
    int line_width = kLabelWidth;
    const std::string text = OneLine(value);
    for (absl::string_view word :
         absl::StrSplit(text, ' ', absl::SkipEmpty())) {
      const int word_width = DisplayWidth(word);
      if (line_width > kLabelWidth && line_width + 1 + word_width > width) {
        absl::StrAppend(&out, TruncateToWidth(line, width), "\n");
        line = std::string(kLabelWidth, ' ');
        line_width = kLabelWidth;
      }
      if (line_width > kLabelWidth) {
        line += ' ';
        ++line_width;
      }
      absl::StrAppend(&line, word);
      line_width += word_width;
    }
    absl::StrAppend(&out, TruncateToWidth(line, width), "\n");
  }
  return out;
}

// Device time saved, negative when the job was slower than fp32 ("-6.1s").
std::string SavedDuration(double seconds) {
  return seconds < 0 ? "-" + HumanDuration(absl::Seconds(-seconds))
                     : HumanDuration(absl::Seconds(seconds));
}

constexpr absl::string_view kNoPriceHint =
    "no device-hour price is set: start the scheduler with --device-price "
    "NAME=PRICE or --default-device-price PRICE to see cost saved";

// GEMM rates of a worker, e.g. "fp32 101, bf16 97 emulated" (GFLOP/s).
std::string RatesCell(const v1::WorkerCapabilities& caps) {
  std::vector<std::string> rates;
  for (const v1::DtypeRate& rate : caps.rates()) {
    if (rate.flops_per_second() <= 0) continue;
    rates.push_back(absl::StrFormat("%s %.0f%s", rate.dtype(),
                                    rate.flops_per_second() / 1e9,
                                    rate.native() ? "" : " emulated"));
  }
  return rates.empty() ? "-" : absl::StrJoin(rates, ", ");
}

}  // namespace

std::string RenderDocument(const google::protobuf::Message& message,
                           OutputFormat format) {
  const nlohmann::ordered_json tree = ProtoToJson(message);
  if (format == OutputFormat::kJson) {
    return tree.dump(2, ' ', false,
                     nlohmann::ordered_json::error_handler_t::replace) +
           "\n";
  }
  return JsonToYaml(tree);
}

std::string OneLine(absl::string_view text) {
  std::string line(text);
  for (char& c : line) {
    const unsigned char byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) c = ' ';
  }
  return line;
}

int DisplayWidth(absl::string_view text) {
  int width = 0;
  for (char c : text) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++width;
  }
  return width;
}

std::string TruncateToWidth(absl::string_view text, int width) {
  if (DisplayWidth(text) <= width) return std::string(text);
  if (width <= 0) return "";
  // Keep width - 1 code points, then the ellipsis.
  int kept = 0;
  std::size_t end = 0;
  for (; end < text.size(); ++end) {
    if ((static_cast<unsigned char>(text[end]) & 0xC0) != 0x80) {
      if (kept == width - 1) break;
      ++kept;
    }
  }
  return absl::StrCat(text.substr(0, end), "…");
}

Table::Table(std::vector<Column> columns) : columns_(std::move(columns)) {}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(columns_.size());
  // A cell is one line: newlines and escapes would break the grid.
  for (std::string& cell : cells) cell = OneLine(cell);
  rows_.push_back(std::move(cells));
}

std::string Table::Render(int max_width) const {
  const std::size_t n = columns_.size();
  std::vector<int> widths(n), minimums(n);
  for (std::size_t i = 0; i < n; ++i) {
    widths[i] = DisplayWidth(columns_[i].header);
    minimums[i] = std::max(4, std::min(widths[i], 8));
    for (const auto& row : rows_) {
      widths[i] = std::max(widths[i], DisplayWidth(row[i]));
    }
  }
  auto total = [&] {
    int sum = 2 * static_cast<int>(n > 0 ? n - 1 : 0);
    for (int w : widths) sum += w;
    return sum;
  };
  // Shrink flexible columns first, then any column: one column at a time,
  // always the widest, so the space lost is shared.
  for (bool flexible_only : {true, false}) {
    while (total() > max_width) {
      int widest = -1;
      for (std::size_t i = 0; i < n; ++i) {
        if (flexible_only && !columns_[i].flexible) continue;
        if (widths[i] <= minimums[i]) continue;
        if (widest < 0 || widths[i] > widths[static_cast<std::size_t>(widest)])
          widest = static_cast<int>(i);
      }
      if (widest < 0) break;
      --widths[static_cast<std::size_t>(widest)];
    }
  }
  std::string out;
  auto render_row = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (std::size_t i = 0; i < n; ++i) {
      std::string cell = TruncateToWidth(cells[i], widths[i]);
      const std::string padding(
          static_cast<std::size_t>(widths[i] - DisplayWidth(cell)), ' ');
      if (i > 0) line += "  ";
      if (columns_[i].align_right) {
        absl::StrAppend(&line, padding, cell);
      } else {
        absl::StrAppend(&line, cell, i + 1 < n ? padding : "");
      }
    }
    absl::StrAppend(&out, absl::StripTrailingAsciiWhitespace(line), "\n");
  };
  std::vector<std::string> headers;
  for (const auto& column : columns_) headers.push_back(column.header);
  render_row(headers);
  for (const auto& row : rows_) render_row(row);
  return out;
}

std::string HumanDuration(absl::Duration duration) {
  if (duration < absl::ZeroDuration()) duration = absl::ZeroDuration();
  if (duration < absl::Seconds(10)) {
    return absl::StrFormat("%.1fs", absl::ToDoubleSeconds(duration));
  }
  const int64_t seconds = absl::ToInt64Seconds(duration);
  if (seconds < 60) return absl::StrFormat("%ds", seconds);
  if (seconds < 3600) {
    return absl::StrFormat("%dm%02ds", seconds / 60, seconds % 60);
  }
  if (seconds < 86400) {
    return absl::StrFormat("%dh%02dm", seconds / 3600, (seconds % 3600) / 60);
  }
  return absl::StrFormat("%dd%02dh", seconds / 86400, (seconds % 86400) / 3600);
}

std::string FormatCount(double value) {
  const double magnitude = std::fabs(value);
  if (magnitude < 1000) return absl::StrFormat("%.0f", value);
  if (magnitude < 1e6) return absl::StrFormat("%.1fk", value / 1e3);
  if (magnitude < 1e9) return absl::StrFormat("%.1fM", value / 1e6);
  return absl::StrFormat("%.1fG", value / 1e9);
}

std::string FormatLossScale(double scale) {
  if (scale == std::floor(scale) && std::fabs(scale) < 1e7) {
    return absl::StrFormat("%.0f", scale);
  }
  return absl::StrFormat("%.3g", scale);
}

bool IsSet(const google::protobuf::Timestamp& time) {
  return time.seconds() != 0 || time.nanos() != 0;
}

absl::Time ToAbslTime(const google::protobuf::Timestamp& time) {
  return absl::FromUnixSeconds(time.seconds()) +
         absl::Nanoseconds(time.nanos());
}

std::string FormatTimestamp(const google::protobuf::Timestamp& time) {
  if (!IsSet(time)) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", ToAbslTime(time),
                          absl::LocalTimeZone());
}

std::string FormatShortAge(const google::protobuf::Timestamp& time,
                           absl::Time now) {
  if (!IsSet(time)) return "-";
  const int64_t seconds =
      std::max<int64_t>(0, absl::ToInt64Seconds(now - ToAbslTime(time)));
  if (seconds < 60) return absl::StrCat(seconds, "s");
  if (seconds < 3600) return absl::StrCat(seconds / 60, "m");
  if (seconds < 86400) return absl::StrCat(seconds / 3600, "h");
  return absl::StrCat(seconds / 86400, "d");
}

std::string FormatAge(const google::protobuf::Timestamp& time, absl::Time now) {
  if (!IsSet(time)) return "-";
  const absl::Duration age = now - ToAbslTime(time);
  if (age < absl::Seconds(1)) return "just now";
  return HumanDuration(absl::Trunc(age, absl::Seconds(1))) + " ago";
}

std::string DescribeJobState(const v1::Job& job) {
  std::string text = JobStateName(job.state());
  if (text.empty()) text = "unknown";
  switch (job.state()) {
    case v1::JOB_STATE_QUEUED:
      if (job.attempt() > 1)
        absl::StrAppend(&text, " for attempt ", job.attempt());
      if (!job.queue_reason().empty()) {
        absl::StrAppend(&text, ": ", job.queue_reason());
      }
      break;
    case v1::JOB_STATE_ASSIGNED:
      if (!job.worker().empty()) absl::StrAppend(&text, " to ", job.worker());
      break;
    case v1::JOB_STATE_RUNNING:
      if (!job.worker().empty()) absl::StrAppend(&text, " on ", job.worker());
      if (job.attempt() > 1)
        absl::StrAppend(&text, " (attempt ", job.attempt(), ")");
      break;
    case v1::JOB_STATE_FAILED:
    case v1::JOB_STATE_CANCELLED:
      if (!job.failure_reason().empty()) {
        absl::StrAppend(&text, ": ", job.failure_reason());
      }
      break;
    default:
      break;
  }
  return text;
}

std::string FormatSavingsSummary(const v1::Savings& savings,
                                 absl::string_view currency) {
  std::vector<std::string> parts;
  if (savings.speedup() >= 1.0) {
    parts.push_back(absl::StrFormat("%.2fx faster", savings.speedup()));
  } else if (savings.speedup() > 0) {
    parts.push_back(absl::StrFormat("%.2fx slower", 1.0 / savings.speedup()));
  }
  if (savings.baseline_peak_memory_bytes() > 0) {
    if (savings.memory_saved_bytes() >= 0) {
      parts.push_back(
          absl::StrCat(Percent(savings.memory_saved_ratio()), " less memory (",
                       FormatBytes(savings.memory_saved_bytes()), ")"));
    } else {
      parts.push_back(
          absl::StrCat(Percent(-savings.memory_saved_ratio()), " more memory"));
    }
  }
  std::string saved =
      absl::StrFormat("%.0f device-s", savings.device_seconds_saved());
  // Cost needs its currency, which only GetSavings reports.
  if (savings.cost_saved() != 0 && !currency.empty()) {
    absl::StrAppend(&saved, absl::StrFormat(" and %.4g %s",
                                            savings.cost_saved(), currency));
  }
  parts.push_back(absl::StrCat(saved, " saved"));
  std::string baseline =
      EnumShortName(v1::BaselineMode_descriptor(), savings.baseline());
  if (savings.emulated()) {
    absl::StrAppend(&baseline, baseline.empty() ? "" : ", ",
                    "emulated: memory saved, not time");
  }
  if (savings.baseline_degraded()) {
    absl::StrAppend(&baseline, baseline.empty() ? "" : ", ",
                    "baseline: degraded: ", savings.baseline_degraded_reason());
  }
  return absl::StrCat(
      absl::StrJoin(parts, ", "), " vs fp32",
      baseline.empty() ? "" : absl::StrCat(" (", baseline, ")"));
}

std::string FormatJobDetail(const v1::Job& job, absl::Time now, int width) {
  std::vector<std::pair<std::string, std::string>> facts;
  facts.emplace_back("id", job.id());
  facts.emplace_back("name", job.spec().name());
  facts.emplace_back("state", DescribeJobState(job));
  std::string precision = JobPrecision(job);
  if (job.spec().precision() == v1::PRECISION_AUTO &&
      job.resolved_precision() != v1::PRECISION_UNSPECIFIED) {
    absl::StrAppend(&precision, " (from auto)");
  }
  facts.emplace_back("precision", precision);
  const v1::ModelSpec& spec_model = job.spec().model();
  std::string model = !spec_model.builtin().empty() ? spec_model.builtin()
                      : !spec_model.pretrained().empty()
                          ? spec_model.pretrained()
                          : spec_model.torchscript();
  const v1::AdapterSpec& adapter = job.spec().adapter();
  if (adapter.kind() == v1::ADAPTER_KIND_LORA) {
    absl::StrAppend(&model, absl::StrFormat(" + LoRA r%d alpha %g",
                                            adapter.rank(), adapter.alpha()));
    if (adapter.base_dtype() != v1::BASE_DTYPE_UNSPECIFIED) {
      absl::StrAppend(
          &model, " on a ",
          EnumShortName(v1::BaseDtype_descriptor(), adapter.base_dtype()),
          " base");
    }
  }
  facts.emplace_back("model", model);
  facts.emplace_back("attempt", absl::StrCat(job.attempt()));
  if (!job.worker().empty()) facts.emplace_back("worker", job.worker());
  if (job.has_latest_report()) {
    const v1::TrainingReport& report = job.latest_report();
    std::string progress = absl::StrFormat(
        "step %s, loss %.4f", ReportProgress(report), report.loss());
    if (report.has_eval_loss()) {
      absl::StrAppend(&progress,
                      absl::StrFormat(", eval loss %.4f", report.eval_loss()));
    }
    if (report.has_eval_accuracy()) {
      absl::StrAppend(&progress, absl::StrFormat(", eval accuracy %.1f%%",
                                                 100 * report.eval_accuracy()));
    }
    facts.emplace_back("progress", progress);
    facts.emplace_back(
        "loss scale",
        absl::StrCat(FormatLossScale(report.loss_scale()), ", ",
                     report.skipped_steps(), " overflow steps skipped"));
    facts.emplace_back(
        "throughput",
        absl::StrCat(FormatCount(report.tokens_per_second()), " tokens/s, ",
                     absl::StrFormat("%.3fs", report.step_seconds()),
                     " per step"));
    facts.emplace_back("peak memory", FormatBytes(report.peak_memory_bytes()));
    if (report.parameters() > 0) {
      facts.emplace_back(
          "parameters", absl::StrCat(FormatCount(report.parameters()), ", ",
                                     FormatCount(report.trainable_parameters()),
                                     " trainable"));
    }
  }
  if (job.has_memory_estimate()) {
    const v1::MemoryEstimate& e = job.memory_estimate();
    facts.emplace_back(
        "memory estimate",
        absl::StrCat(FormatBytes(e.total_bytes()), " in ",
                     PrecisionName(e.precision()), " (weights ",
                     FormatBytes(e.weight_bytes()), ", gradients ",
                     FormatBytes(e.gradient_bytes()), ", optimizer ",
                     FormatBytes(e.optimizer_state_bytes()), ", activations ",
                     FormatBytes(e.activation_bytes()), ", workspace ",
                     FormatBytes(e.workspace_bytes()), ")"));
  }
  facts.emplace_back("submitted",
                     absl::StrCat(FormatTimestamp(job.submit_time()), " (",
                                  FormatAge(job.submit_time(), now), ")"));
  if (IsSet(job.start_time())) {
    facts.emplace_back("started", FormatTimestamp(job.start_time()));
  }
  if (IsSet(job.end_time())) {
    std::string ended = FormatTimestamp(job.end_time());
    if (IsSet(job.start_time())) {
      absl::StrAppend(&ended, " (ran ",
                      HumanDuration(ToAbslTime(job.end_time()) -
                                    ToAbslTime(job.start_time())),
                      ")");
    }
    facts.emplace_back("ended", ended);
  }
  if (job.has_savings()) {
    facts.emplace_back("savings", FormatSavingsSummary(job.savings(), ""));
  }
  return RenderFacts(facts, width);
}

std::string FormatJobTable(const std::vector<v1::Job>& jobs, absl::Time now,
                           int width) {
  Table table({{"ID"},
               {"NAME", /*flexible=*/true},
               {"STATE"},
               {"PRECISION"},
               {"STEP", false, /*align_right=*/true},
               {"LOSS", false, true},
               {"WORKER", true},
               {"AGE", false, true}});
  for (const v1::Job& job : jobs) {
    std::string state = JobStateName(job.state());
    if (job.attempt() > 1) absl::StrAppend(&state, "#", job.attempt());
    const bool has_report = job.has_latest_report();
    table.AddRow(
        {job.id(), job.spec().name(), state, JobPrecision(job),
         has_report ? ReportProgress(job.latest_report()) : "-",
         has_report ? absl::StrFormat("%.4f", job.latest_report().loss()) : "-",
         job.worker().empty() ? "-" : job.worker(),
         FormatShortAge(job.submit_time(), now)});
  }
  return table.Render(width);
}

std::string FormatWorkerTable(const std::vector<v1::Worker>& workers,
                              absl::Time now, int width) {
  Table table({{"NAME", true},
               {"STATE"},
               {"DEVICE", true},
               {"NATIVE PRECISIONS", true},
               {"EMULATED", true},
               {"GEMM GFLOP/S", true},
               {"JOBS", false, true},
               {"MEMORY", false, true},
               {"SEEN", false, true},
               {"BASELINE", true}});
  for (const v1::Worker& worker : workers) {
    const v1::WorkerCapabilities& caps = worker.capabilities();
    std::vector<std::string> precisions, emulated;
    for (int p : caps.native_precisions()) {
      precisions.push_back(PrecisionName(static_cast<v1::Precision>(p)));
    }
    for (int p : caps.emulated_precisions()) {
      emulated.push_back(PrecisionName(static_cast<v1::Precision>(p)));
    }
    std::string device = caps.device_name();
    if (!caps.compute_capability().empty()) {
      absl::StrAppend(&device, " (sm ", caps.compute_capability(), ")");
    }
    std::string state =
        EnumShortName(v1::WorkerState_descriptor(), worker.state());
    table.AddRow(
        {worker.name(), state.empty() ? "unknown" : state, device,
         absl::StrJoin(precisions, ","),
         emulated.empty() ? "-" : absl::StrJoin(emulated, ","), RatesCell(caps),
         absl::StrCat(worker.job_ids_size(), "/", caps.slots()),
         caps.memory_bytes() > 0 ? FormatBytes(caps.memory_bytes()) : "-",
         FormatShortAge(worker.last_heartbeat(), now),
         caps.baseline_degradations().empty()
             ? "ok"
             : absl::StrCat(
                   "degraded: ",
                   absl::StrJoin(caps.baseline_degradations(), "; "))});
  }
  return table.Render(width);
}

std::string FormatSavingsTables(const v1::GetSavingsResponse& response,
                                int width) {
  const std::string currency =
      response.currency().empty() ? "COST" : response.currency();
  std::string out;
  // Cost figures without a device-hour price read as "-", not 0.
  bool unpriced = false;
  for (const v1::Savings& savings : response.jobs()) {
    unpriced |= savings.device_hour_price() <= 0;
  }
  if (response.jobs_size() > 0) {
    Table jobs({{"JOB"},
                {"PRECISION"},
                {"SPEEDUP", false, true},
                {"MEM SAVED", false, true},
                {"TIME SAVED", false, true},
                {absl::StrCat(currency, " SAVED"), false, true},
                {"BASELINE"},
                {"DEVICE", true}});
    for (int i = 0; i < response.jobs_size(); ++i) {
      const v1::Savings& savings = response.jobs(i);
      jobs.AddRow({i < response.job_ids_size() ? response.job_ids(i) : "-",
                   SavingsPrecision(savings.precision(), savings.emulated()),
                   absl::StrFormat("%.2fx", savings.speedup()),
                   Percent(savings.memory_saved_ratio()),
                   SavedDuration(savings.device_seconds_saved()),
                   CostCell(savings),
                   savings.baseline_degraded()
                       ? "degraded"
                       : EnumShortName(v1::BaselineMode_descriptor(),
                                       savings.baseline()),
                   savings.device_name()});
    }
    out += jobs.Render(width);
    if (unpriced) absl::StrAppend(&out, kNoPriceHint, "\n");
  }
  if (response.totals_size() > 0) {
    if (!out.empty()) out += "\n";
    Table totals({{"PRECISION"},
                  {"JOBS", false, true},
                  {"MEAN SPEEDUP", false, true},
                  {"MEAN MEM SAVED", false, true},
                  {"TIME SAVED", false, true},
                  {absl::StrCat(currency, " SAVED"), false, true}});
    int64_t degraded = 0;
    for (const v1::PrecisionSavings& total : response.totals()) {
      degraded += total.degraded_jobs();
      if (total.jobs() == 0) continue;
      totals.AddRow(
          {SavingsPrecision(total.precision(), total.emulated()),
           absl::StrCat(total.jobs()),
           absl::StrFormat("%.2fx", total.mean_speedup()),
           Percent(total.mean_memory_saved_ratio()),
           SavedDuration(total.device_seconds_saved()),
           unpriced ? "-" : absl::StrFormat("%.4g", total.cost_saved())});
    }
    out += totals.Render(width);
    if (degraded > 0) {
      absl::StrAppend(&out, degraded, degraded == 1 ? " job" : " jobs",
                      " measured against a degraded fp32 baseline ",
                      degraded == 1 ? "is" : "are",
                      " left out of these totals\n");
    }
  }
  if (out.empty()) out = "no savings measured yet\n";
  return out;
}

std::string FormatSavingsDetail(const std::string& job_id,
                                const v1::Savings& savings,
                                absl::string_view currency, int width) {
  std::vector<std::pair<std::string, std::string>> facts;
  facts.emplace_back("job", job_id);
  std::string precision =
      SavingsPrecision(savings.precision(), savings.emulated());
  if (!savings.device_name().empty()) {
    absl::StrAppend(&precision, " on ", savings.device_name());
  }
  facts.emplace_back("precision", precision);
  facts.emplace_back(
      "speedup",
      absl::StrFormat("%.2fx (%.3fs -> %.3fs per step; %s -> %s tokens/s)",
                      savings.speedup(), savings.baseline_step_seconds(),
                      savings.step_seconds(),
                      FormatCount(savings.baseline_tokens_per_second()),
                      FormatCount(savings.tokens_per_second())));
  facts.emplace_back(
      "peak memory",
      absl::StrCat(FormatBytes(savings.baseline_peak_memory_bytes()), " -> ",
                   FormatBytes(savings.peak_memory_bytes()), " (",
                   FormatBytes(savings.memory_saved_bytes()), ", ",
                   Percent(savings.memory_saved_ratio()), " saved)"));
  facts.emplace_back(
      "time saved",
      absl::StrCat(SavedDuration(savings.device_seconds_saved()),
                   " of device time over the job (the fp32 probe cost ",
                   HumanDuration(absl::Seconds(savings.probe_seconds())), ")"));
  if (savings.device_hour_price() <= 0) {
    facts.emplace_back("cost saved", std::string(kNoPriceHint));
  } else if (!currency.empty()) {
    facts.emplace_back("cost saved",
                       absl::StrFormat("%.4g %s (at %.4g %s per device-hour)",
                                       savings.cost_saved(), currency,
                                       savings.device_hour_price(), currency));
  }
  if (savings.emulated()) {
    facts.emplace_back(
        "emulated",
        "the device only emulates this precision: memory saved is real, "
        "time is not (kept apart in fleet totals)");
  }
  std::string baseline =
      EnumShortName(v1::BaselineMode_descriptor(), savings.baseline());
  std::string baseline_fact =
      absl::StrCat(baseline.empty() ? "unknown" : baseline,
                   savings.baseline() == v1::BASELINE_MODE_CACHED
                       ? " (a stored fp32 probe with the same fingerprint)"
                       : " (fp32 on the same device)");
  if (!savings.fingerprint().empty()) {
    absl::StrAppend(&baseline_fact, ", fingerprint ", savings.fingerprint());
  }
  facts.emplace_back("baseline", baseline_fact);
  if (savings.baseline_degraded()) {
    facts.emplace_back(
        "degraded",
        absl::StrCat(savings.baseline_degraded_reason(),
                     " (these savings are left out of fleet totals)"));
  }
  return RenderFacts(facts, width);
}

}  // namespace halftime
