#include "worker/worker_flags.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <climits>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/enum_names.h"

namespace halftime {
namespace {

// halftime-train beside this binary (an install, the images), else where a
// build tree puts it (build/train/ beside build/worker/).
std::string DefaultTrainerPath() {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return "halftime-train";
  self[n] = '\0';
  const std::filesystem::path dir = std::filesystem::path(self).parent_path();
  const std::filesystem::path beside = dir / "halftime-train";
  const std::filesystem::path build_tree =
      dir.parent_path() / "train" / "halftime-train";
  std::error_code error;
  if (!std::filesystem::exists(beside, error) &&
      std::filesystem::exists(build_tree, error)) {
    return build_tree.string();
  }
  return beside.string();
}

std::string Hostname() {
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  return name[0] ? name : "worker";
}

std::chrono::milliseconds Millis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

}  // namespace

std::optional<WorkerFlags> ParseWorkerFlags(int argc, char** argv,
                                            int* exit_code) {
  CLI::App app{"halftime-worker: runs Halftime jobs on this machine's device",
               "halftime-worker"};
  WorkerFlags flags;
  flags.scheduler = kDefaultSchedulerTarget;
  flags.metrics_address = "127.0.0.1:9465";
  WorkerOptions& options = flags.options;
  options.name = Hostname();
  options.trainer_binary = DefaultTrainerPath();
  options.data_root = std::filesystem::current_path().string();
  options.work_dir = "halftime-work";
  std::string out_root;
  double stop_grace_seconds = 30;
  double stall_timeout_seconds = 600;
  app.add_option("--scheduler", flags.scheduler, "Scheduler address")
      ->capture_default_str();
  app.add_option("--metrics", flags.metrics_address,
                 "Serve /metrics on this address")
      ->capture_default_str();
  app.add_option("--name", options.name,
                 "Unique worker name (default: hostname)");
  app.add_option("--slots", flags.slots, "Jobs run at once")
      ->check(CLI::Range(1, 256));
  app.add_option("--threads-per-job", flags.threads_per_job,
                 "Intra-op threads per job (default: cores / slots)")
      ->check(CLI::Range(0, 1024));
  app.add_option("--data-root", options.data_root,
                 "Specs may only read data and models under this directory")
      ->capture_default_str();
  app.add_option("--work-dir", options.work_dir, "Scratch space for jobs")
      ->capture_default_str();
  app.add_option(
      "--out-root", out_root,
      "Job outputs go to DIR/<job name>/ (default: WORK_DIR/outputs)");
  app.add_option("--trainer", options.trainer_binary, "halftime-train binary")
      ->capture_default_str();
  app.add_option("--stop-grace", stop_grace_seconds,
                 "Seconds between SIGTERM and SIGKILL when stopping a job")
      ->capture_default_str();
  app.add_option("--stall-timeout", stall_timeout_seconds,
                 "Seconds a trainer may go without a training step (from its "
                 "start, then from its last step) before it is killed and "
                 "its attempt retried; 0: never")
      ->check(CLI::Range(0.0, 1e7))
      ->capture_default_str();
  app.add_option("--token-file", flags.channel.token_file,
                 "File holding the worker's bearer token");
  app.add_option("--tls-ca", flags.channel.tls_ca, "CA certificate (PEM)");
  app.add_option("--tls-cert", flags.channel.tls_cert,
                 "Client certificate for mTLS (PEM)");
  app.add_option("--tls-key", flags.channel.tls_key,
                 "Client key for mTLS (PEM)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    *exit_code = app.exit(e);
    return std::nullopt;
  }
  options.out_root =
      out_root.empty() ? options.work_dir + "/outputs" : out_root;
  options.stop_grace = Millis(stop_grace_seconds);
  options.stall_timeout = Millis(stall_timeout_seconds);
  if (flags.threads_per_job == 0) {
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    flags.threads_per_job = std::max(1, cores / flags.slots);
  }
  flags.channel.target = flags.scheduler;
  options.security = flags.channel.Security();
  return flags;
}

std::vector<std::string> DescribeCapabilities(
    const v1::WorkerCapabilities& capabilities) {
  auto names = [](const auto& precisions) {
    std::string list;
    for (int p : precisions) {
      absl::StrAppend(&list, list.empty() ? "" : ", ",
                      PrecisionName(static_cast<v1::Precision>(p)));
    }
    return list;
  };
  double fp32 = 0, bf16 = 0;
  bool bf16_native = true;
  for (const auto& rate : capabilities.rates()) {
    if (rate.dtype() == "fp32") fp32 = rate.flops_per_second();
    if (rate.dtype() == "bf16") {
      bf16 = rate.flops_per_second();
      bf16_native = rate.native();
    }
  }
  std::string line =
      absl::StrCat(capabilities.device_name(), ": runs ",
                   names(capabilities.native_precisions()), " natively");
  if (!capabilities.emulated_precisions().empty()) {
    absl::StrAppend(&line, "; emulates ",
                    names(capabilities.emulated_precisions()),
                    " (for jobs with resources.emulation: allow)");
  }
  absl::StrAppend(&line, "; fp32 ", fp32 / 1e9, " GFLOP/s, bf16 ", bf16 / 1e9,
                  " GFLOP/s", bf16_native ? "" : " emulated");
  std::vector<std::string> lines = {line};
  if (!capabilities.blas().empty()) {
    lines.push_back(absl::StrCat("fp32 GEMMs run on ", capabilities.blas()));
  }
  for (const std::string& why : capabilities.baseline_degradations()) {
    // Still trains; its savings are marked degraded and left out of totals.
    lines.push_back(absl::StrCat("warning: fp32 baseline degraded: ", why));
  }
  return lines;
}

}  // namespace halftime
