// halftime-scheduler: parses flags, runs a SchedulerServer until SIGTERM or
// SIGINT, then shuts down gracefully.
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "server/server.h"
#include "server/server_flags.h"

namespace {

std::string HostOf(const std::string& address) {
  size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

}  // namespace

int main(int argc, char** argv) {
  int exit_code = 0;
  std::optional<halftime::server::ServerOptions> parsed =
      halftime::server::ParseServerFlags(
          std::vector<std::string>(argv, argv + argc), std::cout, std::cerr,
          &exit_code);
  if (!parsed) return exit_code;
  const halftime::server::ServerOptions& options = *parsed;

  // A write past RLIMIT_FSIZE (a quota, a size-capped volume) must fail
  // with EFBIG and surface as a store or checkpoint error, not kill the
  // scheduler with SIGXFSZ's default action.
  signal(SIGXFSZ, SIG_IGN);

  // Signals are taken synchronously by this thread; block them before any
  // other thread starts so none of them gets one.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<halftime::server::SchedulerServer>> server =
      halftime::server::SchedulerServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "halftime-scheduler: %s\n",
                 std::string(server.status().message()).c_str());
    return server.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::fprintf(stderr, "listening on %s:%d\n", HostOf(options.listen).c_str(),
               (*server)->port());
  if ((*server)->metrics_port() != 0) {
    std::fprintf(stderr, "metrics on %s:%d\n",
                 HostOf(options.metrics_listen).c_str(),
                 (*server)->metrics_port());
  }
  std::fflush(stderr);
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  std::fprintf(stderr, "halftime-scheduler: %s, shutting down\n",
               signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->Shutdown();
  return 0;
}
