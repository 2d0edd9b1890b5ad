#include "client/watch_renderer.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/render.h"
#include "common/enum_names.h"

namespace halftime {
namespace {

// Carriage return, then erase the line: the start of every redraw.
constexpr char kClearLine[] = "\r\x1b[K";

// Widest progress bar, brackets included; narrower ones are dropped.
constexpr int kMaxBarWidth = 32;
constexpr int kMinBarWidth = 10;

std::string Bar(double fraction, int width) {
  const int inner = width - 2;
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int filled = static_cast<int>(fraction * inner);
  std::string bar = "[";
  bar.append(static_cast<std::size_t>(filled), '=');
  if (filled < inner) {
    bar += '>';
    bar.append(static_cast<std::size_t>(inner - filled - 1), ' ');
  }
  return bar + "]";
}

std::string WithDetail(std::string text, absl::string_view detail) {
  if (!detail.empty()) absl::StrAppend(&text, ": ", OneLine(detail));
  return text;
}

}  // namespace

WatchRenderer::WatchRenderer(std::string job_id, Options options)
    : job_id_(std::move(job_id)), options_(options) {}

std::string WatchRenderer::Stamp(absl::Time time) const {
  return absl::FormatTime("%H:%M:%S ", time, absl::LocalTimeZone());
}

std::string WatchRenderer::ProgressLine() const {
  if (!has_report_) return "";
  const int64_t step = report_.step();
  const int64_t total = report_.total_steps();
  // Fields in the order shown, each with the priority that decides which
  // survive a narrow terminal (lowest goes first). The bar is a field too:
  // it takes what width is left, at least kMinBarWidth.
  struct Field {
    int priority;
    std::string text;  // Empty for the bar.
  };
  std::vector<Field> fields;
  if (total > 0) fields.push_back({6, ""});
  if (state_ != v1::JOB_STATE_RUNNING && state_ != v1::JOB_STATE_UNSPECIFIED) {
    fields.push_back({9, JobStateName(state_)});
  }
  fields.push_back({10, total > 0 ? absl::StrCat(step, "/", total)
                                  : absl::StrCat("step ", step)});
  if (total > 0) {
    fields.push_back(
        {3, absl::StrFormat("%.0f%%", 100.0 * static_cast<double>(step) /
                                          static_cast<double>(total))});
    if (step < total && step_seconds_average_ > 0) {
      fields.push_back(
          {9, absl::StrCat("ETA ", HumanDuration(absl::Seconds(
                                       step_seconds_average_ *
                                       static_cast<double>(total - step))))});
    }
  }
  fields.push_back({9, absl::StrFormat("loss %.4f", report_.loss())});
  if (eval_loss_)
    fields.push_back({1, absl::StrFormat("eval %.4f", *eval_loss_)});
  if (eval_accuracy_)
    fields.push_back({1, absl::StrFormat("acc %.1f%%", 100 * *eval_accuracy_)});
  fields.push_back(
      {8, absl::StrCat("scale ", FormatLossScale(report_.loss_scale()))});
  fields.push_back({7, absl::StrCat("ovf ", report_.skipped_steps())});
  fields.push_back(
      {5, absl::StrCat(FormatCount(report_.tokens_per_second()), " tok/s")});
  const std::string precision = PrecisionName(report_.precision());
  if (!precision.empty()) fields.push_back({4, precision});

  const int available = std::max(20, options_.columns - 1);
  // Width of the line with the bar at `bar_width`.
  auto width = [&fields](int bar_width) {
    int sum = -2;
    for (const Field& field : fields) {
      sum += 2 + (field.text.empty() ? bar_width : DisplayWidth(field.text));
    }
    return sum;
  };
  while (width(kMinBarWidth) > available && fields.size() > 1) {
    fields.erase(std::min_element(fields.begin(), fields.end(),
                                  [](const Field& a, const Field& b) {
                                    return a.priority < b.priority;
                                  }));
  }
  const int bar_width =
      std::min(kMaxBarWidth, kMinBarWidth + available - width(kMinBarWidth));
  std::vector<std::string> texts;
  for (const Field& field : fields) {
    texts.push_back(field.text.empty() ? Bar(static_cast<double>(step) /
                                                 static_cast<double>(total),
                                             bar_width)
                                       : field.text);
  }
  return TruncateToWidth(absl::StrJoin(texts, "  "), available);
}

std::string WatchRenderer::ReportLine() const {
  std::string line = absl::StrFormat(
      "step %s", report_.total_steps() > 0
                     ? absl::StrCat(report_.step(), "/", report_.total_steps())
                     : absl::StrCat(report_.step()));
  absl::StrAppend(&line, absl::StrFormat("  loss %.4f", report_.loss()));
  if (report_.has_eval_loss()) {
    absl::StrAppend(&line,
                    absl::StrFormat("  eval loss %.4f", report_.eval_loss()));
  }
  if (report_.has_eval_accuracy()) {
    absl::StrAppend(&line, absl::StrFormat("  eval accuracy %.1f%%",
                                           100 * report_.eval_accuracy()));
  }
  absl::StrAppend(&line, "  scale ", FormatLossScale(report_.loss_scale()),
                  "  overflows ", report_.skipped_steps(), "  ",
                  FormatCount(report_.tokens_per_second()), " tok/s");
  const std::string precision = PrecisionName(report_.precision());
  if (!precision.empty()) absl::StrAppend(&line, "  ", precision);
  if (report_.step() < report_.total_steps() && step_seconds_average_ > 0) {
    absl::StrAppend(
        &line, "  ETA ",
        HumanDuration(absl::Seconds(
            step_seconds_average_ *
            static_cast<double>(report_.total_steps() - report_.step()))));
  }
  return line;
}

std::string WatchRenderer::Redraw() {
  const std::string line = ProgressLine();
  if (line.empty()) return "";
  bar_drawn_ = true;
  return absl::StrCat(kClearLine, line);
}

std::string WatchRenderer::Above(const std::string& line) {
  if (!options_.terminal) return line + "\n";
  if (!bar_drawn_) return line + "\n";
  return absl::StrCat(kClearLine, line, "\n", ProgressLine());
}

std::string WatchRenderer::EventText(const v1::JobEvent& event) {
  switch (event.kind()) {
    case v1::JOB_EVENT_KIND_STATE_CHANGED:
      switch (event.state()) {
        case v1::JOB_STATE_QUEUED:
          if (event.attempt() > 1) {
            return WithDetail(
                absl::StrCat("requeued for attempt ", event.attempt()),
                event.message());
          }
          return WithDetail("queued", event.message());
        case v1::JOB_STATE_ASSIGNED: {
          std::string text =
              absl::StrCat("assigned to worker ", OneLine(event.worker()));
          if (event.attempt() > 1) {
            absl::StrAppend(&text, " (attempt ", event.attempt(), ")");
          }
          return WithDetail(text, event.message());
        }
        case v1::JOB_STATE_RUNNING: {
          if (event.attempt() > 1) {
            std::string text =
                absl::StrCat("resumed on worker ", OneLine(event.worker()),
                             " at attempt ", event.attempt());
            absl::StrAppend(&text,
                            checkpoint_step_ > 0
                                ? absl::StrCat(" from step ", checkpoint_step_)
                                : " from the start");
            return WithDetail(text, event.message());
          }
          return WithDetail(
              absl::StrCat("running on worker ", OneLine(event.worker())),
              event.message());
        }
        default:
          return "";  // Terminal states: OnFinished prints the outcome.
      }
    case v1::JOB_EVENT_KIND_REPORT:
      return "";
    case v1::JOB_EVENT_KIND_CHECKPOINT:
      return WithDetail(
          absl::StrCat("checkpoint stored at step ", checkpoint_step_),
          event.message());
    case v1::JOB_EVENT_KIND_FALLBACK:
      return WithDetail("precision fallback", event.message());
    case v1::JOB_EVENT_KIND_QUEUE_REASON:
      return WithDetail("waiting", event.message());
    case v1::JOB_EVENT_KIND_SAVINGS:
      savings_shown_ = true;
      return absl::StrCat("savings: ",
                          FormatSavingsSummary(event.savings(), ""));
    case v1::JOB_EVENT_KIND_NOTICE:
    default:
      return OneLine(event.message());
  }
}

std::string WatchRenderer::OnEvent(const v1::JobEvent& event, absl::Time now) {
  if (event.sequence() > 0 && event.sequence() <= last_sequence_) return "";
  last_sequence_ = std::max(last_sequence_, event.sequence());
  if (event.kind() == v1::JOB_EVENT_KIND_STATE_CHANGED) {
    state_ = event.state();
    if (IsTerminal(state_)) end_message_ = event.message();
    queue_reason_.clear();
  }
  if (event.kind() == v1::JOB_EVENT_KIND_QUEUE_REASON) {
    queue_reason_ = event.message();
  }
  if (event.attempt() > 0) attempt_ = event.attempt();
  if (!event.worker().empty()) worker_ = event.worker();

  if (event.kind() == v1::JOB_EVENT_KIND_REPORT && event.has_report()) {
    report_ = event.report();
    has_report_ = true;
    if (report_.has_eval_loss()) eval_loss_ = report_.eval_loss();
    if (report_.has_eval_accuracy()) eval_accuracy_ = report_.eval_accuracy();
    if (report_.step_seconds() > 0) {
      step_seconds_average_ =
          step_seconds_average_ == 0
              ? report_.step_seconds()
              : 0.8 * step_seconds_average_ + 0.2 * report_.step_seconds();
    }
    if (options_.terminal) {
      const bool last_step = report_.step() >= report_.total_steps();
      if (!last_step && now - last_redraw_ < options_.min_redraw_interval) {
        return "";
      }
      last_redraw_ = now;
      return Redraw();
    }
    const int64_t every =
        options_.report_every_steps > 0
            ? options_.report_every_steps
            : std::max<int64_t>(1, report_.total_steps() / 20);
    const bool due = last_printed_step_ < 0 ||
                     report_.step() - last_printed_step_ >= every ||
                     now - last_printed_time_ >= options_.report_interval ||
                     report_.step() >= report_.total_steps() ||
                     report_.has_eval_loss();
    if (!due) return "";
    last_printed_step_ = report_.step();
    last_printed_time_ = now;
    return Above(Stamp(event.has_time() ? ToAbslTime(event.time()) : now) +
                 ReportLine());
  }

  if (event.kind() == v1::JOB_EVENT_KIND_CHECKPOINT) {
    checkpoint_step_ = event.has_report() && event.report().step() > 0
                           ? event.report().step()
                           : report_.step();
  }
  const std::string text = EventText(event);
  if (text.empty()) {
    // A state change still shows on the bar (e.g. "queued").
    return options_.terminal && bar_drawn_ ? Redraw() : "";
  }
  const absl::Time when = event.has_time() ? ToAbslTime(event.time()) : now;
  return Above(Stamp(when) + text);
}

std::string WatchRenderer::OnNotice(absl::string_view text, absl::Time now) {
  return Above(Stamp(now) + OneLine(text));
}

std::string WatchRenderer::OnFinished(const v1::Job* final_job) {
  std::string out;
  if (final_job != nullptr) {
    if (final_job->has_latest_report() &&
        final_job->latest_report().step() >= report_.step()) {
      report_ = final_job->latest_report();
      has_report_ = true;
      if (report_.has_eval_loss()) eval_loss_ = report_.eval_loss();
      if (report_.has_eval_accuracy()) {
        eval_accuracy_ = report_.eval_accuracy();
      }
    }
    // Terminal states are final; otherwise the scheduler's record wins.
    if (!IsTerminal(state_) &&
        final_job->state() != v1::JOB_STATE_UNSPECIFIED) {
      state_ = final_job->state();
    }
  }
  if (options_.terminal && bar_drawn_) {
    absl::StrAppend(&out, kClearLine, ProgressLine(), "\n");
  }
  std::string outcome = absl::StrCat("job ", job_id_, " ");
  switch (state_) {
    case v1::JOB_STATE_SUCCEEDED: {
      absl::StrAppend(&outcome, "succeeded");
      std::vector<std::string> facts;
      if (has_report_) {
        std::string steps =
            absl::StrCat(report_.step(), "/", report_.total_steps(), " steps");
        if (final_job != nullptr && IsSet(final_job->start_time()) &&
            IsSet(final_job->end_time())) {
          absl::StrAppend(&steps, " in ",
                          HumanDuration(ToAbslTime(final_job->end_time()) -
                                        ToAbslTime(final_job->start_time())));
        }
        facts.push_back(steps);
        facts.push_back(absl::StrFormat("final loss %.4f", report_.loss()));
        if (eval_loss_) {
          facts.push_back(absl::StrFormat("eval loss %.4f", *eval_loss_));
        }
        if (eval_accuracy_) {
          facts.push_back(
              absl::StrFormat("eval accuracy %.1f%%", 100 * *eval_accuracy_));
        }
      }
      if (!facts.empty())
        absl::StrAppend(&outcome, ": ", absl::StrJoin(facts, ", "));
      break;
    }
    case v1::JOB_STATE_FAILED:
    case v1::JOB_STATE_CANCELLED: {
      absl::StrAppend(&outcome, state_ == v1::JOB_STATE_FAILED
                                    ? "failed"
                                    : "was cancelled");
      std::string reason =
          final_job != nullptr && !final_job->failure_reason().empty()
              ? final_job->failure_reason()
              : end_message_;
      if (!reason.empty()) absl::StrAppend(&outcome, ": ", OneLine(reason));
      if (has_report_) {
        absl::StrAppend(&outcome, " (at step ", report_.step(), "/",
                        report_.total_steps());
        if (attempt_ > 1) absl::StrAppend(&outcome, ", attempt ", attempt_);
        absl::StrAppend(&outcome, ")");
      }
      break;
    }
    default:
      absl::StrAppend(&outcome, "is ", JobStateName(state_));
      break;
  }
  absl::StrAppend(&out, outcome, "\n");
  if (final_job != nullptr && final_job->has_savings() && !savings_shown_) {
    absl::StrAppend(&out,
                    "savings: ", FormatSavingsSummary(final_job->savings(), ""),
                    "\n");
  }
  bar_drawn_ = false;
  return out;
}

std::string WatchRenderer::ReleaseLine() {
  std::string out;
  if (options_.terminal && bar_drawn_) {
    absl::StrAppend(&out, kClearLine, ProgressLine(), "\n");
  } else if (options_.terminal) {
    out += kClearLine;  // Wipes a "^C" the terminal echoed.
  }
  bar_drawn_ = false;
  return out;
}

std::string WatchRenderer::OnInterrupted() {
  std::string out = ReleaseLine();
  absl::StrAppend(&out,
                  "stopped watching; the job keeps running: halftime watch ",
                  job_id_, "\n");
  return out;
}

}  // namespace halftime
