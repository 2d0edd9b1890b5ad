#include "client/cli.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <memory>
#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/cpu_info.h"
#include "client/commands.h"
#include "client/render.h"
#include "common/channel.h"
#include "common/enum_names.h"
#include "common/memory_estimate.h"
#include "common/proto_json.h"
#include "common/spec.h"
#include "halftime/v1/scheduler.grpc.pb.h"

namespace halftime {
namespace {

// "10s", "500ms", "2m" or a plain number of seconds for `flag`; must be
// positive.
absl::StatusOr<absl::Duration> ParseTimeout(const std::string& text,
                                            const char* flag = "--timeout") {
  absl::Duration duration;
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds)) {
    duration = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &duration)) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": cannot read \"", text, "\"; write e.g. 10s or 500ms"));
  }
  if (duration <= absl::ZeroDuration() ||
      duration == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": must be positive and finite, got ", text));
  }
  return duration;
}

OutputFormat ParseOutputFormat(const std::string& name) {
  if (name == "json") return OutputFormat::kJson;
  if (name == "yaml") return OutputFormat::kYaml;
  return OutputFormat::kTable;
}

// `halftime validate SPEC...`: load, resolve and print each spec.
int RunValidate(const std::vector<std::string>& paths,
                const std::vector<std::string>& overrides,
                const std::string& output, std::ostream& out,
                std::ostream& err) {
  const SpecFormat format =
      output == "json" ? SpecFormat::kJson : SpecFormat::kYaml;
  int exit_code = kExitOk;
  bool first = true;
  for (const std::string& path : paths) {
    absl::StatusOr<v1::JobSpec> spec = LoadJobSpecFile(path, overrides);
    if (!spec.ok()) {
      err << spec.status().message() << "\n";
      exit_code = kExitBadInput;
      continue;
    }
    if (format == SpecFormat::kYaml && !first) out << "---\n";
    if (format == SpecFormat::kYaml && paths.size() > 1)
      out << "# " << path << "\n";
    out << FormatJobSpec(*spec, format);
    first = false;
  }
  if (exit_code == kExitOk && paths.size() > 1) {
    err << paths.size() << " specs valid\n";
  }
  return exit_code;
}

// Device memory of the GPUs `--device cuda:MODEL` names, as their CUDA
// driver reports it (MiB).
struct GpuMemory {
  const char* model;
  int64_t mib;
};
constexpr GpuMemory kGpus[] = {
    {"h200", 143771},     {"h100", 81559},      {"a100-80gb", 81920},
    {"a100-40gb", 40960}, {"l40s", 46068},      {"a6000", 49140},
    {"l4", 23034},        {"a10", 23028},       {"rtx4090", 24564},
    {"t4", 15360},        {"v100-32gb", 32768}, {"v100", 16384},
};

std::string GpuModels() {
  std::string names;
  for (const GpuMemory& g : kGpus) {
    absl::StrAppend(&names, names.empty() ? "" : ", ", g.model);
  }
  return names;
}

// `halftime estimate SPEC`: predicted peak memory per precision (and base
// dtype), next to the device's memory. Runs here; no scheduler needed.
int RunEstimate(const std::string& path,
                const std::vector<std::string>& overrides,
                const std::string& device, const std::string& output,
                std::ostream& out, std::ostream& err) {
  absl::StatusOr<v1::JobSpec> spec = LoadJobSpecFile(path, overrides);
  if (!spec.ok()) {
    err << spec.status().message() << "\n";
    return kExitBadInput;
  }
  EstimateDevice facts;
  int64_t device_bytes = 0;
  if (device == "cpu") {
    device_bytes = int64_t{sysconf(_SC_PHYS_PAGES)} * sysconf(_SC_PAGE_SIZE);
    facts.bf16_emulated = !cpu::HasNativeBf16(cpu::Flags());
  } else if (absl::StartsWith(device, "cuda:")) {
    facts.cuda = true;
    const std::string model = absl::AsciiStrToLower(device.substr(5));
    for (const GpuMemory& g : kGpus) {
      if (model == g.model) device_bytes = g.mib << 20;
    }
    if (device_bytes == 0) {
      err << "halftime estimate: --device " << device
          << ": unknown GPU; one of " << GpuModels() << "\n";
      return kExitBadInput;
    }
  } else {
    err << "halftime estimate: --device must be cpu or cuda:MODEL ("
        << GpuModels() << "), got " << device << "\n";
    return kExitBadInput;
  }
  absl::StatusOr<v1::ModelShape> shape = ModelShapeOf(*spec, true);
  if (!shape.ok()) {
    err << path << ": cannot estimate: " << shape.status().message() << "\n";
    return kExitBadInput;
  }
  const std::vector<v1::MemoryEstimate> rows =
      EstimateTable(*spec, *shape, facts);
  const ParameterCount params = CountParameters(*spec, *shape);
  if (output == "json") {
    nlohmann::ordered_json j;
    j["device"] = device;
    j["device_memory_bytes"] = device_bytes;
    j["parameters"] = params.total;
    j["trainable_parameters"] = params.trainable;
    j["estimates"] = nlohmann::ordered_json::array();
    for (const v1::MemoryEstimate& e : rows) {
      nlohmann::ordered_json row = ProtoToJson(e);
      row["fits"] = e.total_bytes() <= device_bytes;
      j["estimates"].push_back(row);
    }
    out << j.dump(2) << "\n";
    return kExitOk;
  }
  const bool adapter = spec->adapter().kind() == v1::ADAPTER_KIND_LORA;
  out << spec->name() << ": " << FormatCount(params.total) << " parameters, "
      << FormatCount(params.trainable) << " trainable; " << device << " has "
      << FormatBytes(device_bytes) << "\n";
  std::vector<Table::Column> columns = {{"PRECISION"}};
  if (adapter) columns.push_back({"BASE"});
  for (const char* h : {"WEIGHTS", "GRADIENTS", "OPTIMIZER", "ACTIVATIONS",
                        "WORKSPACE", "PEAK"}) {
    columns.push_back({h, false, true});
  }
  columns.push_back({"FITS"});
  Table table(columns);
  for (const v1::MemoryEstimate& e : rows) {
    std::vector<std::string> cells = {PrecisionName(e.precision())};
    if (adapter) {
      cells.push_back(
          e.base_dtype() == v1::BASE_DTYPE_UNSPECIFIED
              ? "compute"
              : EnumShortName(v1::BaseDtype_descriptor(), e.base_dtype()));
    }
    for (int64_t bytes :
         {e.weight_bytes(), e.gradient_bytes(), e.optimizer_state_bytes(),
          e.activation_bytes(), e.workspace_bytes(), e.total_bytes()}) {
      cells.push_back(FormatBytes(bytes));
    }
    cells.push_back(e.total_bytes() <= device_bytes ? "yes" : "no");
    table.AddRow(std::move(cells));
  }
  out << table.Render(160);
  if (adapter) {
    // What the same model would need fully fine-tuned in fp32.
    v1::JobSpec full = *spec;
    full.clear_adapter();
    const v1::MemoryEstimate f = EstimateMemory(
        full, *shape, v1::PRECISION_FP32, v1::BASE_DTYPE_UNSPECIFIED, facts);
    out << "a full fp32 fine-tune of this model: "
        << FormatBytes(f.total_bytes()) << " (estimated)\n";
  }
  return kExitOk;
}

}  // namespace

int RunCli(const std::vector<std::string>& args, std::ostream& out,
           std::ostream& err) {
  return RunCli(args, out, err, TerminalInfo{});
}

int RunCli(const std::vector<std::string>& args, std::ostream& out,
           std::ostream& err, const TerminalInfo& terminal) {
  CLI::App app{
      "halftime: run fine-tuning jobs in mixed precision and measure "
      "what it saved",
      "halftime"};
  app.require_subcommand(1);
  app.fallthrough();  // Global flags may follow the verb too.
  app.set_help_all_flag("--help-all", "Show help for every verb");

  ChannelOptions channel_options;
  std::string timeout_text = "10s";
  app.add_option("--server", channel_options.target,
                 "Scheduler address (host:port)")
      ->envname("HALFTIME_SERVER")
      ->capture_default_str();
  app.add_option("--token-file", channel_options.token_file,
                 "File holding the bearer token sent with every call")
      ->envname("HALFTIME_TOKEN_FILE");
  app.add_option("--tls-ca", channel_options.tls_ca,
                 "PEM CA certificate of the scheduler; turns TLS on");
  app.add_option("--tls-cert", channel_options.tls_cert,
                 "PEM client certificate for mutual TLS (with --tls-key)");
  app.add_option("--tls-key", channel_options.tls_key, "PEM key of --tls-cert");
  app.add_option("--timeout", timeout_text,
                 "Deadline of each call, e.g. 10s or 500ms")
      ->capture_default_str();

  std::string output = "table";
  auto add_output = [&output](CLI::App* verb) {
    verb->add_option("-o,--output", output, "Output format")
        ->check(CLI::IsMember({"table", "json", "yaml"}))
        ->capture_default_str();
  };

  std::vector<std::string> spec_paths;
  std::vector<std::string> overrides;
  std::string validate_output = "yaml";
  CLI::App* validate =
      app.add_subcommand("validate", "Check job specs and print them resolved");
  validate->add_option("SPEC", spec_paths, "Spec files (YAML or JSON)")
      ->required();
  validate->add_option("--set", overrides,
                       "Override a field, e.g. --set optimizer.lr=1e-3");
  validate->add_option("-o,--output", validate_output, "Output format")
      ->check(CLI::IsMember({"yaml", "json"}))
      ->capture_default_str();

  std::string estimate_path, estimate_device = "cpu", estimate_output = "table";
  CLI::App* estimate = app.add_subcommand(
      "estimate", "Predict a job's peak memory per precision (no scheduler)");
  estimate->add_option("SPEC", estimate_path, "Spec file (YAML or JSON)")
      ->required();
  estimate->add_option("--set", overrides,
                       "Override a field, e.g. --set batch_size=8");
  estimate
      ->add_option("--device", estimate_device,
                   "cpu (this machine) or cuda:MODEL, e.g. cuda:h100")
      ->capture_default_str();
  estimate->add_option("-o,--output", estimate_output, "Output format")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();

  std::string spec_path;
  bool submit_watch = false;
  std::string idempotency_key;
  CLI::App* submit = app.add_subcommand(
      "submit", "Validate a job spec and submit it to the scheduler");
  submit->add_option("SPEC", spec_path, "Spec file (YAML or JSON)")->required();
  submit->add_flag("--watch", submit_watch,
                   "Follow the job until it ends (exit code: its outcome)");
  submit->add_option("--set", overrides,
                     "Override a field, e.g. --set optimizer.lr=1e-3");
  submit->add_option("--idempotency-key", idempotency_key,
                     "Key making retries safe (default: random per run)");
  std::string queue_timeout_text;
  const char* kQueueTimeoutHelp =
      "With watching: stop (exit 1, printing why it waits) when the job is "
      "still queued after this long, e.g. 60s; the job stays queued";
  submit->add_option("--queue-timeout", queue_timeout_text, kQueueTimeoutHelp);
  add_output(submit);

  std::string job_id;
  CLI::App* get = app.add_subcommand("get", "Show one job");
  get->add_option("JOB", job_id, "Job id")->required();
  add_output(get);

  std::vector<std::string> states;
  int limit = 50;
  CLI::App* list = app.add_subcommand("list", "List jobs, newest first");
  list->add_option("--state", states,
                   "Only jobs in this state (queued, assigned, running, "
                   "succeeded, failed, cancelled); repeatable");
  list->add_option("--limit", limit, "Most jobs to show; 0 shows all")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  add_output(list);

  CLI::App* watch = app.add_subcommand(
      "watch", "Follow a job live until it ends (exit code: its outcome)");
  watch->add_option("JOB", job_id, "Job id")->required();
  watch->add_option("--queue-timeout", queue_timeout_text, kQueueTimeoutHelp);
  add_output(watch);

  std::string reason;
  CLI::App* cancel = app.add_subcommand("cancel", "Cancel a job");
  cancel->add_option("JOB", job_id, "Job id")->required();
  cancel->add_option("--reason", reason, "Why; recorded in the job's events");
  add_output(cancel);

  CLI::App* workers =
      app.add_subcommand("workers", "List workers and what they run natively");
  add_output(workers);

  CLI::App* savings = app.add_subcommand(
      "savings", "Measured savings against fp32: one job, or the fleet");
  std::vector<std::string> savings_jobs;
  std::string html_path;
  savings->add_option("JOB", savings_jobs,
                      "Job id (default: fleet totals); with --html, the jobs "
                      "to compare (default: every job with savings)");
  savings->add_option("--html", html_path,
                      "Write a self-contained HTML report (loss curves, "
                      "savings table) to this file");
  add_output(savings);

  CLI::App* logs =
      app.add_subcommand("logs", "Show the tail of a job's trainer log");
  logs->add_option("JOB", job_id, "Job id")->required();
  add_output(logs);

  std::vector<const char*> argv;
  argv.reserve(args.size());
  for (const auto& a : args) argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::CallForHelp& e) {
    out << app.help();
    return kExitOk;
  } catch (const CLI::CallForAllHelp& e) {
    out << app.help("", CLI::AppFormatMode::All);
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    err << "halftime: " << e.what() << "\n";
    err << "Run 'halftime --help' for usage.\n";
    return kExitBadInput;
  }

  if (validate->parsed()) {
    return RunValidate(spec_paths, overrides, validate_output, out, err);
  }
  if (estimate->parsed()) {
    return RunEstimate(estimate_path, overrides, estimate_device,
                       estimate_output, out, err);
  }

  absl::StatusOr<absl::Duration> timeout = ParseTimeout(timeout_text);
  if (!timeout.ok()) {
    err << "halftime: " << timeout.status().message() << "\n";
    return kExitBadInput;
  }
  WatchTuning tuning;
  if (!queue_timeout_text.empty()) {
    absl::StatusOr<absl::Duration> queue_timeout =
        ParseTimeout(queue_timeout_text, "--queue-timeout");
    if (!queue_timeout.ok()) {
      err << "halftime: " << queue_timeout.status().message() << "\n";
      return kExitBadInput;
    }
    tuning.queue_timeout = *queue_timeout;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      CreateSchedulerChannel(channel_options);
  if (!channel.ok()) {
    err << "halftime: " << channel.status().message() << "\n";
    return kExitBadInput;
  }
  std::unique_ptr<v1::Scheduler::Stub> stub = v1::Scheduler::NewStub(*channel);
  CommandEnv env;
  env.stub = stub.get();
  env.target = channel_options.target;
  env.security = channel_options.Security();
  env.timeout = *timeout;
  env.format = ParseOutputFormat(output);
  env.terminal = terminal;
  env.out = &out;
  env.err = &err;

  if (submit->parsed()) {
    return RunSubmit(env, spec_path, overrides, idempotency_key, submit_watch,
                     tuning);
  }
  if (get->parsed()) return RunGet(env, job_id);
  if (list->parsed()) return RunList(env, states, limit);
  if (watch->parsed()) return RunWatch(env, job_id, tuning);
  if (cancel->parsed()) return RunCancel(env, job_id, reason);
  if (workers->parsed()) return RunWorkers(env);
  if (savings->parsed()) {
    if (!html_path.empty()) {
      return RunSavingsReport(env, savings_jobs, html_path);
    }
    if (savings_jobs.size() > 1) {
      err << "halftime: savings takes one job; compare several with "
             "--html FILE\n";
      return kExitBadInput;
    }
    return RunSavings(env, savings_jobs.empty() ? "" : savings_jobs[0]);
  }
  if (logs->parsed()) return RunLogs(env, job_id);
  err << "halftime: no verb given\n";
  return kExitBadInput;
}

}  // namespace halftime
