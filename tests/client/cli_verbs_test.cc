// The scheduler verbs of the CLI against a fake scheduler: every verb in
// every output format, and the errors users meet.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "client/render.h"
#include "tests/client/cli_test_util.h"

namespace halftime::testing {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

class CliVerbsTest : public CliServerTest {};

// --- every verb in every format ---------------------------------------------

struct VerbCase {
  std::string name;
  std::vector<std::string> args;
  // A field every json/yaml rendering must hold at the top level.
  std::string json_field;
  // Text the table rendering must hold.
  std::string table_text;
};

class CliFormatsTest : public CliServerTest,
                       public ::testing::WithParamInterface<VerbCase> {};

TEST_P(CliFormatsTest, TableJsonAndYaml) {
  const VerbCase& verb = GetParam();
  std::vector<std::string> args = verb.args;

  CliRun table = Run(args);
  EXPECT_EQ(table.exit_code, kExitOk) << table.err;
  EXPECT_THAT(table.out, HasSubstr(verb.table_text));

  args.insert(args.end(), {"-o", "json"});
  CliRun json = Run(args);
  ASSERT_EQ(json.exit_code, kExitOk) << json.err;
  nlohmann::json document = nlohmann::json::parse(json.out);
  EXPECT_TRUE(document.contains(verb.json_field)) << json.out;

  args.back() = "yaml";
  CliRun yaml = Run(args);
  ASSERT_EQ(yaml.exit_code, kExitOk) << yaml.err;
  YAML::Node node = YAML::Load(yaml.out);
  EXPECT_TRUE(node[verb.json_field]) << yaml.out;
}

INSTANTIATE_TEST_SUITE_P(
    Verbs, CliFormatsTest,
    ::testing::Values(
        VerbCase{"get", {"get", kRunningJob}, "latest_report", "cpu-worker-1"},
        VerbCase{"list", {"list"}, "jobs", kQueuedJob},
        VerbCase{"workers", {"workers"}, "workers", "cpu-worker-2"},
        VerbCase{"fleet_savings", {"savings"}, "totals", "MEAN SPEEDUP"},
        VerbCase{"job_savings", {"savings", kSucceededJob}, "job_ids", "1.80x"},
        VerbCase{"logs", {"logs", kRunningJob}, "lines", "step 2 loss 3.9"}),
    [](const auto& info) { return info.param.name; });

// --- submit
// -------------------------------------------------------------------

TEST_F(CliVerbsTest, SubmitSendsTheResolvedSpecWithAKey) {
  CliRun run = Run({"submit", Examples() + "/finetune-bf16-mixed.yaml", "--set",
                    "optimizer.lr=0.002"});
  ASSERT_EQ(run.exit_code, kExitOk) << run.err;
  EXPECT_THAT(run.out, HasSubstr("submitted job j-000006"));
  EXPECT_THAT(run.out, HasSubstr("halftime watch j-000006"));
  std::lock_guard<std::mutex> lock(fake_.mutex);
  ASSERT_EQ(fake_.submits.size(), 1u);
  const v1::SubmitJobRequest& request = fake_.submits[0];
  EXPECT_EQ(request.spec().precision(), v1::PRECISION_BF16_MIXED);
  EXPECT_DOUBLE_EQ(request.spec().optimizer().lr(), 0.002);
  EXPECT_TRUE(request.spec().has_steps());  // Defaults filled client-side.
  EXPECT_THAT(request.idempotency_key(), StartsWith("cli-"));
  EXPECT_EQ(request.idempotency_key().size(), 36u);
}

TEST_F(CliVerbsTest, SubmitInEveryFormat) {
  const std::string spec = Examples() + "/finetune-fp32.yaml";
  CliRun json = Run({"submit", spec, "-o", "json"});
  ASSERT_EQ(json.exit_code, kExitOk) << json.err;
  nlohmann::json document = nlohmann::json::parse(json.out);
  EXPECT_EQ(document["job"]["id"], "j-000006");
  EXPECT_EQ(document["job"]["state"], "queued");
  EXPECT_EQ(document["job"]["spec"]["precision"], "fp32");
  EXPECT_EQ(document["deduplicated"], false);

  CliRun yaml = Run({"submit", spec, "-o", "yaml"});
  ASSERT_EQ(yaml.exit_code, kExitOk) << yaml.err;
  YAML::Node node = YAML::Load(yaml.out);
  EXPECT_EQ(node["job"]["id"].as<std::string>(), "j-000007");
  EXPECT_EQ(node["deduplicated"].as<bool>(), false);
}

TEST_F(CliVerbsTest, SubmitRetriesWithTheSameIdempotencyKey) {
  fake_.submit_unavailable_times = 1;
  CliRun run = Run({"submit", Examples() + "/finetune-fp32.yaml"});
  ASSERT_EQ(run.exit_code, kExitOk) << run.err;
  std::lock_guard<std::mutex> lock(fake_.mutex);
  ASSERT_EQ(fake_.submits.size(), 2u);
  EXPECT_EQ(fake_.submits[0].idempotency_key(),
            fake_.submits[1].idempotency_key());
}

TEST_F(CliVerbsTest, SubmitWithAGivenKeyTwiceIsDeduplicated) {
  const std::string spec = Examples() + "/finetune-fp32.yaml";
  CliRun first = Run({"submit", spec, "--idempotency-key", "nightly-42"});
  ASSERT_EQ(first.exit_code, kExitOk) << first.err;
  CliRun second = Run({"submit", spec, "--idempotency-key", "nightly-42"});
  ASSERT_EQ(second.exit_code, kExitOk) << second.err;
  EXPECT_THAT(second.out,
              HasSubstr("job j-000006 was already submitted with this "
                        "idempotency key (queued)"));
}

TEST_F(CliVerbsTest, InvalidSpecNamesTheFieldAndCallsNothing) {
  CliRun run = Run({"submit", std::string(HALFTIME_SPEC_CORPUS) +
                                  "/invalid/lr-negative.yaml"});
  EXPECT_EQ(run.exit_code, kExitBadInput);
  EXPECT_THAT(run.err, HasSubstr("optimizer.lr: must be greater than 0"));
  EXPECT_THAT(run.out, IsEmpty());
  EXPECT_EQ(fake_.calls.load(), 0);

  CliRun bad_set = Run({"submit", Examples() + "/finetune-fp32.yaml", "--set",
                        "precision=fp17"});
  EXPECT_EQ(bad_set.exit_code, kExitBadInput);
  EXPECT_THAT(bad_set.err, HasSubstr("precision"));
  EXPECT_EQ(fake_.calls.load(), 0);
}

TEST_F(CliVerbsTest, SpecRejectedByTheSchedulerExitsTwo) {
  fake_.forced_status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                     "data.path: no such file on the workers");
  CliRun run = Run({"submit", Examples() + "/finetune-fp32.yaml"});
  EXPECT_EQ(run.exit_code, kExitBadInput);
  EXPECT_THAT(run.err, HasSubstr("rejected"));
  EXPECT_THAT(run.err, HasSubstr("data.path: no such file on the workers"));
}

// --- get / list
// ---------------------------------------------------------------

TEST_F(CliVerbsTest, GetShowsTheJob) {
  CliRun run = Run({"get", kRunningJob});
  ASSERT_EQ(run.exit_code, kExitOk) << run.err;
  EXPECT_THAT(run.out, HasSubstr("id:          j-000001"));
  EXPECT_THAT(run.out, HasSubstr("state:       running on cpu-worker-1"));
  EXPECT_THAT(run.out, HasSubstr("precision:   bf16-mixed"));
  EXPECT_THAT(run.out, HasSubstr("step 120/"));

  CliRun json = Run({"get", kRunningJob, "-o", "json"});
  nlohmann::json job = nlohmann::json::parse(json.out);
  EXPECT_EQ(job["id"], kRunningJob);
  EXPECT_EQ(job["state"], "running");
  EXPECT_EQ(job["resolved_precision"], "bf16-mixed");
  EXPECT_EQ(job["attempt"], 1);
  EXPECT_EQ(job["latest_report"]["step"], 120);
  EXPECT_EQ(job["latest_report"]["peak_memory_bytes"], int64_t{300} << 20);
  EXPECT_TRUE(job["submit_time"].get<std::string>().find('T') !=
              std::string::npos);
  EXPECT_EQ(job["spec"]["name"], fake_.jobs[kRunningJob].spec().name());
  EXPECT_FALSE(job.contains("end_time"));  // Unset messages are left out.
}

TEST_F(CliVerbsTest, UnknownJobIsASentenceAndExitsTwo) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"get", "j-000099"},
                                             {"watch", "j-000099"},
                                             {"cancel", "j-000099"},
                                             {"logs", "j-000099"},
                                             {"savings", "j-000099"}}) {
    CliRun run = Run(args);
    EXPECT_EQ(run.exit_code, kExitBadInput) << args[0];
    EXPECT_EQ(run.err, "halftime: job j-000099 not found\n") << args[0];
  }
}

TEST_F(CliVerbsTest, ListFiltersByStateAndPages) {
  CliRun running = Run({"list", "--state", "running", "--state", "queued"});
  ASSERT_EQ(running.exit_code, kExitOk) << running.err;
  EXPECT_THAT(running.out, AllOf(HasSubstr(kRunningJob), HasSubstr(kQueuedJob),
                                 Not(HasSubstr(kFailedJob))));
  {
    std::lock_guard<std::mutex> lock(fake_.mutex);
    ASSERT_EQ(fake_.list_requests.size(), 1u);
    EXPECT_THAT(fake_.list_requests[0].states(),
                ElementsAre(v1::JOB_STATE_RUNNING, v1::JOB_STATE_QUEUED));
  }

  CliRun limited = Run({"list", "--limit", "2", "-o", "json"});
  ASSERT_EQ(limited.exit_code, kExitOk) << limited.err;
  nlohmann::json page = nlohmann::json::parse(limited.out);
  ASSERT_EQ(page["jobs"].size(), 2u);
  EXPECT_EQ(page["jobs"][0]["id"], kRunningJob);  // Newest first.
  EXPECT_FALSE(page["next_page_token"].get<std::string>().empty());

  // --limit 0 follows every page.
  fake_.list_requests.clear();
  for (int i = 0; i < 1200; ++i) {
    fake_.AddJob(MakeJob(absl::StrFormat("j-1%05d", i),
                         Examples() + "/finetune-fp32.yaml",
                         v1::JOB_STATE_QUEUED));
  }
  CliRun all = Run({"list", "--limit", "0", "-o", "json"});
  ASSERT_EQ(all.exit_code, kExitOk) << all.err;
  EXPECT_EQ(nlohmann::json::parse(all.out)["jobs"].size(), 1205u);
  EXPECT_EQ(fake_.list_requests.size(), 2u);
}

TEST_F(CliVerbsTest, ListSaysWhenThereIsMore) {
  CliRun run = Run({"list", "--limit", "3"});
  ASSERT_EQ(run.exit_code, kExitOk) << run.err;
  EXPECT_THAT(run.err, HasSubstr("showing the newest 3 jobs"));
}

TEST_F(CliVerbsTest, ListTableFitsTheTerminal) {
  v1::Job job = MakeJob("j-000042", Examples() + "/finetune-fp32.yaml",
                        v1::JOB_STATE_RUNNING);
  job.mutable_spec()->set_name(std::string(90, 'n'));
  job.set_worker("a-worker-with-a-rather-long-name.cluster.example.com");
  fake_.AddJob(job);
  for (int width : {80, 120}) {
    CliRun run = Run({"list"}, TerminalInfo{true, width});
    ASSERT_EQ(run.exit_code, kExitOk) << run.err;
    std::istringstream lines(run.out);
    std::string line;
    while (std::getline(lines, line)) {
      EXPECT_LE(DisplayWidth(line), width) << line;
    }
    EXPECT_THAT(run.out, HasSubstr("…"));
    EXPECT_THAT(run.out, HasSubstr("j-000042"));
  }
}

TEST_F(CliVerbsTest, BadStateIsBadInput) {
  CliRun run = Run({"list", "--state", "sleeping"});
  EXPECT_EQ(run.exit_code, kExitBadInput);
  EXPECT_THAT(run.err, HasSubstr("unknown job state \"sleeping\""));
  EXPECT_EQ(fake_.calls.load(), 0);
}

// --- cancel
// -------------------------------------------------------------------

TEST_F(CliVerbsTest, CancelQueuedAndRunningJobs) {
  CliRun queued = Run({"cancel", kQueuedJob, "--reason", "wrong lr"});
  ASSERT_EQ(queued.exit_code, kExitOk) << queued.err;
  EXPECT_EQ(queued.out, "cancelled job j-000002\n");

  CliRun running = Run({"cancel", kRunningJob, "-o", "json"});
  ASSERT_EQ(running.exit_code, kExitOk) << running.err;
  EXPECT_EQ(nlohmann::json::parse(running.out)["id"], kRunningJob);

  CliRun table = Run({"cancel", kRunningJob});
  EXPECT_EQ(table.out,
            "cancelling job j-000001: worker cpu-worker-1 stops it shortly\n");

  std::lock_guard<std::mutex> lock(fake_.mutex);
  ASSERT_FALSE(fake_.cancels.empty());
  EXPECT_EQ(fake_.cancels[0].reason(), "wrong lr");
}

TEST_F(CliVerbsTest, CancelOfAFinishedJobSaysSoAndExitsOne) {
  CliRun run = Run({"cancel", kSucceededJob});
  EXPECT_EQ(run.exit_code, kExitFailure);
  EXPECT_EQ(run.err,
            "halftime: job j-000003 already succeeded; nothing to cancel\n");
  CliRun failed = Run({"cancel", kFailedJob});
  EXPECT_THAT(failed.err, HasSubstr("job j-000004 already failed"));
}

// --- workers / savings / logs ------------------------------------------------

TEST_F(CliVerbsTest, WorkersTableAndJson) {
  CliRun run = Run({"workers"}, TerminalInfo{true, 80});
  ASSERT_EQ(run.exit_code, kExitOk) << run.err;
  EXPECT_THAT(run.out, HasSubstr("NAME"));
  EXPECT_THAT(run.out, HasSubstr("ready"));
  EXPECT_THAT(run.out, HasSubstr("1/2"));

  CliRun json = Run({"workers", "-o", "json"});
  nlohmann::json workers = nlohmann::json::parse(json.out)["workers"];
  ASSERT_EQ(workers.size(), 2u);
  EXPECT_EQ(workers[0]["capabilities"]["native_precisions"],
            nlohmann::json({"fp32", "bf16-mixed"}));
  EXPECT_EQ(workers[0]["capabilities"]["device_kind"], "cpu");

  fake_.workers.clear();
  EXPECT_EQ(Run({"workers"}).out, "no workers registered\n");
}

TEST_F(CliVerbsTest, SavingsOfTheFleetAndOfOneJob) {
  CliRun fleet = Run({"savings"});
  ASSERT_EQ(fleet.exit_code, kExitOk) << fleet.err;
  EXPECT_THAT(fleet.out, HasSubstr("USD SAVED"));
  EXPECT_THAT(fleet.out, HasSubstr("bf16-mixed"));

  CliRun job = Run({"savings", kSucceededJob, "-o", "json"});
  nlohmann::json savings = nlohmann::json::parse(job.out);
  EXPECT_EQ(savings["job_ids"][0], kSucceededJob);
  EXPECT_EQ(savings["jobs"][0]["speedup"], 1.8);
  EXPECT_EQ(savings["jobs"][0]["baseline"], "probe");

  CliRun none = Run({"savings", kRunningJob});
  EXPECT_EQ(none.exit_code, kExitOk);
  EXPECT_EQ(none.out, "no savings measured for job j-000001 yet\n");
}

TEST_F(CliVerbsTest, SavingsHtmlReportComparesRuns) {
  const std::string path = ::testing::TempDir() + "/savings-report.html";
  std::remove(path.c_str());
  {
    // A running job's stream stays open: the report stops at the last
    // event GetJob reported instead of waiting for the job to end.
    std::lock_guard<std::mutex> lock(fake_.mutex);
    fake_.events[kRunningJob] =
        MakeRunEvents(kRunningJob, 6, v1::JOB_STATE_RUNNING);
    fake_.events[kRunningJob].pop_back();
    for (const char* id : {kRunningJob, kSucceededJob}) {
      fake_.jobs[id].set_last_event_sequence(
          fake_.events[id].back().sequence());
    }
    fake_.hold_watch_open = true;
  }
  CliRun run = Run({"savings", kSucceededJob, kRunningJob, "--html", path});
  ASSERT_EQ(run.exit_code, kExitOk) << run.err;
  EXPECT_EQ(run.out, absl::StrCat("wrote ", path,
                                  " (2 jobs, 1 with measured savings)\n"));
  std::ifstream in(path);
  std::string html((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  EXPECT_THAT(html, HasSubstr("data-job=\"j-000003\""));
  EXPECT_THAT(html, HasSubstr("data-job=\"j-000001\""));
  EXPECT_THAT(html, HasSubstr("1.80x"));

  // Default: every job with savings (the fleet's list).
  fake_.hold_watch_open = false;
  CliRun fleet = Run({"savings", "--html", path});
  ASSERT_EQ(fleet.exit_code, kExitOk) << fleet.err;
  EXPECT_THAT(fleet.out, HasSubstr("(1 job, 1 with measured savings)"));

  CliRun unknown = Run({"savings", "j-000099", "--html", path});
  EXPECT_EQ(unknown.exit_code, kExitBadInput);
  EXPECT_THAT(unknown.err, HasSubstr("job j-000099 not found"));
  CliRun unwritable =
      Run({"savings", kSucceededJob, "--html", "/nonexistent-dir/report.html"});
  EXPECT_EQ(unwritable.exit_code, kExitFailure);
  EXPECT_THAT(unwritable.err,
              HasSubstr("cannot write /nonexistent-dir/report.html.tmp"));
  CliRun two = Run({"savings", kSucceededJob, kRunningJob});
  EXPECT_EQ(two.exit_code, kExitBadInput);
  EXPECT_THAT(two.err, HasSubstr("compare several with --html FILE"));
}

TEST_F(CliVerbsTest, LogsPrintsTheLines) {
  CliRun run = Run({"logs", kRunningJob});
  ASSERT_EQ(run.exit_code, kExitOk) << run.err;
  EXPECT_EQ(run.out, "step 1 loss 4.0\nstep 2 loss 3.9\n");
  CliRun json = Run({"logs", kRunningJob, "-o", "json"});
  EXPECT_EQ(nlohmann::json::parse(json.out)["lines"].size(), 2u);
}

// --- connection, auth and flags
// -----------------------------------------------

TEST(CliConnectionTest, UnreachableSchedulerIsASentence) {
  const std::string address = absl::StrCat("127.0.0.1:", ClosedPort());
  for (const std::vector<std::string>& verb :
       std::vector<std::vector<std::string>>{
           {"get", "j-1"}, {"list"}, {"watch", "j-1"}, {"workers"}}) {
    std::vector<std::string> args = {"--server", address};
    args.insert(args.end(), verb.begin(), verb.end());
    CliRun run = RunHalftime(args);
    EXPECT_EQ(run.exit_code, kExitFailure) << verb[0];
    EXPECT_EQ(run.err, absl::StrCat("halftime: cannot reach scheduler at ",
                                    address, ": connection refused\n"))
        << verb[0];
  }
}

TEST_F(CliVerbsTest, BadTokenIsAuthenticationFailed) {
  fake_.required_token = "s3cret";
  CliRun none = Run({"get", kRunningJob});
  EXPECT_EQ(none.exit_code, kExitFailure);
  EXPECT_THAT(none.err, HasSubstr("authentication failed: check --token-file"));

  const std::string wrong = WriteTempFile("wrong-token", "guess\n");
  CliRun bad = Run({"--token-file", wrong, "get", kRunningJob});
  EXPECT_EQ(bad.exit_code, kExitFailure);
  EXPECT_THAT(bad.err, HasSubstr("authentication failed: check --token-file"));

  const std::string right = WriteTempFile("right-token", "  s3cret\n");
  CliRun good = Run({"get", kRunningJob, "--token-file", right});
  EXPECT_EQ(good.exit_code, kExitOk) << good.err;
  std::lock_guard<std::mutex> lock(fake_.mutex);
  EXPECT_EQ(fake_.authorization_headers.back(), "Bearer s3cret");
}

TEST_F(CliVerbsTest, TokenFileFromTheEnvironment) {
  fake_.required_token = "from-env";
  const std::string token = WriteTempFile("env-token", "from-env");
  ::setenv("HALFTIME_TOKEN_FILE", token.c_str(), 1);
  CliRun run = Run({"workers"});
  ::unsetenv("HALFTIME_TOKEN_FILE");
  EXPECT_EQ(run.exit_code, kExitOk) << run.err;
}

TEST_F(CliVerbsTest, ServerFromTheEnvironment) {
  ::setenv("HALFTIME_SERVER", server_.address().c_str(), 1);
  CliRun run = RunHalftime({"get", kRunningJob});
  ::unsetenv("HALFTIME_SERVER");
  EXPECT_EQ(run.exit_code, kExitOk) << run.err;
}

TEST_F(CliVerbsTest, MissingTokenFileIsBadInput) {
  CliRun run = Run({"--token-file", "/nonexistent/token", "workers"});
  EXPECT_EQ(run.exit_code, kExitBadInput);
  EXPECT_EQ(run.err,
            "halftime: --token-file /nonexistent/token: no such file\n");
  EXPECT_EQ(fake_.calls.load(), 0);
}

TEST_F(CliVerbsTest, BadFlagsAreBadInput) {
  EXPECT_EQ(Run({"get"}).exit_code, kExitBadInput);
  EXPECT_EQ(Run({"list", "-o", "xml"}).exit_code, kExitBadInput);
  EXPECT_EQ(Run({"list", "--limit", "-1"}).exit_code, kExitBadInput);
  CliRun timeout = Run({"--timeout", "soon", "list"});
  EXPECT_EQ(timeout.exit_code, kExitBadInput);
  EXPECT_THAT(timeout.err, HasSubstr("--timeout"));
  CliRun mtls = Run({"--tls-cert", "/x.pem", "list"});
  EXPECT_EQ(mtls.exit_code, kExitBadInput);
  EXPECT_THAT(mtls.err, HasSubstr("--tls-cert and --tls-key go together"));
  EXPECT_EQ(fake_.calls.load(), 0);
}

TEST_F(CliVerbsTest, OtherFailuresExitOne) {
  fake_.forced_status =
      grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline");
  CliRun slow = Run({"--timeout", "2s", "get", kRunningJob});
  EXPECT_EQ(slow.exit_code, kExitFailure);
  EXPECT_THAT(slow.err, HasSubstr("did not answer within 2s"));

  fake_.forced_status =
      grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "worker token");
  CliRun denied = Run({"list"});
  EXPECT_EQ(denied.exit_code, kExitFailure);
  EXPECT_THAT(denied.err, HasSubstr("permission denied: worker token"));
}

TEST_F(CliVerbsTest, GlobalFlagsMayFollowTheVerb) {
  CliRun run = RunHalftime(
      {"get", kRunningJob, "--server", server_.address(), "--timeout", "5"});
  EXPECT_EQ(run.exit_code, kExitOk) << run.err;
}

}  // namespace
}  // namespace halftime::testing
