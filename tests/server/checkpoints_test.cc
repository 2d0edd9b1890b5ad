#include "server/checkpoints.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/server/test_util.h"

namespace halftime::server {
namespace {

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

}  // namespace
}  // namespace halftime::server
