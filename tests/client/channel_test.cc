// common/channel: token files, TLS options, and the bearer token reaching
// the scheduler over plaintext and TLS channels.
#include "common/channel.h"

#include <gmock/gmock.h>
#include <grpcpp/security/server_credentials.h>
#include <gtest/gtest.h>

#include <chrono>
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
  const std::string dir = ::testing::TempDir();
  out->cert_path = dir + "/halftime-test-cert.pem";
  out->key_path = dir + "/halftime-test-key.pem";
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
}

}  // namespace
}  // namespace halftime::testing
