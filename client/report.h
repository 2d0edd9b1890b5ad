// The savings report of `halftime savings --html FILE`: one self-contained
// HTML page (inline SVG, inline CSS, no scripts, nothing fetched) with the
// loss curves of the compared runs, their speedup and memory bars, the
// per-job savings table and the fleet totals, for people without Grafana.
//
// Thread-safety: pure functions, thread-safe.
#ifndef HALFTIME_CLIENT_REPORT_H_
#define HALFTIME_CLIENT_REPORT_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "halftime/v1/job.pb.h"
#include "halftime/v1/scheduler.pb.h"

namespace halftime {

// One point of a curve.
struct CurvePoint {
  int64_t step = 0;
  double value = 0;
};

// A job in the report: the job, its savings when measured, its curves.
struct ReportJob {
  v1::Job job;
  std::optional<v1::Savings> savings;
  // Training loss by step (the scheduler's downsampled reports).
  std::vector<CurvePoint> loss;
  // Eval loss by step.
  std::vector<CurvePoint> eval_loss;
};

// Everything the page shows.
struct SavingsReport {
  std::vector<ReportJob> jobs;
  // Fleet totals by precision.
  std::vector<v1::PrecisionSavings> totals;
  std::string currency;
  // Scheduler address, shown in the header.
  std::string source;
  absl::Time generated = absl::UnixEpoch();
};

// Fills `job.loss` and `job.eval_loss` from a job's events (REPORT events
// of every attempt; a later attempt's points replace the earlier ones from
// the step it resumed at, so a resumed run draws one curve).
void AddCurvesFromEvents(const std::vector<v1::JobEvent>& events,
                         ReportJob* job);

// The HTML page. Non-finite values are left out of the charts; every text
// that came from users (names, devices) is escaped.
std::string RenderSavingsReportHtml(const SavingsReport& report);

// `text` with &, <, >, " and ' escaped for HTML text and attributes.
std::string HtmlEscape(absl::string_view text);

}  // namespace halftime

#endif  // HALFTIME_CLIENT_REPORT_H_
