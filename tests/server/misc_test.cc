// Tests of the small parts: prices, checkpoint files, token files, leases.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
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

std::string ReadAll(CheckpointReader* reader, int64_t chunk,
                    absl::Status* status) {
  std::string all, data;
  bool last = false;
  while (!last) {
    *status = reader->Next(chunk, &data, &last);
    if (!status->ok()) break;
    all += data;
  }
  return all;
}

TEST(CheckpointReaderTest, ServesAVerifiedFileAndRefusesACorruptOne) {
  testing::TempDir dir;
  auto files = CheckpointFiles::Create(dir.path());
  ASSERT_TRUE(files.ok());
  auto upload = (*files)->BeginUpload("j-000001", 1, 10);
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE((*upload)->Write("0123456789abcdef").ok());
  auto record = (*upload)->Finish(Sha256Hex("0123456789abcdef"), 16);
  ASSERT_TRUE(record.ok()) << record.status();

  auto reader = CheckpointReader::Open(*record);
  ASSERT_TRUE(reader.ok()) << reader.status();
  absl::Status status;
  EXPECT_EQ(ReadAll(reader->get(), 5, &status), "0123456789abcdef");
  EXPECT_TRUE(status.ok()) << status;

  // One byte flipped on disk: refused before the last chunk.
  {
    std::fstream f(record->path,
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(3);
    f.put('X');
  }
  reader = CheckpointReader::Open(*record);
  ASSERT_TRUE(reader.ok());
  ReadAll(reader->get(), 5, &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(status.message(),
            absl::StrCat("checkpoint of j-000001 at step 10 is corrupt on the "
                         "scheduler: its sha256 ",
                         Sha256Hex("012X456789abcdef"),
                         " does not match the recorded ", record->sha256));

  // Truncated, padded, missing.
  std::filesystem::resize_file(record->path, 10);
  reader = CheckpointReader::Open(*record);
  ReadAll(reader->get(), 1 << 20, &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(status.message().find("shorter than the 16 bytes"),
            absl::string_view::npos);
  std::filesystem::resize_file(record->path, 20);
  reader = CheckpointReader::Open(*record);
  ReadAll(reader->get(), 1 << 20, &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(status.message().find("longer than the 16 bytes"),
            absl::string_view::npos);
  std::filesystem::remove(record->path);
  EXPECT_EQ(CheckpointReader::Open(*record).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(CheckpointFilesTest, CreateRemovesUploadsAbandonedByACrash) {
  testing::TempDir dir;
  const std::string job_dir = dir.path() + "/checkpoints/j-000001";
  std::filesystem::create_directories(job_dir);
  // pid 0x7ffffffe is never alive; our own pid is.
  std::ofstream(job_dir + "/.upload-2147483646-0.tmp") << "partial";
  const std::string ours =
      absl::StrCat(job_dir, "/.upload-", ::getpid(), "-7.tmp");
  std::ofstream(ours) << "in flight";
  std::ofstream(job_dir + "/step-000000010-attempt-1.ckpt") << "kept";
  ASSERT_TRUE(CheckpointFiles::Create(dir.path()).ok());
  EXPECT_FALSE(std::filesystem::exists(job_dir + "/.upload-2147483646-0.tmp"));
  EXPECT_TRUE(std::filesystem::exists(ours));
  EXPECT_TRUE(
      std::filesystem::exists(job_dir + "/step-000000010-attempt-1.ckpt"));
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
