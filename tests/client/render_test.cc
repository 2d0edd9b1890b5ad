// JSON, YAML and table rendering of API messages.
#include "client/render.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/spec.h"
#include "tests/client/fake_scheduler.h"

namespace halftime {
namespace {

using ::testing::HasSubstr;
using testing::MakeJob;
using ::testing::Not;

const std::string kExamples = HALFTIME_EXAMPLES;

v1::Job RunningJob() {
  return MakeJob("j-000001", kExamples + "/finetune-bf16-mixed.yaml",
                 v1::JOB_STATE_RUNNING);
}

TEST(ProtoToJsonTest, HoldsEveryFieldWithReadableEnums) {
  v1::Job job = RunningJob();
  job.mutable_latest_report()->set_eval_loss(2.5);
  const nlohmann::ordered_json json = ProtoToJson(job);
  EXPECT_EQ(json["id"], "j-000001");
  EXPECT_EQ(json["state"], "running");
  EXPECT_EQ(json["resolved_precision"], "bf16-mixed");
  EXPECT_EQ(json["failure_reason"], "");    // Zero values are kept...
  EXPECT_FALSE(json.contains("end_time"));  // ...unset messages are not.
  EXPECT_TRUE(json["latest_report"]["peak_memory_bytes"].is_number_integer());
  EXPECT_EQ(json["latest_report"]["eval_loss"], 2.5);
  EXPECT_EQ(json["latest_report"]["overflow"], false);
  EXPECT_EQ(json["spec"], nlohmann::ordered_json::parse(
                              FormatJobSpec(job.spec(), SpecFormat::kJson)));
  EXPECT_THAT(json["submit_time"].get<std::string>(), HasSubstr("Z"));
  // Every field of Job is there except the unset end_time, savings and
  // memory_estimate.
  EXPECT_EQ(json.size(),
            static_cast<std::size_t>(v1::Job::descriptor()->field_count() - 3));

  v1::Job queued;
  EXPECT_EQ(ProtoToJson(queued)["state"], "unspecified");
  EXPECT_FALSE(ProtoToJson(queued).contains("latest_report"));
}

TEST(ProtoToJsonTest, OptionalScalarsOnlyWhenSet) {
  v1::TrainingReport report;
  EXPECT_FALSE(ProtoToJson(report).contains("eval_loss"));
  report.set_eval_loss(0);
  EXPECT_EQ(ProtoToJson(report)["eval_loss"], 0.0);
}

TEST(JsonToYamlTest, RoundTripsThroughAYamlParser) {
  nlohmann::ordered_json value = {
      {"plain", "bf16-mixed"},
      {"needs quotes",
       {"yes", "no", "1.5", "", "a: b", "- x", "#c", "null",
        "with \"quotes\" and \\", "line\nbreak", " lead",
        "2024-05-01T12:00:00Z", "…unicode"}},
      {"number", 3e-4},
      {"integer", int64_t{1} << 40},
      {"flag", true},
      {"nothing", nullptr},
      {"empty list", nlohmann::ordered_json::array()},
      {"empty map", nlohmann::ordered_json::object()},
      {"list of maps", {{{"a", 1}, {"b", {{"c", "d"}}}}, {{"e", {1, 2}}}}},
      {"nested lists", {{1, 2}, {3}}},
  };
  const std::string yaml = JsonToYaml(value);
  YAML::Node node = YAML::Load(yaml);
  EXPECT_EQ(node["plain"].as<std::string>(), "bf16-mixed");
  const nlohmann::ordered_json& quoted = value["needs quotes"];
  for (std::size_t i = 0; i < quoted.size(); ++i) {
    EXPECT_EQ(node["needs quotes"][i].as<std::string>(),
              quoted[i].get<std::string>())
        << yaml;
  }
  EXPECT_DOUBLE_EQ(node["number"].as<double>(), 3e-4);
  EXPECT_EQ(node["integer"].as<int64_t>(), int64_t{1} << 40);
  EXPECT_TRUE(node["flag"].as<bool>());
  EXPECT_TRUE(node["nothing"].IsNull());
  EXPECT_EQ(node["empty list"].size(), 0u);
  EXPECT_TRUE(node["empty map"].IsMap());
  EXPECT_EQ(node["list of maps"][0]["b"]["c"].as<std::string>(), "d");
  EXPECT_EQ(node["list of maps"][1]["e"][1].as<int>(), 2);
  EXPECT_EQ(node["nested lists"][0][1].as<int>(), 2);
}

TEST(JsonToYamlTest, FloatsReadAsFloatsInYaml11) {
  EXPECT_EQ(JsonToYaml(nlohmann::ordered_json{{"eps", 1e-8}}),
            "eps: 1.0e-08\n");
  EXPECT_EQ(JsonToYaml(nlohmann::ordered_json{{"lr", 3e-4}}), "lr: 0.0003\n");
}

TEST(ProtoToJsonTest, KeysFollowTheProto) {
  const std::string json = RenderDocument(RunningJob(), OutputFormat::kJson);
  EXPECT_LT(json.find("\"id\""), json.find("\"spec\""));
  EXPECT_LT(json.find("\"spec\""), json.find("\"state\""));
}

TEST(JsonToYamlTest, AJobRoundTrips) {
  v1::Job job = RunningJob();
  const std::string yaml = RenderDocument(job, OutputFormat::kYaml);
  YAML::Node node = YAML::Load(yaml);
  EXPECT_EQ(node["state"].as<std::string>(), "running");
  EXPECT_EQ(node["latest_report"]["step"].as<int64_t>(), 120);
  EXPECT_EQ(node["spec"]["precision"].as<std::string>(), "bf16-mixed");
  // The spec inside reads back as a spec.
  YAML::Emitter spec;
  spec << node["spec"];
  absl::StatusOr<v1::JobSpec> parsed = ParseJobSpec(spec.c_str());
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << spec.c_str();
}

TEST(TableTest, ShrinksFlexibleColumnsWithAnEllipsis) {
  Table table({{"ID"}, {"NAME", true}, {"STATE"}, {"STEP", false, true}});
  table.AddRow({"j-1", std::string(100, 'x'), "running", "5/10"});
  table.AddRow({"j-2", "short", "queued", "-"});
  const std::string out = table.Render(40);
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) EXPECT_LE(DisplayWidth(line), 40) << line;
  EXPECT_THAT(out, HasSubstr("x…"));
  EXPECT_THAT(out, HasSubstr("j-2  short"));
  EXPECT_THAT(out, HasSubstr(" 5/10\n"));  // Right-aligned.
}

TEST(TableTest, CellsAreOneLine) {
  Table table({{"A"}, {"B"}});
  table.AddRow({"x\ny", "\x1b[31mred"});
  EXPECT_EQ(table.Render(80), "A    B\nx y   [31mred\n");
}

TEST(FormatTest, HumanUnits) {
  EXPECT_EQ(TruncateToWidth("héllo wörld", 6), "héllo…");
  EXPECT_EQ(TruncateToWidth("short", 6), "short");
  EXPECT_EQ(DisplayWidth("…"), 1);
  EXPECT_EQ(HumanDuration(absl::Milliseconds(1234)), "1.2s");
  EXPECT_EQ(HumanDuration(absl::Seconds(42)), "42s");
  EXPECT_EQ(HumanDuration(absl::Seconds(252)), "4m12s");
  EXPECT_EQ(HumanDuration(absl::Hours(3) + absl::Minutes(5)), "3h05m");
  EXPECT_EQ(HumanDuration(absl::Hours(50)), "2d02h");
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(int64_t{3} << 29), "1.5 GiB");
  EXPECT_EQ(FormatCount(999), "999");
  EXPECT_EQ(FormatCount(12345), "12.3k");
  EXPECT_EQ(FormatCount(2.5e6), "2.5M");
  EXPECT_EQ(FormatLossScale(65536), "65536");
  EXPECT_EQ(FormatLossScale(0.5), "0.5");
  EXPECT_EQ(FormatLossScale(16777216), "1.68e+07");
}

TEST(FormatTest, SavingsDetail) {
  const std::string out =
      FormatSavingsDetail("j-1", testing::MakeSavings(), "USD", 120);
  EXPECT_THAT(out, HasSubstr("speedup:     1.80x (0.450s -> 0.250s per step; "
                             "7.0k -> 12.6k tokens/s)\n"));
  EXPECT_THAT(out, HasSubstr("peak memory: 800.0 MiB -> 500.0 MiB (300.0 MiB, "
                             "38% saved)\n"));
  EXPECT_THAT(out, HasSubstr("cost saved:  0.0123 USD (at 0.75 USD per "
                             "device-hour)\n"));
  EXPECT_THAT(out, Not(HasSubstr("emulated")));
}

TEST(FormatTest, SavingsWithoutAPriceSayHowToSetOne) {
  v1::Savings savings = testing::MakeSavings();
  savings.set_device_hour_price(0);
  savings.set_cost_saved(0);
  const std::string detail = FormatSavingsDetail("j-1", savings, "USD", 200);
  EXPECT_THAT(detail, HasSubstr("cost saved:  no device-hour price is set: "
                                "start the scheduler with --device-price "
                                "NAME=PRICE or --default-device-price PRICE"));
  v1::GetSavingsResponse fleet;
  *fleet.add_jobs() = savings;
  fleet.add_job_ids("j-1");
  fleet.set_currency("USD");
  v1::PrecisionSavings* total = fleet.add_totals();
  total->set_precision(v1::PRECISION_BF16_MIXED);
  total->set_jobs(1);
  const std::string table = FormatSavingsTables(fleet, 200);
  EXPECT_THAT(table, HasSubstr("USD SAVED"));
  // Neither the job's nor the totals' cost reads 0.
  EXPECT_THAT(table, Not(HasSubstr(" 0 ")));
  EXPECT_THAT(table, Not(HasSubstr(" 0\n")));
  EXPECT_THAT(table, HasSubstr("no device-hour price is set"));
  *fleet.mutable_jobs(0) = testing::MakeSavings();
  EXPECT_THAT(FormatSavingsTables(fleet, 200), HasSubstr("0.0123 (at 0.75/h)"));
  EXPECT_THAT(FormatSavingsTables(fleet, 200),
              Not(HasSubstr("no device-hour price")));
}

TEST(FormatTest, EmulatedSavingsAreMarkedEverywhere) {
  v1::Savings savings = testing::MakeSavings();
  savings.set_emulated(true);
  savings.set_speedup(0.9);
  savings.set_device_seconds_saved(-6.1);  // slower than fp32: time lost
  EXPECT_THAT(FormatSavingsDetail("j-1", savings, "USD", 200),
              HasSubstr("precision:   bf16-mixed (emulated) on"));
  EXPECT_THAT(FormatSavingsDetail("j-1", savings, "USD", 200),
              HasSubstr("emulated:    the device only emulates this precision: "
                        "memory saved is real, time is not"));
  EXPECT_THAT(FormatSavingsSummary(savings, "USD"),
              HasSubstr("emulated: memory saved, not time"));
  v1::GetSavingsResponse fleet;
  *fleet.add_jobs() = savings;
  fleet.add_job_ids("j-1");
  v1::PrecisionSavings* total = fleet.add_totals();
  total->set_precision(v1::PRECISION_BF16_MIXED);
  total->set_emulated(true);
  total->set_jobs(1);
  total->set_device_seconds_saved(-6.1);
  const std::string table = FormatSavingsTables(fleet, 200);
  EXPECT_THAT(table, HasSubstr("-6.1s"));
  // The job row and the totals row both say so.
  size_t first = table.find("bf16-mixed (emulated)");
  ASSERT_NE(first, std::string::npos) << table;
  EXPECT_NE(table.find("bf16-mixed (emulated)", first + 1), std::string::npos)
      << table;
}

TEST(FormatTest, WorkersShowNativeAndEmulatedPrecisionsWithRates) {
  v1::Worker worker;
  worker.set_name("zen3");
  worker.set_state(v1::WORKER_STATE_READY);
  v1::WorkerCapabilities* caps = worker.mutable_capabilities();
  caps->set_device_kind(v1::DEVICE_KIND_CPU);
  caps->set_device_name("AMD EPYC");
  caps->set_slots(1);
  caps->add_native_precisions(v1::PRECISION_FP32);
  caps->add_emulated_precisions(v1::PRECISION_BF16_MIXED);
  caps->add_emulated_precisions(v1::PRECISION_BF16_PURE);
  v1::DtypeRate* fp32 = caps->add_rates();
  fp32->set_dtype("fp32");
  fp32->set_flops_per_second(101e9);
  fp32->set_native(true);
  v1::DtypeRate* bf16 = caps->add_rates();
  bf16->set_dtype("bf16");
  bf16->set_flops_per_second(97e9);
  bf16->set_native(false);
  const std::string table = FormatWorkerTable({worker}, absl::Now(), 200);
  EXPECT_THAT(table, HasSubstr("EMULATED"));
  EXPECT_THAT(table, HasSubstr("bf16-mixed,bf16-pure"));
  EXPECT_THAT(table, HasSubstr("fp32 101, bf16 97 emulated"));
}

TEST(FormatTest, SavingsDetailWrapsADegradedBaselineReasonWhole) {
  v1::Savings savings = testing::MakeSavings();
  savings.set_baseline_degraded(true);
  savings.set_baseline_degraded_reason(
      "fp32 GEMMs run on the reference BLAS (/usr/lib/x86_64-linux-gnu/blas/"
      "libblas.so.3), many times slower than an optimized BLAS");
  const std::string out = FormatSavingsDetail("j-1", savings, "USD", 60);
  std::istringstream lines(out);
  std::string line;
  std::string degraded;
  while (std::getline(lines, line)) {
    EXPECT_LE(DisplayWidth(line), 60) << line;
    if (absl::StartsWith(line, "degraded:") ||
        (!degraded.empty() && absl::StartsWith(line, "             "))) {
      absl::StrAppend(&degraded, degraded.empty() ? "" : " ",
                      absl::StripLeadingAsciiWhitespace(line.substr(9)));
    }
  }
  EXPECT_EQ(degraded,
            "fp32 GEMMs run on the reference BLAS (/usr/lib/x86_64-linux-gnu/"
            "blas/libblas.so.3), many times slower than an optimized BLAS "
            "(these savings are left out of fleet totals)");
  EXPECT_THAT(out, Not(HasSubstr("…")));
}

TEST(FormatTest, SavingsSummary) {
  EXPECT_EQ(FormatSavingsSummary(testing::MakeSavings(), "USD"),
            "1.80x faster, 38% less memory (300.0 MiB), 60 device-s and "
            "0.0123 USD saved vs fp32 (probe)");
}

}  // namespace
}  // namespace halftime
