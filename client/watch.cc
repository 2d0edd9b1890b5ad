// `halftime watch`: the gRPC loop around WatchRenderer.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/cli.h"
#include "client/command_util.h"
#include "client/commands.h"
#include "client/rpc_error.h"
#include "client/watch_renderer.h"
#include "common/enum_names.h"

namespace halftime {
namespace {

std::atomic<bool> g_interrupted{false};

extern "C" void OnInterruptSignal(int /*signal*/) { g_interrupted.store(true); }

// While alive, Ctrl-C (SIGINT) sets a flag and cancels the call in flight
// instead of killing the process; a second Ctrl-C kills it as usual. The
// previous handler comes back on destruction.
//
// Thread-safety: Watch() and Sleep() are called by the watching thread;
// a helper thread cancels the watched context.
class InterruptGuard {
 public:
  InterruptGuard() {
    g_interrupted.store(false);
    struct sigaction action {};
    action.sa_handler = OnInterruptSignal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND;
    installed_ = ::sigaction(SIGINT, &action, &previous_) == 0;
    canceller_ = std::thread([this] { CancelOnInterrupt(); });
  }

  ~InterruptGuard() ABSL_LOCKS_EXCLUDED(mutex_) {
    {
      absl::MutexLock lock(&mutex_);
      stop_ = true;
    }
    wake_.SignalAll();
    canceller_.join();
    if (installed_) ::sigaction(SIGINT, &previous_, nullptr);
  }

  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

  // Cancels `context` (not owned; null: none) when Ctrl-C comes.
  void Watch(grpc::ClientContext* context) ABSL_LOCKS_EXCLUDED(mutex_) {
    absl::MutexLock lock(&mutex_);
    context_ = context;
  }

  bool interrupted() const { return g_interrupted.load(); }

  // Sleeps `duration`; returns false when Ctrl-C cut it short.
  bool Sleep(absl::Duration duration) {
    const absl::Time end = absl::Now() + duration;
    while (!interrupted() && absl::Now() < end) {
      absl::SleepFor(std::min(absl::Milliseconds(20), end - absl::Now()));
    }
    return !interrupted();
  }

 private:
  void CancelOnInterrupt() ABSL_LOCKS_EXCLUDED(mutex_) {
    absl::MutexLock lock(&mutex_);
    while (!stop_) {
      if (g_interrupted.load() && context_ != nullptr) context_->TryCancel();
      wake_.WaitWithTimeout(&mutex_, absl::Milliseconds(20));
    }
  }

  bool installed_ = false;
  struct sigaction previous_ {};
  absl::Mutex mutex_;
  absl::CondVar wake_;  // signalled when stop_ is set
  bool stop_ ABSL_GUARDED_BY(mutex_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mutex_) = nullptr;
  std::thread canceller_;
};

bool IsStreamBreak(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable ||
         code == absl::StatusCode::kAborted;
}

}  // namespace

int RunWatch(const CommandEnv& env, const std::string& job_id,
             const WatchTuning& tuning) {
  const bool structured = env.format != OutputFormat::kTable;
  WatchRenderer::Options options;
  options.terminal = env.terminal.interactive && !structured;
  options.columns = env.terminal.columns > 0 ? env.terminal.columns : 80;
  WatchRenderer renderer(job_id, options);
  // Progress and events go to stdout; with -o json/yaml stdout holds only
  // the documents, and the watcher's own lines go to stderr.
  std::ostream& lines = structured ? *env.err : *env.out;
  auto write = [](std::ostream& stream, const std::string& text) {
    if (text.empty()) return;
    stream << text;
    stream.flush();
  };
  auto fail = [&](const CliError& error) {
    write(lines, renderer.ReleaseLine());
    return PrintError(env, error);
  };

  InterruptGuard interrupt;
  bool reached_scheduler = false;
  bool reconnecting = false;
  absl::Time last_contact = absl::Now();
  absl::Duration backoff = tuning.initial_backoff;
  bool first_document = true;
  // With a queue timeout: until the job first leaves the queue, each call
  // ends at this deadline so that a silent queue is noticed.
  const bool queue_deadline_on =
      tuning.queue_timeout != absl::InfiniteDuration();
  const absl::Time queue_deadline = absl::Now() + tuning.queue_timeout;
  auto waiting_in_queue = [&renderer] {
    return renderer.state() == v1::JOB_STATE_UNSPECIFIED ||
           renderer.state() == v1::JOB_STATE_QUEUED;
  };
  bool left_queue = false;
  while (true) {
    grpc::ClientContext context;
    const bool deadline_applies = queue_deadline_on && !left_queue;
    PrepareCallContext(&context, deadline_applies
                                     ? std::max(absl::Milliseconds(1),
                                                queue_deadline - absl::Now())
                                     : absl::InfiniteDuration());
    interrupt.Watch(&context);
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    request.set_after_sequence(renderer.last_sequence());
    request.set_include_reports(true);
    std::unique_ptr<grpc::ClientReaderInterface<v1::JobEvent>> reader =
        env.stub->WatchJob(&context, request);
    v1::JobEvent event;
    while (reader->Read(&event)) {
      reached_scheduler = true;
      last_contact = absl::Now();
      if (reconnecting) {
        reconnecting = false;
        backoff = tuning.initial_backoff;
        write(lines, renderer.OnNotice(
                         absl::StrCat("reconnected; resuming after event ",
                                      request.after_sequence()),
                         absl::Now()));
      }
      if (event.sequence() > 0 &&
          event.sequence() <= renderer.last_sequence()) {
        continue;  // Already shown before the stream broke.
      }
      if (env.format == OutputFormat::kJson) {
        write(*env.out,
              ProtoToJson(event).dump(
                  -1, ' ', false, nlohmann::json::error_handler_t::replace) +
                  "\n");
      } else if (env.format == OutputFormat::kYaml) {
        write(*env.out, absl::StrCat(first_document ? "" : "---\n",
                                     RenderDocument(event, env.format)));
        first_document = false;
      }
      const std::string shown = renderer.OnEvent(event, absl::Now());
      if (!structured) write(lines, shown);
      left_queue |= !waiting_in_queue();
    }
    const absl::Status status = FromGrpcStatus(reader->Finish());
    interrupt.Watch(nullptr);
    if (interrupt.interrupted()) {
      write(lines, renderer.OnInterrupted());
      return kExitInterrupted;
    }
    if (deadline_applies &&
        status.code() == absl::StatusCode::kDeadlineExceeded) {
      if (!waiting_in_queue()) continue;  // it left: watch on, no deadline
      return fail(
          {kExitFailure,
           absl::StrCat("job ", job_id, " is still queued after ",
                        absl::FormatDuration(tuning.queue_timeout), ": ",
                        renderer.queue_reason().empty()
                            ? "the scheduler gave no reason"
                            : renderer.queue_reason(),
                        " (it stays queued: halftime cancel ", job_id, ")")});
    }
    if (status.ok()) {
      reached_scheduler = true;
      last_contact = absl::Now();
      if (IsTerminal(renderer.state())) break;
    } else if (!IsStreamBreak(status.code()) || !reached_scheduler) {
      return fail(DescribeRpcError(status, ErrorContext(env, job_id)));
    }
    // The stream broke, or ended before the job did: resume after the last
    // event seen.
    if (absl::Now() - last_contact > tuning.give_up_after) {
      return fail(
          {kExitFailure,
           absl::StrCat(
               "cannot reach scheduler at ", env.target, " for ",
               absl::FormatDuration(tuning.give_up_after), ": ",
               DescribeConnectionFailure(status.message(), env.security),
               "; the job keeps running: halftime watch ", job_id)});
    }
    if (!reconnecting) {
      reconnecting = true;
      const std::string why =
          status.ok() ? "the scheduler ended the stream"
                      : absl::StrCat("lost the connection to the scheduler (",
                                     DescribeConnectionFailure(status.message(),
                                                               env.security),
                                     ")");
      write(lines, renderer.OnNotice(absl::StrCat(why, "; reconnecting"),
                                     absl::Now()));
    }
    if (!interrupt.Sleep(backoff)) {
      write(lines, renderer.OnInterrupted());
      return kExitInterrupted;
    }
    backoff = std::min(backoff * 2, tuning.max_backoff);
  }

  // The job ended: its final record has the reason, last report, savings.
  v1::GetJobRequest get;
  get.set_job_id(job_id);
  v1::Job final_job;
  const absl::Status get_status = CallScheduler(
      env, RetryPolicy::kRetryUnavailable, [&](grpc::ClientContext* context) {
        return env.stub->GetJob(context, get, &final_job);
      });
  write(lines, renderer.OnFinished(get_status.ok() ? &final_job : nullptr));
  return renderer.state() == v1::JOB_STATE_SUCCEEDED ? kExitOk : kExitFailure;
}

}  // namespace halftime
