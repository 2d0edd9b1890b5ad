// halftime_auth: bearer-token authentication and TLS credentials for the
// scheduler. Clients (CLI, worker) use common/channel.h.
//
// Token file (`--token-file FILE`): one token per line as `ROLE TOKEN`,
// ROLE being `user` (may call the Scheduler service) or `worker` (may call
// the WorkerGateway service); blank lines and lines starting with `#` are
// ignored. Example:
//
//   # halftime tokens
//   user   3f9a...c1
//   worker 77b0...e4
//
// Calls carry `authorization: Bearer TOKEN` metadata. A missing or unknown
// token is UNAUTHENTICATED; a valid token of the other role (e.g. a user
// token on WorkerGateway.Connect) is PERMISSION_DENIED. Health checks
// (grpc.health.v1) and reflection stay open. Tokens are never logged.
//
// TLS: `--tls-cert` + `--tls-key` serve TLS; adding `--tls-ca` requires and
// verifies client certificates against that CA (mTLS).
//
// Thread-safety: TokenTable and Authorizer are immutable after creation and
// thread-safe; the free functions are thread-safe.
#ifndef HALFTIME_SERVER_AUTH_H_
#define HALFTIME_SERVER_AUTH_H_

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_context.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace halftime::auth {

// Who a token belongs to.
enum class Role { kUser, kWorker };

// "user" or "worker".
const char* RoleName(Role role);

// Tokens and their roles.
class TokenTable {
 public:
  // Parses token-file text; `source` names it in errors. INVALID_ARGUMENT
  // ("FILE:LINE: ...") for an unknown role, a missing or duplicate token,
  // or a file without tokens.
  static absl::StatusOr<TokenTable> Parse(absl::string_view text,
                                          absl::string_view source);

  // Reads and parses `path`. NOT_FOUND when it does not exist, otherwise as
  // Parse.
  static absl::StatusOr<TokenTable> LoadFile(const std::string& path);

  // The role of `token` (compared in constant time), or nullopt.
  std::optional<Role> Find(absl::string_view token) const;

  size_t size() const { return entries_.size(); }

 private:
  std::vector<std::pair<Role, std::string>> entries_;
};

// Checks the bearer token of incoming calls.
class Authorizer {
 public:
  // Without a table every call passes (no --token-file).
  explicit Authorizer(std::optional<TokenTable> tokens)
      : tokens_(std::move(tokens)) {}

  // OK when the call's token has role `need` (or auth is off). Errors:
  // UNAUTHENTICATED (missing, malformed or unknown token),
  // PERMISSION_DENIED (token of the other role).
  absl::Status Check(const grpc::ServerContextBase& context, Role need) const;

  bool enabled() const { return tokens_.has_value(); }

 private:
  std::optional<TokenTable> tokens_;
};

// PEM files of a TLS setup; empty fields are not used.
struct TlsFiles {
  // Certificate chain of this side.
  std::string cert;
  // Private key of this side.
  std::string key;
  // CA that verifies the peer (server: client certs -> mTLS).
  std::string ca;
};

// Server credentials: insecure when `tls` names no files, TLS with cert and
// key, mTLS when ca is set too. Errors: INVALID_ARGUMENT for a cert
// without a key (or the reverse) or a ca without them, NOT_FOUND for a
// missing file.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& tls);

}  // namespace halftime::auth

#endif  // HALFTIME_SERVER_AUTH_H_
