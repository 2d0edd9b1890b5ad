// halftime-worker: probes the device, connects to the scheduler and runs
// each assigned job in its own halftime-train process. Flags in
// worker_flags.cc, logic in worker.cc.
#include <signal.h>

#include <filesystem>
#include <iostream>
#include <thread>

#include "common/channel.h"
#include "worker/capabilities.h"
#include "worker/worker.h"
#include "worker/worker_flags.h"
#include "worker/worker_metrics.h"

int main(int argc, char** argv) {
  int exit_code = 0;
  auto flags = halftime::ParseWorkerFlags(argc, argv, &exit_code);
  if (!flags) return exit_code;
  halftime::WorkerOptions& options = flags->options;

  // Block the stop signals before any thread starts (civetweb, gRPC), so only
  // the waiter below sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto metrics = halftime::WorkerMetrics::Create(flags->metrics_address);
  if (!metrics.ok()) {
    std::cerr << "worker: " << metrics.status().message() << "\n";
    return 1;
  }
  const std::string& address = flags->metrics_address;
  std::cerr << "worker: metrics on " << address.substr(0, address.rfind(':'))
            << ":" << (*metrics)->port() << "\n";

  std::cerr << "worker: probing the device (" << flags->threads_per_job
            << " threads per job)\n";
  std::error_code ec;
  std::filesystem::create_directories(options.work_dir, ec);
  auto capabilities =
      halftime::ProbeWithTrainer(options.trainer_binary, options.work_dir,
                                 flags->slots, flags->threads_per_job);
  if (!capabilities.ok()) {
    std::cerr << "worker: " << capabilities.status().message() << "\n";
    return 1;
  }
  options.capabilities = *capabilities;
  for (const std::string& line :
       halftime::DescribeCapabilities(options.capabilities)) {
    std::cerr << "worker: " << line << "\n";
  }

  auto channel = halftime::CreateSchedulerChannel(flags->channel);
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
  std::cerr << "worker: " << options.name << " connecting to "
            << flags->scheduler << "\n";
  (*worker)->Run();
  std::cerr << "worker: stopped\n";
  return 0;
}
