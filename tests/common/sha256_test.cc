#include "common/sha256.h"

#include <gtest/gtest.h>

namespace halftime {
namespace {

TEST(Sha256Test, KnownDigests) {
  EXPECT_EQ(Sha256::Of(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256::Of("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, IncrementalEqualsOneShot) {
  Sha256 sha;
  sha.Update("a");
  sha.Update("");
  sha.Update("bc");
  EXPECT_EQ(sha.HexDigest(), Sha256::Of("abc"));
}

}  // namespace
}  // namespace halftime
