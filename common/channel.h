// Client channels to halftime-scheduler, shared by the `halftime` CLI and
// the worker daemon: plaintext or (m)TLS, an optional bearer token sent as
// `authorization: Bearer TOKEN` on every call, 16 MiB messages, and reconnect
// backoff short enough for a restarting scheduler.
//
// Thread-safety: the functions keep no state and are thread-safe; the
// returned channel is thread-safe as every grpc::Channel is.
#ifndef HALFTIME_COMMON_CHANNEL_H_
#define HALFTIME_COMMON_CHANNEL_H_

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace halftime {

// Default scheduler address of every client.
inline constexpr char kDefaultSchedulerTarget[] = "127.0.0.1:50051";

// Largest gRPC message either side accepts.
inline constexpr int kMaxMessageBytes = 16 * 1024 * 1024;

// How to reach the scheduler. The file fields are paths; error messages name
// them by the CLI flags that set them (--token-file, --tls-ca, --tls-cert,
// --tls-key), which the worker daemon shares.
struct ChannelOptions {
  // host:port, or any gRPC target URI (dns:///, unix:).
  std::string target = kDefaultSchedulerTarget;
  // File holding one bearer token; empty: no token.
  std::string token_file;
  // PEM file of the CA that signed the scheduler's certificate; empty with
  // TLS on: the system roots.
  std::string tls_ca;
  // PEM client certificate and its key for mutual TLS; both or neither.
  std::string tls_cert;
  std::string tls_key;
  // Message size limit, both directions.
  int max_message_bytes = kMaxMessageBytes;
  // Longest pause gRPC takes between attempts to reconnect.
  absl::Duration max_reconnect_backoff = absl::Seconds(5);

  // TLS is on when any of the TLS files is named.
  bool UsesTls() const {
    return !tls_ca.empty() || !tls_cert.empty() || !tls_key.empty();
  }
};

// Creates a channel to `options.target`. It connects lazily: an unreachable
// scheduler surfaces as UNAVAILABLE on the first call, not here.
//
// With a token file, every call on the channel carries the token: on TLS
// channels as call credentials (a non-blocking metadata plugin composed with
// the channel credentials), on plaintext channels through a client
// interceptor, since gRPC sends call credentials only over secure channels.
//
// Errors: INVALID_ARGUMENT naming the flag and file, e.g.
// "--token-file /x: no such file", "--tls-cert and --tls-key go together",
// or "--token-file /x: file is empty".
absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateSchedulerChannel(
    const ChannelOptions& options);

// Reads the bearer token from `path` (surrounding whitespace trimmed).
// INVALID_ARGUMENT "--token-file PATH: ..." when the file is missing,
// unreadable, empty, larger than 64 KiB or holds anything but printable
// ASCII.
absl::StatusOr<std::string> ReadBearerToken(const std::string& path);

// Prepares `context` for one call: a deadline `timeout` from now (none when
// `timeout` is absl::InfiniteDuration(), as for long-lived streams). The
// token needs no per-call step: the channel adds it.
void PrepareCallContext(grpc::ClientContext* context, absl::Duration timeout);

}  // namespace halftime

#endif  // HALFTIME_COMMON_CHANNEL_H_
