// halftime-worker: probes the device, connects to the scheduler and runs
// each assigned job in its own halftime-train process. Logic in worker.cc.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <climits>
#include <filesystem>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "common/enum_names.h"
#include "worker/capabilities.h"
#include "worker/worker.h"
#include "worker/worker_metrics.h"

namespace {

std::string DefaultTrainerPath() {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return "halftime-train";
  self[n] = '\0';
  return (std::filesystem::path(self).parent_path() / "halftime-train")
      .string();
}

std::string Hostname() {
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  return name[0] ? name : "worker";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"halftime-worker: runs Halftime jobs on this machine's device",
               "halftime-worker"};
  std::string scheduler = "127.0.0.1:50051";
  std::string metrics_address = "127.0.0.1:9465";
  halftime::WorkerOptions options;
  options.name = Hostname();
  options.trainer_binary = DefaultTrainerPath();
  options.data_root = std::filesystem::current_path().string();
  options.work_dir = "halftime-work";
  std::string out_root;
  int slots = 1;
  int threads_per_job = 0;
  double stop_grace_seconds = 30;
  double stall_timeout_seconds = 600;
  halftime::ChannelOptions channel_options;
  app.add_option("--scheduler", scheduler, "Scheduler address")
      ->capture_default_str();
  app.add_option("--metrics", metrics_address, "Serve /metrics on this address")
      ->capture_default_str();
  app.add_option("--name", options.name,
                 "Unique worker name (default: hostname)");
  app.add_option("--slots", slots, "Jobs run at once")
      ->check(CLI::Range(1, 256));
  app.add_option("--threads-per-job", threads_per_job,
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
  app.add_option("--token-file", channel_options.token_file,
                 "File holding the worker's bearer token");
  app.add_option("--tls-ca", channel_options.tls_ca, "CA certificate (PEM)");
  app.add_option("--tls-cert", channel_options.tls_cert,
                 "Client certificate for mTLS (PEM)");
  app.add_option("--tls-key", channel_options.tls_key,
                 "Client key for mTLS (PEM)");
  CLI11_PARSE(app, argc, argv);
  if (out_root.empty()) out_root = options.work_dir + "/outputs";
  options.out_root = out_root;
  options.stop_grace = std::chrono::milliseconds(
      static_cast<int64_t>(stop_grace_seconds * 1000));
  options.stall_timeout = std::chrono::milliseconds(
      static_cast<int64_t>(stall_timeout_seconds * 1000));
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  if (threads_per_job == 0) threads_per_job = std::max(1, cores / slots);

  // Block the stop signals before any thread starts (civetweb, gRPC), so only
  // the waiter below sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto metrics = halftime::WorkerMetrics::Create(metrics_address);
  if (!metrics.ok()) {
    std::cerr << "worker: " << metrics.status().message() << "\n";
    return 1;
  }
  std::cerr << "worker: metrics on "
            << metrics_address.substr(0, metrics_address.rfind(':')) << ":"
            << (*metrics)->port() << "\n";

  std::cerr << "worker: probing the device (" << threads_per_job
            << " threads per job)\n";
  std::error_code ec;
  std::filesystem::create_directories(options.work_dir, ec);
  auto capabilities = halftime::ProbeWithTrainer(
      options.trainer_binary, options.work_dir, slots, threads_per_job);
  if (!capabilities.ok()) {
    std::cerr << "worker: " << capabilities.status().message() << "\n";
    return 1;
  }
  options.capabilities = *capabilities;
  std::string natives;
  for (int p : options.capabilities.native_precisions()) {
    absl::StrAppend(
        &natives, natives.empty() ? "" : ", ",
        halftime::PrecisionName(static_cast<halftime::v1::Precision>(p)));
  }
  double fp32 = 0, bf16 = 0;
  for (const auto& rate : options.capabilities.rates()) {
    if (rate.dtype() == "fp32") fp32 = rate.flops_per_second();
    if (rate.dtype() == "bf16") bf16 = rate.flops_per_second();
  }
  std::cerr << "worker: " << options.capabilities.device_name() << ": runs "
            << natives << " natively; fp32 " << fp32 / 1e9 << " GFLOP/s, bf16 "
            << bf16 / 1e9 << " GFLOP/s\n";
  if (!options.capabilities.blas().empty()) {
    std::cerr << "worker: fp32 GEMMs run on " << options.capabilities.blas()
              << "\n";
  }
  for (const std::string& why : options.capabilities.baseline_degradations()) {
    // Still trains; its savings are marked degraded and left out of totals.
    std::cerr << "worker: warning: fp32 baseline degraded: " << why << "\n";
  }

  channel_options.target = scheduler;
  options.security = channel_options.Security();
  auto channel = halftime::CreateSchedulerChannel(channel_options);
  if (!channel.ok()) {
    std::cerr << "worker: " << channel.status().message() << "\n";
    return 2;
  }
  auto worker = halftime::Worker::Create(options, *channel, metrics->get());
  if (!worker.ok()) {
    std::cerr << "worker: " << worker.status().message() << "\n";
    return 2;
  }

  std::thread signal_waiter([&stop_signals, w = worker->get()] {
    int signal = 0;
    sigwait(&stop_signals, &signal);
    if (signal == SIGTERM) {
      w->Drain();  // a second SIGTERM/SIGINT stops at once
      sigwait(&stop_signals, &signal);
    }
    w->Shutdown();
  });
  signal_waiter.detach();
  std::cerr << "worker: " << options.name << " connecting to " << scheduler
            << "\n";
  (*worker)->Run();
  std::cerr << "worker: stopped\n";
  return 0;
}
