#include "train/train_command.h"

#include <fcntl.h>
#include <poll.h>
#include <torch/version.h>  // TORCH_VERSION only
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/cpu_info.h"
#include "common/spec.h"
#include "engine/baseline_check.h"
#include "engine/device.h"
#include "engine/events.h"
#include "engine/train.h"
#include "train/command_line.h"
#include "train/generate_command.h"
#include "train/spec_options.h"
#include "train/text_data.h"
#include "train/tokenize_command.h"

namespace halftime {
namespace {

using engine::StepReport;
using engine::TrainOptions;
using engine::TrainStatus;

using engine::events::kExitBadInput;
using engine::events::kExitFailure;
using engine::events::kExitOk;
namespace events = engine::events;

std::atomic<bool> g_stop{false};
std::atomic<int> g_stop_signal{0};

extern "C" void HandleStopSignal(int signal) {
  g_stop_signal.store(signal);
  g_stop.store(true);
}

// Keys in the order they are added (the engine's first, then ours).
using Json = nlohmann::ordered_json;

// One line of JSON. A byte that is not UTF-8 (in a path or a message) is
// replaced rather than thrown on.
std::string Dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// Line-oriented JSON sink (a file or an inherited descriptor); each line is
// flushed so a reader sees it at once.
class JsonLines {
 public:
  static std::unique_ptr<JsonLines> OpenFile(const std::string& path,
                                             std::string* error) {
    FILE* f = path == "-" ? fdopen(dup(STDOUT_FILENO), "w")
                          : std::fopen(path.c_str(), "a");
    if (f == nullptr) {
      *error =
          absl::StrCat("--metrics-jsonl ", path, ": cannot open for writing");
      return nullptr;
    }
    return std::unique_ptr<JsonLines>(new JsonLines(f));
  }
  static std::unique_ptr<JsonLines> OpenFd(int fd, std::string* error) {
    FILE* f = fdopen(fd, "w");
    if (f == nullptr) {
      *error = absl::StrCat("--events-fd ", fd, ": not an open descriptor");
      return nullptr;
    }
    return std::unique_ptr<JsonLines>(new JsonLines(f));
  }
  ~JsonLines() { std::fclose(file_); }
  void Write(const Json& object) {
    const std::string line = Dump(object);
    std::fputs(line.c_str(), file_);
    std::fputc('\n', file_);
    std::fflush(file_);
  }

 private:
  explicit JsonLines(FILE* file) : file_(file) {}
  FILE* file_;
};

// Acknowledgements from the supervisor ("stored STEP" or "failed STEP", one
// per line) on an inherited descriptor. Waiting for the one that covers a
// checkpoint before training on is what bounds the steps a crash repeats
// by the checkpoint interval: the steps trained while a checkpoint is
// still uploading would otherwise be repeated as well.
class Acknowledgements {
 public:
  explicit Acknowledgements(int fd) : fd_(fd) {}
  ~Acknowledgements() { close(fd_); }

  // Blocks until a line acknowledges `step` or a later one, a stop signal
  // arrives or the supervisor is gone (end of file). `heartbeat` runs about
  // once a second while waiting, so a supervisor's stall watchdog sees the
  // trainer alive during a long upload. Returns the acknowledgement line,
  // or "" when the wait ended without one.
  std::string WaitFor(int64_t step, const std::function<void()>& heartbeat) {
    while (!g_stop.load()) {
      for (std::size_t nl; (nl = pending_.find('\n')) != std::string::npos;) {
        const std::string line = pending_.substr(0, nl);
        pending_.erase(0, nl + 1);
        const std::size_t space = line.find(' ');
        int64_t acked = -1;
        if (space != std::string::npos &&
            absl::SimpleAtoi(line.substr(space + 1), &acked) && acked >= step) {
          return line;
        }
      }
      pollfd p = {fd_, POLLIN, 0};
      const int ready = poll(&p, 1, 1000);
      if (ready < 0) {
        if (errno == EINTR) continue;  // a stop signal: the loop checks it
        return "";
      }
      if (ready == 0) {
        heartbeat();
        continue;
      }
      char buffer[256];
      const ssize_t n = read(fd_, buffer, sizeof(buffer));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return "";
      pending_.append(buffer, static_cast<std::size_t>(n));
      if (pending_.size() > 4096) pending_.clear();  // not ours to parse
    }
    return "";
  }

 private:
  int fd_;
  std::string pending_;
};

int ExitCodeFor(const TrainStatus& status) {
  switch (status.code) {
    case TrainStatus::kOk:
      return kExitOk;
    case TrainStatus::kInvalidInput:
    case TrainStatus::kUnsupported:
      return kExitBadInput;
    case TrainStatus::kCancelled:
      return 128 + (g_stop_signal.load() != 0 ? g_stop_signal.load() : SIGTERM);
    default:
      return kExitFailure;
  }
}

std::string ProgressLine(const StepReport& r, int total,
                         const char* precision) {
  return absl::StrFormat(
      "\rstep %d/%d  loss %.4f  scale %g  overflows %d  %.0f tok/s  %s  peak "
      "%.1f MiB\033[K",
      r.step, total, r.loss, r.loss_scale, r.skipped_steps, r.tokens_per_second,
      precision, r.peak_memory_bytes / 1048576.0);
}

// Prints the device probe as one JSON object (to the events descriptor when
// given, else stdout).
int ProbeDeviceCommand(int threads, int events_fd, std::ostream& out) {
  const engine::DeviceCapabilities caps = engine::ProbeDevice(threads);
  auto names = [](const std::vector<engine::Precision>& modes) {
    Json list = Json::array();
    for (engine::Precision p : modes) list.push_back(engine::PrecisionName(p));
    return list;
  };
  Json j = {{events::kKind, events::kDevice},
            {"kind", caps.kind},
            {"name", caps.name},
            {"compute_capability", caps.compute_capability},
            {"memory_bytes", caps.memory_bytes},
            {"threads", caps.threads},
            {"native_precisions", names(caps.native_precisions)},
            {"emulated_precisions", names(caps.emulated_precisions)},
            {"bf16_emulated", caps.bf16_emulated},
            {"fp32_flops", caps.fp32_flops},
            {"tf32_flops", caps.tf32_flops},
            {"fp16_flops", caps.fp16_flops},
            {"bf16_flops", caps.bf16_flops},
            {"blas", caps.blas},
            {"baseline_degraded", caps.baseline_degradations},
            {"torch_version", TORCH_VERSION}};
  if (events_fd >= 0) {
    std::string error;
    std::unique_ptr<JsonLines> events = JsonLines::OpenFd(events_fd, &error);
    if (!events) return kExitBadInput;
    events->Write(j);
  } else {
    out << j.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
  }
  return kExitOk;
}

}  // namespace

int RunTrainCommand(const std::vector<std::string>& args, std::ostream& out,
                    std::ostream& err) {
  if (args.size() > 1 && args[1] == "tokenize") {
    return RunTokenizeCommand(args, out, err);
  }
  if (args.size() > 1 && args[1] == "generate") {
    return RunGenerateCommand(args, out, err);
  }
  CLI::App app{"halftime-train: run one fine-tuning job from a spec file",
               "halftime-train"};
  std::string spec_path, out_dir, metrics_path, resume, data_root;
  std::vector<std::string> overrides;
  int threads = 0;
  int events_fd = -1;
  int acks_fd = -1;
  bool quiet = false;
  bool probe_device = false;
  bool allow_emulation = false;
  app.add_option("SPEC", spec_path, "Job spec (YAML or JSON)");
  app.add_flag("--probe-device", probe_device,
               "Measure what this machine's device runs natively and print it "
               "as JSON (no SPEC); used by halftime-worker at start-up");
  app.add_option("--out", out_dir,
                 "Directory for checkpoints, model.safetensors and "
                 "summary.json");
  app.add_option("--metrics-jsonl", metrics_path,
                 "Append one JSON object per step to FILE ('-' = stdout)");
  app.add_option("--resume", resume, "Resume from this checkpoint");
  app.add_option("--set", overrides, "Override a spec field, e.g. steps=50");
  app.add_option("--threads", threads,
                 "Intra-op threads when the spec says 0 (default: all cores)")
      ->check(CLI::Range(0, 1024));
  app.add_option("--data-root", data_root,
                 "Refuse data/model paths outside DIR; relative paths are "
                 "resolved against it");
  app.add_option("--events-fd", events_fd,
                 "Write step/checkpoint/done events as JSON lines to this "
                 "inherited descriptor (used by halftime-worker)");
  app.add_option("--acks-fd", acks_fd,
                 "After each checkpoint, wait until a line 'stored STEP' or "
                 "'failed STEP' on this inherited descriptor acknowledges it "
                 "(used by halftime-worker)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--quiet", quiet, "No progress line");
  app.add_flag("--allow-emulation", allow_emulation,
               "Run a precision this device only emulates (bf16 on a CPU "
               "without native bf16: memory saved, not time), as the spec's "
               "resources.emulation: allow does");

  if (auto done = ParseCommandLine(app, args, 0, "halftime-train", out, err)) {
    return *done;
  }

  if (const std::string cap_error = cpu::IsaCapError(); !cap_error.empty()) {
    err << "halftime-train: " << cap_error << "\n";
    return kExitBadInput;
  }
  if (probe_device) return ProbeDeviceCommand(threads, events_fd, out);
  if (spec_path.empty()) {
    err << "halftime-train: SPEC is required\n";
    return kExitBadInput;
  }
  absl::StatusOr<v1::JobSpec> spec = LoadJobSpecFile(spec_path, overrides);
  if (!spec.ok()) {
    err << spec.status().message() << "\n";
    return kExitBadInput;
  }
  TrainOptions options = TrainOptionsFromSpec(*spec);
  if (options.threads == 0) options.threads = threads;
  options.allow_emulation |= allow_emulation;
  options.out_dir = out_dir;
  options.resume_from = resume;
  if (absl::Status confined = ConfineOptionPaths(data_root, &options);
      !confined.ok()) {
    err << confined.message() << "\n";
    return kExitBadInput;
  }
  absl::StatusOr<std::unique_ptr<JobText>> job_text =
      JobText::Prepare(*spec, &options);
  if (!job_text.ok()) {
    err << "halftime-train: " << job_text.status().message() << "\n";
    return kExitBadInput;
  }

  std::string error;
  std::unique_ptr<JsonLines> metrics, events;
  if (!metrics_path.empty() &&
      !(metrics = JsonLines::OpenFile(metrics_path, &error))) {
    err << error << "\n";
    return kExitBadInput;
  }
  if (events_fd >= 0 && !(events = JsonLines::OpenFd(events_fd, &error))) {
    err << error << "\n";
    return kExitBadInput;
  }

  std::unique_ptr<Acknowledgements> acks;
  if (acks_fd >= 0) {
    if (fcntl(acks_fd, F_GETFD) < 0) {
      err << "--acks-fd " << acks_fd << ": not an open descriptor\n";
      return kExitBadInput;
    }
    acks = std::make_unique<Acknowledgements>(acks_fd);
  }

  std::signal(SIGTERM, HandleStopSignal);
  std::signal(SIGINT, HandleStopSignal);
  const bool tty = !quiet && isatty(STDERR_FILENO);

  engine::TrainSummary summary;
  TrainStatus status;
  std::string fallback_note;
  // A fallback (loss scale stuck at its floor) resumes from the last
  // checkpoint in the fallback precision, at most once.
  for (int run = 0; run < 2; ++run) {
    const std::string precision = engine::PrecisionName(options.precision);
    engine::TrainCallbacks callbacks;
    callbacks.cancel = &g_stop;
    // Completions of the eval prompts, for the step line that follows.
    Json samples = Json::array();
    callbacks.on_eval_sample = [&](int64_t step, int index,
                                   const std::vector<int32_t>& ids) {
      const std::string& prompt = (*job_text)->prompts()[index];
      const std::string completion = (*job_text)->Decode(ids);
      samples.push_back({{"prompt", prompt}, {"completion", completion}});
      // stderr is the job's log (`halftime logs JOB`).
      if (tty) err << "\n";
      err << "halftime-train: step " << step << " eval sample " << index << ": "
          << Dump(Json(prompt)) << " -> " << Dump(Json(completion)) << "\n";
    };
    callbacks.on_step = [&](const StepReport& r) {
      // The engine's line, then what this run adds.
      Json line = Json::parse(engine::StepReportJson(r));
      line[events::kPrecision] = precision;
      if (!fallback_note.empty()) line[events::kFallbackNote] = fallback_note;
      if (!samples.empty()) {
        line[events::kEvalSamples] = std::move(samples);
        samples = Json::array();
      }
      if (metrics) metrics->Write(line);
      if (events) {
        line[events::kKind] = events::kStep;
        line[events::kTotalSteps] = options.steps;
        events->Write(line);
      }
      if (tty)
        err << ProgressLine(r, options.steps, precision.c_str()) << std::flush;
    };
    callbacks.on_checkpoint = [&](const std::string& path, int64_t step) {
      if (events) {
        events->Write(Json{{events::kKind, events::kCheckpoint},
                           {events::kPath, path},
                           {events::kStepNumber, step}});
      }
      if (acks) {
        const auto waiting_since = std::chrono::steady_clock::now();
        const std::string ack = acks->WaitFor(step, [&] {
          if (!events) return;
          const std::chrono::duration<double> waited =
              std::chrono::steady_clock::now() - waiting_since;
          events->Write(Json{{events::kKind, events::kWaiting},
                             {"for", "checkpoint_stored"},
                             {events::kStepNumber, step},
                             {"seconds", waited.count()}});
        });
        if (absl::StartsWith(ack, "failed")) {
          err << "halftime-train: checkpoint of step " << step
              << " was not stored; training on\n";
        }
      }
    };
    status = engine::Train(options, callbacks, &summary);
    if (tty) err << "\n";
    if (status.code != TrainStatus::kFallbackRequested || run > 0) break;
    if (summary.last_checkpoint.empty()) {
      status = TrainStatus::Error(
          TrainStatus::kTrainingFailed,
          absl::StrCat(status.message,
                       "; no checkpoint to fall back from (set "
                       "checkpoint.every_steps)"));
      break;
    }
    fallback_note = absl::StrCat(
        "fell back from ", precision, " to ",
        engine::PrecisionName(options.loss_scaling.fallback_precision),
        " at checkpoint step ", summary.steps, ": ", status.message);
    err << "halftime-train: " << fallback_note << "\n";
    if (events) {
      events->Write(Json{{events::kKind, events::kFallback},
                         {events::kMessage, fallback_note}});
    }
    options.precision = options.loss_scaling.fallback_precision;
    options.loss_scaling.mode = engine::LossScalingMode::kDefault;
    options.resume_from = summary.last_checkpoint;
  }

  if (events) {
    events->Write(
        Json{{events::kKind, events::kDone},
             {events::kStatus, engine::StatusCodeName(status.code)},
             {events::kMessage, status.message},
             {events::kSummary, Json::parse(engine::SummaryJson(summary))}});
  }
  if (!status.ok()) {
    err << "halftime-train: " << status.message << "\n";
  } else if (!quiet) {
    err << absl::StrFormat(
        "halftime-train: done: %d steps (%d skipped), final loss %.4f%s, "
        "%.0f tokens/s, peak tensor memory %.1f MiB\n",
        summary.steps, summary.skipped_steps, summary.final_loss,
        summary.has_eval_loss
            ? absl::StrCat(
                  absl::StrFormat(", eval loss %.4f", summary.eval_loss),
                  summary.has_eval_accuracy
                      ? absl::StrFormat(", eval accuracy %.1f%%",
                                        100 * summary.eval_accuracy)
                      : "")
            : "",
        summary.tokens_per_second, summary.peak_memory_bytes / 1048576.0);
    if (!summary.summary_json.empty()) {
      err << "halftime-train: outputs in " << out_dir << "\n";
    }
  }
  return ExitCodeFor(status);
}

}  // namespace halftime
