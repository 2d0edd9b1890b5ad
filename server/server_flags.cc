#include "server/server_flags.h"

#include <CLI/CLI.hpp>
#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/time/time.h"

namespace halftime::server {
namespace {

// Parses "15s", "500ms", "1m" (absl durations) or a plain number of seconds;
// a duration must be positive.
bool ParseDurationFlag(const std::string& text, absl::Duration* out) {
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds)) {
    *out = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, out)) {
    return false;
  }
  return *out > absl::ZeroDuration() && *out != absl::InfiniteDuration();
}

}  // namespace

std::optional<ServerOptions> ParseServerFlags(
    const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
    int* exit_code) {
  CLI::App app{
      "halftime-scheduler: places mixed-precision fine-tuning jobs "
      "on workers and records what they saved",
      "halftime-scheduler"};
  ServerOptions options;
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
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    *exit_code = app.exit(e, out, err) == 0 ? 0 : 2;
    return std::nullopt;
  }
  auto bad = [&](const std::string& message) {
    err << message << "\n";
    *exit_code = 2;
    return std::nullopt;
  };
  if (!ParseDurationFlag(lease_grace, &options.lease_grace)) {
    return bad("--lease-grace: not a positive duration: " + lease_grace);
  }
  if (!ParseDurationFlag(heartbeat_interval, &options.heartbeat_interval)) {
    return bad("--heartbeat-interval: not a positive duration: " +
               heartbeat_interval);
  }
  if (options.prices.default_price < 0) {
    return bad("--default-device-price: must be 0 or more");
  }
  for (const std::string& price : device_prices) {
    if (absl::Status s = options.prices.AddFlag(price); !s.ok()) {
      return bad(std::string(s.message()));
    }
  }
  options.tick_interval =
      std::min(absl::Milliseconds(250), options.lease_grace / 4);
  return options;
}

}  // namespace halftime::server
