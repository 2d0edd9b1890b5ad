#include "server/auth.h"

#include <grpcpp/client_context.h>
#include <grpcpp/security/credentials.h>
#include <openssl/crypto.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/channel.h"

namespace halftime::auth {
namespace {

constexpr size_t kMaxFileBytes = 1 << 20;

absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(what, ": cannot open \"", path, "\""));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  std::string data = buffer.str();
  if (data.size() > kMaxFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": \"", path, "\" is larger than 1 MiB"));
  }
  return data;
}

// A short lowercase word: safe to repeat in an error. Anything else may be a
// token in the role's place, and errors never hold tokens.
bool LooksLikeRoleName(absl::string_view word) {
  if (word.empty() || word.size() > 16) return false;
  for (char c : word) {
    if (!absl::ascii_islower(c)) return false;
  }
  return true;
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

absl::Status CheckTlsFiles(const TlsFiles& tls, bool server) {
  if (tls.cert.empty() != tls.key.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key: give both or neither");
  }
  if (server && !tls.ca.empty() && tls.cert.empty()) {
    return absl::InvalidArgumentError(
        "--tls-ca: needs --tls-cert and --tls-key");
  }
  return absl::OkStatus();
}

}  // namespace

const char* RoleName(Role role) {
  return role == Role::kUser ? "user" : "worker";
}

absl::StatusOr<TokenTable> TokenTable::Parse(absl::string_view text,
                                             absl::string_view source) {
  TokenTable table;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    std::string where = absl::StrCat(source, ":", line_number, ": ");
    if (fields.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "expected \"user TOKEN\" or \"worker TOKEN\""));
    }
    Role role;
    if (fields[0] == "user") {
      role = Role::kUser;
    } else if (fields[0] == "worker") {
      role = Role::kWorker;
    } else if (LooksLikeRoleName(fields[0])) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "unknown role \"", fields[0], "\"; expected user or worker"));
    } else {
      // Not echoed: it may be a token written before its role.
      return absl::InvalidArgumentError(absl::StrCat(
          where, "the first word is not a role; expected \"user TOKEN\" or ",
          "\"worker TOKEN\""));
    }
    if (table.Find(fields[1]).has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(where, "duplicate token"));
    }
    table.entries_.emplace_back(role, std::string(fields[1]));
  }
  if (table.entries_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source,
                     ": no tokens; expected lines \"user TOKEN\" or "
                     "\"worker TOKEN\""));
  }
  return table;
}

absl::StatusOr<TokenTable> TokenTable::LoadFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path, "--token-file");
  if (!text.ok()) return text.status();
  return Parse(*text, path);
}

std::optional<Role> TokenTable::Find(absl::string_view token) const {
  std::optional<Role> found;
  for (const auto& [role, candidate] : entries_) {
    if (ConstantTimeEquals(candidate, token)) found = role;
  }
  return found;
}

absl::Status Authorizer::Check(const grpc::ServerContextBase& context,
                               Role need) const {
  if (!tokens_.has_value()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return absl::UnauthenticatedError(
        "missing bearer token (authorization metadata)");
  }
  absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kPrefix = "Bearer ";
  if (!absl::StartsWithIgnoreCase(value, kPrefix)) {
    return absl::UnauthenticatedError(
        "authorization metadata is not \"Bearer TOKEN\"");
  }
  std::optional<Role> role =
      tokens_->Find(absl::StripAsciiWhitespace(value.substr(kPrefix.size())));
  if (!role.has_value()) {
    return absl::UnauthenticatedError("unknown bearer token");
  }
  if (*role != need) {
    return absl::PermissionDeniedError(
        absl::StrCat("a ", RoleName(*role), " token cannot call this method; ",
                     "it needs a ", RoleName(need), " token"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& tls) {
  if (absl::Status s = CheckTlsFiles(tls, /*server=*/true); !s.ok()) return s;
  if (tls.cert.empty()) return grpc::InsecureServerCredentials();
  absl::StatusOr<std::string> cert = ReadFile(tls.cert, "--tls-cert");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadFile(tls.key, "--tls-key");
  if (!key.ok()) return key.status();
  // gRPC reports bad files only as "cannot listen"; name the file instead.
  if (absl::Status s = CheckPemKeyPair(tls.cert, *cert, tls.key, *key);
      !s.ok()) {
    return s;
  }
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (!tls.ca.empty()) {
    absl::StatusOr<std::string> ca = ReadFile(tls.ca, "--tls-ca");
    if (!ca.ok()) return ca.status();
    if (absl::Status s = CheckPemCertificates("--tls-ca", tls.ca, *ca);
        !s.ok()) {
      return s;
    }
    options.pem_root_certs = *ca;
    options.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  options.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(options);
}

}  // namespace halftime::auth
