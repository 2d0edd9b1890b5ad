// Tests of the small parts: prices, checkpoint files, token files, leases.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/auth.h"
#include "server/checkpoints.h"
#include "server/leases.h"
#include "server/savings.h"
#include "tests/server/test_util.h"

namespace halftime::server {
namespace {

TEST(PriceTableTest, ExactThenLongestPartThenDefault) {
  PriceTable prices;
  ASSERT_TRUE(prices.AddFlag("H100=4").ok());
  ASSERT_TRUE(prices.AddFlag("NVIDIA H100 80GB HBM3=5").ok());
  ASSERT_TRUE(prices.AddFlag("a100=2.5").ok());
  prices.default_price = 1;
  EXPECT_EQ(prices.PriceFor("NVIDIA H100 80GB HBM3"), 5);
  EXPECT_EQ(prices.PriceFor("NVIDIA H100 PCIe"), 4);
  EXPECT_EQ(prices.PriceFor("NVIDIA A100-SXM4-40GB"), 2.5);
  EXPECT_EQ(prices.PriceFor("Intel Xeon"), 1);
  EXPECT_EQ(prices.AddFlag("nope").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(prices.AddFlag("x=-1").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(prices.AddFlag("x=abc").code(), absl::StatusCode::kInvalidArgument);
}

TEST(CheckpointFilesTest, VerifiesSizeAndHash) {
  testing::TempDir dir;
  auto files = CheckpointFiles::Create(dir.path());
  ASSERT_TRUE(files.ok());
  auto good = (*files)->BeginUpload("j-000001", 1, 10);
  ASSERT_TRUE(good.ok());
  ASSERT_TRUE((*good)->Write("hello ").ok());
  ASSERT_TRUE((*good)->Write("world").ok());
  auto record = (*good)->Finish(Sha256Hex("hello world"), 11);
  ASSERT_TRUE(record.ok()) << record.status();
  std::ifstream in(record->path);
  std::string content((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(content, "hello world");
  EXPECT_EQ(record->sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");

  auto corrupt = (*files)->BeginUpload("j-000001", 1, 20);
  ASSERT_TRUE((*corrupt)->Write("hello").ok());
  EXPECT_EQ((*corrupt)->Finish(Sha256Hex("hellO"), 5).status().code(),
            absl::StatusCode::kDataLoss);
  auto truncated = (*files)->BeginUpload("j-000001", 1, 30);
  ASSERT_TRUE((*truncated)->Write("hell").ok());
  EXPECT_EQ((*truncated)->Finish(Sha256Hex("hello"), 5).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ((*files)->BeginUpload("../etc", 1, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TokenTableTest, ParsesRolesAndRejectsJunk) {
  auto table = auth::TokenTable::Parse(
      "# tokens\nuser  u-secret\n\nworker\tw-secret\n", "tokens");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->Find("u-secret"), auth::Role::kUser);
  EXPECT_EQ(table->Find("w-secret"), auth::Role::kWorker);
  EXPECT_FALSE(table->Find("u-secreT").has_value());
  EXPECT_EQ(table->TokenFor(auth::Role::kWorker), "w-secret");
  auto bad = auth::TokenTable::Parse("admin x\n", "tokens");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            "tokens:1: unknown role \"admin\"; expected user or worker");
  EXPECT_EQ(auth::TokenTable::Parse("", "t").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(auth::TokenTable::Parse("user a\nworker a\n", "t").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(auth::TokenTable::LoadFile("/nonexistent/tokens").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(TokenTableTest, ErrorsNeverRepeatAToken) {
  // A token written before its role: the error must not show it.
  auto swapped =
      auth::TokenTable::Parse("user u1\n3f9aC1-secret-77b0 worker\n", "tokens");
  EXPECT_EQ(swapped.status(),
            absl::InvalidArgumentError(
                "tokens:2: the first word is not a role; expected \"user "
                "TOKEN\" or \"worker TOKEN\""));
  auto duplicate = auth::TokenTable::Parse("user s3cret\nworker s3cret\n", "t");
  EXPECT_EQ(duplicate.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(duplicate.status().message().find("s3cret"), std::string::npos);
}

TEST(ServerCredentialsTest, UnusableTlsFilesAreNamed) {
  testing::TempDir dir;
  const std::string junk = dir.path() + "/junk.pem";
  std::ofstream(junk) << "junk\n";
  auth::TlsFiles files;
  files.cert = junk;
  files.key = junk;
  EXPECT_EQ(auth::MakeServerCredentials(files).status(),
            absl::InvalidArgumentError(
                absl::StrCat("--tls-cert ", junk,
                             ": holds no PEM certificate "
                             "(-----BEGIN CERTIFICATE-----)")));
  files.ca = junk;
  files.cert = "";
  files.key = "";
  EXPECT_EQ(auth::MakeServerCredentials(files).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TokenTableTest, ClientTokenFromBareOrTableFile) {
  testing::TempDir dir;
  std::string bare = dir.path() + "/bare", table = dir.path() + "/table";
  std::ofstream(bare) << "abc123\n";
  std::ofstream(table) << "user u1\nworker w1\n";
  EXPECT_EQ(*auth::LoadClientToken(bare, auth::Role::kUser), "abc123");
  EXPECT_EQ(*auth::LoadClientToken(table, auth::Role::kWorker), "w1");
  EXPECT_EQ(*auth::LoadClientToken(table, auth::Role::kUser), "u1");
}

TEST(LeaseTableTest, ExpiresAfterGrace) {
  LeaseTable leases(absl::Seconds(15));
  absl::Time t0 = absl::FromUnixSeconds(100);
  leases.Renew("b", t0);
  leases.Renew("a", t0 + absl::Seconds(5));
  EXPECT_TRUE(leases.TakeExpired(t0 + absl::Seconds(14)).empty());
  EXPECT_EQ(leases.TakeExpired(t0 + absl::Seconds(15)),
            std::vector<std::string>{"b"});
  EXPECT_FALSE(leases.Holds("b"));
  EXPECT_EQ(leases.TakeExpired(t0 + absl::Seconds(60)),
            std::vector<std::string>{"a"});
}

}  // namespace
}  // namespace halftime::server
