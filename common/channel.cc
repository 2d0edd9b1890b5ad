#include "common/channel.h"

#include <fcntl.h>
#include <grpc/grpc_security_constants.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/client_interceptor.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace halftime {
namespace {

constexpr std::size_t kMaxTokenBytes = 64 * 1024;
constexpr std::size_t kMaxPemBytes = 1024 * 1024;

// Reads a whole small file; errors name `flag` and `path`.
absl::StatusOr<std::string> ReadFlagFile(absl::string_view flag,
                                         const std::string& path,
                                         std::size_t max_bytes) {
  auto fail = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": ", why));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    if (error == ENOENT) return fail("no such file");
    return fail(std::strerror(error));
  }
  struct stat info;
  if (::fstat(fd, &info) != 0 || S_ISDIR(info.st_mode)) {
    ::close(fd);
    return fail("is a directory, not a file");
  }
  std::string contents;
  char buffer[8192];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      return fail(std::strerror(error));
    }
    if (n == 0) break;
    contents.append(buffer, static_cast<std::size_t>(n));
    if (contents.size() > max_bytes) {
      ::close(fd);
      return fail(absl::StrCat("larger than ", max_bytes, " bytes"));
    }
  }
  ::close(fd);
  return contents;
}

// OpenSSL objects freed on scope exit.
struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

BioPtr MemoryBio(absl::string_view data) {
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

// Passphrase callback that gives none: an encrypted key fails to load
// instead of OpenSSL prompting on the terminal.
int NoPassphrase(char* /*buf*/, int /*size*/, int /*rwflag*/,
                 void* /*userdata*/) {
  return 0;
}

// Adds the bearer token to calls on TLS channels. Non-blocking: the token is
// in memory, so gRPC may call it on any thread without a thread hop.
class BearerTokenPlugin : public grpc::MetadataCredentialsPlugin {
 public:
  explicit BearerTokenPlugin(std::string header_value)
      : header_value_(std::move(header_value)) {}

  bool IsBlocking() const override { return false; }
  const char* GetType() const override { return "halftime-bearer-token"; }

  grpc::Status GetMetadata(
      grpc::string_ref /*service_url*/, grpc::string_ref /*method_name*/,
      const grpc::AuthContext& /*channel_auth_context*/,
      std::multimap<std::string, std::string>* metadata) override {
    metadata->emplace("authorization", header_value_);
    return grpc::Status::OK;
  }

  std::string DebugString() override { return "halftime bearer token"; }

 private:
  const std::string header_value_;
};

// Adds the bearer token to the initial metadata of every call on a
// plaintext channel.
class BearerTokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(const std::string* header_value)
      : header_value_(header_value) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization",
                                                 *header_value_);
    }
    methods->Proceed();
  }

 private:
  const std::string* header_value_;  // Owned by the factory.
};

// The channel owns its interceptor factories, so the header outlives every
// interceptor made from it.
class BearerTokenInterceptorFactory
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(std::string header_value)
      : header_value_(std::move(header_value)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* /*info*/) override {
    return new BearerTokenInterceptor(&header_value_);
  }

 private:
  const std::string header_value_;
};

}  // namespace

absl::StatusOr<std::string> ReadBearerToken(const std::string& path) {
  absl::StatusOr<std::string> contents =
      ReadFlagFile("--token-file", path, kMaxTokenBytes);
  if (!contents.ok()) return contents.status();
  std::string token(absl::StripAsciiWhitespace(*contents));
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--token-file ", path, ": file is empty"));
  }
  for (char c : token) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(
          absl::StrCat("--token-file ", path,
                       ": the token must be one word of printable ASCII"));
    }
  }
  return token;
}

absl::Status CheckPemCertificates(absl::string_view flag,
                                  absl::string_view path,
                                  absl::string_view pem) {
  BioPtr bio = MemoryBio(pem);
  int certificates = 0;
  while (bio != nullptr) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr));
    if (cert == nullptr) break;
    ++certificates;
  }
  ERR_clear_error();
  if (certificates == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " ", path,
        ": holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
  }
  return absl::OkStatus();
}

absl::Status CheckPemKeyPair(absl::string_view cert_path,
                             absl::string_view cert_pem,
                             absl::string_view key_path,
                             absl::string_view key_pem) {
  BioPtr cert_bio = MemoryBio(cert_pem);
  BioPtr key_bio = MemoryBio(key_pem);
  X509Ptr cert;
  PkeyPtr key;
  if (cert_bio != nullptr) {
    cert.reset(
        PEM_read_bio_X509(cert_bio.get(), nullptr, NoPassphrase, nullptr));
  }
  if (key_bio != nullptr) {
    key.reset(
        PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase, nullptr));
  }
  const bool matches = cert != nullptr && key != nullptr &&
                       X509_check_private_key(cert.get(), key.get()) == 1;
  ERR_clear_error();
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls-cert ", cert_path,
        ": holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
  }
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-key ", key_path,
                     ": holds no unencrypted PEM private key (-----BEGIN "
                     "PRIVATE KEY-----)"));
  }
  if (!matches) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls-key ", key_path,
        ": does not match the certificate in --tls-cert ", cert_path));
  }
  return absl::OkStatus();
}

std::string DescribeConnectionFailure(absl::string_view grpc_message,
                                      ChannelSecurity security) {
  const std::string text = absl::AsciiStrToLower(grpc_message);
  // "failed to connect to all addresses; last error: ...": no connection
  // came up, as opposed to one that broke later.
  const bool connecting = absl::StrContains(text, "failed to connect");
  if (absl::StrContains(text, "connection refused")) {
    return "connection refused";
  }
  if (absl::StrContains(text, "dns resolution failed") ||
      absl::StrContains(text, "name resolution") ||
      absl::StrContains(text, "domain name not found")) {
    return "cannot resolve the host name";
  }
  if (absl::StrContains(text, "wrong version number")) {
    return "TLS handshake failed: the scheduler does not speak TLS (is it "
           "started without --tls-cert? then drop --tls-ca, --tls-cert and "
           "--tls-key)";
  }
  if (absl::StrContains(text, "certificate verify failed")) {
    return "TLS handshake failed: the scheduler's certificate did not verify "
           "(check --tls-ca: signed by another CA, expired, or not issued for "
           "this address)";
  }
  if (absl::StrContains(text, "peer name") ||
      absl::StrContains(text, "not in peer certificate")) {
    return "TLS handshake failed: the scheduler's certificate is not issued "
           "for this address (its subject alternative names must hold the "
           "host name or IP address you connect to)";
  }
  const bool client_certificate_refused =
      absl::StrContains(text, "alert unknown ca") ||
      absl::StrContains(text, "alert bad certificate") ||
      absl::StrContains(text, "alert certificate expired") ||
      absl::StrContains(text, "alert certificate required") ||
      absl::StrContains(text, "alert handshake failure");
  const bool closed = absl::StrContains(text, "socket closed") ||
                      absl::StrContains(text, "connection reset") ||
                      absl::StrContains(text, "broken pipe") ||
                      absl::StrContains(text, "end of file");
  if (client_certificate_refused ||
      (closed && connecting && security != ChannelSecurity::kPlaintext)) {
    if (security == ChannelSecurity::kMutualTls) {
      return "the scheduler closed the connection during the TLS handshake: "
             "it refused the client certificate (check --tls-cert and "
             "--tls-key: the certificate must be signed by the CA the "
             "scheduler trusts with --tls-ca, and not expired)";
    }
    return "the scheduler closed the connection during the TLS handshake: it "
           "requires a client certificate (pass --tls-cert and --tls-key)";
  }
  if (absl::StrContains(text, "handshake") || absl::StrContains(text, "ssl") ||
      absl::StrContains(text, "tls")) {
    return "TLS handshake failed (check --tls-ca, --tls-cert and --tls-key)";
  }
  if (closed) {
    if (security == ChannelSecurity::kPlaintext) {
      return "the connection was closed (a plaintext client talking to a TLS "
             "scheduler? then pass --tls-ca)";
    }
    return "the connection was closed";
  }
  if (absl::StrContains(text, "deadline") ||
      absl::StrContains(text, "timed out") ||
      absl::StrContains(text, "timeout")) {
    return "connection timed out";
  }
  if (absl::StrContains(text, "no route to host")) return "no route to host";
  if (absl::StrContains(text, "network is unreachable")) {
    return "network is unreachable";
  }
  if (grpc_message.empty()) return "unavailable";
  return absl::StrReplaceAll(absl::StripAsciiWhitespace(grpc_message),
                             {{"\n", " "}, {"\r", " "}});
}

std::string DescribeSchedulerError(const absl::Status& status,
                                   ChannelSecurity security) {
  const absl::string_view message = status.message();
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      return DescribeConnectionFailure(message, security);
    case absl::StatusCode::kUnauthenticated:
      return absl::StrCat(
          "authentication failed: check --token-file",
          message.empty() ? "" : absl::StrCat(" (", message, ")"));
    case absl::StatusCode::kPermissionDenied:
      return absl::StrCat("permission denied (check --token-file)",
                          message.empty() ? "" : absl::StrCat(": ", message));
    default:
      if (message.empty()) return absl::StatusCodeToString(status.code());
      return std::string(message);
  }
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateSchedulerChannel(
    const ChannelOptions& options) {
  if (options.target.empty()) {
    return absl::InvalidArgumentError("--server: empty scheduler address");
  }
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  std::string authorization;
  if (!options.token_file.empty()) {
    absl::StatusOr<std::string> token = ReadBearerToken(options.token_file);
    if (!token.ok()) return token.status();
    authorization = absl::StrCat("Bearer ", *token);
  }

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(
                  absl::ToInt64Milliseconds(options.max_reconnect_backoff)));
  args.SetInt(
      GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
      static_cast<int>(std::min<int64_t>(
          250, absl::ToInt64Milliseconds(options.max_reconnect_backoff))));

  if (options.UsesTls()) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca.empty()) {
      absl::StatusOr<std::string> ca =
          ReadFlagFile("--tls-ca", options.tls_ca, kMaxPemBytes);
      if (!ca.ok()) return ca.status();
      if (absl::Status s =
              CheckPemCertificates("--tls-ca", options.tls_ca, *ca);
          !s.ok()) {
        return s;
      }
      ssl.pem_root_certs = *std::move(ca);
    }
    if (!options.tls_cert.empty()) {
      absl::StatusOr<std::string> cert =
          ReadFlagFile("--tls-cert", options.tls_cert, kMaxPemBytes);
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key =
          ReadFlagFile("--tls-key", options.tls_key, kMaxPemBytes);
      if (!key.ok()) return key.status();
      if (absl::Status s =
              CheckPemKeyPair(options.tls_cert, *cert, options.tls_key, *key);
          !s.ok()) {
        return s;
      }
      ssl.pem_cert_chain = *std::move(cert);
      ssl.pem_private_key = *std::move(key);
    }
    std::shared_ptr<grpc::ChannelCredentials> credentials =
        grpc::SslCredentials(ssl);
    if (!authorization.empty()) {
      credentials = grpc::CompositeChannelCredentials(
          credentials, grpc::MetadataCredentialsFromPlugin(
                           std::make_unique<BearerTokenPlugin>(authorization)));
    }
    return grpc::CreateCustomChannel(options.target, credentials, args);
  }

  if (authorization.empty()) {
    return grpc::CreateCustomChannel(options.target,
                                     grpc::InsecureChannelCredentials(), args);
  }
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(
      std::make_unique<BearerTokenInterceptorFactory>(authorization));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      options.target, grpc::InsecureChannelCredentials(), args,
      std::move(interceptors));
}

void PrepareCallContext(grpc::ClientContext* context, absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return;
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

}  // namespace halftime
