#include "client/commands.h"

#include <grpcpp/client_context.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/cli.h"
#include "client/command_util.h"
#include "client/report.h"
#include "client/rpc_error.h"
#include "common/enum_names.h"
#include "common/memory_estimate.h"
#include "common/spec.h"

namespace halftime {
namespace {

// Most jobs one ListJobs page may hold (the scheduler's maximum).
constexpr int kMaxPageSize = 1000;

int PrintDocumentOrTable(const CommandEnv& env,
                         const google::protobuf::Message& message,
                         const std::string& table) {
  if (env.format == OutputFormat::kTable) {
    *env.out << table;
  } else {
    *env.out << RenderDocument(message, env.format);
  }
  return kExitOk;
}

}  // namespace

std::string NewIdempotencyKey() {
  std::random_device device;
  std::string key = "cli-";
  for (int i = 0; i < 4; ++i) {
    absl::StrAppend(&key, absl::StrFormat("%08x", device()));
  }
  return key;
}

int RunSubmit(const CommandEnv& env, const std::string& spec_path,
              const std::vector<std::string>& overrides,
              std::string idempotency_key, bool watch,
              const WatchTuning& tuning) {
  absl::StatusOr<v1::JobSpec> spec = LoadJobSpecFile(spec_path, overrides);
  if (!spec.ok()) {
    *env.err << spec.status().message() << "\n";
    return kExitBadInput;
  }
  // The scheduler estimates memory from the model's dimensions; a folder
  // it may not see is read here. One that cannot be read leaves the job
  // unestimated (the worker still reads the folder when it runs).
  if (absl::Status shape = FillModelShape(&*spec);
      !shape.ok() && !absl::IsNotFound(shape)) {
    *env.err << spec_path << ": " << shape.message() << "\n";
    return kExitBadInput;
  }
  if (idempotency_key.empty()) idempotency_key = NewIdempotencyKey();
  v1::SubmitJobRequest request;
  *request.mutable_spec() = *std::move(spec);
  request.set_idempotency_key(idempotency_key);
  v1::SubmitJobResponse response;
  // The same request, key included, on every retry: the scheduler returns
  // the job the first attempt created.
  const absl::Status status = CallScheduler(
      env, RetryPolicy::kRetryUnavailable, [&](grpc::ClientContext* context) {
        return env.stub->SubmitJob(context, request, &response);
      });
  if (!status.ok()) {
    CliError error = DescribeRpcError(status, ErrorContext(env, ""));
    if (status.code() == absl::StatusCode::kInvalidArgument) {
      error.message = absl::StrCat("the scheduler rejected ", spec_path, ":\n",
                                   error.message);
    }
    return PrintError(env, error);
  }
  const v1::Job& job = response.job();
  switch (env.format) {
    case OutputFormat::kTable:
      if (response.deduplicated()) {
        *env.out << "job " << job.id()
                 << " was already submitted with this idempotency key ("
                 << JobStateName(job.state()) << ")\n";
      } else {
        *env.out << "submitted job " << job.id() << ": " << job.spec().name()
                 << ", " << PrecisionName(job.spec().precision()) << ", "
                 << job.spec().steps() << " steps\n";
      }
      if (!watch) *env.out << "follow it: halftime watch " << job.id() << "\n";
      break;
    case OutputFormat::kJson:
      // With --watch the events follow as JSON lines, so this is one too.
      *env.out << (watch ? ProtoToJson(response).dump(
                               -1, ' ', false,
                               nlohmann::json::error_handler_t::replace) +
                               "\n"
                         : RenderDocument(response, env.format));
      break;
    case OutputFormat::kYaml:
      *env.out << RenderDocument(response, env.format);
      break;
  }
  env.out->flush();
  if (!watch) return kExitOk;
  return RunWatch(env, job.id(), tuning);
}

int RunGet(const CommandEnv& env, const std::string& job_id) {
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  v1::Job job;
  const absl::Status status = CallScheduler(
      env, RetryPolicy::kRetryUnavailable, [&](grpc::ClientContext* context) {
        return env.stub->GetJob(context, request, &job);
      });
  if (!status.ok()) {
    return PrintError(env, DescribeRpcError(status, ErrorContext(env, job_id)));
  }
  return PrintDocumentOrTable(
      env, job, FormatJobDetail(job, absl::Now(), env.terminal.Width()));
}

int RunList(const CommandEnv& env, const std::vector<std::string>& states,
            int limit) {
  v1::ListJobsRequest request;
  for (const std::string& name : states) {
    absl::StatusOr<v1::JobState> state = ParseJobState(name);
    if (!state.ok()) {
      *env.err << "halftime: --state: " << state.status().message() << "\n";
      return kExitBadInput;
    }
    request.add_states(*state);
  }
  v1::ListJobsResponse all;
  while (true) {
    const int remaining = limit > 0 ? limit - all.jobs_size() : kMaxPageSize;
    request.set_page_size(std::min(remaining, kMaxPageSize));
    v1::ListJobsResponse page;
    const absl::Status status = CallScheduler(
        env, RetryPolicy::kRetryUnavailable, [&](grpc::ClientContext* context) {
          return env.stub->ListJobs(context, request, &page);
        });
    if (!status.ok()) {
      return PrintError(env, DescribeRpcError(status, ErrorContext(env, "")));
    }
    for (v1::Job& job : *page.mutable_jobs()) {
      if (limit > 0 && all.jobs_size() >= limit) break;
      *all.add_jobs() = std::move(job);
    }
    all.set_next_page_token(page.next_page_token());
    if (page.next_page_token().empty() || page.jobs_size() == 0) break;
    if (limit > 0 && all.jobs_size() >= limit) break;
    request.set_page_token(page.next_page_token());
  }
  if (env.format != OutputFormat::kTable) {
    *env.out << RenderDocument(all, env.format);
    return kExitOk;
  }
  if (all.jobs_size() == 0) {
    *env.out << (states.empty() ? "no jobs\n" : "no jobs in that state\n");
    return kExitOk;
  }
  std::vector<v1::Job> jobs(all.jobs().begin(), all.jobs().end());
  *env.out << FormatJobTable(jobs, absl::Now(), env.terminal.Width());
  if (!all.next_page_token().empty()) {
    *env.err << "showing the newest " << all.jobs_size()
             << " jobs; --limit 0 lists them all\n";
  }
  return kExitOk;
}

int RunCancel(const CommandEnv& env, const std::string& job_id,
              const std::string& reason) {
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  request.set_reason(reason);
  v1::Job job;
  const absl::Status status = CallScheduler(
      env, RetryPolicy::kNoRetry, [&](grpc::ClientContext* context) {
        return env.stub->CancelJob(context, request, &job);
      });
  if (status.code() == absl::StatusCode::kFailedPrecondition) {
    // Say which end the job already reached, when the scheduler tells us.
    v1::GetJobRequest get;
    get.set_job_id(job_id);
    v1::Job current;
    const absl::Status get_status = CallScheduler(
        env, RetryPolicy::kNoRetry, [&](grpc::ClientContext* context) {
          return env.stub->GetJob(context, get, &current);
        });
    if (get_status.ok() && IsTerminal(current.state())) {
      return PrintError(
          env, {kExitFailure, absl::StrCat("job ", job_id, " already ",
                                           JobStateName(current.state()),
                                           "; nothing to cancel")});
    }
  }
  if (!status.ok()) {
    return PrintError(env, DescribeRpcError(status, ErrorContext(env, job_id)));
  }
  std::string table;
  if (job.state() == v1::JOB_STATE_CANCELLED) {
    table = absl::StrCat("cancelled job ", job.id(), "\n");
  } else {
    table = absl::StrCat("cancelling job ", job.id(), ": ",
                         job.worker().empty()
                             ? "its worker"
                             : absl::StrCat("worker ", job.worker()),
                         " stops it shortly\n");
  }
  return PrintDocumentOrTable(env, job, table);
}

int RunWorkers(const CommandEnv& env) {
  v1::ListWorkersRequest request;
  v1::ListWorkersResponse response;
  const absl::Status status = CallScheduler(
      env, RetryPolicy::kRetryUnavailable, [&](grpc::ClientContext* context) {
        return env.stub->ListWorkers(context, request, &response);
      });
  if (!status.ok()) {
    return PrintError(env, DescribeRpcError(status, ErrorContext(env, "")));
  }
  std::vector<v1::Worker> workers(response.workers().begin(),
                                  response.workers().end());
  return PrintDocumentOrTable(
      env, response,
      workers.empty()
          ? "no workers registered\n"
          : FormatWorkerTable(workers, absl::Now(), env.terminal.Width()));
}

int RunSavings(const CommandEnv& env, const std::string& job_id) {
  v1::GetSavingsRequest request;
  request.set_job_id(job_id);
  v1::GetSavingsResponse response;
  const absl::Status status = CallScheduler(
      env, RetryPolicy::kRetryUnavailable, [&](grpc::ClientContext* context) {
        return env.stub->GetSavings(context, request, &response);
      });
  if (!status.ok()) {
    return PrintError(env, DescribeRpcError(status, ErrorContext(env, job_id)));
  }
  std::string table;
  if (!job_id.empty() && response.jobs_size() == 0) {
    table = absl::StrCat("no savings measured for job ", job_id, " yet\n");
  } else if (!job_id.empty()) {
    table = FormatSavingsDetail(job_id, response.jobs(0), response.currency(),
                                env.terminal.Width());
  } else {
    table = FormatSavingsTables(response, env.terminal.Width());
  }
  return PrintDocumentOrTable(env, response, table);
}

int RunLogs(const CommandEnv& env, const std::string& job_id) {
  v1::GetJobLogsRequest request;
  request.set_job_id(job_id);
  v1::GetJobLogsResponse response;
  const absl::Status status = CallScheduler(
      env, RetryPolicy::kRetryUnavailable, [&](grpc::ClientContext* context) {
        return env.stub->GetJobLogs(context, request, &response);
      });
  if (!status.ok()) {
    return PrintError(env, DescribeRpcError(status, ErrorContext(env, job_id)));
  }
  std::string table;
  for (const std::string& line : response.lines()) {
    absl::StrAppend(&table, line, "\n");
  }
  return PrintDocumentOrTable(env, response, table);
}

namespace {

// Every event of `job` up to the last sequence GetJob reported: the stream
// of a job still running stays open, so reading stops there.
absl::Status ReadJobEvents(const CommandEnv& env, const v1::Job& job,
                           std::vector<v1::JobEvent>* events) {
  grpc::ClientContext context;
  // History can be long; allow more than one unary call's deadline.
  PrepareCallContext(&context, std::max(env.timeout, absl::Seconds(60)));
  v1::WatchJobRequest request;
  request.set_job_id(job.id());
  request.set_include_reports(true);
  std::unique_ptr<grpc::ClientReaderInterface<v1::JobEvent>> reader =
      env.stub->WatchJob(&context, request);
  v1::JobEvent event;
  bool complete = false;
  while (reader->Read(&event)) {
    events->push_back(event);
    if (job.last_event_sequence() > 0 &&
        event.sequence() >= job.last_event_sequence()) {
      complete = true;
      break;
    }
  }
  if (complete) {
    context.TryCancel();
    reader->Finish();
    return absl::OkStatus();
  }
  return FromGrpcStatus(reader->Finish());
}

}  // namespace

int RunSavingsReport(const CommandEnv& env, std::vector<std::string> job_ids,
                     const std::string& html_path) {
  SavingsReport report;
  report.source = env.target;
  report.generated = absl::Now();
  v1::GetSavingsResponse fleet;
  absl::Status status = CallScheduler(
      env, RetryPolicy::kRetryUnavailable, [&](grpc::ClientContext* context) {
        return env.stub->GetSavings(context, v1::GetSavingsRequest(), &fleet);
      });
  if (!status.ok()) {
    return PrintError(env, DescribeRpcError(status, ErrorContext(env, "")));
  }
  report.currency = fleet.currency();
  report.totals.assign(fleet.totals().begin(), fleet.totals().end());
  if (job_ids.empty()) {
    job_ids.assign(fleet.job_ids().begin(), fleet.job_ids().end());
  }
  if (job_ids.empty()) {
    *env.err << "halftime: no job has measured savings yet; name the jobs "
                "to compare (halftime savings JOB... --html FILE)\n";
    return kExitFailure;
  }
  for (const std::string& id : job_ids) {
    ReportJob entry;
    v1::GetJobRequest get;
    get.set_job_id(id);
    status = CallScheduler(env, RetryPolicy::kRetryUnavailable,
                           [&](grpc::ClientContext* context) {
                             return env.stub->GetJob(context, get, &entry.job);
                           });
    if (!status.ok()) {
      return PrintError(env, DescribeRpcError(status, ErrorContext(env, id)));
    }
    v1::GetSavingsRequest one;
    one.set_job_id(id);
    v1::GetSavingsResponse measured;
    status = CallScheduler(
        env, RetryPolicy::kRetryUnavailable, [&](grpc::ClientContext* context) {
          return env.stub->GetSavings(context, one, &measured);
        });
    if (!status.ok()) {
      return PrintError(env, DescribeRpcError(status, ErrorContext(env, id)));
    }
    if (measured.jobs_size() > 0) entry.savings = measured.jobs(0);
    std::vector<v1::JobEvent> events;
    status = ReadJobEvents(env, entry.job, &events);
    if (!status.ok()) {
      return PrintError(env, DescribeRpcError(status, ErrorContext(env, id)));
    }
    AddCurvesFromEvents(events, &entry);
    report.jobs.push_back(std::move(entry));
  }

  // Written next to the target and renamed, so a reader never sees half.
  const std::string html = RenderSavingsReportHtml(report);
  const std::string temp = html_path + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << html;
    out.close();
    if (!out) {
      *env.err << "halftime: cannot write " << temp << ": "
               << std::strerror(errno) << "\n";
      std::remove(temp.c_str());
      return kExitFailure;
    }
  }
  if (std::rename(temp.c_str(), html_path.c_str()) != 0) {
    *env.err << "halftime: cannot write " << html_path << ": "
             << std::strerror(errno) << "\n";
    std::remove(temp.c_str());
    return kExitFailure;
  }
  int with_savings = 0;
  for (const ReportJob& j : report.jobs) with_savings += j.savings.has_value();
  *env.out << "wrote " << html_path << " (" << report.jobs.size()
           << (report.jobs.size() == 1 ? " job, " : " jobs, ") << with_savings
           << " with measured savings)\n";
  return kExitOk;
}

}  // namespace halftime
