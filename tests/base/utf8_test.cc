#include "base/utf8.h"

#include <gtest/gtest.h>

#include <string>

namespace halftime::utf8 {
namespace {

TEST(Utf8, AcceptsEveryLengthOfWellFormedSequence) {
  const std::string text = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";  // aé€😀
  EXPECT_EQ(FindInvalid(text), std::string_view::npos);
  EXPECT_EQ(SequenceLength(text, 0), 1u);
  EXPECT_EQ(SequenceLength(text, 1), 2u);
  EXPECT_EQ(SequenceLength(text, 3), 3u);
  EXPECT_EQ(SequenceLength(text, 6), 4u);
  EXPECT_EQ(SequenceLength(text, text.size()), 0u);
  // The largest code point, U+10FFFF.
  EXPECT_EQ(FindInvalid("\xF4\x8F\xBF\xBF"), std::string_view::npos);
}

TEST(Utf8, RejectsWhatRfc3629Forbids) {
  EXPECT_EQ(FindInvalid("ok\x80"), 2u);            // stray continuation
  EXPECT_EQ(FindInvalid("\xC0\xAF"), 0u);          // overlong '/'
  EXPECT_EQ(FindInvalid("\xE0\x80\xAF"), 0u);      // overlong, 3 bytes
  EXPECT_EQ(FindInvalid("\xED\xA0\x80"), 0u);      // surrogate U+D800
  EXPECT_EQ(FindInvalid("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(FindInvalid("ab\xE2\x82"), 2u);        // truncated
  EXPECT_EQ(FindInvalid("\xFF"), 0u);              // never in UTF-8
  EXPECT_EQ(FindInvalid(std::string("a\0b", 3)), std::string_view::npos);
}

TEST(Utf8, ToValidReplacesBadBytesAndCutsAtABoundary) {
  const std::string bad = "\xEF\xBF\xBD";
  EXPECT_EQ(ToValid("a\xFF"
                    "b",
                    100),
            "a" + bad + "b");
  EXPECT_EQ(ToValid("ab\xE2\x82\xAC", 4), "ab");
  EXPECT_EQ(ToValid("", 10), "");
  EXPECT_EQ(FindInvalid(ToValid("\xC0\xAF\xED\xA0\x80z", 100)),
            std::string_view::npos);
}

}  // namespace
}  // namespace halftime::utf8
