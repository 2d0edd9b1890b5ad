// The verbs of the `halftime` CLI that talk to the scheduler. Each takes the
// parsed arguments and a CommandEnv, prints results to env.out and errors to
// env.err, and returns the exit code (kExitOk, kExitFailure, kExitBadInput
// from client/cli.h; 130 when Ctrl-C stops a watch).
//
// Unary calls carry env.timeout as their deadline and are retried on
// UNAVAILABLE (SubmitJob with the same idempotency key); CancelJob is not
// retried.
//
// Thread-safety: a verb may run concurrently with other verbs on other
// CommandEnvs; `watch` installs a process-wide SIGINT handler while it runs.
#ifndef HALFTIME_CLIENT_COMMANDS_H_
#define HALFTIME_CLIENT_COMMANDS_H_

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "client/render.h"
#include "client/terminal.h"
#include "common/channel.h"
#include "halftime/v1/scheduler.grpc.pb.h"

namespace halftime {

// Exit code of a watch stopped by Ctrl-C (128 + SIGINT).
inline constexpr int kExitInterrupted = 130;

// Everything a verb needs besides its own arguments. Not owned: stub, out,
// err; they outlive the call.
struct CommandEnv {
  v1::Scheduler::StubInterface* stub = nullptr;
  // Scheduler address, for messages.
  std::string target;
  // How the channel is secured, to explain failed connections.
  ChannelSecurity security = ChannelSecurity::kPlaintext;
  // Deadline of each unary call.
  absl::Duration timeout = absl::Seconds(10);
  OutputFormat format = OutputFormat::kTable;
  TerminalInfo terminal;
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
};

// How `watch` reconnects after the stream breaks.
struct WatchTuning {
  absl::Duration initial_backoff = absl::Milliseconds(250);
  absl::Duration max_backoff = absl::Seconds(5);
  // Gives up (exit 1) after this long without reaching the scheduler.
  absl::Duration give_up_after = absl::Minutes(5);
  // Stops watching (exit 1, with the queue reason) when the job is still
  // queued this long after the watch first saw it queued (--queue-timeout).
  absl::Duration queue_timeout = absl::InfiniteDuration();
};

// `submit SPEC`: validates the spec locally (exit 2 naming the field, no
// call made), submits the resolved spec, prints the job; with `watch`,
// follows it like RunWatch. An empty `idempotency_key` gets a random one.
int RunSubmit(const CommandEnv& env, const std::string& spec_path,
              const std::vector<std::string>& overrides,
              std::string idempotency_key, bool watch,
              const WatchTuning& tuning = {});

// `get JOB`.
int RunGet(const CommandEnv& env, const std::string& job_id);

// `list [--state S]... [--limit N]`: newest first; `limit` 0 lists all.
int RunList(const CommandEnv& env, const std::vector<std::string>& states,
            int limit);

// `cancel JOB [--reason R]`.
int RunCancel(const CommandEnv& env, const std::string& job_id,
              const std::string& reason);

// `workers`.
int RunWorkers(const CommandEnv& env);

// `savings [JOB]`: one job's savings, or the fleet's when `job_id` is empty.
int RunSavings(const CommandEnv& env, const std::string& job_id);

// `savings [JOB...] --html FILE`: writes the self-contained HTML report
// (client/report.h) of `job_ids`, or of every job with measured savings
// when empty: loss curves, speedup and memory bars, the savings table and
// fleet totals. Exit 2 for an unknown job, 1 when the file cannot be
// written or nothing has savings yet.
int RunSavingsReport(const CommandEnv& env, std::vector<std::string> job_ids,
                     const std::string& html_path);

// `logs JOB`: the tail of the job's trainer stderr.
int RunLogs(const CommandEnv& env, const std::string& job_id);

// `watch JOB`: follows the job's events until it ends, reconnecting when
// the stream breaks. Exit 0 when it succeeded, 1 when it failed or was
// cancelled (or the scheduler stayed unreachable, or it stayed queued past
// tuning.queue_timeout), 2 for an unknown job, 130 on Ctrl-C (the job keeps
// running).
int RunWatch(const CommandEnv& env, const std::string& job_id,
             const WatchTuning& tuning = {});

// A fresh random idempotency key ("cli-" and 32 hex digits).
std::string NewIdempotencyKey();

}  // namespace halftime

#endif  // HALFTIME_CLIENT_COMMANDS_H_
