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

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace halftime {

// Default scheduler address of every client.
inline constexpr char kDefaultSchedulerTarget[] = "127.0.0.1:50051";

// How a client channel is secured; phrases its connection errors.
enum class ChannelSecurity {
  kPlaintext,
  // TLS verifying the scheduler; no client certificate.
  kTls,
  // TLS presenting a client certificate too (--tls-cert/--tls-key).
  kMutualTls,
};

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

  ChannelSecurity Security() const {
    if (!UsesTls()) return ChannelSecurity::kPlaintext;
    return tls_cert.empty() ? ChannelSecurity::kTls
                            : ChannelSecurity::kMutualTls;
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
// TLS files are checked here (see CheckPemCertificates, CheckPemKeyPair),
// since gRPC would report a bad one only on the first call, as a vague
// connection failure.
//
// Errors: INVALID_ARGUMENT naming the flag and file, e.g.
// "--token-file /x: no such file", "--tls-cert and --tls-key go together",
// "--tls-ca /x: holds no PEM certificate" or "--token-file /x: file is
// empty".
absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateSchedulerChannel(
    const ChannelOptions& options);

// Reads the bearer token from `path` (surrounding whitespace trimmed).
// INVALID_ARGUMENT "--token-file PATH: ..." when the file is missing,
// unreadable, empty, larger than 64 KiB or holds anything but printable
// ASCII.
absl::StatusOr<std::string> ReadBearerToken(const std::string& path);

// Checks the text of a PEM file named by `flag` (--tls-ca, --tls-cert):
// INVALID_ARGUMENT "FLAG PATH: holds no PEM certificate ..." unless it holds
// at least one certificate that parses.
absl::Status CheckPemCertificates(absl::string_view flag,
                                  absl::string_view path,
                                  absl::string_view pem);

// Checks that `key_pem` (from --tls-key `key_path`) is an unencrypted PEM
// private key belonging to the first certificate of `cert_pem` (from
// --tls-cert `cert_path`). INVALID_ARGUMENT naming the flag and file, e.g.
// "--tls-key /k.pem: does not match the certificate in --tls-cert /c.pem".
// Never prompts for a passphrase.
absl::Status CheckPemKeyPair(absl::string_view cert_path,
                             absl::string_view cert_pem,
                             absl::string_view key_path,
                             absl::string_view key_pem);

// gRPC's message of a call that could not reach the scheduler (UNAVAILABLE),
// in words: "connection refused", "cannot resolve the host name", "TLS
// handshake failed: the scheduler's certificate did not verify ...", "the
// scheduler closed the connection during the TLS handshake ...", or the
// message itself (on one line) when nothing better is known. `security` is
// the caller's channel's, to name the flag to check.
std::string DescribeConnectionFailure(absl::string_view grpc_message,
                                      ChannelSecurity security);

// A failed call to the scheduler in one line for logs: UNAVAILABLE as
// DescribeConnectionFailure, UNAUTHENTICATED and PERMISSION_DENIED pointing
// at --token-file, otherwise the message (or the code's name). Never holds
// the token. `status` must not be OK.
std::string DescribeSchedulerError(const absl::Status& status,
                                   ChannelSecurity security);

// Prepares `context` for one call: a deadline `timeout` from now (none when
// `timeout` is absl::InfiniteDuration(), as for long-lived streams). The
// token needs no per-call step: the channel adds it.
void PrepareCallContext(grpc::ClientContext* context, absl::Duration timeout);

}  // namespace halftime

#endif  // HALFTIME_COMMON_CHANNEL_H_
