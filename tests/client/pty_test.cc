// The real `halftime` binary on a pseudo-terminal (util-linux `script`)
// against an in-process fake scheduler: watch redraws its progress line in
// place and writes no stray escape sequences.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/wait.h>

#include <string>

#include "tests/client/cli_test_util.h"

namespace halftime::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct ProcessRun {
  int exit_code;
  std::string output;
};

// Runs `command` under `script` so its stdout is a terminal.
ProcessRun RunOnPty(const std::string& command) {
  const std::string line =
      absl::StrCat("script -qec '", command, "' /dev/null 2>&1 </dev/null");
  FILE* pipe = ::popen(line.c_str(), "r");
  if (pipe == nullptr) return {-1, ""};
  std::string output;
  char buffer[4096];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) {
    output.append(buffer, n);
  }
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

// Every escape sequence is "\x1b[K" (erase line), and nothing else.
bool OnlyEraseLineEscapes(const std::string& text) {
  for (std::size_t at = text.find('\x1b'); at != std::string::npos;
       at = text.find('\x1b', at + 1)) {
    if (text.compare(at, 3, "\x1b[K") != 0) return false;
  }
  return true;
}

class PtyTest : public CliServerTest {
 protected:
  std::string Halftime(const std::string& args) {
    return absl::StrCat(HALFTIME_CLI_BINARY, " --server ", server_.address(),
                        " ", args);
  }
};

TEST_F(PtyTest, WatchRedrawsTheProgressLineInPlace) {
  if (std::system("command -v script >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "util-linux script is not installed";
  }
  ProcessRun run = RunOnPty(Halftime(absl::StrCat("watch ", kSucceededJob)));
  EXPECT_EQ(run.exit_code, 0) << run.output;
  // The first report draws the bar; the final line redraws it complete.
  EXPECT_THAT(run.output, HasSubstr("\r\x1b[K[=>"));
  EXPECT_THAT(run.output, HasSubstr("1/10  ETA 2.2s  loss 3.9000"));
  EXPECT_THAT(run.output,
              HasSubstr("\r\x1b[K[=============]  succeeded  10/10  loss "
                        "3.0000"));
  // The final bar stays; the outcome follows on a line of its own.
  EXPECT_THAT(run.output, HasSubstr("tok/s\r\njob j-000003 succeeded: "
                                    "10/10 steps"));
  EXPECT_THAT(run.output, HasSubstr("checkpoint stored at step 5"));
  EXPECT_THAT(run.output, HasSubstr("job j-000003 succeeded: 10/10 steps"));
  EXPECT_TRUE(OnlyEraseLineEscapes(run.output)) << run.output;
  // Event lines are whole lines: each starts after a cleared line.
  EXPECT_THAT(run.output, HasSubstr("\r\x1b[K"));
  EXPECT_THAT(run.output, Not(HasSubstr("\x1b[K\x1b[K")));
}

TEST_F(PtyTest, WatchExitCodeIsTheOutcome) {
  if (std::system("command -v script >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "util-linux script is not installed";
  }
  ProcessRun failed = RunOnPty(Halftime(absl::StrCat("watch ", kFailedJob)));
  EXPECT_EQ(failed.exit_code, 1) << failed.output;
  EXPECT_THAT(failed.output, HasSubstr("job j-000004 failed"));
  EXPECT_TRUE(OnlyEraseLineEscapes(failed.output)) << failed.output;
}

TEST_F(PtyTest, PipedWatchHasNoControlCharacters) {
  const std::string command =
      Halftime(absl::StrCat("watch ", kSucceededJob)) + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[4096];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) {
    output.append(buffer, n);
  }
  const int status = ::pclose(pipe);
  EXPECT_EQ(WEXITSTATUS(status), 0) << output;
  EXPECT_THAT(output, HasSubstr("job j-000003 succeeded"));
  EXPECT_EQ(output.find('\r'), std::string::npos);
  EXPECT_EQ(output.find('\x1b'), std::string::npos);
}

}  // namespace
}  // namespace halftime::testing
