// libFuzzer target: every Scheduler RPC of a real scheduler, in process.
//
// One scheduler per process (state carries over between inputs, as in
// production). An input is a list of calls, either
//   - text (a file starting with '#'): a SchedulerScript text proto, as the
//     seeds in corpus/fuzz_scheduler/ are written; or
//   - binary: records of [method byte][2-byte little-endian length][bytes],
//     the bytes sent as the request as they are (they need not parse).
// Each answer must be clean (see Unclean in harness.h); a unary call must
// answer before its deadline; an OK answer must parse as its response type.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "halftime/v1/job.pb.h"
#include "tests/fuzz/harness.h"

namespace {

using halftime::fuzz::CallScheduler;
using halftime::fuzz::SchedulerMethod;

constexpr size_t kMaxCalls = 8;
constexpr absl::Duration kUnaryDeadline = absl::Seconds(20);
// Watches of active jobs run until their deadline.
constexpr absl::Duration kWatchDeadline = absl::Milliseconds(50);
// Every this many inputs, active jobs are cancelled (keeps state bounded).
constexpr int kJanitorPeriod = 500;

halftime::fuzz::TestScheduler& Scheduler() {
  static halftime::fuzz::TestScheduler* scheduler = [] {
    halftime::server::ServerOptions options;
    options.durable = false;  // no fsync per commit
    return &halftime::fuzz::StartForever(options);
  }();
  return *scheduler;
}

grpc::Channel* Channel() {
  static std::shared_ptr<grpc::Channel> channel =
      Scheduler().InProcessChannel();
  return channel.get();
}

[[noreturn]] void Fail(SchedulerMethod method, const std::string& request,
                       const std::string& why) {
  std::fprintf(stderr, "fuzz_scheduler: %s (request of %zu bytes): %s\n",
               halftime::fuzz::MethodName(method), request.size(), why.c_str());
  std::abort();
}

bool ParsesAsResponse(SchedulerMethod method, const std::string& bytes) {
  namespace v1 = halftime::v1;
  switch (method) {
    case halftime::fuzz::SUBMIT_JOB:
      return v1::SubmitJobResponse().ParseFromString(bytes);
    case halftime::fuzz::LIST_JOBS:
      return v1::ListJobsResponse().ParseFromString(bytes);
    case halftime::fuzz::WATCH_JOB:
      return v1::JobEvent().ParseFromString(bytes);
    case halftime::fuzz::LIST_WORKERS:
      return v1::ListWorkersResponse().ParseFromString(bytes);
    case halftime::fuzz::GET_SAVINGS:
      return v1::GetSavingsResponse().ParseFromString(bytes);
    case halftime::fuzz::GET_JOB_LOGS:
      return v1::GetJobLogsResponse().ParseFromString(bytes);
    default:  // GetJob, CancelJob
      return v1::Job().ParseFromString(bytes);
  }
}

void Call(SchedulerMethod method, const std::string& request) {
  const bool watch = method == halftime::fuzz::WATCH_JOB;
  halftime::fuzz::CallResult r =
      CallScheduler(Channel(), method, request,
                    watch ? kWatchDeadline : kUnaryDeadline, /*max_events=*/64);
  if (std::string why = halftime::fuzz::Unclean(r.status); !why.empty()) {
    Fail(method, request, why);
  }
  if (!watch && r.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    Fail(method, request, "no answer within the deadline");
  }
  if (r.responses > 0 && !ParsesAsResponse(method, r.first)) {
    Fail(method, request, "the response does not parse");
  }
}

// Cancels every active job, so queues and watches stay small.
void Janitor() {
  halftime::v1::ListJobsRequest list;
  list.add_states(halftime::v1::JOB_STATE_QUEUED);
  list.add_states(halftime::v1::JOB_STATE_ASSIGNED);
  list.add_states(halftime::v1::JOB_STATE_RUNNING);
  list.set_page_size(1000);
  auto r = CallScheduler(Channel(), halftime::fuzz::LIST_JOBS,
                         list.SerializeAsString(), kUnaryDeadline);
  halftime::v1::ListJobsResponse jobs;
  if (!r.status.ok() || !jobs.ParseFromString(r.first)) return;
  for (const halftime::v1::Job& job : jobs.jobs()) {
    halftime::v1::CancelJobRequest cancel;
    cancel.set_job_id(job.id());
    cancel.set_reason("fuzz janitor");
    CallScheduler(Channel(), halftime::fuzz::CANCEL_JOB,
                  cancel.SerializeAsString(), kUnaryDeadline);
  }
}

std::vector<std::pair<SchedulerMethod, std::string>> Decode(const uint8_t* data,
                                                            size_t size) {
  std::vector<std::pair<SchedulerMethod, std::string>> calls;
  if (size > 0 && data[0] == '#') {
    halftime::fuzz::SchedulerScript script;
    if (!halftime::fuzz::ParseTextQuietly(
            absl::string_view(reinterpret_cast<const char*>(data), size),
            &script)) {
      return calls;
    }
    for (const auto& call : script.calls()) {
      if (calls.size() == kMaxCalls) break;
      calls.push_back(halftime::fuzz::Encode(call));
    }
    return calls;
  }
  size_t at = 0;
  while (at < size && calls.size() < kMaxCalls) {
    auto method = static_cast<SchedulerMethod>(data[at++] % 8);
    size_t length = 0;
    if (at + 2 <= size) {
      length = data[at] | (static_cast<size_t>(data[at + 1]) << 8);
      at += 2;
    }
    length = std::min(length, size - at);
    calls.emplace_back(
        method, std::string(reinterpret_cast<const char*>(data + at), length));
    at += length;
  }
  return calls;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  halftime::fuzz::InitStatefulServerFuzzer(argc, argv);
  Scheduler();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static int inputs = 0;
  if (++inputs % kJanitorPeriod == 0) Janitor();
  for (const auto& [method, request] : Decode(data, size)) {
    Call(method, request);
  }
  return 0;
}
