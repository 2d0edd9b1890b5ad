// Runs the CLI in-process against a FakeScheduler for tests.
#ifndef HALFTIME_TESTS_CLIENT_CLI_TEST_UTIL_H_
#define HALFTIME_TESTS_CLIENT_CLI_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "client/cli.h"
#include "tests/client/fake_scheduler.h"

namespace halftime::testing {

struct CliRun {
  int exit_code;
  std::string out;
  std::string err;
};

inline CliRun RunHalftime(std::vector<std::string> args,
                          const TerminalInfo& terminal = {}) {
  args.insert(args.begin(), "halftime");
  std::ostringstream out, err;
  const int code = RunCli(args, out, err, terminal);
  return {code, out.str(), err.str()};
}

inline const std::string& Examples() {
  static const std::string* const kExamples =
      new std::string(HALFTIME_EXAMPLES);
  return *kExamples;
}

// A file under the test's temporary directory holding `contents`.
inline std::string WriteTempFile(const std::string& name,
                                 const std::string& contents) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << contents;
  return path;
}

// The job ids FakeScheduler serves in CliServerTest.
inline constexpr char kRunningJob[] = "j-000001";
inline constexpr char kQueuedJob[] = "j-000002";
inline constexpr char kSucceededJob[] = "j-000003";
inline constexpr char kFailedJob[] = "j-000004";
inline constexpr char kCancelledJob[] = "j-000005";

// A fake scheduler with a job in each state, two workers, savings, logs
// and the events of whole runs.
class CliServerTest : public ::testing::Test {
 protected:
  CliServerTest() : server_(&fake_) {
    const std::string bf16 = Examples() + "/finetune-bf16-mixed.yaml";
    fake_.AddJob(MakeJob(kCancelledJob, bf16, v1::JOB_STATE_CANCELLED));
    fake_.AddJob(MakeJob(kFailedJob, bf16, v1::JOB_STATE_FAILED));
    fake_.AddJob(MakeJob(kSucceededJob, bf16, v1::JOB_STATE_SUCCEEDED));
    fake_.AddJob(MakeJob(kQueuedJob, bf16, v1::JOB_STATE_QUEUED));
    fake_.AddJob(MakeJob(kRunningJob, bf16, v1::JOB_STATE_RUNNING));
    fake_.events[kSucceededJob] =
        MakeRunEvents(kSucceededJob, 10, v1::JOB_STATE_SUCCEEDED);
    fake_.events[kFailedJob] =
        MakeRunEvents(kFailedJob, 10, v1::JOB_STATE_FAILED);
    fake_.events[kCancelledJob] =
        MakeRunEvents(kCancelledJob, 10, v1::JOB_STATE_CANCELLED);
    fake_.job_savings[kSucceededJob] = MakeSavings();
    // The final record agrees with the last report of the events.
    for (const auto& [id, events] : fake_.events) {
      for (const v1::JobEvent& event : events) {
        if (event.kind() == v1::JOB_EVENT_KIND_REPORT) {
          *fake_.jobs[id].mutable_latest_report() = event.report();
        }
      }
    }

    for (int i = 1; i <= 2; ++i) {
      v1::Worker& worker = fake_.workers.emplace_back();
      worker.set_name(absl::StrCat("cpu-worker-", i));
      worker.set_state(v1::WORKER_STATE_READY);
      v1::WorkerCapabilities* caps = worker.mutable_capabilities();
      caps->set_device_kind(v1::DEVICE_KIND_CPU);
      caps->set_device_name("Intel Xeon Platinum 8480+ (avx512_bf16, amx)");
      caps->set_memory_bytes(int64_t{64} << 30);
      caps->add_native_precisions(v1::PRECISION_FP32);
      caps->add_native_precisions(v1::PRECISION_BF16_MIXED);
      caps->set_slots(2);
      worker.add_job_ids(kRunningJob);
      *worker.mutable_last_heartbeat() = SecondsAgo(2);
    }
    v1::GetSavingsResponse& fleet = fake_.fleet_savings;
    *fleet.add_jobs() = MakeSavings();
    fleet.add_job_ids(kSucceededJob);
    v1::PrecisionSavings* total = fleet.add_totals();
    total->set_precision(v1::PRECISION_BF16_MIXED);
    total->set_jobs(1);
    total->set_device_seconds_saved(59.5);
    total->set_cost_saved(0.0123);
    total->set_mean_speedup(1.8);
    total->set_mean_memory_saved_ratio(0.375);
    fleet.set_currency("USD");
    fake_.logs[kRunningJob] = {"step 1 loss 4.0", "step 2 loss 3.9"};
  }

  // Runs `halftime --server FAKE args...`.
  CliRun Run(std::vector<std::string> args, const TerminalInfo& terminal = {}) {
    args.insert(args.begin(), {"--server", server_.address()});
    return RunHalftime(std::move(args), terminal);
  }

  FakeScheduler fake_;
  FakeServer server_;
};

}  // namespace halftime::testing

#endif  // HALFTIME_TESTS_CLIENT_CLI_TEST_UTIL_H_
