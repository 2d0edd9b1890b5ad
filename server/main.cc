// halftime-scheduler: parses flags, runs a SchedulerServer until SIGTERM or
// SIGINT, then shuts down gracefully.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/server.h"

namespace {

// Parses "15s", "500ms", "1m" (absl durations) or a plain number of seconds.
bool ParseDurationFlag(const std::string& text, absl::Duration* out) {
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds)) {
    *out = absl::Seconds(seconds);
    return true;
  }
  return absl::ParseDuration(text, out);
}

std::string HostOf(const std::string& address) {
  size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "halftime-scheduler: places mixed-precision fine-tuning jobs "
      "on workers and records what they saved"};
  halftime::server::ServerOptions options;
  std::string lease_grace = "15s";
  std::string heartbeat_interval = "2s";
  std::vector<std::string> device_prices;
  app.add_option("--listen", options.listen,
                 "gRPC address (port 0 picks a free port)")
      ->capture_default_str();
  app.add_option("--metrics", options.metrics_listen,
                 "Prometheus /metrics address (port 0 picks one; empty: off)")
      ->capture_default_str();
  app.add_option("--data-dir", options.data_dir,
                 "Directory of the database and checkpoints")
      ->required();
  app.add_option("--lease-grace", lease_grace,
                 "A worker silent this long loses its jobs (e.g. 15s)")
      ->capture_default_str();
  app.add_option("--heartbeat-interval", heartbeat_interval,
                 "Heartbeat period asked of workers (e.g. 2s)")
      ->capture_default_str();
  app.add_option("--token-file", options.token_file,
                 "Bearer tokens, lines `user TOKEN` / `worker TOKEN`");
  app.add_option("--tls-cert", options.tls.cert, "Server certificate (PEM)");
  app.add_option("--tls-key", options.tls.key, "Server private key (PEM)");
  app.add_option("--tls-ca", options.tls.ca,
                 "CA verifying client certificates (mTLS)");
  app.add_option("--device-price", device_prices,
                 "Device-hour price NAME=PRICE (repeatable); NAME matches "
                 "the device name or a part of it")
      ->take_all();
  app.add_option("--default-device-price", options.prices.default_price,
                 "Device-hour price of devices no --device-price matches")
      ->capture_default_str();
  app.add_option("--currency", options.prices.currency,
                 "Currency of the prices")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!ParseDurationFlag(lease_grace, &options.lease_grace)) {
    std::fprintf(stderr, "--lease-grace: not a duration: %s\n",
                 lease_grace.c_str());
    return 2;
  }
  if (!ParseDurationFlag(heartbeat_interval, &options.heartbeat_interval)) {
    std::fprintf(stderr, "--heartbeat-interval: not a duration: %s\n",
                 heartbeat_interval.c_str());
    return 2;
  }
  for (const std::string& price : device_prices) {
    if (absl::Status s = options.prices.AddFlag(price); !s.ok()) {
      std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
      return 2;
    }
  }
  options.tick_interval =
      std::min(absl::Milliseconds(250), options.lease_grace / 4);

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
