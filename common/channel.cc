#include "common/channel.h"

#include <fcntl.h>
#include <grpc/grpc_security_constants.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/client_interceptor.h>
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
#include "absl/strings/str_cat.h"

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
      ssl.pem_root_certs = *std::move(ca);
    }
    if (!options.tls_cert.empty()) {
      absl::StatusOr<std::string> cert =
          ReadFlagFile("--tls-cert", options.tls_cert, kMaxPemBytes);
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key =
          ReadFlagFile("--tls-key", options.tls_key, kMaxPemBytes);
      if (!key.ok()) return key.status();
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
