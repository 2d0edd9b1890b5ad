// common/channel: token files, TLS options, and the bearer token reaching
// the scheduler over plaintext and TLS channels.
#include "common/channel.h"

#include <gmock/gmock.h>
#include <grpcpp/security/server_credentials.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/status.h"
#include "tests/client/cli_test_util.h"

namespace halftime::testing {
namespace {

using ::testing::HasSubstr;

TEST(ReadBearerTokenTest, ErrorsNameTheFlagAndFile) {
  EXPECT_EQ(ReadBearerToken("/nonexistent/token").status(),
            absl::InvalidArgumentError(
                "--token-file /nonexistent/token: no such file"));
  const std::string empty = WriteTempFile("empty-token", " \n");
  EXPECT_EQ(ReadBearerToken(empty).status().message(),
            absl::StrCat("--token-file ", empty, ": file is empty"));
  const std::string two_words = WriteTempFile("two-words", "abc def\n");
  EXPECT_THAT(ReadBearerToken(two_words).status().message(),
              HasSubstr("one word of printable ASCII"));
  EXPECT_THAT(ReadBearerToken(::testing::TempDir()).status().message(),
              HasSubstr("is a directory"));
  EXPECT_EQ(*ReadBearerToken(WriteTempFile("token", "\tabc.DEF-123\n")),
            "abc.DEF-123");
}

TEST(CreateSchedulerChannelTest, RejectsIncompleteOptions) {
  ChannelOptions options;
  options.tls_key = "/key.pem";
  EXPECT_EQ(CreateSchedulerChannel(options).status(),
            absl::InvalidArgumentError("--tls-cert and --tls-key go together"));
  options = ChannelOptions{};
  options.tls_ca = "/nonexistent/ca.pem";
  EXPECT_EQ(CreateSchedulerChannel(options).status().message(),
            "--tls-ca /nonexistent/ca.pem: no such file");
  options = ChannelOptions{};
  options.target = "";
  EXPECT_FALSE(CreateSchedulerChannel(options).ok());
}

TEST(PrepareCallContextTest, SetsTheDeadline) {
  grpc::ClientContext context;
  PrepareCallContext(&context, absl::Seconds(10));
  const auto left = context.deadline() - std::chrono::system_clock::now();
  EXPECT_GT(left, std::chrono::seconds(9));
  EXPECT_LE(left, std::chrono::seconds(10));
  grpc::ClientContext stream;
  PrepareCallContext(&stream, absl::InfiniteDuration());
  EXPECT_GT(stream.deadline(),
            std::chrono::system_clock::now() + std::chrono::hours(24 * 365));
}

absl::Status GetWorkers(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = v1::Scheduler::NewStub(channel);
  grpc::ClientContext context;
  PrepareCallContext(&context, absl::Seconds(10));
  v1::ListWorkersResponse response;
  return FromGrpcStatus(
      stub->ListWorkers(&context, v1::ListWorkersRequest(), &response));
}

TEST(CreateSchedulerChannelTest, PlaintextChannelSendsTheToken) {
  FakeScheduler fake;
  fake.required_token = "plain-token";
  FakeServer server(&fake);
  ChannelOptions options;
  options.target = server.address();
  options.token_file = WriteTempFile("plain-token", "plain-token\n");
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      CreateSchedulerChannel(options);
  ASSERT_TRUE(channel.ok()) << channel.status();
  // Twice: each call carries the token.
  EXPECT_TRUE(GetWorkers(*channel).ok());
  EXPECT_TRUE(GetWorkers(*channel).ok());
  EXPECT_EQ(fake.authorization_headers.size(), 2u);
}

// A self-signed certificate for 127.0.0.1, made with the openssl CLI.
struct TestCertificate {
  std::string cert_path;
  std::string key_path;
  std::string cert;
  std::string key;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool MakeCertificate(TestCertificate* out) {
  // A fresh directory per certificate: ctest runs these tests as parallel
  // processes sharing TempDir, and one overwriting another's files made the
  // handshake fail at random.
  std::string dir = ::testing::TempDir() + "/halftime-cert-XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) return false;
  out->cert_path = dir + "/cert.pem";
  out->key_path = dir + "/key.pem";
  const std::string command = absl::StrCat(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout ",
      out->key_path, " -out ", out->cert_path, " >/dev/null 2>&1");
  if (std::system(command.c_str()) != 0) return false;
  out->cert = ReadAll(out->cert_path);
  out->key = ReadAll(out->key_path);
  return !out->cert.empty() && !out->key.empty();
}

TEST(CreateSchedulerChannelTest, MutualTlsChannelSendsTheToken) {
  TestCertificate certificate;
  if (!MakeCertificate(&certificate)) GTEST_SKIP() << "openssl unavailable";
  grpc::SslServerCredentialsOptions ssl(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_root_certs = certificate.cert;
  ssl.pem_key_cert_pairs.push_back({certificate.key, certificate.cert});
  FakeScheduler fake;
  fake.required_token = "tls-token";
  FakeServer server(&fake, grpc::SslServerCredentials(ssl));

  ChannelOptions options;
  options.target = server.address();
  options.tls_ca = certificate.cert_path;
  options.tls_cert = certificate.cert_path;
  options.tls_key = certificate.key_path;
  options.token_file = WriteTempFile("tls-token", "tls-token");
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      CreateSchedulerChannel(options);
  ASSERT_TRUE(channel.ok()) << channel.status();
  EXPECT_TRUE(GetWorkers(*channel).ok());
  ASSERT_EQ(fake.authorization_headers.size(), 1u);
  EXPECT_EQ(fake.authorization_headers[0], "Bearer tls-token");

  // Without a client certificate the handshake fails: a sentence, exit 1.
  CliRun run = RunHalftime({"--server", server.address(), "--tls-ca",
                            certificate.cert_path, "workers"});
  EXPECT_EQ(run.exit_code, kExitFailure);
  EXPECT_THAT(run.err,
              HasSubstr("cannot reach scheduler at " + server.address()));
  EXPECT_THAT(run.err, HasSubstr("requires a client certificate"));
}

TEST(CheckPemTest, CertificatesAndMatchingKeys) {
  TestCertificate first;
  if (!MakeCertificate(&first)) GTEST_SKIP() << "openssl unavailable";
  TestCertificate second;
  ASSERT_TRUE(MakeCertificate(&second));
  EXPECT_TRUE(CheckPemCertificates("--tls-ca", "ca.pem", first.cert).ok());
  EXPECT_TRUE(
      CheckPemCertificates("--tls-ca", "ca.pem", first.cert + second.cert)
          .ok());
  EXPECT_EQ(
      CheckPemCertificates("--tls-ca", "ca.pem", "not a certificate"),
      absl::InvalidArgumentError("--tls-ca ca.pem: holds no PEM certificate "
                                 "(-----BEGIN CERTIFICATE-----)"));
  EXPECT_FALSE(CheckPemCertificates("--tls-ca", "key.pem", first.key).ok());

  EXPECT_TRUE(CheckPemKeyPair("c.pem", first.cert, "k.pem", first.key).ok());
  EXPECT_EQ(CheckPemKeyPair("c.pem", first.cert, "k.pem", second.key),
            absl::InvalidArgumentError("--tls-key k.pem: does not match the "
                                       "certificate in --tls-cert c.pem"));
  EXPECT_THAT(
      CheckPemKeyPair("c.pem", first.cert, "k.pem", first.cert).message(),
      HasSubstr("--tls-key k.pem: holds no unencrypted PEM private key"));
  EXPECT_THAT(CheckPemKeyPair("c.pem", first.key, "k.pem", first.key).message(),
              HasSubstr("--tls-cert c.pem: holds no PEM certificate"));
  // An encrypted key fails without prompting for its passphrase.
  const std::string encrypted = ::testing::TempDir() + "/encrypted-key.pem";
  const std::string command =
      absl::StrCat("openssl pkey -in ", first.key_path,
                   " -aes256 -passout pass:secret -out ", encrypted,
                   " >/dev/null 2>&1 </dev/null");
  ASSERT_EQ(std::system(command.c_str()), 0);
  EXPECT_THAT(CheckPemKeyPair("c.pem", first.cert, "k.pem", ReadAll(encrypted))
                  .message(),
              HasSubstr("holds no unencrypted PEM private key"));
}

TEST(CreateSchedulerChannelTest, UnusableTlsFilesAreNamedUpFront) {
  TestCertificate first;
  if (!MakeCertificate(&first)) GTEST_SKIP() << "openssl unavailable";
  const std::string cert = WriteTempFile("first-cert.pem", first.cert);
  const std::string key = WriteTempFile("first-key.pem", first.key);
  TestCertificate second;
  ASSERT_TRUE(MakeCertificate(&second));
  const std::string other_key = WriteTempFile("second-key.pem", second.key);
  const std::string junk = WriteTempFile("junk.pem", "junk\n");

  ChannelOptions options;
  options.tls_ca = junk;
  EXPECT_EQ(CreateSchedulerChannel(options).status().message(),
            absl::StrCat("--tls-ca ", junk,
                         ": holds no PEM certificate "
                         "(-----BEGIN CERTIFICATE-----)"));
  options.tls_ca = cert;
  options.tls_cert = cert;
  options.tls_key = other_key;
  EXPECT_EQ(
      CreateSchedulerChannel(options).status().message(),
      absl::StrCat("--tls-key ", other_key,
                   ": does not match the certificate in --tls-cert ", cert));
  options.tls_key = key;
  EXPECT_TRUE(CreateSchedulerChannel(options).ok());
}

TEST(DescribeConnectionFailureTest, NamesTheTlsProblem) {
  constexpr ChannelSecurity kPlain = ChannelSecurity::kPlaintext;
  constexpr ChannelSecurity kTls = ChannelSecurity::kTls;
  constexpr ChannelSecurity kMutual = ChannelSecurity::kMutualTls;
  const std::string prefix =
      "failed to connect to all addresses; last error: UNAVAILABLE: "
      "ipv4:127.0.0.1:50051: ";
  EXPECT_EQ(DescribeConnectionFailure(prefix + "Connection refused", kMutual),
            "connection refused");
  EXPECT_THAT(
      DescribeConnectionFailure(
          prefix + "Ssl handshake failed: SSL_ERROR_SSL: error:0A000086:SSL "
                   "routines::certificate verify failed",
          kMutual),
      HasSubstr("the scheduler's certificate did not verify (check --tls-ca"));
  EXPECT_THAT(
      DescribeConnectionFailure(
          prefix + "Ssl handshake failed: SSL_ERROR_SSL: error:0A00010B:SSL "
                   "routines::wrong version number",
          kTls),
      HasSubstr("the scheduler does not speak TLS"));
  EXPECT_THAT(
      DescribeConnectionFailure(
          prefix + "Peer name 127.0.0.1 is not in peer certificate", kTls),
      HasSubstr("not issued for this address"));
  // A refused client certificate closes the connection in the handshake.
  EXPECT_THAT(DescribeConnectionFailure(prefix + "Socket closed", kMutual),
              HasSubstr("it refused the client certificate (check --tls-cert"));
  EXPECT_THAT(DescribeConnectionFailure(prefix + "Socket closed", kTls),
              HasSubstr("it requires a client certificate"));
  EXPECT_THAT(DescribeConnectionFailure(prefix + "Socket closed", kPlain),
              HasSubstr("a plaintext client talking to a TLS scheduler"));
  // A connection that broke later is no handshake problem.
  EXPECT_EQ(DescribeConnectionFailure("Socket closed", kMutual),
            "the connection was closed");
  EXPECT_EQ(DescribeConnectionFailure("scheduler is shutting down\n", kTls),
            "scheduler is shutting down");
}

TEST(DescribeSchedulerErrorTest, PointsAtTheTokenFile) {
  EXPECT_EQ(
      DescribeSchedulerError(absl::UnauthenticatedError("unknown bearer token"),
                             ChannelSecurity::kPlaintext),
      "authentication failed: check --token-file (unknown bearer token)");
  EXPECT_EQ(
      DescribeSchedulerError(absl::PermissionDeniedError("needs a worker"),
                             ChannelSecurity::kTls),
      "permission denied (check --token-file): needs a worker");
  EXPECT_EQ(DescribeSchedulerError(absl::UnavailableError("Connection refused"),
                                   ChannelSecurity::kTls),
            "connection refused");
  EXPECT_EQ(
      DescribeSchedulerError(absl::InternalError(""), ChannelSecurity::kTls),
      "INTERNAL");
}

}  // namespace
}  // namespace halftime::testing
