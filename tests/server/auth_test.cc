#include "server/auth.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/server/test_util.h"

namespace halftime::server {
namespace {

TEST(TokenTableTest, ParsesRolesAndRejectsJunk) {
  auto table = auth::TokenTable::Parse(
      "# tokens\nuser  u-secret\n\nworker\tw-secret\n", "tokens");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->Find("u-secret"), auth::Role::kUser);
  EXPECT_EQ(table->Find("w-secret"), auth::Role::kWorker);
  EXPECT_FALSE(table->Find("u-secreT").has_value());
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

}  // namespace
}  // namespace halftime::server
