#include "client/report.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "absl/strings/match.h"

namespace halftime {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

v1::JobEvent Report(int attempt, int64_t step, double loss,
                    std::optional<double> eval = std::nullopt) {
  v1::JobEvent e;
  e.set_kind(v1::JOB_EVENT_KIND_REPORT);
  e.mutable_report()->set_attempt(attempt);
  e.mutable_report()->set_step(step);
  e.mutable_report()->set_loss(loss);
  if (eval) e.mutable_report()->set_eval_loss(*eval);
  return e;
}

int Count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

TEST(ReportTest, CurvesKeepTheRunThatCountedAfterAResume) {
  std::vector<v1::JobEvent> events = {
      Report(1, 1, 4.0),   Report(1, 5, 3.0),      Report(1, 10, 2.5, 2.7),
      Report(1, 12, 2.4),  // lost with attempt 1: resumed from step 10
      Report(2, 11, 2.45), Report(2, 20, 2.0, 2.1)};
  v1::JobEvent state;
  state.set_kind(v1::JOB_EVENT_KIND_STATE_CHANGED);
  events.insert(events.begin() + 2, state);
  ReportJob job;
  AddCurvesFromEvents(events, &job);
  std::vector<std::pair<int64_t, double>> loss;
  for (const CurvePoint& p : job.loss) loss.emplace_back(p.step, p.value);
  EXPECT_EQ(loss, (std::vector<std::pair<int64_t, double>>{
                      {1, 4.0}, {5, 3.0}, {10, 2.5}, {11, 2.45}, {20, 2.0}}));
  ASSERT_EQ(job.eval_loss.size(), 2u);
  EXPECT_EQ(job.eval_loss[0].step, 10);
  EXPECT_EQ(job.eval_loss[1].value, 2.1);
}

SavingsReport TwoJobs() {
  SavingsReport report;
  report.currency = "USD";
  report.source = "127.0.0.1:50051";
  for (int i = 0; i < 2; ++i) {
    ReportJob& j = report.jobs.emplace_back();
    j.job.set_id(i == 0 ? "j-000001" : "j-000002");
    j.job.mutable_spec()->set_name(i == 0 ? "ft-fp32" : "ft-<b>bf16</b>");
    j.job.set_resolved_precision(i == 0 ? v1::PRECISION_FP32
                                        : v1::PRECISION_BF16_MIXED);
    j.job.set_state(v1::JOB_STATE_SUCCEEDED);
    for (int step = 1; step <= 50; ++step) {
      j.loss.push_back({step, 4.0 / step + i * 0.01});
    }
    j.eval_loss = {{25, 1.0}, {50, 0.5}};
  }
  report.jobs[1].loss[7].value = NAN;  // an overflowed report: not drawn
  v1::Savings& s = report.jobs[1].savings.emplace();
  s.set_precision(v1::PRECISION_BF16_MIXED);
  s.set_baseline(v1::BASELINE_MODE_PROBE);
  s.set_speedup(2.05);
  s.set_memory_saved_ratio(0.31);
  s.set_baseline_step_seconds(0.41);
  s.set_step_seconds(0.2);
  s.set_device_name("Intel Xeon");
  v1::PrecisionSavings& t = report.totals.emplace_back();
  t.set_precision(v1::PRECISION_BF16_MIXED);
  t.set_jobs(1);
  t.set_mean_speedup(2.05);
  return report;
}

TEST(ReportTest, DrawsEveryCurveAndTheSavings) {
  const std::string html = RenderSavingsReportHtml(TwoJobs());
  EXPECT_TRUE(absl::StartsWith(html, "<!DOCTYPE html>"));
  EXPECT_EQ(Count(html, "<polyline class=\"loss\""), 2);
  EXPECT_EQ(Count(html, "<polyline class=\"eval-loss\""), 2);
  // 50 points for fp32, 49 for bf16 (one NaN left out).
  const size_t bf16 = html.find("class=\"loss\" data-job=\"j-000002\"");
  ASSERT_NE(bf16, std::string::npos);
  const size_t points = html.find("points=\"", bf16) + 8;
  const std::string list = html.substr(points, html.find('"', points) - points);
  EXPECT_EQ(Count(list, ","), 49);
  EXPECT_THAT(html, Not(HasSubstr("nan")));
  EXPECT_EQ(Count(html, "<rect class=\"speedup\""), 1);
  EXPECT_THAT(html, HasSubstr("2.05x"));
  EXPECT_THAT(html, HasSubstr("31.0%"));
  EXPECT_THAT(html, HasSubstr("no savings measured"));
  EXPECT_THAT(html, HasSubstr("Fleet totals by precision"));
  EXPECT_THAT(html, HasSubstr("from 127.0.0.1:50051"));
  // Self-contained: nothing fetched, nothing run.
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  EXPECT_THAT(html, Not(HasSubstr("src=")));
  EXPECT_THAT(html, Not(HasSubstr("href=")));
}

TEST(ReportTest, EscapesWhatUsersWrote) {
  const std::string html = RenderSavingsReportHtml(TwoJobs());
  EXPECT_THAT(html, Not(HasSubstr("<b>bf16</b>")));
  EXPECT_THAT(html, HasSubstr("ft-&lt;b&gt;bf16&lt;/b&gt;"));
  EXPECT_EQ(HtmlEscape("a&b<c>\"'"), "a&amp;b&lt;c&gt;&quot;&#39;");
}

TEST(ReportTest, NothingToDrawSaysSo) {
  SavingsReport report;
  report.jobs.emplace_back().job.set_id("j-000009");
  const std::string html = RenderSavingsReportHtml(report);
  EXPECT_THAT(html, HasSubstr("No training reports to draw yet."));
  EXPECT_THAT(html, Not(HasSubstr("<polyline")));
}

}  // namespace
}  // namespace halftime
