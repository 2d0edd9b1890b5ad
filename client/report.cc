#include "client/report.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/render.h"
#include "common/enum_names.h"

namespace halftime {
namespace {

// Colour-blind-safe palette (Okabe-Ito), one colour per job.
constexpr const char* kPalette[] = {"#0072b2", "#d55e00", "#009e73", "#cc79a7",
                                    "#e69f00", "#56b4e9", "#f0e442", "#000000"};
constexpr int kPaletteSize = sizeof(kPalette) / sizeof(kPalette[0]);

std::string Colour(size_t index) { return kPalette[index % kPaletteSize]; }

// -0 (a negative saving at price 0) prints as 0.
double NoNegativeZero(double value) { return value == 0 ? 0.0 : value; }

// About `count` round tick values covering [lo, hi].
std::vector<double> Ticks(double lo, double hi, int count) {
  std::vector<double> ticks;
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / count;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * magnitude;
    if (step >= raw) break;
  }
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9;
       t += step) {
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  }
  return ticks;
}

std::string Label(const v1::Job& job) {
  const v1::Precision precision =
      job.resolved_precision() != v1::PRECISION_UNSPECIFIED
          ? job.resolved_precision()
          : job.spec().precision();
  return absl::StrCat(job.id(), " ", job.spec().name(), " (",
                      PrecisionName(precision), ")");
}

// Loss curves of every job: solid training loss, dashed eval loss.
std::string LossChart(const std::vector<ReportJob>& jobs) {
  constexpr double kWidth = 880, kHeight = 360;
  constexpr double kLeft = 64, kRight = 16, kTop = 16, kBottom = 44;
  double max_step = 0, lo = INFINITY, hi = -INFINITY;
  for (const ReportJob& j : jobs) {
    for (const auto* curve : {&j.loss, &j.eval_loss}) {
      for (const CurvePoint& p : *curve) {
        if (!std::isfinite(p.value)) continue;
        max_step = std::max(max_step, static_cast<double>(p.step));
        lo = std::min(lo, p.value);
        hi = std::max(hi, p.value);
      }
    }
  }
  if (!std::isfinite(lo)) {
    return "<p class=\"empty\">No training reports to draw yet.</p>\n";
  }
  if (hi - lo < 1e-12) {
    lo -= 0.5;
    hi += 0.5;
  }
  const double pad = (hi - lo) * 0.05;
  lo = std::max(0.0, lo - pad);
  hi += pad;
  max_step = std::max(max_step, 1.0);
  const double plot_w = kWidth - kLeft - kRight;
  const double plot_h = kHeight - kTop - kBottom;
  auto x = [&](double step) { return kLeft + step / max_step * plot_w; };
  auto y = [&](double v) { return kTop + (hi - v) / (hi - lo) * plot_h; };

  std::string svg = absl::StrFormat(
      "<svg class=\"chart\" role=\"img\" aria-label=\"Loss by step\" "
      "xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %.0f %.0f\" "
      "width=\"%.0f\" height=\"%.0f\">\n"
      "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#fff\"/>\n",
      kWidth, kHeight, kWidth, kHeight, kWidth, kHeight);
  for (double t : Ticks(lo, hi, 6)) {
    absl::StrAppendFormat(
        &svg,
        "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" "
        "stroke=\"#e3e3e3\"/><text x=\"%.1f\" y=\"%.1f\" "
        "text-anchor=\"end\" class=\"tick\">%g</text>\n",
        kLeft, kWidth - kRight, y(t), y(t), kLeft - 6, y(t) + 4, t);
  }
  for (double t : Ticks(0, max_step, 8)) {
    absl::StrAppendFormat(
        &svg,
        "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" "
        "stroke=\"#e3e3e3\"/><text x=\"%.1f\" y=\"%.1f\" "
        "text-anchor=\"middle\" class=\"tick\">%g</text>\n",
        x(t), x(t), kTop, kTop + plot_h, x(t), kTop + plot_h + 16, t);
  }
  absl::StrAppendFormat(
      &svg,
      "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
      "fill=\"none\" stroke=\"#888\"/>\n"
      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
      "class=\"axis\">step</text>\n"
      "<text x=\"14\" y=\"%.1f\" text-anchor=\"middle\" class=\"axis\" "
      "transform=\"rotate(-90 14 %.1f)\">loss</text>\n",
      kLeft, kTop, plot_w, plot_h, kLeft + plot_w / 2, kHeight - 6,
      kTop + plot_h / 2, kTop + plot_h / 2);
  for (size_t i = 0; i < jobs.size(); ++i) {
    const ReportJob& j = jobs[i];
    for (const auto* curve : {&j.loss, &j.eval_loss}) {
      std::string points;
      int n = 0;
      double last_x = 0, last_y = 0;
      for (const CurvePoint& p : *curve) {
        if (!std::isfinite(p.value)) continue;
        last_x = x(static_cast<double>(p.step));
        last_y = y(p.value);
        absl::StrAppendFormat(&points, "%s%.1f,%.1f", n++ ? " " : "", last_x,
                              last_y);
      }
      if (n == 0) continue;
      const bool eval = curve == &j.eval_loss;
      absl::StrAppendFormat(
          &svg,
          "<polyline class=\"%s\" data-job=\"%s\" fill=\"none\" "
          "stroke=\"%s\" stroke-width=\"%s\"%s points=\"%s\"/>\n",
          eval ? "eval-loss" : "loss", HtmlEscape(j.job.id()), Colour(i),
          eval ? "1.5" : "2", eval ? " stroke-dasharray=\"6 4\"" : "", points);
      if (n == 1) {  // A single point draws no line: mark it.
        absl::StrAppendFormat(
            &svg, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
            last_x, last_y, Colour(i));
      }
    }
  }
  absl::StrAppend(&svg, "</svg>\n<ul class=\"legend\">\n");
  for (size_t i = 0; i < jobs.size(); ++i) {
    absl::StrAppendFormat(
        &svg,
        "<li><span class=\"swatch\" style=\"background:%s\"></span>%s</li>\n",
        Colour(i), HtmlEscape(Label(jobs[i].job)));
  }
  absl::StrAppend(&svg,
                  "<li class=\"note\">solid: training loss; dashed: eval "
                  "loss</li>\n</ul>\n");
  return svg;
}

// Horizontal bars: speedup (against 1.0 = fp32) and memory saved.
std::string SavingsBars(const std::vector<ReportJob>& jobs) {
  std::vector<const ReportJob*> measured;
  for (const ReportJob& j : jobs) {
    if (j.savings.has_value()) measured.push_back(&j);
  }
  if (measured.empty()) return "";
  constexpr double kWidth = 880, kLabel = 300, kRow = 28, kTop = 28;
  double max_speedup = 1.0;
  for (const ReportJob* j : measured) {
    if (std::isfinite(j->savings->speedup())) {
      max_speedup = std::max(max_speedup, j->savings->speedup());
    }
  }
  max_speedup *= 1.1;
  const double half = (kWidth - kLabel - 20) / 2;  // speedup | memory
  const double height = kTop + kRow * measured.size() + 8;
  std::string svg = absl::StrFormat(
      "<svg class=\"chart\" role=\"img\" aria-label=\"Speedup and memory "
      "saved\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %.0f "
      "%.0f\" width=\"%.0f\" height=\"%.0f\">\n"
      "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#fff\"/>\n"
      "<text x=\"%.1f\" y=\"16\" class=\"axis\">speedup vs fp32 (line: "
      "1.0x)</text>\n<text x=\"%.1f\" y=\"16\" class=\"axis\">peak memory "
      "saved</text>\n",
      kWidth, height, kWidth, height, kWidth, height, kLabel,
      kLabel + half + 20);
  for (size_t r = 0; r < measured.size(); ++r) {
    const ReportJob& j = *measured[r];
    const size_t colour = static_cast<size_t>(&j - jobs.data());
    const double top = kTop + kRow * r;
    const double speedup =
        std::isfinite(j.savings->speedup()) ? j.savings->speedup() : 0;
    const double ratio = std::isfinite(j.savings->memory_saved_ratio())
                             ? j.savings->memory_saved_ratio()
                             : 0;
    absl::StrAppendFormat(
        &svg,
        "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" "
        "class=\"tick\">%s</text>\n"
        "<rect class=\"speedup\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
        "height=\"18\" fill=\"%s\"/><text x=\"%.1f\" y=\"%.1f\" "
        "class=\"tick\">%.2fx</text>\n"
        "<rect class=\"memory\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
        "height=\"18\" fill=\"%s\" fill-opacity=\"0.6\"/><text x=\"%.1f\" "
        "y=\"%.1f\" class=\"tick\">%.1f%%</text>\n",
        kLabel - 8, top + 13, HtmlEscape(Label(j.job)), kLabel, top,
        std::max(0.0, speedup / max_speedup * (half - 40)), Colour(colour),
        kLabel + std::max(0.0, speedup / max_speedup * (half - 40)) + 4,
        top + 13, speedup, kLabel + half + 20, top,
        std::clamp(ratio, 0.0, 1.0) * (half - 50), Colour(colour),
        kLabel + half + 20 + std::clamp(ratio, 0.0, 1.0) * (half - 50) + 4,
        top + 13, ratio * 100);
  }
  const double one = kLabel + 1.0 / max_speedup * (half - 40);
  absl::StrAppendFormat(&svg,
                        "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" "
                        "y2=\"%.1f\" stroke=\"#333\" "
                        "stroke-dasharray=\"3 3\"/>\n</svg>\n",
                        one, one, kTop - 4, height - 4);
  return svg;
}

std::string Cell(absl::string_view text) {
  return absl::StrCat("<td>", HtmlEscape(text), "</td>");
}

std::string SavingsTable(const std::vector<ReportJob>& jobs,
                         const std::string& currency) {
  std::string html =
      "<table>\n<tr><th>job</th><th>name</th><th>precision</th><th>state</"
      "th><th>device</th><th>baseline</th><th>speedup</th><th>s/step fp32 "
      "&rarr; job</th><th>tokens/s fp32 &rarr; job</th><th>peak memory fp32 "
      "&rarr; job</th><th>memory saved</th><th>device time saved</th><th>"
      "cost saved</th></tr>\n";
  for (const ReportJob& j : jobs) {
    const v1::Precision precision =
        j.job.resolved_precision() != v1::PRECISION_UNSPECIFIED
            ? j.job.resolved_precision()
            : j.job.spec().precision();
    absl::StrAppend(&html, "<tr>", Cell(j.job.id()), Cell(j.job.spec().name()),
                    Cell(PrecisionName(precision)),
                    Cell(JobStateName(j.job.state())));
    if (!j.savings.has_value()) {
      absl::StrAppend(&html,
                      "<td colspan=\"9\" class=\"note\">no savings measured "
                      "(an fp32 run, baseline: none, or not finished)</td>"
                      "</tr>\n");
      continue;
    }
    const v1::Savings& s = *j.savings;
    absl::StrAppend(
        &html, Cell(s.device_name()),
        Cell(EnumShortName(v1::BaselineMode_descriptor(), s.baseline())),
        Cell(absl::StrFormat("%.2fx", s.speedup())),
        Cell(absl::StrFormat("%.4f → %.4f", s.baseline_step_seconds(),
                             s.step_seconds())),
        Cell(absl::StrCat(FormatCount(s.baseline_tokens_per_second()), " → ",
                          FormatCount(s.tokens_per_second()))),
        Cell(absl::StrCat(FormatBytes(s.baseline_peak_memory_bytes()), " → ",
                          FormatBytes(s.peak_memory_bytes()))),
        Cell(absl::StrFormat("%s (%.1f%%)", FormatBytes(s.memory_saved_bytes()),
                             s.memory_saved_ratio() * 100)),
        Cell(absl::StrFormat("%.1f s (probe %.1f s)", s.device_seconds_saved(),
                             s.probe_seconds())),
        Cell(absl::StrFormat("%.4g %s", NoNegativeZero(s.cost_saved()),
                             currency)),
        "</tr>\n");
  }
  absl::StrAppend(&html, "</table>\n");
  return html;
}

std::string TotalsTable(const std::vector<v1::PrecisionSavings>& totals,
                        const std::string& currency) {
  if (totals.empty()) return "";
  std::string html =
      "<h2>Fleet totals by precision</h2>\n<table>\n<tr><th>precision</th>"
      "<th>jobs</th><th>mean speedup</th><th>mean memory saved</th><th>"
      "device time saved</th><th>cost saved</th></tr>\n";
  for (const v1::PrecisionSavings& t : totals) {
    absl::StrAppend(
        &html, "<tr>", Cell(PrecisionName(t.precision())),
        Cell(absl::StrCat(t.jobs())),
        Cell(absl::StrFormat("%.2fx", t.mean_speedup())),
        Cell(absl::StrFormat("%.1f%%", t.mean_memory_saved_ratio() * 100)),
        Cell(HumanDuration(absl::Seconds(t.device_seconds_saved()))),
        Cell(absl::StrFormat("%.4g %s", NoNegativeZero(t.cost_saved()),
                             currency)),
        "</tr>\n");
  }
  absl::StrAppend(&html, "</table>\n");
  return html;
}

}  // namespace

std::string HtmlEscape(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

void AddCurvesFromEvents(const std::vector<v1::JobEvent>& events,
                         ReportJob* job) {
  // step -> value; a later attempt overwrites the steps it ran again.
  std::map<int64_t, double> loss, eval;
  int32_t attempt = 0;
  for (const v1::JobEvent& e : events) {
    if (e.kind() != v1::JOB_EVENT_KIND_REPORT || !e.has_report()) continue;
    const v1::TrainingReport& r = e.report();
    if (r.attempt() != attempt) {
      // A resumed attempt restarts at its checkpoint: drop what the earlier
      // attempt drew beyond it, so the curve shows the run that counted.
      attempt = r.attempt();
      loss.erase(loss.lower_bound(r.step()), loss.end());
      eval.erase(eval.lower_bound(r.step()), eval.end());
    }
    loss[r.step()] = r.loss();
    if (r.has_eval_loss()) eval[r.step()] = r.eval_loss();
  }
  job->loss.clear();
  job->eval_loss.clear();
  for (const auto& [step, value] : loss) job->loss.push_back({step, value});
  for (const auto& [step, value] : eval) {
    job->eval_loss.push_back({step, value});
  }
}

std::string RenderSavingsReportHtml(const SavingsReport& report) {
  std::string html = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta "
      "charset=\"utf-8\">\n<title>Halftime savings report</title>\n<style>\n"
      "body{font-family:system-ui,-apple-system,'Segoe "
      "UI',Roboto,sans-serif;margin:24px;color:#222;background:#fff}\n"
      "h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 "
      "8px}\n.meta{color:#666;font-size:13px}\n"
      ".chart text{font-size:12px;fill:#333}.chart .axis{font-size:13px}\n"
      "table{border-collapse:collapse;font-size:13px}\n"
      "th,td{border:1px solid #ddd;padding:4px "
      "8px;text-align:left}th{background:#f4f4f4}\n"
      ".legend{list-style:none;padding:0;font-size:13px}"
      ".legend li{display:inline-block;margin-right:18px}\n"
      ".swatch{display:inline-block;width:14px;height:4px;margin-right:6px;"
      "vertical-align:middle}\n.note,.empty{color:#666}\n</style>\n</head>\n"
      "<body>\n<h1>Halftime savings report</h1>\n<p class=\"meta\">",
      HtmlEscape(absl::StrCat(
          report.jobs.size(), report.jobs.size() == 1 ? " job" : " jobs",
          report.source.empty() ? "" : absl::StrCat(" from ", report.source),
          ", generated ",
          absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", report.generated,
                           absl::UTCTimeZone()),
          ". Every figure is measured: each job against an fp32 run of the "
          "same model, batch and device.")),
      "</p>\n<h2>Loss</h2>\n", LossChart(report.jobs));
  const std::string bars = SavingsBars(report.jobs);
  if (!bars.empty()) {
    absl::StrAppend(&html, "<h2>Speedup and memory</h2>\n", bars);
  }
  absl::StrAppend(&html, "<h2>Savings by job</h2>\n",
                  SavingsTable(report.jobs, report.currency),
                  TotalsTable(report.totals, report.currency),
                  "</body>\n</html>\n");
  return html;
}

}  // namespace halftime
